"""Riccati stages in the range of the batch (docs/math.md section 4.8, "Wide end layers").

At ImageNet scale layer 1 (``3 r^2`` inputs) has far more parameters than the tall-skinny
middle, so its Qxx must not be formed, let alone factored densely (O(p^3)); nor must a
hidden layer's whose fan-in exceeds the batch. The stages return a :class:`RangeFactor`,
with the ``solve``, ``inertia`` and ``rcond`` of the factors of
:mod:`tallskinny_np.symmetric`, so the Riccati sweep uses it like any other factor.

**Stage 1** (no gain: ``y_0 = 0``). ``Qxx_1 = A_1 + eps I + Dx_1^T P_1 Dx_1`` with
``A_1 = Phi diag(R) Phi^T`` and ``Dx_1^T = Phi diag(S1)`` for ``Phi = I_m (x) Zt^T``: apart from
``eps I`` it lives in ``range(Phi)``. With ``Zt = U diag(sv) V^T`` (thin SVD, rank r) and the
orthonormal ``Q = I_m (x) V``::

    Qxx_1 = Q T Q^T + eps (I - Q Q^T),   T = eps I + Q^T (A_1 + Dx_1^T P_1 Dx_1) Q

where ``T`` (``m r x m r``, ``r <= min(B, q)``) is built from ``Dx_1 V`` and ``Zt V`` by the
same formulas as the dense blocks. So ``Qxx_1^{-1} = Q T^{-1} Q^T + (I - Q Q^T)/eps`` and
``In(Qxx_1) = In(T) + m (q - r)`` eigenvalues equal to eps. Cost O(B q (B + m) + (m r)^3).

**Range of the batch** (hidden layers). The same holds at every hidden layer l: its A and
``Dx_l^T P_l Dx_l`` live in the range of ``I_m (x) V_l``, V_l an orthonormal basis of the
span of the layer's B input vectors (``r <= min(B, q)``), so ``Qxx_l`` is factored through
its ``m r``-square T by the same stage. Qxy splits the same way: ``Y = Q^T Qxy`` and
its part outside the range, ``Xp``, which comes from C's ``delta`` term alone and is a
Kronecker product, so ``Qxy^T Qxx^{-1} Qxy = Y^T T^{-1} Y + Xp^T Xp / eps`` and the gain
``K_l`` is applied through T's factor without being formed (:func:`range_gain`). When
the batch is smaller than the fan-in this replaces the ``p^3/3`` factor, the ``p^2 a``
solve and the ``p a^2`` update of P by ``(m r)^3/3``, ``(m r)^2 a`` and ``m r a^2``.

The loss layer's structured stage is :mod:`tallskinny_np.loss_stage`.
"""
from typing import NamedTuple

import numpy as np
from numba import njit

from . import pivot, stage
from .backend import array_module
from .blocks import FirstLayer, GramA, block_diagonal, gram_blocks
from .congruences import add_sample_blocks, dx_congruence, dz_congruences
from .symmetric import sym_factor


class RangeFactor(NamedTuple):
    """``Qxx = Q T Q^T + eps (I - Q Q^T)``, ``Q = I_m (x) V`` (module docstring, "Stage 1"
    and "Range of the batch"), with the ``inertia`` and ``rcond`` of Qxx."""
    V: object                 # (q, r): orthonormal basis of the batch's input vectors
    fT: object                # the factor of T (m r x m r), from sym_factor
    m: int
    eps: float
    inertia: tuple
    rcond: float

    def solve(self, u, outside=None):
        """``Qxx^{-1} u = Q T^{-1} Q^T u + (I - Q Q^T) u / eps`` for u (m q, nr), by batched
        products (matmul), one per output unit. ``outside`` (the shape of u) gives the part
        outside ``range(Q)`` in u's stead: the substitution passes ``-g_l`` for
        ``qx = -g_l + Dx^T p_l``, whose second term lies in ``range(Q)``, where its
        computed part outside it is rounding that ``1 / eps`` would amplify."""
        V, m = self.V, self.m
        q, r = V.shape
        nr = u.shape[-1]
        uq = u.reshape(m, q, nr)
        c = V.T @ uq                                       # Q^T u, (m, r, nr)
        x = V @ self.fT.solve(c.reshape(m * r, nr)).reshape(m, r, nr)
        if r < q:
            if outside is not None:
                uq = outside.reshape(m, q, nr)
                c = V.T @ uq
            x += (uq - V @ c) / self.eps
        return x.reshape(m * q, nr)

    def in_range(self, x):
        """``Q Q^T x`` for x ``(m, q, nr)``: what Dx sees of x (``Dx (I - Q Q^T) = 0``),
        without the rounding of x's large part outside ``range(Q)``."""
        return self.V @ (self.V.T @ x)


