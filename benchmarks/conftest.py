"""Options, grid and session fixtures of the benchmark suites.

A test that takes the ``depth`` and ``shape`` arguments runs over the CPU grid (depth L,
(width, batch)); one that takes ``gpu_depth`` and ``gpu_shape`` over the GPU grid. The
options restrict the grid and the budgets::

    --bench-quick             width 8, batch 8, L <= 32 (GPU: width 16, batch 16, L <= 32),
                              short rounds: a smoke run in under a minute (quiet machine)
    --bench-max-depth N       only L <= N
    --bench-max-seconds S     skip a measurement whose analytic flop count predicts more than
                              S seconds at the same-run dgemm rate (default 60)
    --bench-max-memory-gb G   skip one whose analytic memory estimate exceeds G GiB (default 8)
    --bench-base PATH         another checkout of the package, timed side by side by
                              test_speed.py (skipped without it)
"""
import os
from pathlib import Path

import pytest

from tallskinny_np.curvature import METHODS

from .harness import DAMPING, Settings, make_problem, matmul_rate

HERE = Path(__file__).resolve().parent
DEPTHS = (4, 8, 16, 32, 64, 128, 256, 512)
SHAPES = ((8, 8), (16, 16), (32, 8))
QUICK_DEPTHS = (4, 8, 16, 32)
QUICK_SHAPES = ((8, 8),)

# GPU grid: widths 16/32/64 at batch 16 and 64, and the target point width 32,
# batch 32.
GPU_DEPTHS = (16, 32, 64, 128, 256, 512, 1024)
GPU_SHAPES = tuple((w, B) for w in (16, 32, 64) for B in (16, 64)) + ((32, 32),)
QUICK_GPU_DEPTHS = (16, 32)
QUICK_GPU_SHAPES = ((16, 16),)


def pytest_addoption(parser):
    group = parser.getgroup("tallskinny benchmarks")
    group.addoption("--bench-quick", action="store_true",
                    help="smoke run: the smallest configurations and short rounds")
    group.addoption("--bench-max-depth", type=int, default=None,
                    help="only depths L <= this")
    group.addoption("--bench-max-seconds", type=float, default=60.0,
                    help="skip measurements predicted to take longer (default 60)")
    group.addoption("--bench-max-memory-gb", type=float, default=8.0,
                    help="skip measurements predicted to need more memory (default 8)")
    group.addoption("--bench-base", default=None, metavar="PATH",
                    help="another checkout of the package to time side by side "
                         "(test_speed.py's versus-base)")


def settings_of(config):
    """The :class:`benchmarks.harness.Settings` of a pytest run."""
    quick = config.getoption("--bench-quick")
    max_depth = config.getoption("--bench-max-depth")

    def depths(grid):
        return tuple(L for L in grid if max_depth is None or L <= max_depth)

    return Settings(
        shapes=QUICK_SHAPES if quick else SHAPES,
        depths=depths(QUICK_DEPTHS if quick else DEPTHS),
        gpu_shapes=QUICK_GPU_SHAPES if quick else GPU_SHAPES,
        gpu_depths=depths(QUICK_GPU_DEPTHS if quick else GPU_DEPTHS),
        max_seconds=config.getoption("--bench-max-seconds"),
        max_bytes=config.getoption("--bench-max-memory-gb") * 2 ** 30,
        round_seconds=0.2 if quick else 3.0,
        max_rounds=3 if quick else 15,
    )


LOAD_AT_START = pytest.StashKey()
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def pytest_configure(config):
    config.stash[LOAD_AT_START] = os.getloadavg()


def pytest_benchmark_update_machine_info(config, machine_info):
    """Record the machine's load around the run and the BLAS thread settings: on a shared
    machine both change the timings (the report prints them next to the figures)."""
    machine_info["tallskinny"] = dict(
        loadavg_start=config.stash.get(LOAD_AT_START, None), loadavg_end=os.getloadavg(),
        cpu_count=os.cpu_count(),
        blas_threads={v: os.environ.get(v) for v in BLAS_THREAD_VARIABLES})


def pytest_generate_tests(metafunc):
    s = settings_of(metafunc.config)
    for prefix, shapes, depths in (("", s.shapes, s.depths),
                                   ("gpu_", s.gpu_shapes, s.gpu_depths)):
        if prefix + "shape" in metafunc.fixturenames:
            metafunc.parametrize(prefix + "shape", shapes, ids=[f"w{w}-B{B}" for w, B in shapes])
        if prefix + "depth" in metafunc.fixturenames:
            metafunc.parametrize(prefix + "depth", depths, ids=[f"L{L}" for L in depths])


def pytest_collection_modifyitems(items):
    """Run the benchmarks of one configuration together (they share the cached problem);
    the machine measurements (no configuration) first. Items outside benchmarks/ keep
    their order."""
    def key(item):
        params = getattr(item, "callspec", None)
        params = params.params if params and item.path.is_relative_to(HERE) else {}
        gpu = "gpu_shape" in params
        shape = params.get("gpu_shape" if gpu else "shape")
        depth = params.get("gpu_depth" if gpu else "depth")
        return (shape is not None, gpu, shape or (), depth or 0, params.get("backend", ""))

    items.sort(key=key)


@pytest.fixture(scope="session")
def settings(pytestconfig):
    return settings_of(pytestconfig)


@pytest.fixture(scope="session")
def cpu_gflops():
    """A quick float64 matmul rate of this machine, for the run-time budget only."""
    return matmul_rate()


@pytest.fixture(scope="session", autouse=True)
def warm_kernels():
    """Run hvp and every solve method once on a tiny problem, so that one-time costs
    (imports, JIT compilation) stay out of the timings and the memory peaks."""
    prob = make_problem(4, 4, 4)
    prob.curv.hvp(prob.b)
    for method in METHODS:
        prob.curv.solve(prob.b, DAMPING, method=method)
