"""Trust-region Newton (docs/math.md section 4.7): the exact subproblem by Moré-Sorensen
iterations on lam with the certified inertia deciding positive definiteness, the hard case
by the smallest eigenvalue and inverse iteration, and the radius adapted from the
reduction ratio."""
import math

import numpy as np

from ..backend import array_module
from ..krylov import inverse_iteration, random_start
from .acceptance import (ACCEPT, EXPAND_ABOVE, SHRINK_BELOW, check_failures, model_decrease,
                         reduction_ratio)
from .checks import count, real


def trust_region_subproblem(curv, grad, radius, damping=0.0, rtol=0.1, max_iter=60):
    """The exact trust-region step: ``min g^T s + 1/2 s^T H s`` subject to
    ``||s|| <= radius``, by the iteration of Moré and Sorensen (1983) on lam.

    The solution satisfies (Moré-Sorensen, Lemma 2.1)::

        (H + lam I) s = -g,   H + lam I positive semi-definite,   lam >= 0,
        lam (radius - ||s||) = 0.

    Returns ``(s, lam)`` with ``(H + lam I) s = -g`` solved exactly (up to rounding) and
    ``| ||s|| - radius | <= rtol radius`` when lam > 0, so s is the exact solution for a
    radius within ``rtol`` of the one asked for.

    Each trial lam is first tested with ``curv.is_positive_definite(lam)`` (the inertia of
    ``H + lam I`` from one Riccati sweep, docs/math.md section 4.7), which replaces the
    Cholesky test of the original algorithm. For positive definite ``H + lam I`` the
    Newton step on ``1/||s(lam)|| - 1/radius`` is
    ``lam + (||s|| / radius - 1) ||s||^2 / (s^T (H + lam I)^{-1} s)`` (one more solve with
    the same factorization); iterates are kept inside a bracket ``[lo, hi]`` of lam*,
    ``lo`` raised at each indefinite or too-short lam, ``hi`` lowered at each too-short
    step. When the bracket closes without the boundary being reached, lam* is
    ``-lambda_min(H)`` (the hard case, g orthogonal to the lowest eigenvectors): see
    :func:`hard_case_step`. ``damping`` is the first lam tried (the previous step's lam;
    0 tests for the interior solution first).

    A short step ``||s|| < radius`` at a positive definite lam is also accepted when
    ``lam (radius^2 - ||s||^2) <= rtol (-g^T s + lam ||s||^2)``: since s minimises
    ``m(p) + lam/2 ||p||^2``, ``m* >= m(s) - lam/2 (radius^2 - ||s||^2)``, so the test
    bounds the model value within ``rtol`` of the optimum (Moré-Sorensen, Lemma 3.4).
    This ends the iteration when lam* = 0 and H is singular (the softmax makes H
    singular at every point, docs/math.md section 3.5), where lam only tends to 0.

    Parameters
    ----------
    curv : Curvature or curvature-like
        Provides ``solve(b, damping)``, ``hvp(v)``, ``is_positive_definite(shift)`` and
        ``lambda_min(tol)``.
    grad : ndarray, shape (n_params,)
        The gradient g.
    radius : float
        The trust radius, > 0.
    damping : float, optional
        The first lam tried (default 0).
    rtol : float, optional
        Relative tolerance on ``||s|| = radius`` (default 0.1).
    max_iter : int, optional
        Iterations on lam before returning the last valid damped step (default 60).

    Returns
    -------
    s : ndarray, shape (n_params,)
        The step.
    lam : float
        Its multiplier, ``(H + lam I) s = -g``.

    Raises
    ------
    RuntimeError
        If no positive definite ``H + lam I`` was met in ``max_iter`` iterations.

    References
    ----------
    .. [1] J. J. Moré and D. C. Sorensen, "Computing a trust region step", SIAM J. Sci.
       Stat. Comput. 4(3):553-572, 1983. doi:10.1137/0904038

    Examples
    --------
    >>> import numpy as np
    >>> from tallskinny_np import MLP, Curvature
    >>> from tallskinny_np.optim import trust_region_subproblem
    >>> net = MLP([4, 3, 2])
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.standard_normal((8, 4)), rng.integers(0, 2, 8)
    >>> curv = Curvature(net, net.init_params(seed=0), X, y)
    >>> s, lam = trust_region_subproblem(curv, curv.grad, radius=0.1)
    >>> lam > 0, bool(abs(np.linalg.norm(s) - 0.1) <= 0.1 * 0.1)
    (True, True)
    >>> bool(np.linalg.norm(curv.hvp(s) + lam * s + curv.grad) < 1e-12)
    True
    """
    xp = array_module(grad)
    gnorm = float(xp.linalg.norm(grad))
    lo, hi = 0.0, math.inf
    # Start from the previous step's lam: lam = 0 is the solution only for a positive
    # (semi-)definite H, and a network's Hessian is singular (the softmax) and seldom so.
    lam = damping
    hard_case_checked = False
    last = None
    for _ in range(max_iter):
        newton = None
        try:
            pd = curv.is_positive_definite(lam)
            s = -curv.solve(grad, lam) if pd else None
        except np.linalg.LinAlgError:  # numerically singular or uncertain: lam too low
            pd = False
        if pd:
            ns = float(xp.linalg.norm(s))
            last = (s, lam)
            if lam == 0 and ns <= radius:
                return s, 0.0                       # interior: the Newton step itself
            if abs(ns - radius) <= rtol * radius:
                return s, lam
            if ns > radius:
                lo = lam
            else:
                hi = lam
                if lam * (radius ** 2 - ns ** 2) <= rtol * (-float(grad @ s) + lam * ns ** 2):
                    return s, lam
            w = curv.solve(s, lam)                  # same factorization: substitutions only
            newton = lam + (ns / radius - 1) * ns * ns / float(s @ w)
        else:
            lo = lam
        if not hard_case_checked and hi - lo <= 1e-2 * hi < math.inf:
            hard_case_checked = True
            step = hard_case_step(curv, grad, radius, rtol)
            if step[0] is not None:
                return step
            lo = step[1]                            # not the hard case: lam* > lo
            newton = None
        if newton is not None and lo < newton < hi:
            lam = newton
        elif math.isinf(hi):
            lam = max(2 * lo, gnorm / radius) or 1.0
        else:
            lam = max(math.sqrt(lo * hi), lo + 0.01 * (hi - lo))
    if last is None:
        raise RuntimeError(f"the trust-region iteration found no positive definite "
                           f"H + lam I in {max_iter} iterations (last bracket [{lo}, {hi}])")
    return last                                     # a valid damped step, off the boundary


