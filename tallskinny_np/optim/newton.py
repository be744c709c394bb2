"""The damped Newton family (docs/math.md sections 4, 8.3, 8.4 and 8.6): damped Newton and
Gauss-Newton steps ``-(H + lam I)^{-1} g`` by the O(L) solve with the Levenberg-Marquardt
rule for lam (started at a given value or relative to the curvature's scale), modified
Newton by one modified Riccati sweep, and Gauss-Newton steps that give way to Newton steps
below a loss or once the Newton model predicts their reduction better."""
import math

import numpy as np

from ..deprecation import renamed
from .acceptance import (ACCEPT, ARMIJO, EXPAND_ABOVE, SHRINK_BELOW, check_failures,
                         model_decrease, reduction_ratio)
from .checks import count, real

RELATIVE_DAMPING = 0.25
"""The first lam with ``damping=None``, relative to the curvature's scale: a quarter of the
20-step Lanczos estimate of ``||H||_2`` (or ``||G||_2``) at the first step (docs/math.md
section 8.6)."""
SWITCH_TOLERANCE = 0.25
"""Gauss-Newton gives way to Newton when the Newton model's reduction ratio of an accepted
Gauss-Newton step that its own model mispredicted (rho < 3/4) is within this of 1."""


def first_damping(damping):
    """The constructor's ``damping`` as the state keeps it: NaN for None (relative, set at
    the first step), else a number >= 0."""
    if damping is None:
        return math.nan
    return real("damping", damping, ">= 0", lambda x: x >= 0)


