"""Factorizations of the symmetric pivot blocks Qxx of the Riccati sweep, with inertia.

DESIGN.md section 4, "Stage-wise (Riccati) elimination" and "Inertia (Sylvester)": each
``Qxx_l`` is factored once; the factor solves with it and reports its inertia, and
``n_neg(H + eps I) = sum_l n_neg(Qxx_l)``.

On NumPy the factorization is LAPACK's Cholesky (``potrf``) when the block is positive
definite, else symmetric-indefinite Bunch-Kaufman ``L D L^T`` (``sytrf``), whose block
diagonal D (1x1 and 2x2 blocks) carries the inertia. The ``"eigh"`` strategy (the one used
on CuPy, which has no Bunch-Kaufman) diagonalises the block instead; it is an array-module
code path and is tested on the CPU with NumPy.

A pivot eigenvalue (of D, or of the block for ``"eigh"``) of modulus at most
``n * eps * ||Q||_1`` is counted as zero: the block is singular to working precision there.
"""
from collections import namedtuple

import numpy as np
from scipy.linalg import get_lapack_funcs
from scipy.linalg.lapack import dsytrf_lwork, ssytrf_lwork

from .backend import array_module

SymFactor = namedtuple("SymFactor", "strategy data inertia rcond")
SymFactor.__doc__ = """A factored symmetric block: ``strategy`` ("cholesky",
"bunch-kaufman" or "eigh"), the factor ``data``, ``inertia = (n_neg, n_zero, n_pos)``
and ``rcond``, an estimate of the reciprocal 1-norm condition number."""


def _zero_tol(n, anorm, dtype):
    return n * np.finfo(dtype).eps * anorm


def _cholesky(Q, anorm):
    potrf, pocon = get_lapack_funcs(("potrf", "pocon"), (Q,))
    c, info = potrf(Q, lower=1, clean=1)
    if info != 0:
        return None
    rcond, _ = pocon(c, anorm, uplo="L")
    return SymFactor("cholesky", c, (0, 0, Q.shape[0]), float(rcond))


def _bunch_kaufman(Q, anorm):
    sytrf, sycon = get_lapack_funcs(("sytrf", "sycon"), (Q,))
    lwork_query = dsytrf_lwork if Q.dtype == np.float64 else ssytrf_lwork
    lwork = int(lwork_query(Q.shape[0], lower=1)[0])
    ldu, ipiv, info = sytrf(Q, lower=1, lwork=max(lwork, 1))
    rcond = 0.0 if info > 0 else float(sycon(ldu, ipiv, anorm, lower=1)[0])
    tol = _zero_tol(Q.shape[0], anorm, Q.dtype)
    d = np.diag(ldu)
    counts = np.zeros(3, dtype=int)
    k = 0
    while k < len(d):
        if ipiv[k] > 0:
            eig = (d[k],)
            k += 1
        else:  # a 2x2 block of D (LAPACK marks both of its rows with the same negative ipiv)
            a, b, c = d[k], ldu[k + 1, k], d[k + 1]
            mean, rad = 0.5 * (a + c), np.hypot(0.5 * (a - c), b)
            eig = (mean - rad, mean + rad)
            k += 2
        for e in eig:
            counts[0 if e < -tol else 2 if e > tol else 1] += 1
    return SymFactor("bunch-kaufman", (ldu, ipiv), tuple(int(c) for c in counts), rcond)


def _eigh(Q, anorm):
    xp = array_module(Q)
    w, V = xp.linalg.eigh(Q)
    tol = _zero_tol(Q.shape[0], anorm, Q.dtype)
    n_neg, n_pos = int((w < -tol).sum()), int((w > tol).sum())
    absw = xp.abs(w)
    rcond = float(absw.min() / absw.max()) if float(absw.max()) > 0 else 0.0
    return SymFactor("eigh", (w, V), (n_neg, Q.shape[0] - n_neg - n_pos, n_pos), rcond)


def sym_factor(Q, strategy=None):
    """Factor the symmetric matrix Q (only its lower triangle is read by LAPACK).

    ``strategy=None`` picks LAPACK (Cholesky, falling back to Bunch-Kaufman when Q is not
    numerically positive definite) on NumPy and ``"eigh"`` on CuPy.
    """
    xp = array_module(Q)
    anorm = float(xp.abs(Q).sum(axis=0).max())
    if strategy is None:
        strategy = "lapack" if xp is np else "eigh"
    if strategy == "eigh":
        return _eigh(Q, anorm)
    if strategy != "lapack":
        raise ValueError(f"unknown factorization strategy {strategy!r}")
    f = _cholesky(Q, anorm)
    # A barely positive definite block is re-factored so its near-zero pivots are counted.
    if f is None or not f.rcond > _zero_tol(Q.shape[0], 1.0, Q.dtype):
        f = _bunch_kaufman(Q, anorm)
    return f


def sym_solve(f, rhs):
    """``Q^{-1} rhs`` from the factor (rhs of shape (n,) or (n, r))."""
    if f.strategy == "eigh":
        w, V = f.data
        xp = array_module(w)
        return V @ ((V.T @ rhs) / (w if rhs.ndim == 1 else w[:, None]))
    if f.strategy == "cholesky":
        potrs, = get_lapack_funcs(("potrs",), (f.data,))
        x, _ = potrs(f.data, rhs, lower=1)
        return x
    ldu, ipiv = f.data
    sytrs, = get_lapack_funcs(("sytrs",), (ldu,))
    x, _ = sytrs(ldu, ipiv, rhs, lower=1)
    return x
