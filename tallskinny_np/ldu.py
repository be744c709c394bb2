"""The paper's solve of ``(H + eps I) x = g``: block LDU of the pivoted augmented system.

DESIGN.md section 4, "Augmented system": the unknowns ``(x, y, z)`` ordered layer by layer
(the pivot Pi) make ``K' = Pi K Pi^T`` block-tridiagonal with 3x3 blocks of sizes
``(p_l, a_l, a_l)``. K' is factored as ``L D U`` by block elimination from the first layer
to the last (no pivoting across blocks; partial pivoting inside each pivot block), then
solved by forward substitution, the block-diagonal solve and backward substitution.
Time O(L (p + 2a)^3), memory O(L (p + 2a)^2).
"""
import warnings
from collections import namedtuple

import numpy as np
import scipy.linalg as sla

from .blocks import layer_size, to_dense
from .errors import check_pivot

LDU = namedtuple("LDU", "pivots lower upper sizes")
LDU.__doc__ = """Factors of ``K' = L D U``: per layer the LU factorization of the pivot
``Sigma_l`` (D), the sub-diagonal block ``Lo_l`` of K' (``L_{l,l-1} = Lo_l Sigma_{l-1}^{-1}``)
and ``F_l = Sigma_l^{-1} Up_l`` (``U_{l,l+1}``); ``sizes`` holds ``(p_l, a_l)``."""


def pivot_blocks(dense, l, damping):
    """Block row l (0-based) of ``K' = Pi K Pi^T``: the diagonal block ``D_l``, the
    sub-diagonal ``Lo_l`` (columns of layer l-1; None for l = 0) and the super-diagonal
    ``Up_l`` (columns of layer l+1; None for the last layer), from dense layer blocks.

    Layer l's rows are the three equations of DESIGN.md section 4 for ``(x_l, y_l, z_l)``::

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


def lu_checked(M, layer, what):
    """LU factors of M, or SingularPivotError if M is singular to working precision
    (LAPACK's 1-norm reciprocal condition estimate below eps, :func:`check_pivot`)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sla.LinAlgWarning)
        lu, piv = sla.lu_factor(M, check_finite=False)
    gecon, = sla.get_lapack_funcs(("gecon",), (lu,))
    rcond, _ = gecon(lu, np.linalg.norm(M, 1), norm="1")
    check_pivot(rcond, M.dtype, layer, what)
    return lu, piv


def ldu_factor(blocks, damping):
    """Block LDU of K': ``Sigma_1 = D_1``, ``Sigma_l = D_l - Lo_l Sigma_{l-1}^{-1} Up_{l-1}``."""
    pivots, lower, upper = [], [], []
    F = None
    for l, (D, Lo, Up) in pivot_rows(blocks, damping):
        Sigma = D if Lo is None else D - Lo @ F
        lu = lu_checked(Sigma, l + 1, "LDU pivot block Sigma")
        F = None if Up is None else sla.lu_solve(lu, Up, check_finite=False)
        pivots.append(lu)
        lower.append(Lo)
        upper.append(F)
    return LDU(pivots, lower, upper, layer_sizes(blocks))


def ldu_solve(fac, gs):
    """Solve ``K' [x; y; z] = [g; 0; 0]`` with the factors; return the x blocks.

    ``gs`` holds per-layer right-hand sides ``(p_l, r)``. Forward: ``u_l =
    Sigma_l^{-1} (r_l - Lo_l u_{l-1})`` (L then D); backward: ``w_l = u_l - F_l w_{l+1}`` (U).
    """
    u = []
    for lu, Lo, (p, a), g in zip(fac.pivots, fac.lower, fac.sizes, gs):
        r = np.zeros((p + 2 * a, g.shape[1]), dtype=g.dtype)
        r[:p] = g
        if Lo is not None:
            r -= Lo @ u[-1]
        u.append(sla.lu_solve(lu, r, check_finite=False))
    w = u[-1]
    xs = [w[:fac.sizes[-1][0]]]
    for l in range(len(u) - 2, -1, -1):
        w = u[l] - fac.upper[l] @ w
        xs.append(w[:fac.sizes[l][0]])
    return xs[::-1]
