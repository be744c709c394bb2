"""Speed against the hardware and against alternatives, each as a ratio measured in one run:

- ``factor-rate``: :func:`tallskinny_np.riccati.riccati_factor` (damping 0.1, Hessian) at
  L = 64 and (width, batch) = (16, 16), (32, 8), with its compiled stages on one thread
  (the default) and on all of numba's (``SWEEP_THREADS``); its
  useful flops (:func:`benchmarks.flops.riccati_factor_flops`) per second against the
  single-thread dgemm at n = 256 of ``test_machine.py`` and, for the threaded run, the
  dgemm on as many threads (same run; the report divides them);
- ``versus-base``: ``Curvature(...)`` plus ``solve(grad, 0.1)`` (the default, refined
  solve) at L = 64 and (width, batch) = (16, 16), (8, 16), here and in another checkout of
  the package (``--bench-base PATH``), both timed in subprocesses by one script, in
  :data:`BASE_PAIRS` alternating pairs whose ratios of medians the report judges (their
  median); skipped without the option;
- ``exact-step``: the exact second-order step of the default memorisation problem (the
  embedded digits, 32 samples, depth 16, width 8, tanh, bias): ``Curvature(..., kind)`` plus
  ``step_solve(grad, 0.1)`` (the optimizers' solve), for the GGN and the Hessian, against
  one Adam step (forward, backward, update) on the same batch: each timed by
  pytest-benchmark, and the ratio also in alternating blocks of both (:func:`_paired`),
  which the report judges;
- ``newton-step``: one step of the damped Newton optimizer (``DampedNewton.step``, the
  curvature built, its step solved, the model and one trial loss, no backtracking) on the
  same problem where Gauss-Newton steps from the initialisation first bring the batch
  loss to 0.1, with the Hessian against the GGN, same parameters and damping, in
  alternating blocks (the report judges their ratio).
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numba
import numpy as np
import pytest

from tallskinny_np import MLP, Curvature, backend
from tallskinny_np.optim import Adam, DampedNewton, loss_and_gradient
from tallskinny_np.riccati import riccati_factor

from . import flops
from .harness import DAMPING, make_net, measure, problem

SPEED_DEPTH = 64
BASE_PAIRS = 5
"""Alternations of the versus-base timing: each pair's ratio sees one stretch of the shared
machine's load, and their median ignores a pair that a burst of another process hit."""

# One timing protocol for this checkout and the base one: the same script, run in a
# subprocess with the checkout first on the path; it prints the sorted round times.
ROUND_SCRIPT = """
import json, sys, time
import numpy as np
from tallskinny_np import MLP, Curvature
L, width, batch, rounds = (int(a) for a in sys.argv[1:5])
net = MLP([width] * L + [10], activation="tanh", bias=False)
params = net.init_params(seed=0, gain=1.0)
rng = np.random.default_rng(0)
X = rng.standard_normal((batch, width))
y = rng.integers(0, 10, batch)
curv = Curvature(net, params, X, y)
curv.solve(curv.grad, 0.1)                        # warm up: imports, compiled kernels
times = []
for _ in range(rounds):
    t0 = time.perf_counter()
    curv = Curvature(net, params, X, y)
    curv.solve(curv.grad, 0.1)
    times.append(time.perf_counter() - t0)
print(json.dumps(sorted(times)))
"""


@pytest.mark.parametrize("threads", ["one", "all"], ids=["1-thread", "all-threads"])
@pytest.mark.parametrize("point", [(16, 16), (32, 8)], ids=["w16-B16", "w32-B8"])
def test_factor_rate(benchmark, settings, point, threads):
    """The factorization with the compiled stages on one thread (the default) and on all
    of numba's (:data:`tallskinny_np.backend.SWEEP_THREADS`; BLAS single-threaded inside
    them either way)."""
    prob = problem(SPEED_DEPTH, *point)
    lys = flops.layers(prob.net, point[1])
    n_threads = 1 if threads == "one" else numba.config.NUMBA_NUM_THREADS
    benchmark.group = "speed: riccati factor"
    benchmark.extra_info.update(prob.info, suite="speed", series="factor-rate",
                                flops=flops.riccati_factor_flops(lys), threads=n_threads)

    def factor():
        return riccati_factor(prob.curv.blocks, DAMPING)

    default, backend.SWEEP_THREADS = backend.SWEEP_THREADS, n_threads
    try:
        measure(benchmark, factor, settings, trace_memory=False)
    finally:
        backend.SWEEP_THREADS = default


def _rounds(path, point, rounds):
    """The sorted round times of :data:`ROUND_SCRIPT` with ``path`` first on the path."""
    env = dict(os.environ, PYTHONPATH=str(path))
    out = subprocess.run([sys.executable, "-c", ROUND_SCRIPT, str(SPEED_DEPTH), *map(str, point),
                          str(rounds)], env=env, check=True, capture_output=True, text=True,
                         cwd=path)
    return json.loads(out.stdout)


