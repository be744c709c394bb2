"""Dense global matrices of docs/math.md sections 3 and 4, formed explicitly from the
per-layer blocks of a :class:`tallskinny_np.Curvature`.

Everything is in the *block layout*: parameters ordered layer by layer, within a layer by
``(k, j)`` as the blocks store them (:func:`verify.reference.block_order` maps it to the
flat layout). Activation slots: ``y = (y_1, ..., y_L)`` with slot l of size ``a_l = B n_l``
and ``a_L = 1`` (the loss layer's output is the loss); ``P y = (0, y_1, ..., y_{L-1})`` with
slot l of size ``a_{l-1}``, ``a_0 = B n_0``. Layer 1's ``C, S`` and, for the GGN, the hidden
layers' ``A, S, C`` are zero blocks of their full size here.

These are O((L p)^2) dense matrices: for small networks only.
"""
from collections import namedtuple

import numpy as np
import scipy.linalg as sla

from tallskinny_np.blocks import DenseBlocks, to_dense

Global = namedtuple("Global", "A C S Dx M P p a")
Global.__doc__ = """The block-diagonal ``A`` (P x P), ``C`` (P x sum a_{l-1}),
``S`` (sum a_{l-1} square), ``Dx`` (sum a_l x P), M (sum a_l square, block
lower-bidiagonal), the down-shift P (sum a_{l-1} x sum a_l), the per-layer parameter counts
``p = [p_1..p_L]`` and slot sizes ``a = [a_0..a_L]``."""


def offsets(sizes):
    return np.concatenate([[0], np.cumsum(sizes)]).astype(int)


def assemble(blocks, a0):
    """The global matrices of docs/math.md section 3.1 from ``blocks`` (``a0 = B n_0``)."""
    # in float64 whatever the blocks' dtype: the only rounding under test is the blocks'
    dense = [DenseBlocks(*(None if b is None else b.astype(np.float64)
                           for b in to_dense(blk))) for blk in blocks.layers]
    p = [d.Dx.shape[1] for d in dense]
    a = [a0] + [d.Dx.shape[0] for d in dense]
    dtype = np.float64
    zero = lambda r, c: np.zeros((r, c), dtype=dtype)
    or_zero = lambda X, r, c: zero(r, c) if X is None else X
    L = len(dense)
    A = sla.block_diag(*(or_zero(d.A, p[l], p[l]) for l, d in enumerate(dense)))
    C = sla.block_diag(*(or_zero(d.C, p[l], a[l]) for l, d in enumerate(dense)))
    S = sla.block_diag(*(or_zero(d.S, a[l], a[l]) for l, d in enumerate(dense)))
    Dx = sla.block_diag(*(d.Dx for d in dense))
    out, inp = offsets(a[1:]), offsets(a[:-1])
    M = np.eye(out[-1], dtype=dtype)
    P = zero(inp[-1], out[-1])
    for l in range(1, L):
        M[out[l]:out[l + 1], out[l - 1]:out[l]] = -dense[l].Dz
        P[inp[l]:inp[l + 1], out[l - 1]:out[l]] = np.eye(a[l], dtype=dtype)
    return Global(A, C, S, Dx, M, P, p, a)


def tangents(g):
    """``M^{-1} Dx``: column j is the forward tangent ``y = d(z_1..z_L)/d theta_j``."""
    # M is unit lower triangular by construction (step 5 checks it against the network)
    return sla.solve_triangular(g.M, g.Dx, lower=True, unit_diagonal=True,
                                check_finite=False)


def hessian(g):
    """docs/math.md eq. (3.5) (paper, Claim 1):
    ``H = A + C P M^{-1} Dx + Dx^T M^{-T} P^T C^T + Dx^T M^{-T} P^T S P M^{-1} Dx``."""
    T = g.P @ tangents(g)
    CT = g.C @ T
    return g.A + CT + CT.T + T.T @ g.S @ T


def augmented(g, damping):
    """docs/math.md eq. (4.1), the augmented system: K acting on ``(x, y, z)``."""
    CP, PSP = g.C @ g.P, g.P.T @ g.S @ g.P
    ny = g.M.shape[0]
    return np.block([
        [g.A + damping * np.eye(len(g.A)), CP, g.Dx.T],
        [-g.Dx, g.M, np.zeros((ny, ny))],
        [-CP.T, -PSP, g.M.T],
    ])


def symmetric(g, damping):
    """docs/math.md eq. (4.10), the symmetric form: K with its second and third block rows
    negated and swapped."""
    CP, PSP = g.C @ g.P, g.P.T @ g.S @ g.P
    ny = g.M.shape[0]
    return np.block([
        [g.A + damping * np.eye(len(g.A)), CP, g.Dx.T],
        [CP.T, PSP, -g.M.T],
        [g.Dx, -g.M, np.zeros((ny, ny))],
    ])


def pivot(g):
    """The paper's pivot as an index array ``pi``: ``K' = Pi K Pi^T = K[pi][:, pi]``
    orders the unknowns layer by layer, ``(x_1, y_1, z_1, x_2, ...)``."""
    xo, yo = offsets(g.p), offsets(g.a[1:])
    nx, ny = xo[-1], yo[-1]
    return np.concatenate([
        np.r_[xo[l]:xo[l + 1], nx + yo[l]:nx + yo[l + 1],
              nx + ny + yo[l]:nx + ny + yo[l + 1]]
        for l in range(len(g.p))])


def pivot_sizes(g):
    """Sizes ``p_l + 2 a_l`` of the diagonal blocks of K'."""
    return [p + 2 * a for p, a in zip(g.p, g.a[1:])]


def outside_tridiagonal(sizes):
    """Boolean mask of the entries outside the block-tridiagonal band of a matrix with
    diagonal blocks of the given sizes."""
    layer = np.repeat(np.arange(len(sizes)), sizes)
    return np.abs(layer[:, None] - layer[None, :]) > 1


def lu_matrix(lu_piv):
    """The matrix whose ``scipy.linalg.lu_factor`` is ``lu_piv`` (undo LAPACK's row
    interchanges ``ipiv`` in reverse order)."""
    lu, piv = lu_piv
    LU = (np.tril(lu, -1) + np.eye(len(lu), dtype=lu.dtype)) @ np.triu(lu)
    for i in range(len(piv) - 1, -1, -1):
        LU[[i, piv[i]]] = LU[[piv[i], i]]
    return LU


def ldu_product(fac):
    """The dense product ``L D U`` of :func:`tallskinny_np.ldu.ldu_factor`'s factors:
    diagonal ``Sigma_l + Lo_l F_{l-1}``, sub-diagonal ``Lo_l`` (``L_{l,l-1} Sigma_{l-1}``),
    super-diagonal ``Sigma_l F_l`` (``Sigma_l U_{l,l+1}``)."""
    sizes = [p + 2 * a for p, a in fac.sizes]
    o = offsets(sizes)
    Sigmas = [lu_matrix(lu) for lu in fac.pivots]
    K = np.zeros((o[-1], o[-1]), dtype=Sigmas[0].dtype)
    for l, Sigma in enumerate(Sigmas):
        rows = slice(o[l], o[l + 1])
        K[rows, rows] = Sigma
        if l > 0:
            K[rows, o[l - 1]:o[l]] = fac.lower[l]
            K[rows, rows] += fac.lower[l] @ fac.upper[l - 1]
        if l + 1 < len(Sigmas):
            K[rows, o[l + 1]:o[l + 2]] = Sigma @ fac.upper[l]
    return K
