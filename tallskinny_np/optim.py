"""Optimizers on flat parameter vectors (NumPy or CuPy): SGD with momentum, Adam, and exact
second-order steps from a :class:`tallskinny_np.Curvature`.

Second-order steps minimise the quadratic model of the loss at ``theta``::

    m(s) = f + g^T s + 1/2 s^T H s

with H the Hessian or the Gauss-Newton matrix ``J^T Lambda J`` (docs/math.md section 2.5),
solved exactly in O(L) by ``curv.solve`` (docs/math.md section 4). The gradient g
comes from the gradient batch; the curvature may come from a sub-batch of it. A step is
judged by the reduction ratio ``rho = (f(theta) - f(theta + s)) / (m(0) - m(s))`` on the
gradient batch, and rejected when rho is below :data:`ACCEPT` (or the trial loss is not
finite). Second-order optimizers take any curvature-like object with ``solve(b, damping)``,
``hvp(v)``, ``is_positive_definite(shift)`` and ``lambda_min(tol)``.

- :class:`DampedNewton`: ``s = -(H + lam I)^{-1} g`` (``--optimizer newton``) or
  ``-(G + lam I)^{-1} g`` (``--optimizer ggn``), with Levenberg-Marquardt adaptation of lam.
- :class:`TrustRegion`: ``min m(s)`` subject to ``||s|| <= Delta``, solved exactly by
  Moré-Sorensen iterations on lam (:func:`trust_region_subproblem`), with the inertia of
  ``H + lam I`` (docs/math.md section 4.7, eq. (4.18)) deciding positive
  definiteness, and the radius adapted from rho.

For indefinite H (docs/math.md section 8), with the rule and trials of DampedNewton:

- :class:`HessianFree`: the damped system solved by truncated CG on the exact products
  (Martens 2010), the peer of the exact solves (section 8.1).
- :class:`SaddleFreeNewton`: ``s = -(|H| + lam I)^{-1} g``, the negative eigenpairs by
  shift-invert Lanczos on the certified solves (section 8.2).
- :class:`ModifiedNewton`: one modified Riccati sweep, each pivot made positive
  definite, solves with ``H + lam I + E`` (section 8.3).
- :class:`GaussNewtonToNewton`: Gauss-Newton steps, then Newton steps below a loss
  (section 8.4).
"""
import math
import numbers

import numpy as np

from .backend import array_module
from .blocks import gradient, linearize

ACCEPT = 1e-4            # a step is accepted when rho > ACCEPT (Moré 1978)
ARMIJO = 1e-4            # sufficient decrease of a backtracked step (Nocedal and Wright 3.4)
SHRINK_BELOW = 0.25      # rho < 1/4: the model was poor, damp more / shrink the radius
EXPAND_ABOVE = 0.75      # rho > 3/4: the model was good, damp less / grow the radius


def _real(name, value, what, test):
    """``value`` as a float if it is a finite real number for which ``test`` holds, else a
    ValueError naming ``name`` and saying ``what`` it must be."""
    try:
        ok = (isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
              and math.isfinite(value) and test(float(value)))
    except OverflowError:                  # a Fraction or int beyond float's range
        ok = False
    if not ok:
        raise ValueError(f"{name} must be a finite number {what}; got {value!r}")
    return float(value)


def _count(name, value, low):
    """``value`` as an int if it is an integer >= low, else a ValueError naming ``name``."""
    if (not isinstance(value, numbers.Integral) or isinstance(value, (bool, np.bool_))
            or value < low):
        raise ValueError(f"{name} must be an integer >= {low}; got {value!r}")
    return int(value)


