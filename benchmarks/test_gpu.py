"""GPU suite: ``Curvature(..., backend="cupy")`` solves over the GPU grid (L in
16..1024, widths 16/32/64, batch 16/64, and width 32 batch 32), each next to the same
solve on the CPU path ("numpy") in the same run, for the speedup; and a same-run fp64 CuPy
matmul rate, the device's limit. Skipped without CuPy or a CUDA device.

Timing is synchronize-guarded: every round ends with a device synchronization inside the
timed call, and every untimed setup (a fresh Curvature, built on the device) ends with one
too. A method the CuPy backend refuses (a CPU-only solver raises ValueError) is skipped
with its message. Device memory is not traced (tracemalloc sees host memory only).
"""
import numpy as np
import pytest

from . import flops
from .harness import (DAMPING, backward_error, fresh_curvature, grid_layers, label, matmul_rate,
                      measure, problem, require_budget, solve_cost)

cupy = pytest.importorskip("cupy")
try:
    N_DEVICES = cupy.cuda.runtime.getDeviceCount()
except cupy.cuda.runtime.CUDARuntimeError:
    N_DEVICES = 0
if N_DEVICES == 0:
    pytest.skip("no CUDA device", allow_module_level=True)

pytestmark = pytest.mark.gpu

GPU_METHODS = ("riccati", "ldu")
MATMUL_SIZES = (1024, 2048, 4096, 8192)
DEVICE_MEMORY_FRACTION = 0.8


def synchronize():
    cupy.cuda.Device().synchronize()


@pytest.fixture(scope="module")
def gpu_gflops():
    """A quick fp64 matmul rate of the device, for the run-time budget only."""
    return matmul_rate(cupy, n=4096, sync=synchronize)


@pytest.mark.parametrize("n", MATMUL_SIZES)
def test_gpu_matmul(benchmark, settings, n):
    A, B = cupy.asarray(np.random.default_rng(0).standard_normal((2, n, n)))
    benchmark.group = "gpu matmul"
    benchmark.extra_info.update(suite="gpu", series="matmul", backend="cupy", n=n,
                                flops=2 * n ** 3)

    def product():
        out = A @ B
        synchronize()
        return out

    benchmark.pedantic(product, rounds=settings.max_rounds, warmup_rounds=1)


@pytest.mark.parametrize("backend", ("numpy", "cupy"))
@pytest.mark.parametrize("method", GPU_METHODS)
def test_gpu_solve(benchmark, settings, cpu_gflops, gpu_gflops, gpu_depth, gpu_shape,
                   method, backend):
    lys = grid_layers(gpu_depth, *gpu_shape)
    flop_count, nbytes = solve_cost(method, lys)
    on_gpu = backend == "cupy"
    device_bytes = DEVICE_MEMORY_FRACTION * cupy.cuda.Device().mem_info[1]
    require_budget(settings, flop_count, flops.blocks_bytes(lys) + nbytes,
                   gpu_gflops if on_gpu else cpu_gflops,
                   max_bytes=device_bytes if on_gpu else None)
    prob = problem(gpu_depth, *gpu_shape, backend=backend)
    label(benchmark, prob, "gpu", method, "method", flop_count)
    try:
        x = measure(benchmark, lambda curv: curv.solve(prob.b, DAMPING, method=method),
                    settings, setup=lambda: (fresh_curvature(prob),), sync=synchronize,
                    trace_memory=not on_gpu)
    except ValueError as e:
        pytest.skip(str(e))
    benchmark.extra_info["backward_error"] = backward_error(prob, x)
