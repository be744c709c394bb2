"""One hidden layer of the Riccati sweep, compiled (docs/math.md section 4.6, "Stage-wise
(Riccati) elimination").

For a hidden layer with compact blocks Dx ``(B, m, q)``, Dz ``(B, m, n)``, A ``(m, q, q)``,
S ``(B, n, n)``, C ``(m, q, B, n)`` (:mod:`tallskinny_np.blocks`) and the symmetric
``P = P_l`` (``a x a``, ``a = B m``, samples outermost), :func:`factor_stage` forms::

    Qxx = A + eps I + Dx^T P Dx      (lower triangle)
    Qxy = C + Dx^T P Dz,  Qyy = S + Dz^T P Dz

factors ``Qxx = G S G^T`` (:mod:`tallskinny_np.pivot`), and returns ``Wt = (G^{-1} Qxy)^T``
and ``P_{l-1} = Qyy - W^T S W`` (two ``syrk``, one triangle, then mirrored). The gain
``K_l = -Qxx^{-1} Qxy = -G^{-T} S W`` is never formed: the substitutions apply it through
W, which costs ``p^2 r`` per right-hand side instead of ``p^2 a`` once.

Every product is a BLAS call on the stored arrays, with no copy: Dx is nonzero only where a
row's output unit equals the column's, Dz only on sample-diagonal blocks, so each congruence
is a short loop of ``gemm`` on strided submatrices (the leading dimension steps over the
other units or samples). The transposed intermediates ``Dx^T P`` and ``Dz^T P`` are formed
directly (P is symmetric), so that the second factor is again applied from the right.

Flops per hidden layer (p = m q, a = B m, a' = B n): ``2 B a p`` (``Dx^T P``),
``B p^2`` (Qxx, one triangle), ``2 m a' p`` (Qxy, from ``Dx^T P``), ``m a a'``
(``Dz^T P``, its blocks on and below the diagonal), ``m a'^2`` (Qyy, one triangle),
``p^3 / 3`` (the factor), ``p^2 a'`` (W) and ``p a'^2`` (P_{l-1}, one triangle). Matrices
are column-major (F-order); float64 only.

Threads: with :data:`tallskinny_np.backend.SWEEP_THREADS` at 2 or more (default 1) the
stage runs on two threads (numba ``prange``, the BLAS calls inside each one
single-threaded by :func:`tallskinny_np.backend.sweep_threads`): ``(Qxx, Qxy)``
beside Qyy, then half of W's rows each, then two parts of the update of P with about
half of the flops each. The split products round differently from the whole ones, so
results on one and on two threads agree to rounding, not bit for bit.

The substitutions, per right-hand side block (r columns, rows as in
:func:`tallskinny_np.pivot.half_solve`): backward ``u = S G^{-1} (-g + Dx^T p_l)``,
``p_{l-1} = Dz^T p_l - W^T u``; forward ``x_l = -G^{-T} (S W y_{l-1} + u)``,
``y_l = Dx x_l + Dz y_{l-1}``.
"""
import threading

import numpy as np
import numba
from numba import njit, prange

from . import lapack, pivot


def two_threads():
    """Whether the compiled stages split their work in two (module docstring, "Threads"):
    numba runs more than one thread here (:func:`tallskinny_np.backend.sweep_threads` sets
    how many). Decided outside the compiled code, which would otherwise not be cached."""
    return numba.get_num_threads() > 1


RETAIN_BYTES = 32 * 2 ** 20
"""The largest :func:`workspace` (in bytes) that a thread keeps for its next sweep; it is
freed with its thread. 0 keeps none (a process with many long-lived threads that all
factor may want less than 32 MiB each)."""

_retained = threading.local()


