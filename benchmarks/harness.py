"""Shared machinery of the suites: the benchmark problems, the measurement protocol, the
backward error, the work budget, and the baselines' solvers.

Measurement protocol (:func:`measure`): one untimed probe call (it warms caches, gives the
tracemalloc peak of the call, and sizes the number of rounds), then ``benchmark.pedantic``
rounds, each with fresh arguments from an untimed ``setup``. Timing claims in the report
are ratios of medians taken in the same run.
"""
import functools
import time
import tracemalloc
from collections import namedtuple
from collections.abc import Sequence

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.linalg import LinearOperator, minres, splu

from tallskinny_np import MLP, Curvature, banded
from tallskinny_np.backend import array_module
from tallskinny_np.augmented import layer_sizes, pivot_blocks
from tallskinny_np.blocks import to_dense

from . import flops

DAMPING = 0.1
N_CLASSES = 10
MINRES_RTOL = 1e-10
NORM_ITERATIONS = 20

Settings = namedtuple("Settings", "shapes depths gpu_shapes gpu_depths max_seconds max_bytes "
                                  "round_seconds max_rounds")
Settings.__doc__ = """The grid and budgets of a run (pytest options, see conftest.py):
``shapes`` are (width, batch) points, ``depths`` the values of L; a measurement predicted to
take more than ``max_seconds`` or ``max_bytes`` is skipped; ``round_seconds`` is the time
spent on timed rounds of one benchmark, at most ``max_rounds`` of them."""

Problem = namedtuple("Problem", "net params X y backend curv b norm layers info")
Problem.__doc__ = """A benchmark problem: the net, its point and batch, a Curvature of
its Hessian, the right-hand side ``b`` (the gradient: the Newton system of docs/math.md
section 4), ``norm``, a power-iteration estimate of ``||H + DAMPING I||_2``, ``layers``,
the :class:`benchmarks.flops.Layer` sizes, and ``info``, the sizes recorded in every
benchmark's extra_info."""


def make_net(L, width):
    """The tanh MLP ``[width] * L + [10]`` without bias (input size = width)."""
    return MLP([width] * L + [N_CLASSES], activation="tanh", bias=False)


def grid_layers(L, width, batch):
    """The :class:`benchmarks.flops.Layer` sizes of a grid point, without building it."""
    return flops.layers(make_net(L, width), batch)


def make_problem(L, width, batch, backend="numpy"):
    """:func:`make_net` at its ``init_params(seed=0, gain=1)`` point, on a standard normal
    batch with random labels."""
    net = make_net(L, width)
    params = net.init_params(seed=0, gain=1.0)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((batch, width))
    y = rng.integers(0, N_CLASSES, batch)
    curv = Curvature(net, params, X, y, kind="hessian", backend=backend)
    lys = flops.layers(net, batch)
    info = dict(L=L, width=width, batch=batch, p=lys[1].p, a=lys[1].a,
                n_params=net.n_params, backend=backend, damping=DAMPING)
    return Problem(net, params, X, y, backend, curv, curv.grad,
                   norm_estimate(curv, DAMPING), lys, info)


@functools.lru_cache(maxsize=1)
def problem(L, width, batch, backend="numpy"):
    """:func:`make_problem`, kept while consecutive benchmarks share it (conftest.py orders
    the benchmarks by configuration)."""
    return make_problem(L, width, batch, backend)


def fresh_curvature(prob):
    """A new Curvature of the problem (the derivative setup a user pays)."""
    return Curvature(prob.net, prob.params, prob.X, prob.y, kind="hessian",
                     backend=prob.backend)


def norm_estimate(curv, damping, iterations=NORM_ITERATIONS):
    """``||H + damping I||_2`` from power iterations on ``H v`` (a lower bound that is
    tight to a few digits after 20 iterations; enough to normalise a backward error)."""
    xp = array_module(curv.grad)
    v = xp.asarray(np.random.default_rng(1).standard_normal(curv.n_params))
    v /= xp.linalg.norm(v)
    for _ in range(iterations):
        w = curv.hvp(v) + damping * v
        est = float(xp.linalg.norm(w))
        v = w / est
    return est


def residual_norm(prob, x):
    """``||(H + eps I) x - b||`` with eps = DAMPING."""
    return float(array_module(x).linalg.norm(prob.curv.hvp(x) + DAMPING * x - prob.b))