def loss_and_gradient(net, params, X, y):
    """The batch-mean loss, its gradient and the softmax (the outputs for the MSE), by one
    forward and one backward pass and no derivative blocks (docs/math.md eqs. (2.8),
    (2.9)).

    Parameters
    ----------
    net : MLP
    params : array_like, shape (n_params,)
    X : array_like, shape (B, n_0)
    y : array_like of int, shape (B,), or of float, shape (B, n_L)
        Labels, or the MSE's targets.

    Returns
    -------
    loss : float
    g : ndarray, shape (n_params,)
        The gradient in the flat layout of docs/math.md section 1.3.
    pi : ndarray, shape (B, n_classes)
        The softmax of the logits; for ``loss="mse"`` the logits, the network's outputs.

    Raises
    ------
    ValueError
        For parameters or data that :class:`~tallskinny_np.MLP` refuses.

    Examples
    --------
    >>> import numpy as np
    >>> from tallskinny_np import MLP
    >>> from tallskinny_np.optim import loss_and_gradient
    >>> net = MLP([4, 3, 2])
    >>> loss, g, pi = loss_and_gradient(net, net.init_params(), np.ones((5, 4)), [0] * 5)
    >>> g.shape, pi.shape
    ((23,), (5, 2))
    """
    params = net.check_params(params)
    X, y = net.check_data(X, y)
    lin = linearize(net, params, X, y)
    return float(lin.loss), net.join(gradient(net, lin)), lin.O if lin.pi is None else lin.pi


class SGD:
    """SGD with heavy-ball momentum: ``v <- mu v + g``, ``theta <- theta - lr v``.

    Parameters
    ----------
    lr : float
        The learning rate, > 0.
    momentum : float, optional
        ``mu`` in [0, 1) (default 0.9).

    Raises
    ------
    ValueError
        For lr or momentum out of range.

    Examples
    --------
    Two steps on ``f(theta) = ||theta||^2 / 2``, whose gradient is theta:

    >>> import numpy as np
    >>> from tallskinny_np.optim import SGD
    >>> opt = SGD(lr=0.1, momentum=0.9)
    >>> theta = np.array([1.0, -2.0])
    >>> for _ in range(2):
    ...     theta = opt.step(theta, theta)
    >>> theta
    array([ 0.72, -1.44])
    """
    kind = None

    def __init__(self, lr, momentum=0.9):
        self.lr = _real("lr", lr, "> 0", lambda x: x > 0)
        self.momentum = _real("momentum", momentum, "in [0, 1)", lambda x: 0 <= x < 1)
        self.state = {}

    def step(self, params, grad):
        """The parameters after one step with gradient ``grad`` (a new array)."""
        v = self.state.get("velocity")
        v = grad if v is None else self.momentum * v + grad
        self.state["velocity"] = v
        return params - self.lr * v


class Adam:
    """Adam (Kingma and Ba 2015) with bias-corrected first and second moments.

    Parameters
    ----------
    lr : float
        The learning rate, > 0.
    beta1, beta2 : float, optional
        Decay rates of the first and second moments, in [0, 1) (defaults 0.9, 0.999).
    eps : float, optional
        Added to the root of the second moment, > 0 (default 1e-8).

    Raises
    ------
    ValueError
        For a parameter out of range.

    Examples
    --------
    The first step moves each coordinate by about ``lr`` against its gradient's sign:

    >>> import numpy as np
    >>> from tallskinny_np.optim import Adam
    >>> theta = np.array([1.0, -2.0])
    >>> Adam(lr=0.1).step(theta, theta)
    array([ 0.9, -1.9])
    """
    kind = None

    def __init__(self, lr, beta1=0.9, beta2=0.999, eps=1e-8):
        self.lr = _real("lr", lr, "> 0", lambda x: x > 0)
        self.beta1 = _real("beta1", beta1, "in [0, 1)", lambda x: 0 <= x < 1)
        self.beta2 = _real("beta2", beta2, "in [0, 1)", lambda x: 0 <= x < 1)
        self.eps = _real("eps", eps, "> 0", lambda x: x > 0)
        self.state = {}

    def step(self, params, grad):
        """The parameters after one step with gradient ``grad`` (a new array)."""
        xp = array_module(params)
        t = self.state.get("t", 0) + 1
        m = self.state.get("m", 0) * self.beta1 + (1 - self.beta1) * grad
        v = self.state.get("v", 0) * self.beta2 + (1 - self.beta2) * grad * grad
        self.state.update(t=t, m=m, v=v)
        m_hat = m / (1 - self.beta1 ** t)
        v_hat = v / (1 - self.beta2 ** t)
        return params - self.lr * m_hat / (xp.sqrt(v_hat) + self.eps)


def model_decrease(curv, grad, s):
    """``m(0) - m(s) = -(g^T s + 1/2 s^T H s)``, the decrease the quadratic model
    predicts for the step s."""
    return -float(grad @ s + 0.5 * (s @ curv.hvp(s)))


