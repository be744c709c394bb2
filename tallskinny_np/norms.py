"""Bounds on ``||H + shift I||_2`` for the certificates (docs/math.md sections 7.1-7.3):
a free lower bound from the loss layer's diagonal, and the Ritz values of 20 Lanczos steps,
which bound it from below and set the scale of the eigenvalue counts' tolerance. Each is
cached on the :class:`~tallskinny_np.Curvature` it is computed for.
"""
import numpy as np

from .backend import array_module
from .errors import UncertifiedInertiaError
from .krylov import lanczos_interval
from .losses import hessian_diagonal


def probe_norm(curv, shift):
    """``max_i |H_ii + shift| <= ||H + shift I||_2`` over the loss layer's parameters,
    whose diagonal block of H is the loss layer's A (docs/math.md section 3.3): a free
    lower bound, ``(A_L)_{(k,j),(k,j)} = sum_s (Lambda_s)_kk zt_sj^2``."""
    if curv._loss_diagonal is None:
        loss = curv.blocks.layers[-1]
        var = hessian_diagonal(loss.loss, loss.pi, loss.Zt, loss.W.shape[0])
        # var before either zt: zt^2 alone overflows where a saturated softmax is 0
        diagonal = ((var[:, :, None] * loss.Zt[:, None, :]) * loss.Zt[:, None, :]).sum(axis=0)
        curv._loss_diagonal = (float(diagonal.min()), float(diagonal.max()))
    lo, hi = curv._loss_diagonal
    return max(abs(lo + shift), abs(hi + shift))


def ritz_interval(curv):
    """Ritz values ``(theta_min, theta_max)`` of H from 20 Lanczos steps (cached):
    ``lambda_min <= theta_min`` and ``theta_max <= lambda_max``, usually within a few
    percent of them (docs/math.md eq. (7.2)).

    Returns
    -------
    (theta_min, theta_max) : tuple of float
        Both NaN when a product or inner product of the Lanczos steps overflows the
        dtype (``||H||`` near float32's range with huge inputs): then no certificate
        that needs ``||H||`` can be given.
    """
    if curv._interval is None:
        xp = array_module(curv.params)
        curv._interval = lanczos_interval(lambda v: curv.hvp(v), curv.n_params, xp,
                                          curv.net.dtype)
    return curv._interval


def norm_lower_bound(curv, shift):
    """``max(|theta_min + shift|, |theta_max + shift|) <= ||H + shift I||_2``."""
    if shift not in curv._norm_bounds:
        lo, hi = ritz_interval(curv)
        curv._norm_bounds[shift] = max(abs(lo + shift), abs(hi + shift))
    return curv._norm_bounds[shift]


def norm_estimate(curv):
    """A lower bound on ``||H||_2`` from 20 Lanczos steps (usually within a few percent
    of it; docs/math.md eq. (7.2)), the scale of the inertia's tolerance.

    Returns
    -------
    float

    Raises
    ------
    UncertifiedInertiaError
        ``||H||`` is too large for the dtype (:func:`ritz_interval` is NaN): without a
        scale no eigenvalue count can be certified.
    """
    lo, hi = ritz_interval(curv)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise UncertifiedInertiaError(
            None, f"||H|| is too large for {np.dtype(curv.net.dtype).name} (its Lanczos "
                  f"estimate overflows); use float64 or scale the inputs")
    return max(abs(lo), abs(hi))
