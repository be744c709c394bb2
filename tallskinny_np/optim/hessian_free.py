"""Hessian-free optimization (Martens 2010; docs/math.md section 8.1): the damped system
solved by truncated conjugate gradients on the exact O(L) products, the peer of the exact
solves."""
from ..deprecation import renamed
from ..krylov import truncated_cg
from .checks import count, real
from .newton import DampedNewton

CG_DECAY = 0.95        # CG starts from 0.95 times the previous step's solution (Martens 2010)


class HessianFree(DampedNewton):
    """Hessian-free optimization (Martens 2010; docs/math.md section 8.1): the step ``s``
    minimises the damped quadratic ``g^T s + 1/2 s^T (G + lam I) s`` (``kind="ggn"``) or
    with H (``kind="hessian"``) by :func:`truncated_cg` on the exact O(L) products, warm-started
    from ``decay`` times the previous step's CG solution; lam follows the
    Levenberg-Marquardt rule of :class:`DampedNewton` and rejected steps are retried the
    same way, so that the truncated CG solve is the only difference from the exact one.

    Martens's CG backtracking and diagonal preconditioner are not used: the comparison is
    exact against truncated solves of the same damped system.

    Parameters
    ----------
    damping, factor, min_damping, trials, max_failures
        As :class:`DampedNewton`.
    kind : {"ggn", "hessian"}, optional
        The curvature of the products (default "ggn", Martens's choice: CG on an
        indefinite H stops at the first direction of negative curvature).
    max_iter : int, optional
        CG iterations per trial step (default 250).
    progress : float, optional
        The truncation tolerance of :func:`truncated_cg` (default 5e-4).
    decay : float, optional
        The warm start's factor, in [0, 1] (default 0.95).

    References
    ----------
    .. [1] J. Martens, "Deep learning via Hessian-free optimization", ICML 2010.

    Examples
    --------
    Any object with ``hvp`` serves as the curvature; on a quadratic with two distinct
    eigenvalues CG reaches the minimiser in two products:

    >>> import numpy as np
    >>> from types import SimpleNamespace
    >>> from tallskinny_np.optim import HessianFree
    >>> A = np.diag([1.0, 10.0])
    >>> f = lambda x: 0.5 * x @ A @ x - x.sum()
    >>> x0 = np.zeros(2)
    >>> opt = HessianFree(damping=0.0)
    >>> x1, info = opt.step(x0, f(x0), A @ x0 - 1, SimpleNamespace(hvp=lambda v: A @ v), f)
    >>> np.allclose(x1, [1.0, 0.1]), info["cg_iterations"]
    (True, 2)
    """

    def __init__(self, damping=1.0, kind="ggn", max_iter=250, progress=5e-4,
                 decay=CG_DECAY, **rule):
        super().__init__(damping, kind, **rule)
        self.max_iter = count("max_iter", max_iter, 1)
        self.progress = real("progress", progress, ">= 0", lambda x: x >= 0)
        self.decay = real("decay", decay, "in [0, 1]", lambda x: 0 <= x <= 1)

    @renamed(lam="damping")
    def direction(self, curv, grad, damping):
        """The truncated CG solution of ``(G + damping I) s = -g`` from the warm start."""
        previous = self.state.get("cg_solution")
        s, iterations, _ = truncated_cg(lambda v: curv.hvp(v) + damping * v, -grad,
                                        None if previous is None else self.decay * previous,
                                        self.max_iter, self.progress)
        self.state["cg_solution"] = s
        return s, {"cg_iterations": iterations}