def _inertia_of_eps(n, eps):
    """The inertia of ``eps I_n``."""
    return (n, 0, 0) if eps < 0 else (0, 0, n) if eps > 0 else (0, n, 0)


def range_basis(rows):
    """V (``q x r``): an orthonormal basis of the span of a layer's input vectors
    ``zt_s``, the rows of ``Zt`` (B x q), in which Dx's rows, A's blocks and all of C but
    its ``delta`` term live (module docstring, "Range of the batch"): the right singular
    vectors of ``Zt`` above ``max(B, q) eps_mach sv_max``."""
    xp = array_module(rows)
    _, sv, VT = xp.linalg.svd(rows, full_matrices=False)
    tol = max(rows.shape) * np.finfo(rows.dtype).eps * float(sv[0]) if sv.size else 0.0
    return VT[:int((sv > tol).sum())].T


def range_stage(in_basis, P, eps, positive_definite=False, strategy=None):
    """The :class:`RangeFactor` of ``Qxx`` (module docstring, "Stage 1" and "Range of the
    batch"), for layer 1 or a hidden layer whose blocks in the basis are ``in_basis``
    (:func:`in_range`). On NumPy in float64 (``strategy=None``) T's
    lower triangle is formed by the compiled congruence of the dense stage
    (:func:`tallskinny_np.stage.pivot_block`, with ``Dx V`` for Dx) and factored by the
    compiled factorization that solves and counts; otherwise by the array-module
    congruence and :func:`sym_factor`."""
    V, _, DxV, AV = in_basis
    xp = array_module(DxV)
    m, r = DxV.shape[1], V.shape[1]
    if xp is np and DxV.dtype == np.float64 and strategy is None:
        T = stage.pivot_block(DxV, AV, stage.fortran_symmetric(P), eps)
        fT = pivot.PivotFactor.of((T,) + pivot.factor(T, bool(positive_definite)))
        return _range_factor(V, fT, m, eps, fT.anorm)
    T = dx_congruence(DxV, P)
    if AV is not None:
        T = T + block_diagonal(xp, AV)
    T[xp.arange(m * r), xp.arange(m * r)] += eps
    fT = sym_factor(T, positive_definite=positive_definite, strategy=strategy)
    return _range_factor(V, fT, m, eps, float(xp.abs(T).sum(axis=0).max()))


def in_range(blocks, blk):
    """``(V, Zt V, Dx V, A in the basis)``: the basis of :func:`range_basis`, the layer's
    input rows ``(B, r)``, Dx ``(B, m, r)`` and A ``(m, r, r)`` (None for a zero A) in it,
    ``V^T A_k V = (Zt V)^T diag(R[:, k]) (Zt V)`` by eq. (2.11) (``2 B m r^2`` flops
    where ``V^T A_k V`` costs ``2 m q r (q + r)``)."""
    rows = blocks.input if isinstance(blk, FirstLayer) else blk.Zt
    V = range_basis(rows)
    ZtV = rows @ V
    B, m, q = blk.Dx.shape
    DxV = (blk.Dx.reshape(B * m, q) @ V).reshape(B, m, -1)   # one gemm, not B small ones
    AV = None
    if blk.A is not None:
        AV = gram_blocks(blk.A.R if isinstance(blk.A, GramA) else blk.R, ZtV)
    return V, ZtV, DxV, AV


def _range_factor(V, fT, m, eps, tnorm):
    """The :class:`RangeFactor` of ``Qxx = Q T Q^T + eps (I - Q Q^T)`` from T's factor fT
    and ``tnorm = ||T||_1``: eq. (4.21) for the inertia, and for rcond the smaller of T's
    and ``|eps| / max(|eps|, ||T||_1)`` when Q does not span everything."""
    q, r = V.shape
    n_perp = m * (q - r)
    rcond = fT.rcond
    if n_perp:                                             # eps = 0: Qxx is singular
        rcond = min(rcond, abs(eps) / max(abs(eps), tnorm) if eps else 0.0)
    counts = tuple(a + b for a, b in zip(fT.inertia, _inertia_of_eps(n_perp, eps)))
    return RangeFactor(V, fT, m, eps, counts, rcond)


