"""Stage-wise (Riccati) solve of ``(H + eps I) x = g`` and the inertia of ``H + eps I``.

docs/math.md section 4, "Stage-wise (Riccati) elimination": the augmented system is the
optimality condition of a linear-quadratic control problem with state y (the batch's
activations) and control ``x_l`` per layer. Backward, with ``P_L = 0``::

    Qxx = A_l + eps I + Dx_l^T P_l Dx_l
    Qxy = C_l + Dx_l^T P_l Dz_l ,        Qyy = S_l + Dz_l^T P_l Dz_l
    K_l = -Qxx^{-1} Qxy ,                P_{l-1} = Qyy + Qxy^T K_l

then, per right-hand side, ``qx = -g_l + Dx_l^T p_l``, ``k_l = -Qxx^{-1} qx``,
``p_{l-1} = Dz_l^T p_l + Qxy^T k_l`` backward, and ``x_l = K_l y_{l-1} + k_l``,
``y_l = Dx_l x_l + Dz_l y_{l-1}`` forward (``y_0 = 0``).

The damping-dependent factorization (:func:`riccati_factor`) is separate from the
right-hand-side sweeps (:func:`riccati_solve`), so many right-hand sides share one
factorization. Per layer only a ``p x p`` block is factored; the factor of Qxx, ``Qxy``
and ``K_l`` are kept, memory O(L (p a + p^2)). Stage 1 needs no gain (``y_0 = 0``).

"Inertia (Sylvester)": ``n_neg(H + eps I) = sum_l n_neg(Qxx_l)``, likewise for zero and
positive eigenvalues, so the same backward sweep gives the inertia in O(L).
"""
from collections import namedtuple

import numpy as np

from .backend import array_module
from .blocks import FirstLayer, LossLayer, block_diagonal, dense_A, layer_size
from .congruences import congruences
from .errors import check_pivot
from .products import DxT_mv, Dx_mv, DzT_mv, Dz_mv
from .symmetric import sym_factor, sym_solve
from .wide import WIDE, first_stage, loss_stage

Stage = namedtuple("Stage", "factor Qxy K")
Riccati = namedtuple("Riccati", "layers stages inertia singular")
Riccati.__doc__ = """The derivative blocks' layers, the per-layer stages (factor of Qxx,
Qxy, K), the summed inertia ``(n_neg, n_zero, n_pos)`` of ``H + eps I`` (None unless asked
for) and ``singular``, the 1-based layer of the first pivot that is singular to working
precision (None when every pivot is sound, so the factors can also solve)."""


def riccati_factor(blocks, eps, inertia=False, strategy=None, wide=WIDE):
    """The backward Riccati sweep for ``H + eps I`` (``eps`` may be negative: a shift).

    Without ``inertia`` (to solve), a Qxx that is singular to working precision raises
    :class:`SingularPivotError` naming its layer. With ``inertia=True`` each Qxx's inertia
    is counted and summed, the sweep goes on past near-zero pivots (counted as zero
    eigenvalues), and the factorization is for counting only. End layers with more than
    ``wide`` parameters use the structured stages of :mod:`tallskinny_np.wide`.
    """
    layers = blocks.layers
    xp = array_module(layers[0].Dx)
    pd = blocks.kind == "ggn" and eps > 0
    stages = [None] * len(layers)
    counts = [0, 0, 0]
    singular = None
    P = None                                   # P_L = 0
    for l in range(len(layers) - 1, -1, -1):
        blk = layers[l]
        p = layer_size(blk)[0]
        DxPDx = DxPDz = DzPDz = None
        match blk:
            case FirstLayer() if p > wide:     # its Qxy is never needed: y_0 = 0
                f = first_stage(blocks, blk, P, eps, inertia, pd, strategy)
            case LossLayer() if p > wide:      # P_L = 0: no congruences
                f = loss_stage(blk, eps, inertia, pd, strategy)
            case _:
                DxPDx, DxPDz, DzPDz = congruences(blk, P)
                Qxx = _sum(dense_A(blk), DxPDx)
                Qxx[xp.arange(p), xp.arange(p)] += eps
                f = sym_factor(Qxx, inertia=inertia, positive_definite=pd,
                               strategy=strategy)
        if not inertia:
            check_pivot(f.rcond, blk.Dx.dtype, l + 1, "Riccati pivot block Qxx")
        else:
            counts = [c + n for c, n in zip(counts, f.inertia)]
            if singular is None and not f.rcond >= np.finfo(blk.Dx.dtype).eps:
                singular = l + 1
        Qxy = K = None
        if l > 0:
            Qxy = _sum(None if blk.C is None else blk.C.reshape(p, -1), DxPDz)
            Qyy = _sum(None if blk.S is None else block_diagonal(xp, blk.S), DzPDz)
            K = -sym_solve(f, Qxy)
            P = Qyy + Qxy.T @ K
            P = 0.5 * (P + P.T)                # keep P exactly symmetric against drift
        stages[l] = Stage(f, Qxy, K)
    return Riccati(layers, stages, tuple(counts) if inertia else None, singular)


def _sum(*terms):
    """The sum of the terms that are not None (None stands for a zero block)."""
    present = [t for t in terms if t is not None]
    out = present[0].copy()
    for t in present[1:]:
        out += t
    return out


def riccati_solve(fac, gs):
    """Solve with the factored sweep; ``gs`` holds per-layer right-hand sides
    ``(n_l, q_l, r)`` (the layout of :meth:`tallskinny_np.model.MLP.split`), and the x
    blocks are returned in the same form."""
    layers = fac.layers
    L = len(layers)
    r = gs[0].shape[-1]
    k = [None] * L
    pv = None                                  # p_L = 0
    for l in range(L - 1, -1, -1):
        blk, st = layers[l], fac.stages[l]
        qx = -gs[l]
        if pv is not None:
            qx = qx + DxT_mv(blk, pv)
        k[l] = -sym_solve(st.factor, qx.reshape(-1, r))      # Qxx acts on (p_l, r)
        if l > 0:
            pl = (st.Qxy.T @ k[l]).reshape(blk.Dz.shape[0], -1, r)
            pv = pl if pv is None else pl + DzT_mv(blk, pv)
    xs = []
    y = None
    for l in range(L):
        blk, st = layers[l], fac.stages[l]
        x = (k[l] if y is None else k[l] + st.K @ y.reshape(-1, r)).reshape(gs[l].shape)
        xs.append(x)
        if l < L - 1:
            y = Dx_mv(blk, x) if y is None else Dx_mv(blk, x) + Dz_mv(blk, y)
    return xs
