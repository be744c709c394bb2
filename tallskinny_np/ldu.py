"""The paper's solve of ``(H + eps I) x = g``: block LDU of the pivoted augmented system.

docs/math.md section 4, "Augmented system": the unknowns ``(x, y, z)`` ordered layer by
layer (the pivot Pi) make ``K' = Pi K Pi^T`` block-tridiagonal with 3x3 blocks of sizes
``(p_l, a_l, a_l)`` (:mod:`tallskinny_np.augmented`). K' is factored as ``L D U`` by block
elimination from the first layer to the last (no pivoting across blocks; partial pivoting
inside each pivot block), then solved by forward substitution, the block-diagonal solve
and backward substitution. Time O(L (p + 2a)^3), memory O(L (p + 2a)^2).
"""
import warnings
from collections import namedtuple

import numpy as np
import scipy.linalg as sla

from .augmented import layer_sizes, pivot_rows
from .errors import check_pivot

LDU = namedtuple("LDU", "pivots lower upper sizes")
LDU.__doc__ = """Factors of ``K' = L D U``: per layer the LU factorization of the pivot
``Sigma_l`` (D), the sub-diagonal block ``Lo_l`` of K' (``L_{l,l-1} = Lo_l Sigma_{l-1}^{-1}``)
and ``F_l = Sigma_l^{-1} Up_l`` (``U_{l,l+1}``); ``sizes`` holds ``(p_l, a_l)``."""


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
    """Block LDU of K' (docs/math.md section 4.3):
    ``Sigma_1 = D_1``, ``Sigma_l = D_l - Lo_l Sigma_{l-1}^{-1} Up_{l-1}``.

    Parameters
    ----------
    blocks : tallskinny_np.blocks.Blocks
        The derivative blocks (``Curvature.blocks``).
    damping : float
        eps of ``H + eps I``.

    Returns
    -------
    LDU
        The factors, for :func:`ldu_solve`.

    Raises
    ------
    SingularPivotError
        A pivot ``Sigma_l`` is singular to working precision (it names the layer).

    Examples
    --------
    >>> import numpy as np
    >>> from tallskinny_np import MLP, Curvature
    >>> from tallskinny_np.ldu import ldu_factor, ldu_solve
    >>> net = MLP([3, 4, 2])
    >>> rng = np.random.default_rng(0)
    >>> curv = Curvature(net, net.init_params(), rng.standard_normal((5, 3)), [0, 1, 0, 1, 1])
    >>> b = rng.standard_normal((net.n_params, 1))
    >>> x = net.join(ldu_solve(ldu_factor(curv.blocks, 0.1), net.split(b)))
    >>> bool(np.allclose(curv @ x + 0.1 * x, b))
    True
    """
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

    Forward: ``u_l = Sigma_l^{-1} (r_l - Lo_l u_{l-1})`` (L then D); backward:
    ``w_l = u_l - F_l w_{l+1}`` (U).

    Parameters
    ----------
    fac : LDU
        From :func:`ldu_factor`.
    gs : list of arrays ``(n_l, q_l, r)``
        Per-layer right-hand sides, the layout of :meth:`tallskinny_np.model.MLP.split`.

    Returns
    -------
    list of arrays ``(n_l, q_l, r)``
        The x blocks, in the same layout (example: :func:`ldu_factor`).
    """
    u = []
    for lu, Lo, (p, a), g in zip(fac.pivots, fac.lower, fac.sizes, gs):
        r = np.zeros((p + 2 * a, g.shape[-1]), dtype=g.dtype)
        r[:p] = g.reshape(p, -1)
        if Lo is not None:
            r -= Lo @ u[-1]
        u.append(sla.lu_solve(lu, r, check_finite=False))
    w = u[-1]
    ws = [w]
    for l in range(len(u) - 2, -1, -1):
        w = u[l] - fac.upper[l] @ w
        ws.append(w)
    return [w[:p].reshape(g.shape) for w, (p, _), g in zip(ws[::-1], fac.sizes, gs)]