class RangeRows(NamedTuple):
    """What the compiled substitutions of a hidden layer's range stage
    (:func:`compiled_range_stage`) keep besides T's factor: ``Wt = (G^{-1} Y)^T``
    (``a' x m r``, F-order), ``DxV = Dx V`` ``(B, m, r)``, and ``Pp`` of Xp (None when
    Qxy lies in ``range(Q)``; Xp's other factor is the layer's ``bS1``)."""
    Wt: object
    DxV: object
    Pp: object


def compiled_range_stage(blocks, blk, P, eps, positive_definite, scratch, P_out):
    """A hidden layer's range stage on NumPy in float64: ``(RangeFactor, RangeRows,
    P_{l-1})`` (module docstring, "Range of the batch"), with the buffers of
    :func:`tallskinny_np.stage.workspace` (``P_{l-1}`` in ``P_out``).

    T, ``Y = Q^T Qxy`` and ``P_{l-1} = Qyy - W^T S W`` are the compiled dense stage
    (:func:`tallskinny_np.stage.factor_stage`) run on the layer's blocks in the basis
    (``Dx V``, and ``V^T A V`` and ``V^T C`` from the factors of A and C,
    :func:`in_range` and :func:`cross_in_range`), so neither Qxy (``p x a'``) nor C is
    read and ``Y`` costs ``2 a' nnz(Dx V)`` where ``Q^T Qxy`` would cost
    ``2 a' nnz(Dx) + 2 p r a'``; then Xp's term ``(g g^T) (x) (I - V V^T)[:n, :n] / eps``
    is subtracted."""
    V, ZtV, DxV, AV = in_range(blocks, blk)
    B, m, r = DxV.shape
    CV = np.empty((m * r, B * blk.Dz.shape[2]))
    if blk.R is not None:
        cross_in_range(blk.R, blk.W, ZtV, blk.bS1, V, CV.reshape(m, r, B, -1))
    arrays, Wt, Pn = stage.factor_stage(DxV, blk.Dz, AV, blk.S, blk.R is not None, CV,
                                        np.zeros((m * r, m * r), order="F"),
                                        stage.fortran_symmetric(P), eps, positive_definite,
                                        stage.two_threads(), scratch, P_out)
    fT = pivot.PivotFactor.of(arrays)
    f = _range_factor(V, fT, DxV.shape[1], eps, fT.anorm)
    Pp = outside_range(blk.bS1, V, eps, Pn.T)              # Pn.T: C-order, symmetric
    return f, RangeRows(Wt, DxV, Pp), Pn


@njit(cache=True, error_model="numpy")
def cross_in_range(R, W, ZtV, bS1, V, CV):
    """``V^T C`` into CV ``(m, r, B, n)`` for a hidden layer (``V^T`` on each unit's block)
    from the factors of C, eq. (2.13): ``(V^T C)[k, c, t, i] = R[t, k] W[k, i] (Zt V)[t, c]
    + bS1[t, k] V[i, c]``, ``3 m r B n`` flops where the product with C costs
    ``2 m q r B n``."""
    B, m = R.shape
    n, r = W.shape[1], V.shape[1]
    for k in range(m):
        for c in range(r):
            for t in range(B):
                a, g = R[t, k] * ZtV[t, c], bS1[t, k]
                for i in range(n):
                    CV[k, c, t, i] = a * W[k, i] + g * V[i, c]


def outside_range(g, V, eps, Qyy):
    """``Pp = (I - V V^T)[:, :n]`` (``q x n``) and ``Qyy -= (g g^T) (x) Pp[:n] / eps``
    in place for the C-order ``Qyy`` (``B n x B n``): the part of Qxy outside
    ``range(Q)``, from the coefficients g ``(B, m)`` of C's delta term (``b S1`` of a
    hidden layer, G of the loss layer; module docstring, "Range of the batch"); None, and
    Qyy untouched, when Qxy lies in ``range(Q)`` (or g is None: no delta term)."""
    xp = array_module(Qyy)
    q, r = V.shape
    if r == q or g is None:
        return None
    B = g.shape[0]
    n = Qyy.shape[0] // B
    Pp = -V @ V[:n].T                                      # (I - V V^T)[:, :n]
    Pp[xp.arange(n), xp.arange(n)] += 1.0
    G = g @ g.T
    # eps = 0: Qxx is singular off range(Q) (rcond 0, so the sweep stops there, or counts
    # on past it with inf, as past any zero pivot)
    with np.errstate(divide="ignore", invalid="ignore"):
        F = Pp[:n] / eps
        if xp is np and Qyy.dtype == np.float64:           # compiled, as the stages
            _subtract_kronecker(Qyy, G, F)
        else:
            Qyy.reshape(B, n, B, n)[...] -= G[:, None, :, None] * F[None, :, None, :]
    return Pp


