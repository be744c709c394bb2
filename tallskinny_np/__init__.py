"""tallskinny_np: exact gradients, Hessian-vector products and linear-time Hessian solves
for deep, narrow MLPs (A. Rahimi, "The Hessian of tall-skinny networks is easy to invert",
arXiv 2601.06096). The mathematics is in docs/math.md."""
from .curvature import Curvature
from .errors import (PlanMemoryError, SingularPivotError, UncertifiedInertiaError,
                     UncertifiedSolveError, UncertifiedSolveWarning)
from .model import MLP

__all__ = ["MLP", "Curvature", "PlanMemoryError", "SingularPivotError", "UncertifiedSolveError",
           "UncertifiedSolveWarning", "UncertifiedInertiaError"]
__version__ = "0.1.0"