def reduction_ratio(loss, trial_loss, predicted):
    """``rho = (f(theta) - f(theta + s)) / (m(0) - m(s))``; -inf when the trial loss is
    not finite or the model predicts no decrease (then the step is worthless)."""
    if not math.isfinite(trial_loss) or not predicted > 0:
        return -math.inf
    return (loss - trial_loss) / predicted


def check_failures(state, failed, limit, what):
    """Count consecutive failed trials (non-finite loss or a singular solve) and give up
    with a message after ``limit`` of them."""
    state["failures"] = state.get("failures", 0) + 1 if failed else 0
    if state["failures"] >= limit:
        raise FloatingPointError(
            f"{state['failures']} consecutive trial steps gave a non-finite loss or a "
            f"singular system ({what}); the run has diverged or the data are broken")


class DampedNewton:
    """Damped Newton ``s = -(H + lam I)^{-1} g`` (``kind="hessian"``) or Gauss-Newton
    ``s = -(G + lam I)^{-1} g`` (``kind="ggn"``), docs/math.md section 4, with the
    Levenberg-Marquardt rule for lam: divide it by ``factor`` when rho > 3/4, multiply it
    by ``factor`` (at least to ``min_damping``) when rho < 1/4.

    The default factor 2 was chosen on the embedded digits run (ggn, batch 32): factors
    1.25, 1.5, 2 and 3 gave final training losses 0.246, 0.243, 0.242 and 0.426 after 400
    steps, and factors 1.5, 2 and 3 reached 100% accuracy on one memorised batch of 32 in
    24, 20 and 20 steps; the largest factor over-reacts to the noise of minibatch
    reduction ratios.

    A rejected step (rho <= 1e-4) that points downhill (``g^T s < 0``) is first halved
    up to ``backtrack`` times, each a loss evaluation on the same direction, and the first
    point with a sufficient decrease (Armijo: ``f(theta + t s) <= f(theta) + 1e-4 t g^T s``)
    is accepted, as Martens (2010) backtracks along the CG step; lam still grows by
    ``factor``. A direction costs a factorization, a trial loss a forward pass. Measured
    on the memorisation of the embedded digits to a loss of 1e-8 (``tallskinny-train
    --task precision --optimizer ggn-newton --backtrack 0``, then ``3``; README, "Where
    exact second order pays"). Otherwise the step is retried with the larger lam on the
    same curvature, up to ``trials`` times per step; a solve that is refused (``H + lam I``
    singular to working precision) raises lam by ``factor**2``. After ``max_failures``
    consecutive non-finite losses or refused solves :class:`FloatingPointError` is raised.
    For an indefinite H the step may increase the model; it is then rejected like a poor
    one.

    Parameters
    ----------
    damping : float, optional
        The first lam, >= 0 (default 1).
    kind : {"hessian", "ggn"}, optional
        Which curvature the steps expect (default "hessian"); the caller builds the
        :class:`~tallskinny_np.Curvature` of this kind.
    factor : float, optional
        The Levenberg-Marquardt factor, > 1 (default 2).
    min_damping : float, optional
        The smallest lam after an increase, > 0 (default 1e-8).
    trials : int, optional
        Trial steps per call of :meth:`step`, >= 1 (default 5).
    backtrack : int, optional
        Halvings of a rejected downhill step before a new trial, >= 0 (default 3).
    max_failures : int, optional
        Consecutive failed trials before giving up (default 10).

    Raises
    ------
    ValueError
        For a parameter out of range.

    References
    ----------
    .. [1] J. Martens, "Deep learning via Hessian-free optimization", ICML 2010.

    Examples
    --------
    >>> import numpy as np
    >>> from tallskinny_np import MLP, Curvature
    >>> from tallskinny_np.optim import DampedNewton, loss_and_gradient
    >>> net = MLP([4, 3, 2])
    >>> params = net.init_params(seed=0)
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.standard_normal((8, 4)), rng.integers(0, 2, 8)
    >>> loss, g, _ = loss_and_gradient(net, params, X, y)
    >>> loss_at = lambda theta: float(net.loss(theta, X, y))
    >>> opt = DampedNewton(damping=1.0, kind="ggn")
    >>> new, info = opt.step(params, loss, g, Curvature(net, params, X, y, kind="ggn"),
    ...                      loss_at)
    >>> info["accepted"], loss_at(new) < loss, opt.state["damping"]
    (True, True, 0.5)
    """

    def __init__(self, damping=1.0, kind="hessian", factor=2.0, min_damping=1e-8, trials=5,
                 max_failures=10, backtrack=3):
        if kind not in ("hessian", "ggn"):
            raise ValueError(f"kind must be 'hessian' or 'ggn'; got {kind!r}")
        self.kind = kind
        self.factor = _real("factor", factor, "> 1", lambda x: x > 1)
        self.min_damping = _real("min_damping", min_damping, "> 0", lambda x: x > 0)
        self.trials = _count("trials", trials, 1)
        self.max_failures = _count("max_failures", max_failures, 1)
        self.backtrack = _count("backtrack", backtrack, 0)
        self.state = {"damping": _real("damping", damping, ">= 0", lambda x: x >= 0)}

    def step(self, params, loss, grad, curv, loss_at, hold=False):
        """One step from ``params``, with trials until one is accepted.

        Parameters
        ----------
        params : ndarray, shape (n_params,)
            The current parameters theta.
        loss : float
            The loss at theta on the gradient batch.
        grad : ndarray, shape (n_params,)
            Its gradient g.
        curv : Curvature or curvature-like
            The curvature at theta (on the curvature batch, which may be a sub-batch).
        loss_at : callable
            ``loss_at(theta)``, the gradient batch's loss at other parameters.
        hold : bool, optional
            Keep lam where a decrease is due (rho > 3/4), so that the next step with the
            same curvature reuses this factorization (increases still apply).

        Returns
        -------
        params : ndarray
            The new parameters (``params`` itself if every trial was rejected).
        info : dict
            ``accepted``, ``rho``, ``damping`` (the lam used), ``trials``.

        Raises
        ------
        FloatingPointError
            After ``max_failures`` consecutive non-finite trial losses or singular solves.
        """
        extra = {}
        for trial in range(1, self.trials + 1):
            lam = self.state["damping"]
            try:
                s, extra = self.direction(curv, grad, lam)
            except np.linalg.LinAlgError:       # singular, or not certified: damp more
                check_failures(self.state, True, self.max_failures, f"damping {lam:.3g}")
                # lam sits on or below negative curvature by an unknown amount: factor^2
                # reaches it from min_damping within max_failures trials on any scale
                # the Hessian of a memorised batch has.
                self.state["damping"] = max(lam * self.factor ** 2, self.min_damping)
                rho = -math.inf
                continue
            trial_loss = loss_at(params + s)
            rho = reduction_ratio(loss, trial_loss, model_decrease(curv, grad, s))
            check_failures(self.state, not math.isfinite(trial_loss), self.max_failures,
                           f"damping {lam:.3g}")
            if rho > EXPAND_ABOVE and not hold:
                self.state["damping"] = lam / self.factor
            elif rho < SHRINK_BELOW:
                self.state["damping"] = max(lam * self.factor, self.min_damping)
            if rho > ACCEPT:
                return params + s, dict(accepted=True, rho=rho, damping=lam, trials=trial,
                                        **extra)
            t = self._backtrack(params, loss, grad, s, loss_at)
            if t is not None:
                return params + t * s, dict(accepted=True, rho=rho, damping=lam,
                                            trials=trial, **extra)
        return params, dict(accepted=False, rho=rho, damping=lam, trials=self.trials, **extra)

    def _backtrack(self, params, loss, grad, s, loss_at):
        """The first ``t = 1/2, 1/4, ...`` (at most ``backtrack`` halvings) at which the
        downhill direction s gives the Armijo decrease, or None."""
        slope = float(grad @ s)
        t = 1.0
        for _ in range(self.backtrack if slope < 0 else 0):
            t /= 2
            if loss_at(params + t * s) <= loss + ARMIJO * t * slope:
                return t
        return None

    def curvature_kind(self, loss):
        """The kind of curvature the next step needs at this loss: ``self.kind``."""
        return self.kind

    def direction(self, curv, grad, lam):
        """The trial step ``-(H + lam I)^{-1} g`` (or the GGN's) by the O(L) solve, and a
        dict of what to report beside it (nothing here). The reduction ratio judges the
        step, so the solve need not certify: it stops after the first factorization's
        refinement and returns its best answer (``fallback=False``,
        ``uncertified="return"``); where the certificate is limited by the rounding of
        the O(L) product itself (large weights near a memorised batch), the fallbacks
        would cost tens of steps each and reach no better. A singular ``H + lam I`` is
        still refused."""
        return -curv.solve(grad, lam, uncertified="return", fallback=False), {}


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
    rng = np.random.default_rng(0)
    u = xp.asarray(rng.standard_normal(s.shape[0])).astype(s.dtype)
    for _ in range(inverse_iterations):
        u = curv.solve(u, lam)
        u = u / xp.linalg.norm(u)
    su = float(s @ u)
    root = math.sqrt(su * su + radius * radius - ns * ns)
    steps = [s + (-su + root) * u, s + (-su - root) * u]
    values = [float(grad @ p + 0.5 * (p @ curv.hvp(p))) for p in steps]
    return steps[int(values[1] < values[0])], lam


