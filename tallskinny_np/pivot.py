"""The symmetric factorization of a Riccati pivot block that both solves and counts.

docs/math.md sections 4.6, "Stage-wise (Riccati) elimination", and 4.7, "Inertia". A
pivot ``Q = Qxx_l`` (``p x p``, symmetric) is factored once as::

    Q = G S G^T,    G = P Lt R M Pi^T,    S = diag(+1 (n_pos times), -1, ..., -1)

- positive definite ``Q`` (Cholesky, LAPACK ``potrf``): ``G = L``, ``S = I``;
- otherwise Bunch-Kaufman (LAPACK ``sytrf``), ``P^T Q P = Lt D Lt^T`` with Lt unit lower
  triangular and D block diagonal (1x1 and 2x2 blocks); each 2x2 block is diagonalised by a
  plane rotation, ``D = R Lambda R^T``, ``M = |Lambda|^{1/2}``, and ``Pi`` sorts the
  positions so that the positive eigenvalues of D come first.

By Sylvester's law of inertia ``In(Q) = In(Lambda)``, so the factor that solves is the one
that counts. With ``G^{-1} X`` (the "half solve", one triangular solve) the Riccati update
``Qxy^T Q^{-1} Qxy = W^T S W``, ``W = G^{-1} Qxy``, is a difference of two symmetric rank-k
updates (``syrk``), and ``Q^{-1} = G^{-T} S G^{-1}``.

Right-hand sides are handled as rows: the routines here take a column-major block ``Y``
(``r x p``) and form ``Y G^{-T}`` or ``Y G^{-1}``, which is what the compiled stages of
:mod:`tallskinny_np.stage` need without transposing anything.

Zero pivots and the acceptance of Cholesky follow :mod:`tallskinny_np.tolerance`; the
reciprocal condition estimate ``rcond = 1 / (||Q||_1 est(||Q^{-1}||_1))`` uses Higham's
1-norm estimator (the one in LAPACK's condition estimators). Float64 only: it is the factor
of the compiled stages of :mod:`tallskinny_np.stage` and, through
:func:`tallskinny_np.symmetric.sym_factor`, of the array-module stages on NumPy in float64.
"""
from typing import NamedTuple

import numpy as np
from numba import njit

from . import lapack, tolerance

CHOLESKY, BUNCH_KAUFMAN = np.int64(0), np.int64(1)   # numpy scalars: not numba literals
EPS = np.finfo(np.float64).eps
# The tolerance policy's own functions, compiled: one definition for every factorization.
_zero_tolerance = njit(cache=True)(tolerance.zero_tolerance)
_eigenvalue_signs = njit(cache=True)(tolerance.eigenvalue_signs)
_cholesky_accepted = njit(cache=True)(tolerance.cholesky_accepted)


class PivotFactor(NamedTuple):
    """A factored pivot: ``arrays`` is the tuple of :func:`factor` with the factor matrix
    first (what the compiled kernels take), ``inertia = (n_neg, n_zero, n_pos)`` of Q,
    ``rcond`` its reciprocal 1-norm condition estimate and ``anorm = ||Q||_1``."""
    arrays: tuple
    inertia: tuple
    rcond: float
    anorm: float

    @classmethod
    def of(cls, arrays):
        """The record of ``(Lf,) + factor(...)`` as returned by the compiled stages."""
        kind, lam, anorm, rcond = arrays[1], arrays[5], arrays[8], arrays[9]
        return cls(arrays, inertia(kind, lam, anorm), float(rcond), float(anorm))

    def solve(self, rhs):
        """``Q^{-1} rhs`` for rhs of shape (p,) or (p, r)."""
        Lf, kind, perm, cs, sn, lam, order, n_pos = self.arrays[:8]
        rows = np.array(np.atleast_2d(rhs.T), order="F")
        solve_rows(kind, Lf, perm, cs, sn, lam, order, n_pos, rows)
        return rows.T.reshape(rhs.shape)