def hard_case_step(curv, grad, radius, rtol, tol=1e-10, inverse_iterations=3):
    """The trust-region step when lam* is (nearly) ``-lambda_1``, lambda_1 the smallest
    eigenvalue of H (from ``curv.lambda_min``, spectrum slicing).

    With ``lam = -lambda_1 + delta`` (delta the smallest margin, doubled from
    ``sqrt(eps) max(1, |lambda_1|)``, for which ``H + lam I`` is positive definite):
    if ``||s(lam)|| >= (1 - rtol) radius`` this is not the hard case, and
    ``(None, lam)`` says that lam* > lam (or ``(s, lam)`` when ``s(lam)`` is already on
    the boundary). Otherwise the step ``s(lam) + tau u`` with u the eigenvector of
    lambda_1 (inverse iteration with the shift lam) and ``||s + tau u|| = radius``, tau
    the root with the lower model value (Moré-Sorensen, section 3). When
    ``lambda_1 >= 0`` (H semi-definite and singular, g in its range) ``s(delta)`` is
    returned: the interior solution."""
    xp = array_module(grad)
    lam1 = curv.lambda_min(tol=tol)
    eps = float(np.finfo(np.dtype(grad.dtype)).eps)
    delta = math.sqrt(eps) * max(1.0, abs(lam1))
    while not curv.is_positive_definite(max(0.0, -lam1) + delta):
        delta *= 2
    lam = max(0.0, -lam1) + delta
    s = -curv.solve(grad, lam)
    ns = float(xp.linalg.norm(s))
    if abs(ns - radius) <= rtol * radius:
        return s, lam
    if ns > radius:
        return None, lam
    if lam1 >= 0:
        return s, lam
    u = inverse_iteration(lambda v: curv.solve(v, lam),
                          random_start(s.shape[0], xp, s.dtype, 0), inverse_iterations)
    su = float(s @ u)
    root = math.sqrt(su * su + radius * radius - ns * ns)
    steps = [s + (-su + root) * u, s + (-su - root) * u]
    values = [float(grad @ p + 0.5 * (p @ curv.hvp(p))) for p in steps]
    return steps[int(values[1] < values[0])], lam