@pytest.mark.parametrize("point", [(16, 16), (8, 16)], ids=["w16-B16", "w8-B16"])
def test_versus_base(benchmark, settings, pytestconfig, point):
    base = pytestconfig.getoption("--bench-base")
    if base is None:
        pytest.skip("no --bench-base checkout to compare with")
    here = Path(__file__).resolve().parents[1]
    # alternate the two checkouts, so that a change in the machine's load hits both
    rounds = max(1, settings.max_rounds // 3)
    times, base_times, ratios = [], [], []
    for _ in range(BASE_PAIRS):
        t = _rounds(here, point, rounds)
        t_base = _rounds(Path(base).resolve(), point, rounds)
        ratios.append(float(np.median(t_base) / np.median(t)))
        times += t
        base_times += t_base
    benchmark.group = "speed: setup + solve versus base"
    net = make_net(SPEED_DEPTH, point[0])
    benchmark.extra_info.update(suite="speed", series="versus-base", L=SPEED_DEPTH,
                                width=point[0], batch=point[1], n_params=net.n_params,
                                base=str(base), median_here=float(np.median(times)),
                                median_base=float(np.median(base_times)),
                                speedup=float(np.median(ratios)), pair_ratios=ratios)
    # pytest-benchmark's own statistics: one more in-process timing of this checkout
    prob = problem(SPEED_DEPTH, *point)
    measure(benchmark, lambda: Curvature(prob.net, prob.params, prob.X, prob.y).solve(
        prob.b, DAMPING), settings, trace_memory=False)


def memorisation_problem():
    """The default memorisation problem of ``tallskinny-train``: the first 32 embedded
    digits, standardized by the statistics of all of them, and the depth-16, width-8 tanh
    MLP with bias at ``init_params(seed=0)``."""
    from tallskinny_np.training.datasets import load_digits
    images, labels = load_digits()
    X = images.reshape(len(images), -1).astype(np.float64)
    X = (X - X.mean(axis=0)) / (X.std(axis=0) + 1e-8)
    net = MLP([64] + [8] * 15 + [10], activation="tanh", bias=True)
    return net, net.init_params(seed=0), X[:32], labels[:32]


@pytest.mark.parametrize("step", ["adam", "ggn", "hessian"])
def test_exact_step(benchmark, settings, step):
    net, params, X, y = memorisation_problem()
    benchmark.group = "speed: one step of the memorisation problem"
    benchmark.extra_info.update(suite="speed", series="exact-step", step=step,
                                n_params=net.n_params, batch=len(y), L=net.n_layers, width=8,
                                threads=1 if step == "adam" else backend.SWEEP_THREADS)
    adam = Adam(lr=0.01)

    def adam_step():
        _, g, _ = loss_and_gradient(net, params, X, y)
        return adam.step(params, g)

    def exact_step():
        curv = Curvature(net, params, X, y, kind=step)
        return curv.step_solve(curv.grad, DAMPING)

    if step != "adam":
        benchmark.extra_info.update(_paired(exact_step, adam_step, settings.max_rounds))
    measure(benchmark, adam_step if step == "adam" else exact_step, settings,
            trace_memory=False)


def switch_point(net, params, X, y, loss_at, switch_loss=0.1):
    """The parameters and damping after Gauss-Newton steps from ``params`` until the batch
    loss is at most ``switch_loss`` (where ``ggn-newton`` takes its first Newton step)."""
    opt = DampedNewton(kind="ggn")
    for _ in range(200):
        loss, g, _ = loss_and_gradient(net, params, X, y)
        if loss <= switch_loss:
            return params, opt.state["damping"]
        params, _ = opt.step(params, loss, g, Curvature(net, params, X, y, kind="ggn"),
                             loss_at)
    raise RuntimeError(f"Gauss-Newton did not reach a loss of {switch_loss} in 200 steps")


def test_newton_step(benchmark, settings):
    """The damped Newton optimizer's step with the Hessian against the same step with the
    GGN (module docstring, ``newton-step``)."""
    net, params, X, y = memorisation_problem()
    loss_at = lambda p: float(net.loss(p, X, y))
    params, damping = switch_point(net, params, X, y, loss_at)
    loss, g, _ = loss_and_gradient(net, params, X, y)
    benchmark.group = "speed: one damped Newton step at the switch"
    benchmark.extra_info.update(suite="speed", series="newton-step", n_params=net.n_params,
                                batch=len(y), L=net.n_layers, width=8, damping=damping,
                                loss=loss, threads=backend.SWEEP_THREADS)

    def step(kind):
        # one trial each: a rejected Newton step's backtracking would add forward passes
        opt = DampedNewton(damping=damping, kind=kind, backtrack=0, trials=1)
        return opt.step(params, loss, g, Curvature(net, params, X, y, kind=kind), loss_at)

    benchmark.extra_info.update(_paired(lambda: step("hessian"), lambda: step("ggn"),
                                        settings.max_rounds, steps=5, base_steps=5))
    measure(benchmark, lambda: step("hessian"), settings, trace_memory=False)


def _paired(step, base_step, blocks, steps=5, base_steps=20):
    """A step against a baseline step in alternating blocks (``steps`` timed calls of
    ``step``, then ``base_steps`` of ``base_step``, each block after one untimed call), so
    that a change in the shared machine's load hits both sides of a ratio: the median over
    the blocks of the ratio of their medians, and the medians of all the times of each."""
    ratios, times_step, times_base = [], [], []
    for _ in range(blocks):
        medians = []
        for f, n, kept in ((step, steps, times_step), (base_step, base_steps, times_base)):
            f()
            block = []
            for _ in range(n):
                t0 = time.perf_counter()
                f()
                block.append(time.perf_counter() - t0)
            medians.append(float(np.median(block)))
            kept.extend(block)
        ratios.append(medians[0] / medians[1])
    return dict(paired_ratio=float(np.median(ratios)), paired_step=float(np.median(times_step)),
                paired_base=float(np.median(times_base)), paired_blocks=blocks)