def workspace(shapes):
    """The buffers that the compiled stages of a sweep reuse, stage after stage, for
    stages of the given ``(B, m, q, n)``: ``(scratch, (P_even, P_odd))``, the scratch for
    ``Dx^T P`` and ``Dz^T P`` and two buffers that ``P_{l-1}`` alternates between (the
    stage of layer l reads ``P_l`` from one and writes ``P_{l-1}`` into the other).

    Fresh memory costs a page fault per 4 kB page on its first touch, which on a virtual
    machine can take as long as the flops of a small stage on the page's entries, so each
    thread keeps its last workspace of at most :data:`RETAIN_BYTES` for its next sweep, as
    FFT libraries keep their plans. The sweep's results never point into it."""
    scratch, size_P = 0, 0
    for B, m, q, n in shapes:
        scratch = max(scratch, B * m * (m * q + B * n))
        size_P = max(size_P, (B * n) ** 2)
    kept = getattr(_retained, "buffers", None)
    if kept is not None and kept[0].size >= scratch and kept[1][0].size >= size_P:
        return kept
    buffers = np.empty(scratch), (np.empty(size_P), np.empty(size_P))
    if buffers[0].nbytes + 2 * buffers[1][0].nbytes <= RETAIN_BYTES:
        _retained.buffers = buffers
    return buffers


@njit(cache=True, error_model="numpy", parallel=True)
def factor_stage(Dx, Dz, A, S, with_C, C, Qxx, P, eps, positive_definite, split, scratch,
                 P_out):
    """The stage of one hidden layer (module docstring). ``P`` is F-order, symmetric and
    full; A, S may be None (zero blocks). C is a C-order ``(p, a')`` array: the dense
    block of :func:`tallskinny_np.kernels.cross_block` with ``with_C``, else storage of
    no meaning (C = 0); it is overwritten by ``Wt``. Qxx is a zero F-order ``p x p`` array,
    overwritten by the factor. Both are the caller's: NumPy asks the kernel to back large
    allocations by huge pages, which the BLAS calls on them run faster with, and numba's
    own allocations do not. ``scratch`` and ``P_out`` are buffers of
    :func:`workspace` (``P_out`` not P's). Returns ``(factor, Wt, P_prev)``: ``factor``
    the tuple of :func:`tallskinny_np.pivot.factor` with the factor matrix first, ``Wt``
    (``a' x p``, F-order) and ``P_prev`` (``a' x a'``, F-order, full, in ``P_out``).

    ``(Qxx, Qxy)`` (both from ``Dx^T P``) and Qyy do not depend on each other: they are
    formed side by side, one per thread, and with ``split`` the update of P is split in
    two (module docstring, "Threads")."""
    B, m, q = Dx.shape
    n = Dz.shape[2]
    p, a, a1 = m * q, B * m, B * n
    if scratch.size < a * (p + a1) or P_out.size < a1 * a1:
        raise ValueError("factor_stage: workspace too small for the stage")
    YT = scratch[:a * p].reshape((a, p)).T
    ZT = scratch[a * p:a * (p + a1)].reshape((a, a1)).T
    Pn = P_out[:a1 * a1].reshape((a1, a1)).T
    Wt = C.reshape(p, a1).T                  # Qxy^T is formed in C's storage
    for task in prange(2):
        if task == 0:
            _fill_pivot_block(Dx, A, P, eps, YT, Qxx)
            _fill_qxy(Dz, YT, with_C, Wt)
        else:
            _fill_qyy(Dz, S, P, ZT, Pn)
    kind, perm, cs, sn, lam, order, n_pos, anorm, rcond = pivot.factor(Qxx, positive_definite)
    factor = (Qxx, kind, perm, cs, sn, lam, order, n_pos, anorm, rcond)
    schur_update(factor, Wt, Pn, split)
    return factor, Wt, Pn


@njit(cache=True, error_model="numpy")
def _fill_qxy(Dz, YT, with_C, Wt):
    """``Wt <- Qxy^T = C^T + Dz^T Y`` (F-order ``a' x p``, holding ``C^T`` when
    ``with_C``) from the F-order ``YT = Dx^T P`` (``p x a``) of :func:`_fill_pivot_block`:
    Dz is block-diagonal, so block row t of ``Qxy^T`` is ``Dz[t]^T`` times the rows of
    sample t of Y, ``2 a' p m`` flops instead of the ``2 a' p B`` of ``(Dz^T P) Dx``."""
    B, m, n = Dz.shape
    p, a1 = YT.shape[0], B * n
    for t in range(B):
        lapack.gemm(lapack.N, lapack.T, n, p, m, 1.0, Dz, t * m * n, n, YT, t * m * p, p,
                    1.0 if with_C else 0.0, Wt, t * n, a1)


