"""Factorizations of the symmetric pivot blocks Qxx of the array-module Riccati stages.

docs/math.md section 4, "Stage-wise (Riccati) elimination" and "Inertia": each ``Qxx_l``
is factored once, and the one factorization both solves with it and counts its inertia,
``n_neg(H + eps I) = sum_l n_neg(Qxx_l)``. Every factor has ``solve(rhs)`` (``Qxx^{-1} rhs``
for rhs of shape (n,) or (n, r)), ``inertia = (n_neg, n_zero, n_pos)`` and ``rcond``, an
estimate of the reciprocal condition number; zero pivots, the acceptance of Cholesky and
singular blocks follow :mod:`tallskinny_np.tolerance`. :func:`sym_factor` picks:

- on NumPy in float64, :class:`tallskinny_np.pivot.PivotFactor`: the compiled Cholesky
  (when the block is expected to be positive definite and it succeeds) or Bunch-Kaufman
  ``L D L^T`` whose block diagonal D carries the inertia, the factor of the compiled stages;
- on NumPy in another precision (float32), :class:`LapackFactor`: the same two
  factorizations by SciPy's LAPACK (``potrf`` or ``sytrf``), in that precision;
- on CuPy, which has no Bunch-Kaufman, or with ``strategy="eigh"``, :class:`EighFactor`:
  the block diagonalised. It is an array-module code path and is tested on the CPU with
  NumPy.

The structured stages of :mod:`tallskinny_np.wide` have factors of their own
(:class:`~tallskinny_np.wide.RangeFactor`, :class:`~tallskinny_np.loss_stage.LossFactor`)
with the same three members.
"""
from typing import NamedTuple

import numpy as np
from scipy.linalg import get_lapack_funcs
from scipy.linalg.lapack import dsytrf_lwork, ssytrf_lwork

from . import pivot
from .backend import array_module
from .tolerance import cholesky_accepted, eigenvalue_signs, zero_tolerance


class LapackFactor(NamedTuple):
    """LAPACK's Cholesky ``Q = L L^T`` (``ipiv`` None) or Bunch-Kaufman
    ``P^T Q P = L D L^T`` of a symmetric Q, in Q's precision."""
    factor: np.ndarray        # (n, n): L, or sytrf's L and D (lower triangle)
    ipiv: np.ndarray          # (n,): sytrf's pivots, None for Cholesky
    inertia: tuple
    rcond: float

    def solve(self, rhs):
        """``Q^{-1} rhs`` (``potrs`` or ``sytrs``)."""
        if self.ipiv is None:
            potrs, = get_lapack_funcs(("potrs",), (self.factor,))
            x, _ = potrs(self.factor, rhs, lower=1)
        else:
            sytrs, = get_lapack_funcs(("sytrs",), (self.factor,))
            x, _ = sytrs(self.factor, self.ipiv, rhs, lower=1)
        return x


class EighFactor(NamedTuple):
    """``Q = V diag(w) V^T``, on any array module."""
    w: object                 # (n,)
    V: object                 # (n, n)
    inertia: tuple
    rcond: float              # |w|_min / |w|_max, exact in the 2-norm

    def solve(self, rhs):
        """``V diag(w)^{-1} V^T rhs``."""
        return self.V @ ((self.V.T @ rhs) / (self.w if rhs.ndim == 1 else self.w[:, None]))


def _lapack(Q, anorm, positive_definite):
    """The :class:`LapackFactor` of Q (of 1-norm anorm): Cholesky if asked for and
    accepted, else Bunch-Kaufman."""
    eps_mach = np.finfo(Q.dtype).eps
    n = Q.shape[0]
    if positive_definite:
        potrf, pocon = get_lapack_funcs(("potrf", "pocon"), (Q,))
        c, info = potrf(Q, lower=1, clean=1)
        if info == 0:
            rcond = float(pocon(c, anorm, uplo="L")[0])
            if cholesky_accepted(rcond, n, eps_mach):
                return LapackFactor(c, None, (0, 0, n), rcond)
    sytrf, sycon = get_lapack_funcs(("sytrf", "sycon"), (Q,))
    lwork_query = dsytrf_lwork if Q.dtype == np.float64 else ssytrf_lwork
    lwork = int(lwork_query(n, lower=1)[0])
    ldu, ipiv, _ = sytrf(Q, lower=1, lwork=max(lwork, 1))
    rcond = float(sycon(ldu, ipiv, anorm, lower=1)[0])  # 0 when D is exactly singular
    return LapackFactor(ldu, ipiv, eigenvalue_signs(_bunch_kaufman_eigenvalues(ldu, ipiv),
                                                    zero_tolerance(n, anorm, eps_mach)), rcond)


def _bunch_kaufman_eigenvalues(ldu, ipiv):
    """The eigenvalues of the block diagonal D of ``sytrf``'s lower factor."""
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
    return np.array(eig)


def _eigh(Q, anorm):
    xp = array_module(Q)
    w, V = xp.linalg.eigh(Q)
    absw = xp.abs(w)
    rcond = float(absw.min() / absw.max()) if float(absw.max()) > 0 else 0.0
    counts = eigenvalue_signs(w, zero_tolerance(Q.shape[0], anorm, np.finfo(Q.dtype).eps))
    return EighFactor(w, V, counts, rcond)


def sym_factor(Q, positive_definite=False, strategy=None):
    """Factor the symmetric matrix Q to solve with it and count its eigenvalue signs.

    Parameters
    ----------
    Q : array (n, n)
        Symmetric (the compiled and LAPACK factorizations read its lower triangle).
    positive_definite : bool
        Q is expected to be positive definite: try Cholesky first (falling back to
        Bunch-Kaufman when Q is not numerically positive definite after all).
    strategy : {None, "lapack", "eigh"}
        None picks ``"lapack"`` (Cholesky or Bunch-Kaufman) on NumPy and ``"eigh"`` on
        CuPy.

    Returns
    -------
    PivotFactor, LapackFactor or EighFactor
        With ``solve(rhs)``, ``inertia`` and ``rcond`` (module docstring).

    Examples
    --------
    >>> import numpy as np
    >>> from tallskinny_np.symmetric import sym_factor
    >>> f = sym_factor(np.array([[2.0, 1.0], [1.0, -3.0]]))
    >>> x = f.solve(np.array([3.0, -2.0]))
    >>> f.inertia, bool(np.allclose(x, [1.0, 1.0]))
    ((1, 0, 1), True)
    """
    xp = array_module(Q)
    if strategy is None:
        strategy = "lapack" if xp is np else "eigh"
    if strategy not in ("lapack", "eigh"):
        raise ValueError(f"unknown factorization strategy {strategy!r}")
    if strategy == "lapack" and Q.dtype == np.float64:
        F = np.array(Q, order="F")                 # overwritten by the factor
        return pivot.PivotFactor.of((F,) + pivot.factor(F, bool(positive_definite)))
    anorm = float(xp.abs(Q).sum(axis=0).max())
    if strategy == "eigh":
        return _eigh(Q, anorm)
    return _lapack(Q, anorm, positive_definite)