@njit(cache=True, error_model="numpy")
def _rotation(a, b, c):
    """``(cs, sn, l1, l2)`` with ``[[a, b], [b, c]] = R diag(l1, l2) R^T`` and
    ``R = [[cs, -sn], [sn, cs]]`` (a Jacobi rotation)."""
    if b == 0.0:
        return 1.0, 0.0, a, c
    tau = (c - a) / (2.0 * b)
    t = (1.0 if tau >= 0 else -1.0) / (abs(tau) + np.sqrt(1.0 + tau * tau))
    cs = 1.0 / np.sqrt(1.0 + t * t)
    sn = -t * cs
    return cs, sn, a - t * b, c + t * b


@njit(cache=True, error_model="numpy")
def _bunch_kaufman(Q):
    """Bunch-Kaufman of the lower triangle of F-order Q, in place, in the form of
    :func:`factor`: ``(perm, cs, sn, lam)`` with Q holding Lt."""
    p = Q.shape[0]
    perm = np.arange(p)
    cs = np.ones(p)
    sn = np.zeros(p)
    ipiv = np.empty(p, np.int32)
    lapack.sytrf(lapack.L, p, Q, p, ipiv)
    lam = np.empty(p)
    # LAPACK applied the interchange of step k to the trailing matrix only; applying it
    # to the columns of L left of k as well turns P(1) L(1) P(2) L(2) ... into P Lt.
    swaps = np.empty((p, 3), np.int64)      # (k, kk, kp) of each interchange, k ascending
    n_swaps = 0
    k = 0
    while k < p:
        two = ipiv[k] < 0
        kk = k + 1 if two else k
        kp = (-ipiv[k] if two else ipiv[k]) - 1
        if kp != kk:
            swaps[n_swaps, 0], swaps[n_swaps, 1], swaps[n_swaps, 2] = k, kk, kp
            n_swaps += 1
            perm[kk], perm[kp] = perm[kp], perm[kk]
        if two:
            c, s, l1, l2 = _rotation(Q[k, k], Q[k + 1, k], Q[k + 1, k + 1])
            cs[k], sn[k], lam[k], lam[k + 1] = c, s, l1, l2
            Q[k + 1, k] = 0.0
            k += 2
        else:
            lam[k] = Q[k, k]
            k += 1
    # Column by column (each contiguous in F-order), the interchanges of the later steps
    # in order: the same swaps as row by row, without a strided pass over Q per step.
    first = 0                               # the first interchange of a step after j
    for j in range(p):
        while first < n_swaps and swaps[first, 0] <= j:
            first += 1
        for i in range(first, n_swaps):
            kk, kp = swaps[i, 1], swaps[i, 2]
            Q[kk, j], Q[kp, j] = Q[kp, j], Q[kk, j]
    for j in range(p):
        Q[j, j] = 1.0
    return perm, cs, sn, lam


