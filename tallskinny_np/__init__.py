"""tallskinny_np: exact gradients, Hessian-vector products and linear-time Hessian solves
for deep, narrow MLPs (A. Rahimi, "The Hessian of tall-skinny networks is easy to invert",
arXiv 2601.06096). The mathematics is in docs/math.md.

The public names load their modules (and NumPy, SciPy, numba) on first use, so that the
command-line programs can set up their signal handling before that takes its second."""
import importlib

__all__ = ["MLP", "Activation", "Curvature", "PlanMemoryError", "SingularPivotError",
           "UncertifiedSolveError", "UncertifiedSolveWarning", "UncertifiedInertiaError"]
__version__ = "0.1.0"

_MODULES = {"MLP": "model", "Activation": "activations", "Curvature": "curvature",
            "PlanMemoryError": "errors", "SingularPivotError": "errors",
            "UncertifiedSolveError": "errors", "UncertifiedSolveWarning": "errors",
            "UncertifiedInertiaError": "errors"}


def __getattr__(name):
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_MODULES[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
