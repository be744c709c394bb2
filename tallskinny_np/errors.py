"""Exceptions with which the solvers refuse to return garbage, and the checks that raise
them."""
import math
import numbers

import numpy as np

from .tolerance import singular


class SingularPivotError(np.linalg.LinAlgError):
    """A pivot block is singular or numerically singular.

    ``layer`` is the 1-based layer whose pivot failed (None when the whole matrix
    ``H + damping I`` is found singular), ``rcond`` the estimated reciprocal condition
    number of that pivot or matrix (0 when exactly singular).
    """

    def __init__(self, layer, rcond, what, hint=""):
        self.layer = layer
        self.rcond = rcond
        where = f"the {what}" if layer is None else f"the {what} of layer {layer}"
        super().__init__(
            f"{where} is singular to working precision "
            f"(reciprocal condition number {rcond:.3g}); {hint}".rstrip("; ")
        )


def check_pivot(rcond, dtype, layer, what):
    """Raise :class:`SingularPivotError` when a pivot with reciprocal condition estimate
    ``rcond`` is singular to the working precision of ``dtype``
    (:func:`tallskinny_np.tolerance.singular`)."""
    if singular(rcond, dtype):
        raise SingularPivotError(
            layer, float(np.nan_to_num(rcond)), what,
            "H + damping I is singular or too ill-conditioned for this solver; increase "
            "the damping (H itself is singular in general)")


class UncertifiedSolveError(np.linalg.LinAlgError):
    """No step of the certified solve reached the backward-error bound, or no bound on the
    O(L) product's rounding could be proved for the figure that did.

    ``backward_error`` holds, per right-hand side, the smallest bound on the normwise
    backward error that any step achieved; ``step`` names the last step tried
    (``"factor"``, ``"refine"``, ``"gmres"`` or ``"banded"``); ``proved``, per right-hand
    side, whether its figure is proved (None where no proof was asked for).
    """

    def __init__(self, backward_error, bound, step, proved=None):
        self.backward_error = backward_error
        self.bound = bound
        self.step = step
        self.proved = proved
        if proved is not None and not np.all(proved) and np.all(backward_error <= bound):
            why = (f"no bound on the rounding of the O(L) product could be proved for "
                   f"{int(np.size(proved) - np.count_nonzero(proved))} of "
                   f"{np.size(proved)} columns (their figures, "
                   f"{float(np.max(backward_error)):.3g} at most, are a model's)")
        else:
            why = (f"the best normwise backward error reached is "
                   f"{float(np.max(backward_error)):.3g} (bound {bound:.3g})")
        super().__init__(f"the solve could not be certified: {why}, last step {step!r}")


class UncertifiedSolveWarning(UserWarning):
    """Issued instead of :class:`UncertifiedSolveError` when the caller asks for it."""


class UncertifiedInertiaError(np.linalg.LinAlgError):
    """The eigenvalue count at ``shift`` cannot be certified: the shift lies too close to
    the spectrum for the sweep's measured accuracy, and no fallback could count it; or no
    count can be (``shift`` None): ``||H||``, the scale of every count's tolerance, is too
    large for the dtype to estimate."""

    def __init__(self, shift, why):
        self.shift = shift
        what = "H" if shift is None else f"H + {shift:.6g} I"
        super().__init__(f"the inertia of {what} cannot be certified: {why}")


class PlanMemoryError(MemoryError):
    """An exact step refused before its arrays are allocated: it needs ``need`` bytes
    where ``available`` are free. ``plan`` is its :class:`tallskinny_np.plan.Plan`, with the
    stage, kept bytes and flops of every layer."""

    def __init__(self, plan, need, available, what):
        self.plan, self.need, self.available = plan, need, available
        super().__init__(
            f"{what} needs about {need / 1e9:.1f} GB and {available / 1e9:.1f} GB is "
            f"available ({plan.summary()}); use a smaller batch, float32, or a GPU "
            f"(backend='cupy')")


def finite_real(value, name):
    """value as a float, or ValueError if it is not a finite real number (a 0-d real
    array counts as a number; a Fraction or an int converts to the nearest float)."""
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "fiu":
        value = value.item()
    try:
        ok = (isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
              and math.isfinite(value))
    except OverflowError:                  # a Fraction or int beyond float's range
        ok = False
    if not ok:
        raise ValueError(f"{name} must be a finite real number; got {value!r}")
    return float(value)
