"""The pivoted augmented system solved as a banded matrix by LAPACK (``gbtrf``/``gbtrs``).

DESIGN.md section 4: ``K' = Pi K Pi^T`` is block-tridiagonal, hence banded; LU with
partial pivoting across the whole band is the stable "off-the-shelf banded solver" that
the paper's conclusion recommends, as a fallback to the block LDU (which pivots only
inside blocks). Storage ``(2 kl + ku + 1) x N`` with ``N = sum_l (p_l + 2 a_l)`` and
``kl, ku`` about ``p + 3a``: memory O(L (p + a)^2), time O(L (p + a)^3).
"""
from collections import namedtuple

import numpy as np
from scipy.linalg import get_lapack_funcs

from .blocks import to_dense
from .errors import SingularPivotError
from .ldu import pivot_blocks

Banded = namedtuple("Banded", "lu ipiv kl ku starts sizes")


def _layer_of(index, starts):
    return int(np.searchsorted(starts, index, side="right"))


def banded_factor(blocks, damping):
    """LU with partial pivoting of the banded ``K'`` for ``H + damping I``."""
    dense = [to_dense(blk) for blk in blocks.layers]
    rows = [pivot_blocks(dense, l, damping) for l in range(len(dense))]
    sizes = [d.Dx.shape[::-1] for d in dense]                # (p_l, a_l)
    N_l = [p + 2 * a for p, a in sizes]
    starts = np.concatenate([[0], np.cumsum(N_l)])
    entries = []                                             # (row0, col0, block)
    for l, (D, Lo, Up) in enumerate(rows):
        entries.append((starts[l], starts[l], D))
        if Lo is not None:
            entries.append((starts[l], starts[l - 1], Lo))
        if Up is not None:
            entries.append((starts[l], starts[l + 1], Up))
    kl = ku = 0
    for r0, c0, M in entries:
        i, j = np.nonzero(M)
        if i.size:
            kl = max(kl, int((i + r0 - j - c0).max()))
            ku = max(ku, int((j + c0 - i - r0).max()))
    N = int(starts[-1])
    ab = np.zeros((2 * kl + ku + 1, N), dtype=dense[0].Dx.dtype)
    for r0, c0, M in entries:
        i, j = np.nonzero(M)
        ab[kl + ku + (i + r0) - (j + c0), j + c0] = M[i, j]
    anorm = max(np.abs(M).sum(axis=0).max() for _, _, M in entries)
    gbtrf, gbcon = get_lapack_funcs(("gbtrf", "gbcon"), (ab,))
    lu, ipiv, info = gbtrf(ab, kl, ku, overwrite_ab=1)
    rcond = 0.0 if info > 0 else float(gbcon(kl, ku, lu, ipiv, anorm)[0])
    if not rcond > N * np.finfo(ab.dtype).eps:
        # The layer holding the smallest pivot of U is the one to blame.
        worst = info - 1 if info > 0 else int(np.argmin(np.abs(lu[kl + ku])))
        raise SingularPivotError(
            _layer_of(worst, starts), rcond, "banded LU of the augmented system",
            "H + damping I is singular or too ill-conditioned; increase the damping "
            "(H itself is singular in general)")
    return Banded(lu, ipiv, kl, ku, starts, sizes)


def banded_solve(fac, gs):
    """Solve ``K' [x; y; z] = [g; 0; 0]``; ``gs`` per-layer ``(p_l, r)``, returns x blocks."""
    r = gs[0].shape[1]
    rhs = np.zeros((int(fac.starts[-1]), r), dtype=gs[0].dtype)
    for s, g in zip(fac.starts, gs):
        rhs[s:s + g.shape[0]] = g
    gbtrs, = get_lapack_funcs(("gbtrs",), (fac.lu,))
    sol, _ = gbtrs(fac.lu, fac.kl, fac.ku, rhs, fac.ipiv)
    return [sol[s:s + p] for s, (p, _) in zip(fac.starts, fac.sizes)]
