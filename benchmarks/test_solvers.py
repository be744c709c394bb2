"""Solves of ``(H + eps I) x = g`` (docs/math.md section 4) over the CPU grid: every method
of :data:`tallskinny_np.curvature.METHODS`, and the three baselines (dense LU, sparse-direct
splu on K', minres on ``H v``).

A method's measured call is what a user pays for one new damping after the derivative
setup: ``Curvature.solve`` with its default options on a fresh Curvature (built, untimed,
before every round), i.e. factorization plus one solve, with the iterative refinement that
``solve`` does by default (its substitutions and ``H v`` products are not in the analytic
flop count, which is factorization plus one solve). The baselines reuse one Curvature
(they only need ``H v`` or the blocks) and time everything after it: forming and factoring
H, assembling and factoring K', or iterating.
"""
import time

import pytest

from tallskinny_np.curvature import METHODS

from . import flops
from .harness import (DAMPING, MINRES_RTOL, backward_error, bandwidths, dense_solve,
                      fresh_curvature, grid_layers, label, measure, minres_solve, problem,
                      require_budget, residual_norm, solve_cost, sparse_direct_solve)


@pytest.mark.parametrize("method", METHODS)
def test_solve(benchmark, settings, cpu_gflops, depth, shape, method):
    lys = grid_layers(depth, *shape)
    flop_count, nbytes = solve_cost(method, lys)
    require_budget(settings, flop_count, flops.blocks_bytes(lys) + nbytes, cpu_gflops)
    prob = problem(depth, *shape)
    label(benchmark, prob, "cpu", method, "method", flop_count)
    x = measure(benchmark, lambda curv: curv.solve(prob.b, DAMPING, method=method), settings,
                setup=lambda: (fresh_curvature(prob),))
    benchmark.extra_info["backward_error"] = backward_error(prob, x)


def test_dense(benchmark, settings, cpu_gflops, depth, shape):
    lys = grid_layers(depth, *shape)
    require_budget(settings, flops.dense_flops(lys),
                   flops.blocks_bytes(lys) + flops.dense_bytes(lys), cpu_gflops)
    prob = problem(depth, *shape)
    label(benchmark, prob, "cpu", "dense", "baseline", flops.dense_flops(lys))
    x = measure(benchmark, lambda: dense_solve(prob.curv, prob.b, DAMPING), settings)
    benchmark.extra_info["backward_error"] = backward_error(prob, x)


def test_splu(benchmark, settings, cpu_gflops, depth, shape):
    """Budgeted as a band LU of K' (SuperLU's fill under COLAMD is not known in advance);
    no flop count is recorded. SuperLU allocates its factors in C, out of tracemalloc's
    sight: the recorded peak misses them, ``factor_nnz`` says how large they are."""
    lys = grid_layers(depth, *shape)
    kl, ku = bandwidths(*shape)
    require_budget(settings, flops.banded_flops(lys, kl, ku),
                   flops.blocks_bytes(lys) + flops.band_bytes(lys, kl, ku), cpu_gflops)
    prob = problem(depth, *shape)
    label(benchmark, prob, "cpu", "splu", "baseline", None)
    try:
        out = measure(benchmark, lambda: sparse_direct_solve(prob.curv, prob.b, DAMPING),
                      settings)
    except MemoryError:
        # SuperLU's fill is not known in advance; running out of memory is the result.
        pytest.skip(f"splu ran out of memory at L={depth}, (width, batch)={shape}")
    benchmark.extra_info.update(backward_error=backward_error(prob, out.x),
                                factor_nnz=int(out.factor.L.nnz + out.factor.U.nnz))


def test_minres(benchmark, settings, cpu_gflops, depth, shape):
    """At most as many iterations as ``H v`` products fit in the time budget; the
    iteration count, convergence and ``||r|| / ||b||`` go to extra_info, and the flop
    count is that of the ``H v`` products. Memory is not traced: minres keeps a handful of
    length-n vectors, and tracemalloc triples the time of its Python loop."""
    lys = grid_layers(depth, *shape)
    require_budget(settings, None, flops.blocks_bytes(lys), cpu_gflops)
    prob = problem(depth, *shape)
    label(benchmark, prob, "cpu", "minres", "baseline", None)
    t0 = time.perf_counter()
    prob.curv.hvp(prob.b)
    maxiter = max(1, int(settings.max_seconds / (time.perf_counter() - t0)))
    out = measure(benchmark, lambda: minres_solve(prob.curv, prob.b, DAMPING, maxiter),
                  settings, trace_memory=False)
    benchmark.extra_info.update(
        flops=flops.hvp_flops(lys, out.iterations), iterations=out.iterations,
        converged=bool(out.converged), rtol=MINRES_RTOL,
        backward_error=backward_error(prob, out.x),
        relative_residual=residual_norm(prob, out.x) / float((prob.b ** 2).sum()) ** 0.5)