@njit(cache=True, error_model="numpy")
def _fill_qyy(Dz, S, P, ZT, Pn):
    """The lower triangle of ``Pn <- Qyy = S + Z^T Dz`` (Pn's contents not read), with
    ``ZT <- Dz^T P`` formed only in its blocks on and below the block diagonal, all that
    Qyy's lower triangle reads; both F-order; S may be None."""
    B, m, n = Dz.shape
    a, a1 = B * m, B * n
    # Z^T = Dz^T P (a' x a): block row t is Dz[t]^T P[(t, .), :], here its samples up to t
    for t in range(B):
        lapack.gemm(lapack.N, lapack.T, n, (t + 1) * m, m, 1.0, Dz, t * m * n, n, P,
                    t * m * a, a, 0.0, ZT, t * n, a1)
    for t in range(B):                       # Z^T Dz, columns of sample t from its rows on
        lapack.gemm(lapack.N, lapack.T, a1 - t * n, n, m, 1.0, ZT, t * m * a1 + t * n, a1,
                    Dz, t * m * n, n, 0.0, Pn, t * n * (a1 + 1), a1)
    if S is not None:
        for t in range(B):
            Pn[t * n:(t + 1) * n, t * n:(t + 1) * n] += S[t]


@njit(cache=True, error_model="numpy", parallel=True)
def schur_update(factor, Wt, Pn, split):
    """``Wt <- (G^{-1} Qxy)^T = W^T`` and ``Pn <- Pn - W^T S W`` (``Qxy^T Qxx^{-1} Qxy``
    subtracted on the lower triangle, then mirrored) for the factor ``Qxx = G S G^T`` and
    F-order ``Wt = Qxy^T`` (``a' x p``), ``Pn`` (``a' x a'``; its lower triangle is read).
    Also the loss stages' update: the dense one's with its factor and ``Qxy``, the
    structured one's capacitance term (:func:`tallskinny_np.loss_stage.loss_update`).

    With ``split`` (:func:`two_threads`; module docstring, "Threads") two threads each
    solve half of Wt's rows; then one updates the two diagonal blocks of ``Pn``'s lower
    triangle (``syrk``) while the other updates the block below them (``gemm``), about
    half of the flops each."""
    Lf, kind, perm, cs, sn, lam, order, n_pos = factor[:8]
    a1, p = Wt.shape
    h = a1 // 2 if split else a1             # unsplit: the first part is all of it
    for task in prange(2):
        lo, hi = (0, h) if task == 0 else (h, a1)
        pivot.half_solve(kind, Lf, perm, cs, sn, lam, order, Wt[lo:hi])
    for task in prange(2):
        if task == 0:                        # the diagonal blocks
            _signed_syrk(Wt, 0, h, n_pos, p, a1, Pn, 0)
            _signed_syrk(Wt, h, a1 - h, n_pos, p, a1, Pn, h * (a1 + 1))
        else:                                # the block below them
            lapack.gemm(lapack.N, lapack.T, a1 - h, h, n_pos, -1.0, Wt, h, a1, Wt, 0, a1,
                        1.0, Pn, h, a1)
            lapack.gemm(lapack.N, lapack.T, a1 - h, h, p - n_pos, 1.0, Wt, h + n_pos * a1,
                        a1, Wt, n_pos * a1, a1, 1.0, Pn, h, a1)
    _mirror_lower(Pn, split)


@njit(cache=True, error_model="numpy", inline="always")
def _signed_syrk(Y, iy, n, n_pos, k, ld, Pn, ip):
    """``Pn <- Pn - Y1 Y1^T + Y2 Y2^T`` on the lower triangle of the ``n x n`` block of
    the F-order Pn at offset ip (leading dimension ``ld``, as Y's), for the ``n x k`` block
    of Y at offset iy whose first ``n_pos`` columns are Y1 and the rest Y2."""
    lapack.syrk(lapack.L, lapack.N, n, n_pos, -1.0, Y, iy, ld, 1.0, Pn, ip, ld)
    lapack.syrk(lapack.L, lapack.N, n, k - n_pos, 1.0, Y, iy + n_pos * ld, ld, 1.0, Pn, ip,
                ld)