@njit(cache=True, error_model="numpy")
def _subtract_kronecker(Qyy, G, F):
    """``Qyy -= G (x) F`` in place for the C-order ``Qyy`` (``B n x B n``), G ``(B, B)``
    and F ``(n, n)``: one pass over Qyy, where the broadcast product makes a temporary as
    large and passes over both."""
    B, n = G.shape[0], F.shape[0]
    for s in range(B):
        for i in range(n):
            for t in range(B):
                g = G[s, t]
                for j in range(n):
                    Qyy[s * n + i, t * n + j] -= g * F[i, j]


def _outside_product(bS1, Pp, y, eps):
    """``Xp y / eps`` ``(m, q, nr)`` for y ``(B n, nr)`` or ``(B, n, nr)``."""
    B, m = bS1.shape
    q = Pp.shape[0]
    nr = y.shape[-1]
    t = Pp @ y.reshape(B, -1, nr)                          # (B, q, nr)
    return (bS1.T @ t.reshape(B, q * nr)).reshape(m, q, nr) / eps


def range_backward(f, rows, blk, g, pv):
    """The backward substitution of a compiled range stage: ``(k_l, p_{l-1})`` from ``g``
    ``(m, q, r)`` and ``p_l`` ``(B, m, r)`` or None. With ``qx = -g + Dx^T p_l``,
    ``k_l = -Q T^{-1} Q^T qx - (I - Q Q^T) qx / eps`` and ``Dx^T p_l`` in ``range(Q)``:
    the part in the range is :func:`tallskinny_np.stage.backward` on ``Q^T g`` with
    ``Dx V``, the rest is ``kp = (I - Q Q^T) g / eps``, and ``p_{l-1}`` gains
    ``Xp^T kp = sum_k bS1[:, k] kp[k, :n]``. ``k_l`` is kept as ``(u, kp)`` for
    :func:`range_forward` (kp None when Q spans everything)."""
    V = f.V
    q, r = V.shape
    gT = V.T @ g                                           # (m, r, nr), C-order
    u, pn = stage.backward(f.fT.arrays, rows.Wt, rows.DxV, blk.Dz, gT, pv)
    kp = (g - V @ gT) / f.eps if r < q else None
    if rows.Pp is not None:
        m, n, nr = g.shape[0], blk.Dz.shape[2], g.shape[2]
        pn += (blk.bS1 @ kp[:, :n].reshape(m, n * nr)).reshape(-1, n, nr)
    return (u, kp), pn


def range_forward(f, rows, blk, k, y):
    """The forward substitution of a compiled range stage: ``(x_l, y_l)`` from the
    ``k_l = (u, kp)`` of :func:`range_backward` and ``y_{l-1}`` ``(B, n, r)``:
    ``x_l = Q x_T + kp - Xp y_{l-1} / eps`` with ``x_T`` from
    :func:`tallskinny_np.stage.forward` (``Dx V``), and ``y_l = Dx V x_T + Dz y_{l-1}``
    (Dx annihilates the part outside the range)."""
    u, kp = k
    xT, yn = stage.forward(f.fT.arrays, rows.Wt, rows.DxV, blk.Dz, u, y)
    x = f.V @ xT
    if kp is not None:
        x += kp
    if rows.Pp is not None:
        x -= _outside_product(blk.bS1, rows.Pp, y, f.eps)
    return x, yn


