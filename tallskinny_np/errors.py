"""Exceptions with which the solvers refuse to return garbage."""
import numpy as np


class SingularPivotError(np.linalg.LinAlgError):
    """A pivot block is singular or numerically singular.

    ``layer`` is the 1-based layer whose pivot failed, ``rcond`` the estimated reciprocal
    condition number of that pivot (0 when exactly singular).
    """

    def __init__(self, layer, rcond, what, hint=""):
        self.layer = layer
        self.rcond = rcond
        super().__init__(
            f"the {what} of layer {layer} is singular to working precision "
            f"(reciprocal condition number {rcond:.3g}); {hint}".rstrip("; ")
        )


def check_pivot(rcond, dtype, layer, what):
    """Raise :class:`SingularPivotError` when a pivot's reciprocal condition estimate is
    below the machine epsilon of ``dtype``: singular to working precision, the criterion of
    LAPACK's expert drivers (xGESVX). (A stricter ``n eps`` refused well-conditioned
    float32 systems whose augmented pivots are worse conditioned than ``H + eps I``.)"""
    if not rcond >= np.finfo(dtype).eps:
        raise SingularPivotError(
            layer, float(np.nan_to_num(rcond)), what,
            "H + damping I is singular or too ill-conditioned for this solver; increase "
            "the damping (H itself is singular in general)")
