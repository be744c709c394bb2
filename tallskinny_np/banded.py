"""The pivoted augmented system solved as a banded matrix by LAPACK (``gbtrf``/``gbtrs``).

docs/math.md section 4: ``K' = Pi K Pi^T`` is block-tridiagonal, hence banded; LU with
partial pivoting across the whole band is the stable "off-the-shelf banded solver" that
the paper's conclusion recommends, as a fallback to the block LDU (which pivots only
inside blocks). Storage ``(2 kl + ku + 1) x N`` with ``N = sum_l (p_l + 2 a_l)`` and
``kl, ku`` about ``p + 3a``: memory O(L (p + a)^2), time O(L (p + a)^3).
"""
from collections import namedtuple

import numpy as np
from scipy.linalg import get_lapack_funcs

from .augmented import layer_sizes, pivot_rows
from .errors import check_pivot

Banded = namedtuple("Banded", "lu ipiv kl ku starts sizes")


def _layer_of(index, starts):
    return int(np.searchsorted(starts, index, side="right"))


def bandwidths(sizes):
    """Lower and upper bandwidths ``(kl, ku)`` of K' from the block sizes ``(p_l, a_l)``:
    the farthest structural nonzeros of ``D_l`` (``-Dx_l`` below, ``Dx_l^T`` above), of
    ``Lo_l`` (rows x_l, y_l against columns y_{l-1}) and of ``Up_l`` (rows z_l against
    columns x_{l+1}, z_{l+1}), see :func:`tallskinny_np.augmented.pivot_blocks`."""
    kl = ku = 0
    for l, (p, a) in enumerate(sizes):
        kl = max(kl, p + a - 1, 2 * a - 1)
        ku = max(ku, p + 2 * a - 1)
        if l > 0:
            kl = max(kl, 2 * sizes[l - 1][1] + p + a - 1)
        if l + 1 < len(sizes):
            pn, an = sizes[l + 1]
            ku = max(ku, a + pn + 2 * an - 1)
    return kl, ku


def banded_factor(blocks, damping, check=True):
    """LU with partial pivoting of the banded ``K'`` for ``H + damping I``, assembled block
    row by block row straight into LAPACK's band storage (docs/math.md section 4.4).

    Parameters
    ----------
    blocks : tallskinny_np.blocks.Blocks
        The derivative blocks (``Curvature.blocks``).
    damping : float
    check : bool
        Whether a K' that is singular to working precision raises (without it only an
        exactly zero pivot does). K' can be far worse conditioned than ``H + damping I``
        (its blocks hold ``M``, the product of the layers' Jacobians), so the certified
        solve uses the unchecked factorization and judges the result by its backward
        error.

    Returns
    -------
    Banded
        The band LU, for :func:`banded_solve`.

    Raises
    ------
    SingularPivotError
        Naming the layer that holds the smallest pivot.

    Examples
    --------
    >>> import numpy as np
    >>> from tallskinny_np import MLP, Curvature
    >>> from tallskinny_np.banded import banded_factor, banded_solve
    >>> net = MLP([3, 4, 2])
    >>> rng = np.random.default_rng(0)
    >>> curv = Curvature(net, net.init_params(), rng.standard_normal((5, 3)), [0, 1, 0, 1, 1])
    >>> b = rng.standard_normal((net.n_params, 1))
    >>> x = net.join(banded_solve(banded_factor(curv.blocks, 0.1), net.split(b)))
    >>> bool(np.allclose(curv @ x + 0.1 * x, b))
    True
    """
    sizes = layer_sizes(blocks)
    starts = np.concatenate([[0], np.cumsum([p + 2 * a for p, a in sizes])]).astype(int)
    kl, ku = bandwidths(sizes)
    N = int(starts[-1])
    ab = np.zeros((2 * kl + ku + 1, N), dtype=blocks.layers[0].Dx.dtype)
    colsum = np.zeros(N)                                     # for the 1-norm of K'
    for l, (D, Lo, Up) in pivot_rows(blocks, damping):
        for c0, M in ((starts[l], D), (starts[max(l - 1, 0)], Lo),
                      (starts[min(l + 1, len(sizes))], Up)):
            if M is not None:
                i, j = np.nonzero(M)
                ab[kl + ku + (i + starts[l]) - (j + c0), j + c0] = M[i, j]
                colsum[c0:c0 + M.shape[1]] += np.abs(M).sum(axis=0)
    gbtrf, gbcon = get_lapack_funcs(("gbtrf", "gbcon"), (ab,))
    lu, ipiv, info = gbtrf(ab, kl, ku, overwrite_ab=1)
    rcond = 0.0 if info > 0 else float(gbcon(kl, ku, lu, ipiv, colsum.max())[0])
    # The layer holding the smallest pivot of U is the one to blame.
    worst = info - 1 if info > 0 else int(np.argmin(np.abs(lu[kl + ku])))
    check_pivot(rcond if check or info > 0 else 1.0, ab.dtype, _layer_of(worst, starts),
                "banded LU of the augmented system")
    return Banded(lu, ipiv, kl, ku, starts, sizes)


def banded_solve(fac, gs):
    """Solve ``K' [x; y; z] = [g; 0; 0]`` with the band LU (LAPACK ``gbtrs``).

    Parameters
    ----------
    fac : Banded
        From :func:`banded_factor`.
    gs : list of arrays ``(n_l, q_l, r)``
        Per-layer right-hand sides, the layout of :meth:`tallskinny_np.model.MLP.split`.

    Returns
    -------
    list of arrays ``(n_l, q_l, r)``
        The x blocks, in the same layout (example: :func:`banded_factor`).
    """
    r = gs[0].shape[-1]
    rhs = np.zeros((int(fac.starts[-1]), r), dtype=gs[0].dtype)
    for s, (p, _), g in zip(fac.starts, fac.sizes, gs):
        rhs[s:s + p] = g.reshape(p, r)
    gbtrs, = get_lapack_funcs(("gbtrs",), (fac.lu,))
    sol, _ = gbtrs(fac.lu, fac.kl, fac.ku, rhs, fac.ipiv)
    return [sol[s:s + p].reshape(g.shape) for s, (p, _), g in zip(fac.starts, fac.sizes, gs)]