def backward_error(prob, x):
    """Normwise backward error ``||(H + eps I) x - b|| / (||H + eps I|| ||x|| + ||b||)``."""
    norm = array_module(x).linalg.norm
    return residual_norm(prob, x) / (prob.norm * float(norm(x)) + float(norm(prob.b)))


def matmul_rate(xp=np, n=1024, repeats=3, sync=None):
    """A quick best-of-``repeats`` GFLOP/s of an n x n float64 matmul on the array module
    ``xp``, used only to predict run times for the budget (the reported rates are the
    ``dgemm`` and ``matmul`` benchmarks)."""
    A, B = xp.asarray(np.random.default_rng(0).standard_normal((2, n, n)))
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        A @ B
        if sync:
            sync()
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def require_budget(settings, flop_count, nbytes, gflops, max_bytes=None):
    """Skip unless the analytic work runs within the time budget at ``gflops`` (the rate of
    a large matmul, so the predicted time is a lower bound) and ``nbytes`` (include the
    blocks, :func:`benchmarks.flops.blocks_bytes`) fits in ``max_bytes`` (default: the
    settings' host budget)."""
    max_bytes = settings.max_bytes if max_bytes is None else max_bytes
    if flop_count is not None and flop_count / (gflops * 1e9) > settings.max_seconds:
        pytest.skip(f"{flop_count:.3g} flops predict over {settings.max_seconds:g} s at "
                    f"{gflops:.1f} GFLOP/s")
    if nbytes > max_bytes:
        pytest.skip(f"predicted memory {nbytes / 2**30:.1f} GiB > {max_bytes / 2**30:.1f} GiB")


def label(benchmark, prob, suite, series, role, flop_count):
    """Name the benchmark's group (before it runs: pytest-benchmark reads it then) and
    store in its extra_info the configuration, the ``suite`` ("cpu" or "gpu"), the
    ``series`` (a curve of the report: "setup", "hvp", a solve method or a baseline), its
    ``role`` ("setup", "hvp", "method" for a solve method, "baseline") and the analytic
    flop count (None if there is none)."""
    benchmark.group = f"{suite} {series} w{prob.info['width']} B{prob.info['batch']}"
    benchmark.extra_info.update(prob.info, suite=suite, series=series, role=role,
                                flops=flop_count)


def measure(benchmark, call, settings, setup=None, sync=None, trace_memory=True):
    """Time ``call(*setup())`` with pytest-benchmark and return the last timed round's
    result; store the tracemalloc peak (bytes) of an untimed probe call as the
    ``peak_bytes`` of the benchmark's extra_info (None if not traced).

    ``setup`` (untimed, run before every round) returns the call's arguments; ``sync``
    (for GPUs) runs after setup and after the call, inside the timing.
    """
    def prepared():
        args = setup() if setup else ()
        if sync:
            sync()
        return args, {}

    def timed(*args):
        out = call(*args)
        if sync:
            sync()
        return out

    args, _ = prepared()
    if trace_memory:
        tracemalloc.start()
    try:
        t0 = time.perf_counter()
        timed(*args)
        elapsed = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1] if trace_memory else None
    finally:
        if trace_memory:
            tracemalloc.stop()
    del args
    benchmark.extra_info["peak_bytes"] = peak
    rounds = max(1, min(settings.max_rounds, int(settings.round_seconds / elapsed)))
    return benchmark.pedantic(timed, setup=prepared, rounds=rounds)


# ---- baselines ------------------------------------------------------------------------

def dense_solve(curv, b, damping, chunk=256):
    """The dense baseline: H column by column from ``H E`` on chunks of the identity,
    shifted in place, then ``numpy.linalg.solve`` (LU with partial pivoting)."""
    n = b.shape[0]
    H = np.empty((n, n))
    for j in range(0, n, chunk):
        k = min(chunk, n - j)
        E = np.zeros((n, k))
        E[j + np.arange(k), np.arange(k)] = 1.0
        H[:, j:j + k] = curv.hvp(E)
    H[np.diag_indices(n)] += damping
    return np.linalg.solve(H, b)