@njit(cache=True, error_model="numpy", parallel=True)
def _mirror_lower(X, split):
    """Copy the lower triangle of the square F-order X onto its upper one, by tiles (a
    column of the lower triangle is a row of the upper one, far apart in memory), each
    off the diagonal as one transposed slice, faster than an element loop
    (benchmarks/README.md, "Measurements behind the package's constants"). With
    ``split`` two threads take alternate columns of tiles."""
    n = X.shape[0]
    parts = 2 if split else 1
    # A tile's rows are a column's length apart; where that is a multiple of 4 kB they all
    # fall in one cache set and evict each other beyond 8 (measured, one thread: n = 1024
    # 1.2 ms with 16, 0.55 ms with 8; n = 1000 0.16 ms with 16, 0.33 ms with 8)
    tile = 8 if X.strides[1] % 4096 == 0 else 16
    for task in prange(parts):
        for j0 in range(task * tile, n, parts * tile):
            j1 = min(j0 + tile, n)
            for j in range(j0, j1):
                for i in range(j + 1, j1):
                    X[j, i] = X[i, j]
            for i0 in range(j1, n, tile):
                i1 = min(i0 + tile, n)
                X[j0:j1, i0:i1] = X[i0:i1, j0:j1].T


@njit(cache=True, error_model="numpy")
def first_stage(Dx, A, P, eps, positive_definite):
    """Factor of layer 1's ``Qxx = A + eps I + Dx^T P Dx`` (no Qxy: ``y_0 = 0``), with A
    compact ``(m, q, q)`` or None; the factor tuple of :func:`factor_stage`."""
    Qxx = pivot_block(Dx, A, P, eps)
    kind, perm, cs, sn, lam, order, n_pos, anorm, rcond = pivot.factor(Qxx, positive_definite)
    return (Qxx, kind, perm, cs, sn, lam, order, n_pos, anorm, rcond)


@njit(cache=True, error_model="numpy")
def pivot_block(Dx, A, P, eps):
    """The lower triangle of ``Qxx = A + eps I + Dx^T P Dx`` (F-order)."""
    B, m, q = Dx.shape
    p, a = m * q, B * m
    Qxx = np.zeros((p, p)).T
    _fill_pivot_block(Dx, A, P, eps, np.empty((a, p)).T, Qxx)
    return Qxx


@njit(cache=True, error_model="numpy")
def _fill_pivot_block(Dx, A, P, eps, YT, Qxx):
    """:func:`pivot_block` into the zero F-order ``Qxx``, with the F-order ``YT``
    (``p x a``) for ``Dx^T P``."""
    B, m, q = Dx.shape
    p, a = m * q, B * m
    # Y^T = Dx^T P (p x a): block row j is Dx_j^T P[(t, j), :] over the samples t
    for j in range(m):
        lapack.gemm(lapack.N, lapack.T, q, a, B, 1.0, Dx, j * q, m * q, P, j * a, m * a,
                    0.0, YT, j * q, p)
    if A is not None:
        for k in range(m):
            Qxx[k * q:(k + 1) * q, k * q:(k + 1) * q] = A[k]
    for i in range(p):
        Qxx[i, i] += eps
    for i in range(m):                       # columns of unit i, rows from i on
        lapack.gemm(lapack.N, lapack.T, p - i * q, q, B, 1.0, YT, i * p + i * q, m * p,
                    Dx, i * q, m * q, 1.0, Qxx, i * q * (p + 1), p)


def fortran_symmetric(P):
    """The exactly symmetric P as an F-order array: a C-order P is its own F-order
    transpose, so only a P in neither order is copied."""
    if P.flags.f_contiguous:
        return P
    return P.T if P.flags.c_contiguous else np.asfortranarray(P)


