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
