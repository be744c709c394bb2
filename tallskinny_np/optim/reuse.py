"""Exact damped steps between factorizations (docs/math.md section 8.5): the system
``(H_t + lam_t I) x = -g_t`` at the current parameters solved by a Krylov method on the
O(L) products, preconditioned with the held factorization of an earlier
``M = H_s + lam_s I``, to the certified solve's backward error; refactored at the current
curvature when the Krylov method does not get there within a budget of iterations."""
from ..backend import array_module
from ..certify import backward_errors, column_norms, residual_bound
from ..krylov import gmres, preconditioned_cg
from ..norms import probe_norm
from .checks import count
from .newton import DampedNewton

BUDGET = 20
"""Krylov iterations (each one O(L) product and one substitution with the held factors)
before refactoring. Counted on the embedded digits net (depth 16, width 8, tanh) at
curvature batch 128: a Riccati factorization costs about 195 iterations in flops
(``benchmarks/flops.py``: 2.4e9 against 6.1e6 + 6.4e6) and about 80 measured in one
process (``python -m benchmarks.reuse``'s floor: 100.1 ms against a product of 0.32 ms
and a substitution of 0.88 ms, whose small blocks run far below the factorization's
rate). A change of the damping by the Levenberg-Marquardt factor 2 alone gives
``M^{-1} (H + lam_t I)`` a condition number up to 2, for which conjugate gradients need
``log(1e-13) / log((sqrt(2) - 1) / (sqrt(2) + 1)) = 17`` iterations to the certified level
(17 measured); 20 carries such a step with a margin, and bounds the waste of a failed
attempt by about a quarter of a factorization at batch 128 and more than one at batch
32, where a factorization costs about 15 iterations (docs/math.md section 8.5)."""


def preconditioned_solve(curv, b, damping, M_inv, budget):
    """``x = (H + damping I)^{-1} b`` by a Krylov method on the O(L) products of ``curv``
    preconditioned with ``M_inv`` (docs/math.md section 8.5): conjugate gradients for the
    GGN (``G + damping I`` and the held ``M`` are positive definite), right-preconditioned
    GMRES for the Hessian (indefinite); restarted from the true residual until the
    backward error is at the certified solve's level or stops decreasing, at most
    ``budget`` iterations in all.

    Parameters
    ----------
    curv : Curvature
        The curvature H (or G) at the current parameters.
    b : ndarray, shape (n_params,)
    damping : float
        lam, the current damping.
    M_inv : callable
        ``v -> M^{-1} v`` for one vector, the held factorization's substitution.
    budget : int
        Iterations at most, each one product and one ``M_inv``.

    Returns
    -------
    x : ndarray, shape (n_params,)
    eta : float
        A bound on the normwise backward error of x
        (:func:`~tallskinny_np.certify.backward_errors`); x is at the certified solve's
        level when ``eta <= residual_bound(n_params, dtype)``.
    iterations : int
        The products (and substitutions) spent.

    Examples
    --------
    The factorization at one damping preconditions the solve at twice that damping:

    >>> import numpy as np
    >>> from tallskinny_np import MLP, Curvature
    >>> from tallskinny_np.certify import residual_bound
    >>> from tallskinny_np.optim.reuse import preconditioned_solve
    >>> net = MLP([3, 4, 4, 2], activation="tanh")
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.standard_normal((5, 3)), rng.integers(0, 2, 5)
    >>> curv = Curvature(net, net.init_params(seed=0), X, y, kind="ggn")
    >>> fac = curv.factor(0.1)
    >>> M_inv = lambda v: curv._substitute(fac, "riccati", v[:, None])[:, 0]
    >>> x, eta, its = preconditioned_solve(curv, curv.grad, 0.2, M_inv, 20)
    >>> bool(eta <= residual_bound(net.n_params, net.dtype)), its < 20
    (True, True)
    """
    krylov = preconditioned_cg if curv.kind == "ggn" else gmres
    target = residual_bound(curv.n_params, curv.net.dtype)
    nu = probe_norm(curv, damping)        # a lower bound on ||H + lam I||, made sharper below
    spent = 0

    def apply(v):
        nonlocal nu                       # every ||A v|| / ||v|| is a lower bound on ||A||
        Av = curv._shifted_product(v[:, None], damping)
        size = column_norms(v[:, None])[0]
        if size > 0:
            nu = max(nu, float(column_norms(Av)[0] / size))
        return Av[:, 0]

    def precond(v):
        nonlocal spent
        spent += 1
        return M_inv(v)

    def eta_of(r, x):
        return float(backward_errors(r[:, None], x[:, None], b[:, None], nu)[0])

    x, r = array_module(b).zeros_like(b), b
    eta = eta_of(r, x)
    while not eta <= target and spent < budget:
        # the correction needs a residual of target (nu ||x|| + ||b||) at most
        scale = nu * column_norms(x[:, None])[0] + column_norms(b[:, None])[0]
        rtol = target * scale / column_norms(r[:, None])[0]
        x_new = x + krylov(apply, precond, r, budget - spent, rtol)
        r_new = b - apply(x_new)
        e = eta_of(r_new, x_new)
        if not e < eta:
            break
        x, r, eta = x_new, r_new, e
    return x, eta, spent