@njit(cache=True, error_model="numpy")
def backward(factor, Wt, Dx, Dz, g, pv):
    """The backward substitution of one hidden layer: from ``g`` (``x_l``'s right-hand
    sides, ``(m, q, r)``) and ``p_l`` (``(B, m, r)``, or None for ``p_L = 0``) the row block
    ``u = S G^{-1} qx`` (F-order ``r x p``) and ``p_{l-1}`` ``(B, n, r)`` (None when Dz is
    None)."""
    Lf, kind, perm, cs, sn, lam, order, n_pos = factor[:8]
    B, m, q = Dx.shape
    r = g.shape[2]
    u = np.empty((m * q, r)).T
    for k in range(m):
        for j in range(q):
            for c in range(r):
                u[c, k * q + j] = -g[k, j, c]
    if pv is not None:
        for s in range(B):
            for k in range(m):
                if r == 1:                   # one column: the loop over j contiguous
                    pk = pv[s, k, 0]
                    for j in range(q):
                        u[0, k * q + j] += Dx[s, k, j] * pk
                    continue
                for j in range(q):
                    d = Dx[s, k, j]
                    for c in range(r):
                        u[c, k * q + j] += d * pv[s, k, c]
    pivot.half_solve(kind, Lf, perm, cs, sn, lam, order, u)
    u[:, n_pos:] *= -1.0
    if Dz is None:
        return u, None
    n = Dz.shape[2]
    out = np.zeros((B * n, r))       # its C-order storage is the F-order one of the rows
    if pv is not None:
        for s in range(B):
            for k in range(m):
                if r == 1:
                    pk = pv[s, k, 0]
                    for i in range(n):
                        out[s * n + i, 0] += Dz[s, k, i] * pk
                    continue
                for i in range(n):
                    d = Dz[s, k, i]
                    for c in range(r):
                        out[s * n + i, c] += d * pv[s, k, c]
    # p_{l-1} -= W^T u: as rows, out^T -= u Wt^T; out's C-order storage is out^T's F-order
    if r == 1:
        lapack.gemv(lapack.N, B * n, m * q, -1.0, Wt, 0, B * n, u, 0, 1, 1.0, out, 0, 1)
    else:
        lapack.gemm(lapack.N, lapack.T, r, B * n, m * q, -1.0, u, 0, r, Wt, 0, B * n, 1.0,
                    out, 0, r)
    return u, out.reshape(B, n, r)


@njit(cache=True, error_model="numpy")
def forward(factor, Wt, Dx, Dz, u, y):
    """The forward substitution of one hidden layer: ``x_l`` ``(m, q, r)`` from the row
    block u of :func:`backward` and ``y_{l-1}`` ``(B, n, r)`` (None for ``y_0 = 0``), and
    ``y_l = Dx x_l + Dz y_{l-1}`` ``(B, m, r)``."""
    Lf, kind, perm, cs, sn, lam, order, n_pos = factor[:8]
    B, m, q = Dx.shape
    r = u.shape[0]
    z = np.empty((u.shape[1], r)).T        # F-order, like u
    z[:, :] = u
    if y is not None:                         # z = S W y + u, as rows: y^T Wt S + u
        n = Dz.shape[2]
        zy = np.empty((m * q, r)).T
        yc = np.ascontiguousarray(y)
        if r == 1:
            lapack.gemv(lapack.T, B * n, m * q, 1.0, Wt, 0, B * n, yc, 0, 1, 0.0, zy, 0, 1)
        else:
            lapack.gemm(lapack.N, lapack.N, r, m * q, B * n, 1.0, yc, 0, r, Wt, 0, B * n,
                        0.0, zy, 0, r)
        zy[:, n_pos:] *= -1.0
        z += zy
    pivot.half_solve_transposed(kind, Lf, perm, cs, sn, lam, order, z)
    x = np.empty((m, q, r))
    for k in range(m):
        for j in range(q):
            for c in range(r):
                x[k, j, c] = -z[c, k * q + j]
    yn = np.zeros((B, m, r))
    for s in range(B):
        for k in range(m):
            if r == 1:                       # one column: one sum in a register
                acc = 0.0
                for j in range(q):
                    acc += Dx[s, k, j] * x[k, j, 0]
                if y is not None:
                    for i in range(Dz.shape[2]):
                        acc += Dz[s, k, i] * y[s, i, 0]
                yn[s, k, 0] = acc
                continue
            for j in range(q):
                d = Dx[s, k, j]
                for c in range(r):
                    yn[s, k, c] += d * x[k, j, c]
    if y is not None and r > 1:
        n = Dz.shape[2]
        for s in range(B):
            for k in range(m):
                for i in range(n):
                    d = Dz[s, k, i]
                    for c in range(r):
                        yn[s, k, c] += d * y[s, i, c]
    return x, yn