class ModifiedNewton(DampedNewton):
    """Modified Newton ``s = -(H + lam I + E)^{-1} g`` by one modified Riccati sweep
    (:meth:`tallskinny_np.Curvature.modified_solve`, docs/math.md section 8.3): each
    pivot's eigenvalues replaced by their absolute values, floored at ``floor``, so that
    the matrix inverted is positive definite and equals ``H + lam I`` wherever that is
    positive definite with room ``floor``. lam follows the Levenberg-Marquardt rule of
    :class:`DampedNewton`; ``info`` reports ``modification``, ``||E||_2``.

    Parameters
    ----------
    damping, factor, min_damping, trials, max_failures
        As :class:`DampedNewton`.
    floor : float, optional
        delta, the smallest pivot eigenvalue, > 0 (default 1e-8).

    References
    ----------
    .. [1] S. H. Cheng and N. J. Higham, "A modified Cholesky algorithm based on a
       symmetric indefinite factorization", SIAM J. Matrix Anal. Appl. 19(4), 1998.
       doi:10.1137/S0895479896302898
    """

    def __init__(self, damping=1.0, floor=1e-8, **rule):
        super().__init__(damping, "hessian", **rule)
        self.floor = _real("floor", floor, "> 0", lambda x: x > 0)

    def direction(self, curv, grad, lam):
        """``-(H + lam I + E)^{-1} g`` from the modified sweep."""
        x, e_norm = curv.modified_solve(grad, lam, self.floor)
        return -x, {"modification": e_norm}


