"""The pivoted augmented system ``K' = Pi K Pi^T`` of ``(H + eps I) x = g``, block row by
block row, from the dense layer blocks (docs/math.md section 4, "Augmented system").

The unknowns ``(x, y, z)`` ordered layer by layer (the pivot Pi) make K' block-tridiagonal
with 3x3 blocks of sizes ``(p_l, a_l, a_l)``. The block LDU (:mod:`tallskinny_np.ldu`) and
the banded LU (:mod:`tallskinny_np.banded`) both factor it.
"""
import numpy as np

from .blocks import layer_size, to_dense


def pivot_blocks(dense, l, damping):
    """Block row l (0-based) of ``K' = Pi K Pi^T``: the diagonal block ``D_l``, the
    sub-diagonal ``Lo_l`` (columns of layer l-1; None for l = 0) and the super-diagonal
    ``Up_l`` (columns of layer l+1; None for the last layer), from dense layer blocks.

    Layer l's rows are the three equations of docs/math.md section 4 for ``(x_l, y_l, z_l)``::

        D_l  = [[A_l + eps I, 0,         Dx_l^T],     Lo_l = [[0, C_l,   0],
                [-Dx_l,       I,         0     ],             [0, -Dz_l, 0],
                [0,           -S_{l+1},  I     ]]             [0, 0,     0]]

        Up_l = [[0,             0, 0             ],
                [0,             0, 0             ],
                [-C_{l+1}^T,    0, -Dz_{l+1}^T   ]]
    """
    blk = dense[l]
    nxt = dense[l + 1] if l + 1 < len(dense) else None
    a, p = blk.Dx.shape
    dtype = blk.Dx.dtype
    D = np.zeros((p + 2 * a, p + 2 * a), dtype=dtype)
    if blk.A is not None:
        D[:p, :p] = blk.A
    D[:p, :p] += damping * np.eye(p, dtype=dtype)
    D[:p, p + a:] = blk.Dx.T
    D[p:p + a, :p] = -blk.Dx
    D[p:, p:] = np.eye(2 * a, dtype=dtype)
    if nxt is not None and nxt.S is not None:
        D[p + a:, p:p + a] = -nxt.S
    Lo = Up = None
    if l > 0:
        ap, pp = dense[l - 1].Dx.shape
        Lo = np.zeros((p + 2 * a, pp + 2 * ap), dtype=dtype)
        if blk.C is not None:
            Lo[:p, pp:pp + ap] = blk.C
        Lo[p:p + a, pp:pp + ap] = -blk.Dz
    if nxt is not None:
        an, pn = nxt.Dx.shape
        Up = np.zeros((p + 2 * a, pn + 2 * an), dtype=dtype)
        if nxt.C is not None:
            Up[p + a:, :pn] = -nxt.C.T
        Up[p + a:, pn + an:] = -nxt.Dz.T
    return D, Lo, Up


def layer_sizes(blocks):
    """``(p_l, a_l)`` per layer, with ``a_L = 1`` for the loss layer."""
    return [layer_size(blk) for blk in blocks.layers]


def pivot_rows(blocks, damping):
    """Yield ``(l, (D_l, Lo_l, Up_l))`` for every block row of K', holding
    the dense blocks of at most three layers at a time (memory O(p^2 + a^2), not O(L ...))."""
    layers = blocks.layers
    dense = [None] * len(layers)
    for l in range(len(layers)):
        for k in range(max(l - 1, 0), min(l + 2, len(layers))):
            if dense[k] is None:
                dense[k] = to_dense(layers[k])
        if l >= 2:
            dense[l - 2] = None
        yield l, pivot_blocks(dense, l, damping)