class DampedNewton:
    """Damped Newton ``s = -(H + lam I)^{-1} g`` (``kind="hessian"``) or Gauss-Newton
    ``s = -(G + lam I)^{-1} g`` (``kind="ggn"``), docs/math.md section 4, with the
    Levenberg-Marquardt rule for lam: divide it by ``factor`` when rho > 3/4, multiply it
    by ``factor`` (at least to ``min_damping``) when rho < 1/4. With ``damping=None`` the
    first lam is :data:`RELATIVE_DAMPING` times the curvature's norm at the first step, so
    that rescaling the loss does not change the rule (docs/math.md section 8.6; on the
    problems measured there the fixed first damping 1 did better).

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
    damping : float or None, optional
        The first lam, >= 0 (default 1); None: a quarter of the 20-step Lanczos estimate
        of the curvature's 2-norm (:meth:`~tallskinny_np.Curvature.norm_estimate`) at the
        first step.
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

    order = 2

    def __init__(self, damping=1.0, kind="hessian", factor=2.0, min_damping=1e-8, trials=5,
                 max_failures=10, backtrack=3):
        if kind not in ("hessian", "ggn"):
            raise ValueError(f"kind must be 'hessian' or 'ggn'; got {kind!r}")
        self.kind = kind
        self.factor = real("factor", factor, "> 1", lambda x: x > 1)
        self.min_damping = real("min_damping", min_damping, "> 0", lambda x: x > 0)
        self.trials = count("trials", trials, 1)
        self.max_failures = count("max_failures", max_failures, 1)
        self.backtrack = count("backtrack", backtrack, 0)
        self.state = {"damping": first_damping(damping)}
        self.new_loss = math.nan       # the loss at what the last step returned, if accepted

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
        if math.isnan(self.state["damping"]):       # relative: set from the first curvature
            self.state["damping"] = RELATIVE_DAMPING * curv.norm_estimate()
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
            predicted = model_decrease(curv, grad, s, extra.pop("sHs", None))
            rho = reduction_ratio(loss, trial_loss, predicted)
            check_failures(self.state, not math.isfinite(trial_loss), self.max_failures,
                           f"damping {lam:.3g}")
            if rho > EXPAND_ABOVE and not hold:
                self.state["damping"] = lam / self.factor
            elif rho < SHRINK_BELOW:
                self.state["damping"] = max(lam * self.factor, self.min_damping)
            if rho > ACCEPT:
                self.new_loss = trial_loss
                return params + s, dict(accepted=True, rho=rho, damping=lam, trials=trial,
                                        **extra)
            found = self._backtrack(params, loss, grad, s, loss_at)
            if found is not None:
                t, self.new_loss = found
                return params + t * s, dict(accepted=True, rho=rho, damping=lam,
                                            trials=trial, **extra)
        self.new_loss = math.nan
        return params, dict(accepted=False, rho=rho, damping=lam, trials=self.trials, **extra)

    def _backtrack(self, params, loss, grad, s, loss_at):
        """``(t, loss there)`` for the first ``t = 1/2, 1/4, ...`` (at most ``backtrack``
        halvings) at which the downhill direction s gives the Armijo decrease, or None."""
        slope = float(grad @ s)
        t = 1.0
        for _ in range(self.backtrack if slope < 0 else 0):
            t /= 2
            trial_loss = loss_at(params + t * s)
            if trial_loss <= loss + ARMIJO * t * slope:
                return t, trial_loss
        return None

    def curvature_kind(self, loss):
        """The kind of curvature the next step needs at this loss: ``self.kind``."""
        return self.kind

    @renamed(lam="damping")
    def direction(self, curv, grad, damping):
        """The trial step ``-(H + damping I)^{-1} g`` (or the GGN's) by the O(L) solve, and a
        dict of what to report beside it, with ``"sHs"``, the model's ``s^T H s``. The
        reduction ratio judges the step, so the solve need not certify
        (:func:`tallskinny_np.certified.step_solve`, docs/math.md eqs. (8.2)-(8.3)): one
        factorization's solve, refined only where a bound on its backward error is above
        ``sqrt(eps)`` (:data:`tallskinny_np.certified.STEP_BOUND`), and ``s^T H s`` from
        the residual that bound needed. A singular ``H + damping I`` is still refused."""
        x, xHx = curv.step_solve(grad, damping)
        return -x, {"sHs": xHx}


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
        self.floor = real("floor", floor, "> 0", lambda x: x > 0)

    @renamed(lam="damping")
    def direction(self, curv, grad, damping):
        """``-(H + damping I + E)^{-1} g`` from the modified sweep."""
        x, e_norm = curv.modified_solve(grad, damping, self.floor)
        return -x, {"modification": e_norm}


class GaussNewtonToNewton(DampedNewton):
    """Gauss-Newton steps ``-(G + lam I)^{-1} g``, then damped Newton steps
    ``-(H + lam I)^{-1} g`` for good, with one Levenberg-Marquardt damping throughout. The
    switch comes when the batch loss first falls to ``switch_loss``; with
    ``switch_loss=None``, when the Newton model predicts the reduction of an accepted
    Gauss-Newton step that the Gauss-Newton model mispredicted (its rho below 3/4) to
    within :data:`SWITCH_TOLERANCE` (docs/math.md section 8.6): one Hessian product on
    such steps, none on the others.

    The GGN is positive semi-definite and makes good progress far from a minimum, where H
    is indefinite; but when a cross-entropy batch is memorised the residual term
    ``H - G`` shrinks with the loss only as fast as G itself, so Gauss-Newton slows to a
    crawl while Newton's steps keep their rate (docs/math.md section 8.4). The ratio of
    each model says which regime a step is in, whatever the loss's scale (but on the
    problems of docs/math.md section 8.6 the loss of 0.1 did better).

    Parameters
    ----------
    damping, factor, min_damping, trials, max_failures, backtrack
        As :class:`DampedNewton`.
    switch_loss : float or None, optional
        The loss at which to switch, > 0 (default 0.1); None: switch by the models'
        predictions.

    Examples
    --------
    >>> from tallskinny_np.optim import GaussNewtonToNewton
    >>> opt = GaussNewtonToNewton(switch_loss=0.01)
    >>> opt.curvature_kind(0.5), opt.curvature_kind(0.005), opt.curvature_kind(0.5)
    ('ggn', 'hessian', 'hessian')
    """

    def __init__(self, damping=1.0, switch_loss=0.1, **rule):
        super().__init__(damping, "ggn", **rule)
        self.switch_loss = None if switch_loss is None else real(
            "switch_loss", switch_loss, "> 0", lambda x: x > 0)

    def curvature_kind(self, loss):
        """"ggn" until the switch, "hessian" after (kept in the state, so a resumed run
        keeps the switch)."""
        if self.switch_loss is not None and loss <= self.switch_loss:
            self.state["switched"] = 1
        return "hessian" if self.state.get("switched") else "ggn"

    def step(self, params, loss, grad, curv, loss_at, hold=False):
        """:meth:`DampedNewton.step`, then the switch by the models' predictions: with a
        Gauss-Newton ``curv``, an accepted step with rho < 3/4 is judged again by the
        Newton model (``curv.with_kind("hessian")``, the same forward pass) at the loss
        the step already evaluated there."""
        new, info = super().step(params, loss, grad, curv, loss_at, hold)
        if (self.switch_loss is None and curv.kind == "ggn" and info["accepted"]
                and info["rho"] < EXPAND_ABOVE):
            s = new - params
            rho = reduction_ratio(loss, self.new_loss,
                                  model_decrease(curv.with_kind("hessian"), grad, s))
            if abs(rho - 1) <= SWITCH_TOLERANCE:
                self.state["switched"] = 1
        return new, info