class GaussNewtonToNewton(DampedNewton):
    """Gauss-Newton steps ``-(G + lam I)^{-1} g`` until the loss first falls to
    ``switch_loss``, damped Newton steps ``-(H + lam I)^{-1} g`` from then on, with one
    Levenberg-Marquardt damping throughout.

    The GGN is positive semi-definite and makes good progress far from a minimum, where H
    is indefinite; but when a cross-entropy batch is memorised the residual term
    ``H - G`` shrinks with the loss only as fast as G itself, so Gauss-Newton slows to a
    crawl while Newton's steps keep their rate (docs/math.md section 8.4).

    Parameters
    ----------
    damping, factor, min_damping, trials, max_failures
        As :class:`DampedNewton`.
    switch_loss : float, optional
        The loss at which to switch, > 0 (default 0.1).

    Examples
    --------
    >>> from tallskinny_np.optim import GaussNewtonToNewton
    >>> opt = GaussNewtonToNewton(switch_loss=0.01)
    >>> opt.curvature_kind(0.5), opt.curvature_kind(0.005), opt.curvature_kind(0.5)
    ('ggn', 'hessian', 'hessian')
    """

    def __init__(self, damping=1.0, switch_loss=0.1, **rule):
        super().__init__(damping, "ggn", **rule)
        self.switch_loss = _real("switch_loss", switch_loss, "> 0", lambda x: x > 0)

    def curvature_kind(self, loss):
        """"ggn" until the loss first reaches ``switch_loss``, "hessian" after (kept in
        the state, so a resumed run keeps the switch)."""
        if loss <= self.switch_loss:
            self.state["switched"] = 1
        return "hessian" if self.state.get("switched") else "ggn"


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
    kind = "hessian"

    def curvature_kind(self, loss):
        """Always "hessian"."""
        return self.kind

    def __init__(self, radius=1.0, max_radius=1e3, rtol=0.1, trials=5, max_failures=10):
        self.max_radius = _real("max_radius", max_radius, "> 0", lambda x: x > 0)
        radius = _real("radius", radius, "in (0, max_radius]", lambda x: 0 < x <= max_radius)
        self.rtol = _real("rtol", rtol, "in (0, 1)", lambda x: 0 < x < 1)
        self.trials = _count("trials", trials, 1)
        self.max_failures = _count("max_failures", max_failures, 1)
        self.state = {"radius": radius, "damping": 0.0}

    def step(self, params, loss, grad, curv, loss_at):
        """One step from ``params``, with trials until one is accepted.

        Parameters and return values as :meth:`DampedNewton.step`; ``info`` also holds
        ``radius`` (the one used), and ``damping`` is the subproblem's lam.
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


CG_DECAY = 0.95        # CG starts from 0.95 times the previous step's solution (Martens 2010)


def truncated_cg(apply, b, x0=None, max_iter=250, progress=5e-4, rtol=1e-12):
    """Conjugate gradients on ``phi(x) = 1/2 x^T A x - b^T x``, truncated as in Martens
    (2010, section 4.4).

    Iteration i stops when ``i > k``, ``phi(x_i) < 0`` and
    ``(phi(x_i) - phi(x_{i-k})) / phi(x_i) < k * progress`` with ``k = max(10, i / 10)``
    (the relative decrease of the quadratic over the last k iterations is too small to
    pay for them), when the residual is below ``rtol ||b||``, after ``max_iter``
    iterations, or at a direction of non-positive curvature ``p^T A p <= 0`` (possible for
    an indefinite A: the iterate before it is returned). A start ``x0`` (the warm start)
    with ``phi(x0) >= 0`` is replaced by 0. ``phi`` is tracked as
    ``-1/2 x^T (b + r)`` with the recursive residual r, at no extra product.

    Parameters
    ----------
    apply : callable
        ``v -> A v`` for a symmetric A.
    b : ndarray, shape (n,)
    x0 : ndarray, shape (n,), optional
        The first iterate (default 0).
    max_iter : int, optional
        Martens's cap on the iterations (default 250).
    progress : float, optional
        Martens's epsilon (default 5e-4): stop when the last k iterations improved phi by
        less than ``k * progress`` of it.
    rtol : float, optional
        Relative residual at which to stop (default 1e-12).

    Returns
    -------
    x : ndarray, shape (n,)
    iterations : int
        Products with A after the first residual.
    stop : str
        ``"progress"``, ``"residual"``, ``"max_iter"`` or ``"negative curvature"``.

    References
    ----------
    .. [1] J. Martens, "Deep learning via Hessian-free optimization", ICML 2010.

    Examples
    --------
    >>> import numpy as np
    >>> from tallskinny_np.optim import truncated_cg
    >>> A = np.diag([1.0, 2.0, 4.0])
    >>> x, its, stop = truncated_cg(lambda v: A @ v, np.ones(3))
    >>> np.allclose(x, [1, 0.5, 0.25]), its, stop
    (True, 3, 'residual')
    """
    xp = array_module(b)
    bnorm = float(xp.linalg.norm(b))
    x = xp.zeros_like(b) if x0 is None else x0.copy()
    r = b - apply(x) if x0 is not None else b.copy()
    phi = -0.5 * float(x @ (b + r))
    if phi >= 0 and x0 is not None:
        x, r, phi = xp.zeros_like(b), b.copy(), 0.0
    history = [phi]
    p = None
    rr = float(r @ r)
    for i in range(1, max_iter + 1):
        if math.sqrt(rr) <= rtol * bnorm:
            return x, i - 1, "residual"
        p = r.copy() if p is None else r + (rr / rr_old) * p
        Ap = apply(p)
        curvature = float(p @ Ap)
        if not curvature > 0:
            return x, i, "negative curvature"
        alpha = rr / curvature
        x = x + alpha * p
        r = r - alpha * Ap
        rr_old, rr = rr, float(r @ r)
        phi = -0.5 * float(x @ (b + r))
        history.append(phi)
        k = max(10, i // 10)
        if i > k and phi < 0 and (phi - history[i - k]) / phi < k * progress:
            return x, i, "progress"
    return x, max_iter, "max_iter"


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
        self.max_iter = _count("max_iter", max_iter, 1)
        self.progress = _real("progress", progress, ">= 0", lambda x: x >= 0)
        self.decay = _real("decay", decay, "in [0, 1]", lambda x: 0 <= x <= 1)

    def direction(self, curv, grad, lam):
        """The truncated CG solution of ``(G + lam I) s = -g`` from the warm start."""
        previous = self.state.get("cg_solution")
        s, iterations, _ = truncated_cg(lambda v: curv.hvp(v) + lam * v, -grad,
                                        None if previous is None else self.decay * previous,
                                        self.max_iter, self.progress)
        self.state["cg_solution"] = s
        return s, {"cg_iterations": iterations}


def smallest_eigenpairs(curv, k):
    """The k smallest eigenvalues of H (ascending) and their orthonormal eigenvectors, by
    shift-invert Lanczos (ARPACK's ``eigsh``) on the certified O(L) solves with
    ``H - sigma I`` (docs/math.md section 8.2).

    sigma lies below lambda_min: the Lanczos value theta_min minus a gap (1% of ``||H||``,
    quadrupled until the certified count ``n(H < sigma)`` is 0), so the eigenvalues of
    ``(H - sigma I)^{-1}`` of largest magnitude belong to the smallest of H. For
    ``k >= n_params - 1`` (ARPACK needs ``k < n``) the dense eigendecomposition is used.

    Raises
    ------
    numpy.linalg.LinAlgError
        When ARPACK does not converge, or a solve cannot be certified.
    """
    from scipy.sparse.linalg import ArpackError, eigsh
    n = curv.n_params
    if array_module(curv.params) is not np:
        raise ValueError("saddle-free steps need NumPy arrays (ARPACK's shift-invert mode)")
    if k >= n - 1:
        w, U = np.linalg.eigh(curv.hvp(np.eye(n, dtype=curv.dtype)))
        return w[:k], U[:, :k]
    theta_min, _ = curv.ritz_interval()
    gap = 0.01 * max(curv.norm_estimate(), np.finfo(curv.dtype).tiny)   # refused if NaN
    while curv.count_eigenvalues_below(theta_min - gap) > 0:
        gap *= 4
    sigma = theta_min - gap
    try:
        w, U = eigsh(curv.to_scipy(), k=k, sigma=sigma, which="LM",
                     OPinv=curv.inverse(-sigma), tol=0)
    except ArpackError as e:
        raise np.linalg.LinAlgError(f"shift-invert Lanczos for {k} eigenpairs: {e}") from None
    order = np.argsort(w)
    return w[order], U[:, order]


def negative_pairs(curv, max_pairs=None, tol=1e-6):
    """``(k, w, U)``: the certified number k of eigenvalues of H below ``-tol ||H||``, and
    the ``min(k, max_pairs)`` smallest eigenpairs (one more when ``max_pairs < k``: the
    top-k shift needs it), as :func:`saddle_free_solve` uses them."""
    n_neg = curv.count_eigenvalues_below(-tol * curv.norm_estimate())
    k = n_neg if max_pairs is None else min(n_neg, max_pairs)
    if n_neg == 0:
        return 0, None, None
    return (n_neg, *smallest_eigenpairs(curv, k + (n_neg > k)))


def saddle_free_solve(curv, b, damping, max_pairs=None, tol=1e-6, pairs=None):
    """``(|H| + damping I)^{-1} b`` with ``|H| = sum_i |lambda_i| u_i u_i^T``, in O(L) plus
    a rank-k correction (docs/math.md section 8.2, eqs. (8.3)-(8.5)).

    The number k of negative eigenvalues is the certified count ``n(H < -tol ||H||)``:
    a count at 0 itself is not certifiable, H being singular (docs/math.md section 3.5),
    and an eigenvalue in ``[-tol ||H||, 0)`` left unflipped changes the result by at most
    ``2 tol ||H|| / (damping - tol ||H||)`` relative. The eigenpairs ``(w, U)`` come from
    :func:`smallest_eigenpairs`, and with ``c = U^T b``::

        x = P (H + damping I)^{-1} (b - U c) + U diag(1 / (|w| + damping)) c,
        P = I - U U^T

    which is ``(H + damping I)^{-1} b`` corrected on the span of U; the right-hand side and
    the result are projected off U, so a ``lambda_i + damping`` near 0 leaves no trace
    (a ``H + damping I`` singular to working precision still raises).

    With ``max_pairs`` below k (the top-k variant) only the ``max_pairs`` most negative
    pairs are flipped and the shift becomes ``damping - lambda_{max_pairs + 1}``, so that
    the matrix inverted, H with those pairs flipped plus the shift, is positive definite
    (its smallest eigenvalue is ``damping``).

    ``pairs``, the result of :func:`negative_pairs` for this curvature, saves computing
    them again for another damping.

    Returns
    -------
    x : ndarray, shape (n_params,)
    info : dict
        ``negative`` (k), ``flipped`` (pairs used) and ``shift`` (the damping applied).

    Examples
    --------
    >>> import numpy as np
    >>> from tallskinny_np import MLP, Curvature
    >>> from tallskinny_np.optim import saddle_free_solve
    >>> net = MLP([3, 4, 4, 2], activation="tanh")
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.standard_normal((5, 3)), rng.integers(0, 2, 5)
    >>> curv = Curvature(net, net.init_params(seed=0, gain=2.0), X, y)
    >>> x, info = saddle_free_solve(curv, curv.grad, 0.1)
    >>> w, U = np.linalg.eigh(curv @ np.eye(net.n_params))
    >>> dense = U @ ((U.T @ curv.grad) / (np.abs(w) + 0.1))
    >>> info["negative"] > 0, bool(np.linalg.norm(x - dense) <= 1e-10 * np.linalg.norm(dense))
    (True, True)
    """
    n_neg, w, U = pairs or negative_pairs(curv, max_pairs, tol)
    k = n_neg if max_pairs is None else min(n_neg, max_pairs)
    if n_neg == 0:
        return curv.solve(b, damping), dict(negative=0, flipped=0, shift=damping)
    shift = damping
    if n_neg > k:
        shift = damping - min(float(w[k]), 0.0)
        w, U = w[:k], U[:, :k]
    c = U.T @ b
    x = curv.solve(b - U @ c, shift)
    x = x - U @ (U.T @ x) + U @ (c / (np.abs(w) + shift))
    return x, dict(negative=n_neg, flipped=k, shift=shift)


class SaddleFreeNewton(DampedNewton):
    """Saddle-free Newton ``s = -(|H| + lam I)^{-1} g`` (Dauphin et al. 2014) with the
    exact |H| on the negative eigenvalues found by :func:`saddle_free_solve`, lam adapted by
    the Levenberg-Marquardt rule of :class:`DampedNewton` (the reduction ratio judges the
    step against the quadratic model with H, whose decrease is positive for this step).

    Parameters
    ----------
    damping, factor, min_damping, trials, max_failures
        As :class:`DampedNewton`.
    max_pairs : int, optional
        Flip at most this many of the most negative eigenpairs (the top-k variant; default
        None: all of them).

    References
    ----------
    .. [1] Y. N. Dauphin, R. Pascanu, C. Gulcehre, K. Cho, S. Ganguli and Y. Bengio,
       "Identifying and attacking the saddle point problem in high-dimensional non-convex
       optimization", NeurIPS 2014.
    """

    def __init__(self, damping=1.0, max_pairs=None, **rule):
        super().__init__(damping, "hessian", **rule)
        if max_pairs is not None:
            max_pairs = _count("max_pairs", max_pairs, 0)
        self.max_pairs = max_pairs
        self._pairs = None      # (curvature, negative_pairs of it): the latest

    def direction(self, curv, grad, lam):
        """``-(|H| + lam I)^{-1} g`` (top-k: see :func:`saddle_free_solve`); the
        eigenpairs of a curvature are computed once for all its trial dampings."""
        if self._pairs is None or self._pairs[0] is not curv:
            self._pairs = (curv, negative_pairs(curv, self.max_pairs))
        x, info = saddle_free_solve(curv, grad, lam, self.max_pairs, pairs=self._pairs[1])
        return -x, info
