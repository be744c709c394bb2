"""Optimizers on flat parameter vectors (NumPy or CuPy): SGD with momentum, Adam, and exact
second-order steps from a :class:`tallskinny_np.Curvature`, one module per idea:
:mod:`~tallskinny_np.optim.first_order`, :mod:`~tallskinny_np.optim.newton` (the damped
Newton family), :mod:`~tallskinny_np.optim.trust_region`,
:mod:`~tallskinny_np.optim.hessian_free`, :mod:`~tallskinny_np.optim.saddle_free` and
:mod:`~tallskinny_np.optim.reuse`, with the step's judgement in
:mod:`~tallskinny_np.optim.acceptance`.

Second-order steps minimise the quadratic model of the loss at ``theta``::

    m(s) = f + g^T s + 1/2 s^T H s

with H the Hessian or the Gauss-Newton matrix ``J^T Lambda J`` (docs/math.md section 2.5),
solved exactly in O(L) by ``curv.solve`` (docs/math.md section 4). The gradient g
comes from the gradient batch; the curvature may come from a sub-batch of it. A step is
judged by the reduction ratio ``rho = (f(theta) - f(theta + s)) / (m(0) - m(s))`` on the
gradient batch, and rejected when rho is below :data:`ACCEPT` (or the trial loss is not
finite).

- :class:`DampedNewton`: ``s = -(H + lam I)^{-1} g`` (``--optimizer newton``) or
  ``-(G + lam I)^{-1} g`` (``--optimizer ggn``), with Levenberg-Marquardt adaptation of the
  damping lam.
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
- :class:`GaussNewtonToNewton`: Gauss-Newton steps, then Newton steps once the Newton
  model predicts the reduction better (sections 8.4 and 8.6).

Between factorizations (:mod:`~tallskinny_np.optim.reuse`, section 8.5):

- :class:`PreconditionedNewton`: the steps of :class:`DampedNewton`, exact to the certified
  solve's backward error, by conjugate gradients (GGN) or GMRES (Hessian) on the current
  curvature's products, preconditioned with the factorization of an earlier
  ``H_s + lam_s I``; factored again when a budget of iterations does not suffice.

The optimizer protocol
----------------------
Every optimizer has a class attribute ``order`` and a dict ``state`` (what a checkpoint
saves and a resumed run restores; the constructor's arguments are the rest).

- ``order = 1`` (:class:`SGD`, :class:`Adam`): ``step(params, grad) -> params``, the new
  parameters from the gradient alone.
- ``order = 2`` (the others): ``curvature_kind(loss)`` says which curvature the next step
  needs, ``"hessian"`` or ``"ggn"``, and ``step(params, loss, grad, curv, loss_at,
  hold=False) -> (params, info)`` takes one step with the curvature ``curv`` of that kind
  at ``params`` (any object with ``hvp(v)``, ``solve(b, damping)``, ``step_solve(g,
  damping)``, ``norm_estimate()`` (where the damping is relative), ``with_kind(kind)``
  (for :class:`GaussNewtonToNewton`), ``is_positive_definite(damping)`` and
  ``lambda_min(tol)`` serves), ``loss_at(theta)`` the gradient batch's loss at trial
  points, and ``hold`` asking to keep the damping where
  it would decrease, so that the next step on the same curvature reuses its
  factorization. ``info`` is a dict with at least ``accepted``, ``rho``, ``damping`` and
  ``trials``; the damped ones find their trial steps by ``direction(curv, grad,
  damping) -> (s, extra info)``.
- An optimizer with an attribute ``held`` (:class:`PreconditionedNewton`) keeps a
  factorization across steps: ``held`` is the curvature it factored last (None before
  the first), its state records that curvature's ``held_params`` and ``held_damping``, and
  the caller builds ``curv`` at the current parameters for every step and, after a
  resume, sets ``held`` again from the state and the batch it was on.

Adding an optimizer: a class following this protocol in the module of its idea, and its
entry in ``tallskinny-train``'s registry (:mod:`tallskinny_np.training.optimizers`).
"""
from ..krylov import truncated_cg
from ..spectrum import negative_pairs, smallest_eigenpairs
from .acceptance import (ACCEPT, ARMIJO, EXPAND_ABOVE, SHRINK_BELOW, check_failures,
                         model_decrease, reduction_ratio)
from .first_order import SGD, Adam, loss_and_gradient
from .hessian_free import CG_DECAY, HessianFree
from .newton import DampedNewton, GaussNewtonToNewton, ModifiedNewton
from .reuse import BUDGET, PreconditionedNewton, preconditioned_solve
from .saddle_free import SaddleFreeNewton, saddle_free_solve
from .trust_region import TrustRegion, hard_case_step, trust_region_subproblem

__all__ = ["ACCEPT", "ARMIJO", "BUDGET", "CG_DECAY", "EXPAND_ABOVE", "SHRINK_BELOW", "SGD",
           "Adam", "DampedNewton", "GaussNewtonToNewton", "HessianFree", "ModifiedNewton",
           "PreconditionedNewton", "SaddleFreeNewton", "TrustRegion", "check_failures",
           "hard_case_step", "loss_and_gradient", "model_decrease", "negative_pairs",
           "preconditioned_solve", "reduction_ratio", "saddle_free_solve",
           "smallest_eigenpairs", "trust_region_subproblem", "truncated_cg"]