class TrustRegion:
    """Trust-region Newton: the exact step of :func:`trust_region_subproblem` with the
    Hessian, and the radius adapted from rho: ``||s|| / 4`` when rho < 1/4, doubled (up
    to ``max_radius``) when rho > 3/4 and the step reached the boundary. A rejected step
    is retried with the smaller radius on the same curvature, up to ``trials`` times.

    Parameters
    ----------
    radius : float, optional
        The first trust radius, in ``(0, max_radius]`` (default 1).
    max_radius : float, optional
        The largest radius (default 1e3).
    rtol : float, optional
        Relative tolerance of the subproblem's boundary condition, in (0, 1) (default 0.1).
    trials : int, optional
        Trial steps per call of :meth:`step`, >= 1 (default 5).
    backtrack : int, optional
        Halvings of a rejected downhill step before a new trial, >= 0 (default 3).
    max_failures : int, optional
        Consecutive non-finite trial losses before giving up (default 10).

    Raises
    ------
    ValueError
        For a parameter out of range.

    References
    ----------
    .. [1] J. J. Moré and D. C. Sorensen, "Computing a trust region step", SIAM J. Sci.
       Stat. Comput. 4(3):553-572, 1983. doi:10.1137/0904038

    Examples
    --------
    >>> import numpy as np
    >>> from tallskinny_np import MLP, Curvature
    >>> from tallskinny_np.optim import TrustRegion, loss_and_gradient
    >>> net = MLP([4, 3, 2])
    >>> params = net.init_params(seed=0)
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.standard_normal((8, 4)), rng.integers(0, 2, 8)
    >>> loss, g, _ = loss_and_gradient(net, params, X, y)
    >>> loss_at = lambda theta: float(net.loss(theta, X, y))
    >>> opt = TrustRegion(radius=0.5)
    >>> new, info = opt.step(params, loss, g, Curvature(net, params, X, y), loss_at)
    >>> info["accepted"], loss_at(new) < loss
    (True, True)
    >>> bool(np.linalg.norm(new - params) <= (1 + opt.rtol) * info["radius"])
    True
    """
    order = 2
    kind = "hessian"

    def curvature_kind(self, loss):
        """Always "hessian"."""
        return self.kind

    def __init__(self, radius=1.0, max_radius=1e3, rtol=0.1, trials=5, max_failures=10):
        self.max_radius = real("max_radius", max_radius, "> 0", lambda x: x > 0)
        radius = real("radius", radius, "in (0, max_radius]", lambda x: 0 < x <= max_radius)
        self.rtol = real("rtol", rtol, "in (0, 1)", lambda x: 0 < x < 1)
        self.trials = count("trials", trials, 1)
        self.max_failures = count("max_failures", max_failures, 1)
        self.state = {"radius": radius, "damping": 0.0}

    def step(self, params, loss, grad, curv, loss_at, hold=False):
        """One step from ``params``, with trials until one is accepted.

        Parameters and return values as :meth:`DampedNewton.step`; ``info`` also holds
        ``radius`` (the one used), and ``damping`` is the subproblem's lam. ``hold`` is
        the optimizer protocol's and changes nothing here: the subproblem picks lam anew
        at every step.
        """
        xp = array_module(params)
        for trial in range(1, self.trials + 1):
            radius = self.state["radius"]
            s, lam = trust_region_subproblem(curv, grad, radius, self.state["damping"],
                                             self.rtol)
            self.state["damping"] = lam
            trial_loss = loss_at(params + s)
            rho = reduction_ratio(loss, trial_loss, model_decrease(curv, grad, s))
            check_failures(self.state, not math.isfinite(trial_loss), self.max_failures,
                           f"trust radius {radius:.3g}")
            ns = float(xp.linalg.norm(s))
            if rho < SHRINK_BELOW:
                # ||s|| / 4 rather than radius / 4: an interior step far inside the
                # region would otherwise be proposed again unchanged.
                self.state["radius"] = ns / 4 if ns > 0 else radius / 4
            elif rho > EXPAND_ABOVE and ns >= (1 - self.rtol) * radius:
                self.state["radius"] = min(2 * radius, self.max_radius)
            info = dict(accepted=rho > ACCEPT, rho=rho, damping=lam, radius=radius,
                        trials=trial)
            if rho > ACCEPT:
                return params + s, info
        return params, info