class PreconditionedNewton(DampedNewton):
    """Damped Newton or Gauss-Newton steps ``s = -(H_t + lam_t I)^{-1} g_t``, exact to the
    certified solve's backward error, by a Krylov method preconditioned with the held
    factorization of an earlier ``M = H_s + lam_s I`` (:func:`preconditioned_solve`,
    docs/math.md section 8.5): H_t is the curvature at the current parameters (its O(L)
    products are cheap), M the last one factored. When the Krylov method does not reach
    the certified level within ``budget`` iterations, ``H_t + lam_t I`` is factored and
    solved directly, as :class:`DampedNewton` does every step, and held from then on; the
    next 1, 2, 4, ... solves after such a failure factor without trying (:meth:`direction`).
    lam follows the Levenberg-Marquardt rule of :class:`DampedNewton` freely: a change of
    lam is one more term of ``M^{-1} (H_t + lam_t I) - I``, not a new factorization.

    The caller builds ``curv`` at the current parameters every step. :attr:`held` is the
    :class:`~tallskinny_np.Curvature` whose factorization preconditions; the state records
    its parameters ``held_params`` and damping ``held_damping``, and a caller that wants to
    rebuild it after a resume records which batch it was on (``tallskinny-train`` keeps
    ``held_step``). ``info`` adds ``krylov_iterations`` (the products, hence
    substitutions, of the Krylov solves of this step, every trial's) and ``refactored``
    (the factorizations of this step).

    Parameters
    ----------
    damping, factor, min_damping, trials, max_failures, backtrack
        As :class:`DampedNewton`.
    kind : {"ggn", "hessian"}, optional
        The curvature (default "ggn"): conjugate gradients for ``G + lam I``, GMRES for the
        indefinite ``H + lam I``.
    budget : int, optional
        Krylov iterations per trial step before refactoring, >= 0 (default
        :data:`BUDGET`); 0 factors every trial step, as :class:`DampedNewton`.

    Raises
    ------
    ValueError
        For a parameter out of range.

    Examples
    --------
    Two steps on one batch: the first factors, the second reuses that factorization.

    >>> import numpy as np
    >>> from tallskinny_np import MLP, Curvature
    >>> from tallskinny_np.optim import PreconditionedNewton, loss_and_gradient
    >>> net = MLP([4, 3, 2])
    >>> params = net.init_params(seed=0)
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.standard_normal((8, 4)), rng.integers(0, 2, 8)
    >>> loss_at = lambda theta: float(net.loss(theta, X, y))
    >>> opt = PreconditionedNewton(damping=1.0, kind="ggn")
    >>> for _ in range(2):
    ...     loss, g, _ = loss_and_gradient(net, params, X, y)
    ...     params, info = opt.step(params, loss, g, Curvature(net, params, X, y, kind="ggn"),
    ...                             loss_at)
    ...     print(info["accepted"], info["refactored"], info["krylov_iterations"] > 0)
    True 1 False
    True 0 True
    """

    def __init__(self, damping=1.0, kind="ggn", budget=BUDGET, **rule):
        super().__init__(damping, kind, **rule)
        self.budget = count("budget", budget, 0)
        self.held = None
        self._work = {}

    def step(self, params, loss, grad, curv, loss_at, hold=False):
        """:meth:`DampedNewton.step`, with this step's ``krylov_iterations`` and
        ``refactored`` (over all its trials) in ``info``."""
        self._work = {"krylov_iterations": 0, "refactored": 0}
        new, info = super().step(params, loss, grad, curv, loss_at, hold)
        return new, {**info, **self._work}

    def direction(self, curv, grad, damping):
        """``-(H_t + damping I)^{-1} g`` preconditioned with the held factorization, or
        by factoring ``H_t + damping I`` when that does not reach the certified level
        within the budget (or nothing of this kind is held). After a failed attempt the
        next 1, 2, 4, ... solves (doubling while attempts fail, reset by one that
        succeeds) factor without one, so that where the held factorization never
        preconditions well enough (a new curvature batch every step) the budgets spent
        grow with the logarithm of the steps, not with the steps."""
        held, wait = self.held, self.state.get("wait", 0)
        if held is not None and held.kind == curv.kind and self.budget > 0 and wait == 0:
            fac = held.factor(self.state["held_damping"])

            def M_inv(v):
                return held._substitute(fac, "riccati", v[:, None])[:, 0]

            x, eta, spent = preconditioned_solve(curv, -grad, damping, M_inv, self.budget)
            self._work["krylov_iterations"] += spent
            if eta <= residual_bound(curv.n_params, curv.net.dtype):
                self.state["backoff"] = 0
                return x, {}
            self.state["backoff"] = 2 * self.state.get("backoff", 0) or 1
            self.state["wait"] = self.state["backoff"]
        elif wait:
            self.state["wait"] = wait - 1
        s, extra = super().direction(curv, grad, damping)
        self._work["refactored"] += 1
        self.held = curv
        self.state.update(held_params=curv.params, held_damping=damping)
        return s, extra