@njit(cache=True, error_model="numpy")
def factor(Q, positive_definite):
    """Factor the symmetric ``Q`` (F-order, lower triangle read; overwritten by the factor).

    Returns ``(kind, perm, cs, sn, lam, order, n_pos, anorm, rcond)``: Q holds L (Cholesky)
    or Lt (unit lower, Bunch-Kaufman), ``perm`` is P (``(P^T Q P)[i, j] = Q[perm[i],
    perm[j]]``), ``cs, sn`` the rotation of the 2x2 block starting at each position (1, 0
    elsewhere), ``lam`` the eigenvalues of D by position, ``order`` the positions with the
    positive ones first (Pi), ``n_pos`` their number, ``anorm = ||Q||_1`` and ``rcond`` the
    reciprocal condition estimate. Cholesky is tried only with ``positive_definite``; a
    failed or barely positive definite one (not
    :func:`tallskinny_np.tolerance.cholesky_accepted`) is redone by Bunch-Kaufman, which
    counts near-zero pivots as zero eigenvalues.
    """
    p = Q.shape[0]
    anorm = onenorm(Q)
    if positive_definite:
        backup = Q.copy()
        if lapack.potrf(lapack.L, p, Q, p) == 0:
            ident = np.arange(p)
            ones = np.ones(p)
            rcond = _rcond(CHOLESKY, Q, ident, ones, np.zeros(p), ones, ident, p, anorm)
            if _cholesky_accepted(rcond, p, EPS):
                return CHOLESKY, ident, ones, np.zeros(p), ones, ident, p, anorm, rcond
        Q[:, :] = backup
    perm, cs, sn, lam = _bunch_kaufman(Q)
    order = np.empty(p, np.int64)
    n_pos = 0
    for i in range(p):
        if lam[i] > 0:
            order[n_pos] = i
            n_pos += 1
    m = n_pos
    for i in range(p):
        if not lam[i] > 0:
            order[m] = i
            m += 1
    rcond = 0.0
    if np.all(lam != 0.0):
        rcond = _rcond(BUNCH_KAUFMAN, Q, perm, cs, sn, lam, order, n_pos, anorm)
    return BUNCH_KAUFMAN, perm, cs, sn, lam, order, n_pos, anorm, rcond


@njit(cache=True, error_model="numpy")
def inertia(kind, lam, anorm):
    """``(n_neg, n_zero, n_pos)`` of Q from the eigenvalues of D, those within the zero
    tolerance of :mod:`tallskinny_np.tolerance` counted as zero."""
    p = lam.shape[0]
    if kind == CHOLESKY:
        return 0, 0, p
    return _eigenvalue_signs(lam, _zero_tolerance(p, anorm, EPS))


@njit(cache=True, error_model="numpy")
def half_solve(kind, Lf, perm, cs, sn, lam, order, Y):
    """``Y <- Y G^{-T}`` for the column-major ``Y`` (``r x p``: F-order, or a block of rows
    of an F-order array): the rows of ``(G^{-1} Y^T)^T``."""
    r, p = Y.shape
    if kind == CHOLESKY:
        _triangular_rows(Lf, Y, lapack.T, lapack.N)
        return
    _gather_columns(Y, perm, np.ones(p))
    _triangular_rows(Lf, Y, lapack.T, lapack.U)
    _rotate(Y, cs, sn, 1.0)
    _gather_columns(Y, order, _inverse_roots(lam, order))


@njit(cache=True, error_model="numpy")
def half_solve_transposed(kind, Lf, perm, cs, sn, lam, order, Y):
    """``Y <- Y G^{-1}`` for the column-major ``Y`` (``r x p``): the rows of
    ``(G^{-T} Y^T)^T``, the inverse of :func:`half_solve`'s transpose."""
    r, p = Y.shape
    if kind == CHOLESKY:
        _triangular_rows(Lf, Y, lapack.N, lapack.N)
        return
    src = np.empty(p, np.int64)             # T[:, order[j]] = w_j Y[:, j], as a gather
    scale = np.empty(p)
    w = _inverse_roots(lam, order)
    for j in range(p):
        src[order[j]], scale[order[j]] = j, w[j]
    _gather_columns(Y, src, scale)
    _rotate(Y, cs, sn, -1.0)
    _triangular_rows(Lf, Y, lapack.N, lapack.U)
    for j in range(p):                      # Y[:, perm[j]] = T[:, j]
        src[perm[j]] = j
    _gather_columns(Y, src, np.ones(p))


@njit(cache=True, error_model="numpy")
def _inverse_roots(lam, order):
    """``1 / sqrt(|lam[order[j]]|)`` by position j: ``M^{-1}`` in the sorted order."""
    w = np.empty(order.shape[0])
    for j in range(order.shape[0]):
        w[j] = 1.0 / np.sqrt(abs(lam[order[j]]))
    return w


