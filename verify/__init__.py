"""A dense verifier for small networks: every intermediate quantity of the structured
algorithm of ``tallskinny_np`` against brute force, step by step (the equations checked
are those of docs/math.md sections 2 to 4). ``python -m verify --help`` for the command
line."""
from .checks import check_all
from .report import Report, Step
from .dense import MAX_ACTIVATIONS, MAX_PARAMS, dense_ggn, dense_hessian

__all__ = ["check_all", "dense_hessian", "dense_ggn", "Report", "Step", "MAX_PARAMS",
           "MAX_ACTIVATIONS"]