class DenseLayers(Sequence):
    """``to_dense`` of each layer's blocks on access, keeping the last three:
    :func:`tallskinny_np.augmented.pivot_blocks` reads only layers l-1, l, l+1."""

    def __init__(self, blocks):
        self._layers = blocks.layers
        self._get = functools.lru_cache(maxsize=3)(lambda l: to_dense(self._layers[l]))

    def __len__(self):
        return len(self._layers)

    def __getitem__(self, l):
        return self._get(l)


def augmented_offsets(net, batch):
    """Start of each layer's block row ``(x_l, y_l, z_l)`` in K', and the order of K'."""
    sizes = flops.ldu_sizes(flops.layers(net, batch))
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    return offsets[:-1].tolist(), int(offsets[-1])


def augmented_system(curv, damping):
    """``K' = Pi K Pi^T`` (docs/math.md eq. (4.5)) as a scipy.sparse CSC matrix, assembled from
    the block rows of :func:`tallskinny_np.augmented.pivot_blocks` without their zeros."""
    dense = DenseLayers(curv.blocks)
    offsets, n = augmented_offsets(curv.net, curv.blocks.batch)
    rows, cols, vals = [], [], []
    for l in range(len(dense)):
        D, Lo, Up = pivot_blocks(dense, l, damping)
        for M, c in ((D, l), (Lo, l - 1), (Up, l + 1)):
            if M is not None:
                i, j = np.nonzero(M)
                rows.append(i + offsets[l])
                cols.append(j + offsets[c])
                vals.append(M[i, j])
    rows, cols, vals = (np.concatenate(v) for v in (rows, cols, vals))
    return sp.csc_matrix((vals, (rows, cols)), shape=(n, n))


SparseDirect = namedtuple("SparseDirect", "x factor")


def sparse_direct_solve(curv, b, damping):
    """The sparse-direct baseline: assemble K', factor it with ``scipy.sparse.linalg.splu``
    (SuperLU, default COLAMD ordering), solve ``K' u = [g; 0; 0]`` and read x from u."""
    net = curv.net
    offsets, n = augmented_offsets(net, curv.blocks.batch)
    factor = splu(augmented_system(curv, damping))
    gs = net.split(b)
    rhs = np.zeros(n)
    for o, g in zip(offsets, gs):
        rhs[o:o + g.size] = g.ravel()
    u = factor.solve(rhs)
    xs = [u[o:o + g.size].reshape(g.shape) for o, g in zip(offsets, gs)]
    return SparseDirect(net.join(xs), factor)


@functools.lru_cache(maxsize=None)
def bandwidths(width, batch):
    """The band ``(kl, ku)`` that :func:`tallskinny_np.banded.banded_factor` stores for K'.
    Every interior block row of K' has the sizes of the depth-4 net's (first, hidden,
    hidden, loss layers cover every pair of neighbours), so that net gives them for any L."""
    return banded.bandwidths(layer_sizes(make_problem(4, width, batch).curv.blocks))


def solve_cost(method, lys):
    """Analytic (flops, bytes beyond the blocks) of factor + one solve with ``method``
    (:mod:`benchmarks.flops`); (None, 0) for a method without a cost model."""
    if method == "ldu":
        return flops.ldu_flops(lys), flops.ldu_bytes(lys)
    if method == "riccati":
        return flops.riccati_flops(lys), flops.riccati_bytes(lys)
    if method == "banded":
        kl, ku = bandwidths(lys[1].m, lys[1].B)
        return flops.banded_flops(lys, kl, ku), flops.banded_bytes(lys, kl, ku)
    return None, 0


Minres = namedtuple("Minres", "x iterations converged")


def minres_solve(curv, b, damping, maxiter):
    """The iterative baseline: scipy ``minres`` on the ``H v`` LinearOperator of
    ``H + damping I`` with ``rtol=MINRES_RTOL``, counting iterations. SciPy stops when
    its estimate of ``||r|| / (||A|| ||x|| + ||b||)`` falls below rtol, so the relative
    residual ``||r|| / ||b||`` that the suite records can be larger."""
    n = b.shape[0]
    op = LinearOperator((n, n), matvec=lambda v: curv.hvp(v) + damping * v, dtype=b.dtype)
    iterations = 0

    def count(_):
        nonlocal iterations
        iterations += 1

    x, info = minres(op, b, rtol=MINRES_RTOL, maxiter=maxiter, callback=count)
    return Minres(x, iterations, info == 0)
