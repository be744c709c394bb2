"""Factorizations of the symmetric pivot blocks Qxx of the array-module Riccati stages.

docs/math.md section 4, "Stage-wise (Riccati) elimination" and "Inertia": each ``Qxx_l``
is factored once; the factor solves with it and reports its inertia, and
``n_neg(H + eps I) = sum_l n_neg(Qxx_l)``. On NumPy in float64 the sweep uses the compiled
factor of :mod:`tallskinny_np.pivot` instead, which solves and counts with one
factorization; this module serves float32, CuPy and an explicit ``strategy``.

With ``"lapack"`` the factorization is LAPACK's Cholesky (``potrf``) when the block is
expected to be positive definite (the damped Gauss-Newton matrix) and succeeds, else LU
with partial pivoting (``getrf``) for solving; the inertia, when asked for, comes from the
symmetric-indefinite Bunch-Kaufman ``L D L^T`` (``sytrf``), whose block diagonal D (1x1 and
2x2 blocks) carries it (LAPACK's ``sytrs`` solves with it by Level-2 BLAS only). The
``"eigh"`` strategy (the one used on CuPy, which has no Bunch-Kaufman) diagonalises the
block instead; it is an array-module code path and is tested on the CPU with NumPy.

A pivot eigenvalue (of D, or of the block for ``"eigh"``) of modulus at most
``n * eps * ||Q||_1`` is counted as zero: the block is singular to working precision there.
"""
from collections import namedtuple

import numpy as np
from scipy.linalg import get_lapack_funcs
from scipy.linalg.lapack import dsytrf_lwork, ssytrf_lwork

from .backend import array_module

SymFactor = namedtuple("SymFactor", "strategy data inertia rcond")
SymFactor.__doc__ = """A factored symmetric block: ``strategy`` ("cholesky", "lu",
"eigh", or "range"/"woodbury" from :mod:`tallskinny_np.wide`), the factor ``data``,
``inertia = (n_neg, n_zero, n_pos)`` (None if not asked for) and ``rcond``, an estimate of
the reciprocal 1-norm condition number."""


def _zero_tol(n, anorm, dtype):
    return n * np.finfo(dtype).eps * anorm


def eigenvalue_signs(w, tol):
    """``(n_neg, n_zero, n_pos)`` of the eigenvalues w, those within ``tol`` of 0 counted
    as zero."""
    n_neg, n_pos = int((w < -tol).sum()), int((w > tol).sum())
    return n_neg, int(w.size) - n_neg - n_pos, n_pos


def _cholesky(Q, anorm):
    potrf, pocon = get_lapack_funcs(("potrf", "pocon"), (Q,))
    c, info = potrf(Q, lower=1, clean=1)
    if info != 0:
        return None
    rcond, _ = pocon(c, anorm, uplo="L")
    return SymFactor("cholesky", c, (0, 0, Q.shape[0]), float(rcond))


def _lu(Q, anorm):
    getrf, gecon = get_lapack_funcs(("getrf", "gecon"), (Q,))
    lu, piv, info = getrf(Q)
    rcond = 0.0 if info > 0 else float(gecon(lu, anorm, norm="1")[0])
    return SymFactor("lu", (lu, piv), None, rcond)


def bunch_kaufman_inertia(Q, anorm):
    """``(n_neg, n_zero, n_pos)`` of symmetric Q from the D of its Bunch-Kaufman factor."""
    sytrf, = get_lapack_funcs(("sytrf",), (Q,))
    lwork_query = dsytrf_lwork if Q.dtype == np.float64 else ssytrf_lwork
    lwork = int(lwork_query(Q.shape[0], lower=1)[0])
    ldu, ipiv, _ = sytrf(Q, lower=1, lwork=max(lwork, 1))
    d = np.diag(ldu)
    eig = []
    k = 0
    while k < len(d):
        if ipiv[k] > 0:
            eig.append(d[k])
            k += 1
        else:  # a 2x2 block of D (LAPACK marks both of its rows with the same negative ipiv)
            a, b, c = d[k], ldu[k + 1, k], d[k + 1]
            mean, rad = 0.5 * (a + c), np.hypot(0.5 * (a - c), b)
            eig += [mean - rad, mean + rad]
            k += 2
    return eigenvalue_signs(np.array(eig), _zero_tol(Q.shape[0], anorm, Q.dtype))


def _eigh(Q, anorm):
    xp = array_module(Q)
    w, V = xp.linalg.eigh(Q)
    absw = xp.abs(w)
    rcond = float(absw.min() / absw.max()) if float(absw.max()) > 0 else 0.0
    return SymFactor("eigh", (w, V), eigenvalue_signs(w, _zero_tol(Q.shape[0], anorm, Q.dtype)),
                     rcond)


def sym_factor(Q, inertia=False, positive_definite=False, strategy=None):
    """Factor the symmetric matrix Q for solving; with ``inertia=True`` also count its
    eigenvalue signs. ``positive_definite=True`` tries Cholesky first (falling back to LU
    when Q is not numerically positive definite after all).

    ``strategy=None`` picks LAPACK on NumPy and ``"eigh"`` on CuPy.
    """
    xp = array_module(Q)
    anorm = float(xp.abs(Q).sum(axis=0).max())
    if strategy is None:
        strategy = "lapack" if xp is np else "eigh"
    if strategy == "eigh":
        return _eigh(Q, anorm)
    if strategy != "lapack":
        raise ValueError(f"unknown factorization strategy {strategy!r}")
    f = _cholesky(Q, anorm) if positive_definite else None
    # A barely positive definite block goes to LU and Bunch-Kaufman, which count its
    # near-zero pivots as zero eigenvalues.
    if f is None or not f.rcond > _zero_tol(Q.shape[0], 1.0, Q.dtype):
        f = _lu(Q, anorm)
        if inertia:
            f = f._replace(inertia=bunch_kaufman_inertia(Q, anorm))
    return f


def sym_solve(f, rhs):
    """``Q^{-1} rhs`` from the factor (rhs of shape (n,) or (n, r); (n, r) for the
    structured factors of :mod:`tallskinny_np.wide`, whose ``data`` is their solve)."""
    if callable(f.data):
        return f.data(rhs)
    if f.strategy == "eigh":
        w, V = f.data
        return V @ ((V.T @ rhs) / (w if rhs.ndim == 1 else w[:, None]))
    if f.strategy == "cholesky":
        potrs, = get_lapack_funcs(("potrs",), (f.data,))
        x, _ = potrs(f.data, rhs, lower=1)
        return x
    getrs, = get_lapack_funcs(("getrs",), (f.data[0],))
    x, _ = getrs(*f.data, rhs)
    return x