def range_gain(in_basis, f, blk, P):
    """``(K_l, Qxy_l, P_{l-1})`` of a hidden layer's array-module range stage f (module
    docstring, "Range of the batch") from ``P = P_l`` and the layer's blocks in the basis
    (:func:`in_range`, as :func:`range_stage` took them); ``K_l`` as the operator
    :class:`RangeGain`, ``Qxy_l`` as :class:`RangeCross`, neither formed: only
    ``Y = Q^T Qxy = V^T C + (Dx V)^T P Dz`` (``m r x a'``), from C's factors
    (:func:`cross_in_range_xp`) and the congruence with ``Dx V``, is kept.

    ``Dx^T P Dz`` and the first term of C lie in ``range(Q)``; the rest of Qxy, the part
    ``Xp = (I - Q Q^T) Qxy`` outside it, comes from C's ``b S1 delta`` term alone: unit k's
    block is ``Xp_k[j, (t, i)] = bS1[t, k] (I - V V^T)[j, i]``. So::

        Qxy^T Qxx^{-1} Qxy = Y^T T^{-1} Y + (bS1 bS1^T) (x) (I - V V^T)[:n, :n] / eps

    Cost ``2 B m r a' (B + 1) + 2 (m r)^2 a' + 2 m r a'^2`` where the dense stage's is
    ``2 p^3 / 3 + 2 p^2 a' + 2 p a'^2`` (on NumPy in float64,
    :func:`compiled_range_stage` instead).
    """
    V, ZtV, DxV, _ = in_basis
    m, r = DxV.shape[1], V.shape[1]
    DxPDz, Qyy = dz_congruences(DxV, blk.Dz, P)
    Y = DxPDz
    if blk.R is not None:
        Y += cross_in_range_xp(blk.R, blk.W, ZtV, blk.bS1, V).reshape(m * r, -1)
        add_sample_blocks(Qyy, blk.S)
    Pp = outside_range(blk.bS1, V, f.eps, Qyy)
    Qyy -= Y.T @ f.fT.solve(Y)
    Qyy = 0.5 * (Qyy + Qyy.T)                              # exactly symmetric against drift
    bS1 = None if Pp is None else blk.bS1
    return RangeGain(f, Y, bS1, Pp), RangeCross(f, Y, bS1, Pp), Qyy


def cross_in_range_xp(R, W, ZtV, bS1, V):
    """:func:`cross_in_range` as array-module code (``V^T C``, ``(m, r, B, n)``)."""
    return (R.T[:, None, :, None] * ZtV.T[None, :, :, None] * W[:, None, None, :]
            + bS1.T[:, None, :, None] * V[:W.shape[1]].T[None, :, None, :])


class RangeCross(NamedTuple):
    """``Qxy_l`` of an array-module range stage as an operator whose ``.T @ k`` is
    ``Qxy^T k = Y^T Q^T k + Xp^T k`` (k ``(m q, nr)``): what the backward substitution
    needs of it (:func:`range_gain`)."""
    factor: RangeFactor
    Y: object
    bS1: object
    Pp: object

    @property
    def T(self):
        return _CrossTransposed(self)


class _CrossTransposed(NamedTuple):
    cross: RangeCross

    def __matmul__(self, k):
        f, Y, bS1, Pp = self.cross
        q, r = f.V.shape
        nr = k.shape[-1]
        kq = k.reshape(f.m, q, nr)
        out = Y.T @ (f.V.T @ kq).reshape(f.m * r, nr)
        if Pp is not None:                                 # Xp^T k, from (I - V V^T) kq
            B = bS1.shape[0]
            out += (bS1 @ (Pp.T @ kq).reshape(f.m, -1)).reshape(B * Pp.shape[1], nr)
        return out


class RangeGain(NamedTuple):
    """The gain ``K_l = -Qxx^{-1} Qxy = -(Q T^{-1} Y + Xp / eps)`` of an array-module range
    stage (:func:`range_gain`), applied as ``K @ y`` without forming it: ``2 m r a' +
    2 (m r)^2 + 2 p r`` flops per column of y instead of K's ``p x a'`` entries once.
    ``bS1`` and ``Pp = (I - V V^T)[:, :n]`` give Xp (None when Qxy lies in the range)."""
    factor: RangeFactor
    Y: object
    bS1: object
    Pp: object

    def __matmul__(self, y):
        V, eps, m = self.factor.V, self.factor.eps, self.factor.m
        q, r = V.shape
        nr = y.shape[-1]
        x = V @ self.factor.fT.solve(self.Y @ y).reshape(m, r, nr)
        if self.Pp is not None:
            x += _outside_product(self.bS1, self.Pp, y, eps)
        return -x.reshape(m * q, nr)