@njit(cache=True, error_model="numpy")
def _gather_columns(Y, src, scale):
    """``Y[:, j] <- scale[j] Y[:, src[j]]`` for a permutation src, in place: cycle by
    cycle, one column held aside. A column is contiguous (F-order rows), so this is one
    pass over Y with no copy of it, whose fresh pages would each cost a fault."""
    r, p = Y.shape
    held = np.empty(r)
    done = np.zeros(p, np.bool_)
    for j0 in range(p):
        if done[j0]:
            continue
        held[:] = Y[:, j0]
        j = j0
        while True:
            done[j] = True
            k = src[j]
            if k == j0:
                for i in range(r):
                    Y[i, j] = scale[j] * held[i]
                break
            for i in range(r):
                Y[i, j] = scale[j] * Y[i, k]
            j = k


@njit(cache=True, error_model="numpy")
def _rotate(T, cs, sn, sign):
    """``T <- T R`` (``sign = 1``) or ``T R^T`` (``sign = -1``): the plane rotations of the
    2x2 blocks of D applied to pairs of columns."""
    for j in range(T.shape[1] - 1):
        if sn[j] != 0.0 or cs[j] != 1.0:
            c, s = cs[j], sign * sn[j]
            for i in range(T.shape[0]):
                a, b = T[i, j], T[i, j + 1]
                T[i, j], T[i, j + 1] = a * c + b * s, b * c - a * s


TRSV_ROWS = 8
"""Up to this many rows are solved one by one with ``trsv``: OpenBLAS's ``trsm`` with the
triangle on the right is many times slower on a single row than ``trsv`` on the same
work."""

TRSM_WHOLE = 1024
"""From this order on the triangle is applied by one ``trsm``, which then runs at the rate
of dgemm, faster than the blocks of :data:`TRSM_BLOCK` columns
(benchmarks/README.md, "Measurements behind the package's constants")."""

TRSM_BLOCK = 64
"""Columns per block of the triangular solve of many rows (:func:`_triangular_rows`): the
parts below the diagonal blocks are applied by ``gemm``, which OpenBLAS runs faster than
``trsm`` at the pivots' sizes (the factor-rate benchmark measures the whole sweep)."""


@njit(cache=True, error_model="numpy")
def _triangular_rows(Lf, Y, trans, diag):
    """``Y <- Y op(Lf)^{-1}`` for the lower triangular Lf (``op(Lf) = Lf^T`` when ``trans``
    is :data:`tallskinny_np.lapack.T`) and rows Y with unit row stride (F-order, or a block
    of rows of an F-order array), by ``trsv`` per row, or by blocks of
    :data:`TRSM_BLOCK` columns: with ``X op(Lf) = Y`` split into column blocks, block j
    is ``(Y_j - sum_k X_k op(Lf)_kj) op(Lf)_jj^{-1}`` over the blocks k already solved
    (those left of j for ``Lf^T``, right of j for ``Lf``), one ``gemm`` and one ``trsm``."""
    r, p = Y.shape
    ld = Y.strides[1] // Y.itemsize if p > 1 else r
    if r <= TRSV_ROWS:
        for i in range(r):
            lapack.trsv(lapack.L, lapack.N if trans == lapack.T else lapack.T, diag, p, Lf, p,
                        Y, i, ld)
        return
    if p >= TRSM_WHOLE:
        lapack.trsm(lapack.R, lapack.L, trans, diag, r, p, 1.0, Lf, 0, p, Y, 0, ld)
        return
    nblocks = (p + TRSM_BLOCK - 1) // TRSM_BLOCK
    for b in range(nblocks):
        # Lf^T: blocks left to right, Lf: right to left
        j0 = (b if trans == lapack.T else nblocks - 1 - b) * TRSM_BLOCK
        j1 = min(j0 + TRSM_BLOCK, p)
        if trans == lapack.T and j0 > 0:       # Y_j -= X[:, :j0] Lf[j0:j1, :j0]^T
            lapack.gemm(lapack.N, lapack.T, r, j1 - j0, j0, -1.0, Y, 0, ld, Lf, j0, p, 1.0,
                        Y, j0 * ld, ld)
        if trans != lapack.T and j1 < p:       # Y_j -= X[:, j1:] Lf[j1:, j0:j1]
            lapack.gemm(lapack.N, lapack.N, r, j1 - j0, p - j1, -1.0, Y, j1 * ld, ld, Lf,
                        j0 * p + j1, p, 1.0, Y, j0 * ld, ld)
        lapack.trsm(lapack.R, lapack.L, trans, diag, r, j1 - j0, 1.0, Lf, j0 * (p + 1), p, Y,
                    j0 * ld, ld)


