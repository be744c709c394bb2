"""Derivative setup (``Curvature(...)``: forward pass, backprop, the blocks of docs/math.md
section 2) and ``hvp`` (docs/math.md section 3) over the CPU grid."""
from . import flops
from .harness import (fresh_curvature, grid_layers, label, measure, problem,
                      require_budget)


def test_setup(benchmark, settings, cpu_gflops, depth, shape):
    lys = grid_layers(depth, *shape)
    require_budget(settings, flops.setup_flops(lys), flops.blocks_bytes(lys), cpu_gflops)
    prob = problem(depth, *shape)
    label(benchmark, prob, "cpu", "setup", "setup", flops.setup_flops(lys))
    measure(benchmark, lambda: fresh_curvature(prob), settings)


def test_hvp(benchmark, settings, cpu_gflops, depth, shape):
    lys = grid_layers(depth, *shape)
    require_budget(settings, flops.hvp_flops(lys), flops.blocks_bytes(lys), cpu_gflops)
    prob = problem(depth, *shape)
    label(benchmark, prob, "cpu", "hvp", "hvp", flops.hvp_flops(lys))
    measure(benchmark, lambda: prob.curv.hvp(prob.b), settings)