@njit(cache=True, error_model="numpy")
def solve_rows(kind, Lf, perm, cs, sn, lam, order, n_pos, Y):
    """``Y <- Y Q^{-1}`` (``Q^{-1} = G^{-T} S G^{-1}``, symmetric) for F-order Y (r x p)."""
    half_solve(kind, Lf, perm, cs, sn, lam, order, Y)
    Y[:, n_pos:] *= -1.0
    half_solve_transposed(kind, Lf, perm, cs, sn, lam, order, Y)


@njit(cache=True, error_model="numpy")
def onenorm(Q):
    """``||Q||_1`` of a symmetric F-order matrix from its lower triangle: column j's sum
    is its part on and below the diagonal plus row j's part left of it (added while
    walking the earlier columns). Four partial sums per column: a single one chains every
    addition on the previous one, several times slower (benchmarks/README.md,
    "Measurements behind the package's constants")."""
    p = Q.shape[0]
    col = np.zeros(p)
    for j in range(p):
        s0 = s1 = s2 = s3 = 0.0
        i = j + 1
        while i + 3 < p:
            a0, a1, a2, a3 = abs(Q[i, j]), abs(Q[i + 1, j]), abs(Q[i + 2, j]), abs(Q[i + 3, j])
            s0 += a0
            s1 += a1
            s2 += a2
            s3 += a3
            col[i] += a0
            col[i + 1] += a1
            col[i + 2] += a2
            col[i + 3] += a3
            i += 4
        for k in range(i, p):
            a0 = abs(Q[k, j])
            s0 += a0
            col[k] += a0
        col[j] += ((s0 + s1) + (s2 + s3)) + abs(Q[j, j])
    return col.max() if p else 0.0


@njit(cache=True, error_model="numpy")
def _rcond(kind, Lf, perm, cs, sn, lam, order, n_pos, anorm):
    if anorm == 0.0:
        return 0.0
    return 1.0 / (anorm * inverse_onenorm_estimate(kind, Lf, perm, cs, sn, lam, order, n_pos))


@njit(cache=True, error_model="numpy")
def inverse_onenorm_estimate(kind, Lf, perm, cs, sn, lam, order, n_pos):
    """Hager's and Higham's estimate of ``||Q^{-1}||_1`` (Q symmetric, so rows and columns
    alike): LAPACK's estimator (xLACN2) without its parallel start, a lower bound that is
    rarely off by more than a factor 3, from at most a dozen solves."""
    n = Lf.shape[0]

    def apply(Y):                                    # Y Q^{-1}, a row at a time
        X = Y.copy()
        solve_rows(kind, Lf, perm, cs, sn, lam, order, n_pos, X)
        return X

    x = np.full((1, n), 1.0 / n)
    y = apply(x)
    est = np.abs(y).sum()
    for _ in range(5):
        z = apply(np.where(y >= 0, 1.0, -1.0))
        j = int(np.argmax(np.abs(z[0])))
        if np.abs(z[0, j]) <= (z * x).sum():
            break
        x = np.zeros((1, n))
        x[0, j] = 1.0
        y = apply(x)
        new = np.abs(y).sum()
        if not new > est:
            break
        est = new
    alt = np.empty((1, n))
    for i in range(n):
        alt[0, i] = (1.0 if i % 2 == 0 else -1.0) * (1.0 + i / max(n - 1, 1))
    return max(est, 2.0 * np.abs(apply(alt)).sum() / (3.0 * n))
