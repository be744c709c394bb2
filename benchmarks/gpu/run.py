"""The GPU check: ``python -m benchmarks.gpu.run --out DIR [--cpu-only] [--quick]``.

On a machine with CuPy and a CUDA device it runs, within a time budget (``--budget``,
default 420 s):

1. the GPU tests: ``python -m pytest -m gpu tests benchmarks/test_gpu.py`` (the benchmark
   suite as a smoke run: ``--bench-quick``, timings off);
2. setup + certified solve: ``Curvature(...)`` then ``curv.solve(curv.grad, 0.1)`` of the
   Hessian at L = 64 and 256, (width, batch) = (32, 32) and (64, 32) (tanh, bias, input
   size = width, 10 classes), in float64 and float32, on the GPU and on the CPU path;
3. the ImageNet-shaped exact step, as the optimizers take it (``curv.step_solve(curv.grad,
   1.0)``), of the Gauss-Newton matrix and the Hessian at
   (depth, width, batch) = (20, 32, 32), (40, 64, 32) and (40, 128, 32), with 32x32x3
   inputs (3072 features) and 1000 classes, tanh, bias, float64, with peak GPU memory;
4. ``tallskinny-train --backend cupy`` on synthetic ImageNet-shaped data, Adam and exact
   Gauss-Newton: images per second of training;

and writes ``DIR/report.md`` and ``DIR/report.json`` (the raw figures), again after every
measured row, each atomically, so that a run stopped half-way leaves a valid report of what
it measured. ``DIR/tests.log`` holds pytest's output, ``DIR/workers.log`` the measuring
processes' messages, ``DIR/train/`` the training runs.

Each measured row runs in a process of its own with a time limit, so that one that runs
out of memory or time is recorded with its one-line reason and the rest go on, and each
row's peak memory is its own. A row first runs its net cut to 3 layers untimed
(compilation and kernel loading stay out of the timings), then up to ``--repeats`` timed
repeats (fewer once a row has taken ``ROW_REPEAT_SECONDS``); seconds are the median. A CPU
row whose analytic flop count (:mod:`benchmarks.flops`) predicts more than
``--cpu-row-seconds`` at the machine's single-threaded dgemm rate is skipped, and one
still running after three times that is stopped.

``--cpu-only`` runs everything but the GPU rows, which the report lists as skipped, and
training with ``--backend numpy``; ``--quick`` runs tiny settings instead (seconds on a
laptop; the test suite runs ``--cpu-only --quick``). ``benchmarks/gpu/run.sh`` installs the
package with its GPU, training and test extras and runs this module within 8 minutes.

Exit status: 0; 1 when a test or a row failed (the report says which and why; a row
stopped by its time limit is "stopped", not failed); 2 when the run cannot start (no CuPy
or no device without ``--cpu-only``, an unusable ``--out``).
"""
import argparse
import csv
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]

SOLVE_DAMPING = 0.1
STEP_DAMPING = 1.0            # tallskinny-train's default --damping of the exact optimizers
SOLVE_CLASSES = 10
IMAGENET_FEATURES = 32 * 32 * 3
IMAGENET_CLASSES = 1000
DTYPES = ("float64", "float32")
STEP_KINDS = ("ggn", "hessian")
TRAIN_OPTIMIZERS = ("adam", "ggn")
TRAIN_COMMITS = 4             # a training run commits (and evaluates) every quarter of its steps
ROW_REPEAT_SECONDS = 10.0     # no further repeat once a row has taken this long
MIN_ROW_SECONDS = 5.0         # a row is not started with less time left than this
# Shares of the time left; the tests' is large because on a fresh machine they compile the
# CPU kernels (numba) and the GPU's (CuPy), to the disk caches the later rows use.
SHARES = {"tests": 0.3, "solve": 0.3, "step": 0.25, "train": 0.15}
TESTS_COMMAND = ("-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "tests",
                 "benchmarks/test_gpu.py", "--bench-quick", "--benchmark-disable")
GPU_SPEEDUP_TARGET = 20.0
SPEEDUP_POINT = (256, 32, 32)     # (L, width, batch) of the speed-up target
LARGE_STEP = (40, 128, 32)        # (depth, width, batch) of the exact step that must complete


@dataclass(frozen=True)
class Plan:
    """The settings of a run: ``solve`` as (L, width, batch), in the order they run (the
    speed-up target first, the largest last); ``step`` as (depth, width, batch) with
    ``features`` inputs and ``classes`` classes; the training run's depth, width, batch,
    synthetic images and steps per optimizer."""
    solve: tuple
    step: tuple
    features: int
    classes: int
    train: tuple
    train_images: int
    train_steps: dict


FULL = Plan(solve=((256, 32, 32), (64, 32, 32), (64, 64, 32), (256, 64, 32)),
            step=((20, 32, 32), (40, 64, 32), LARGE_STEP),
            features=IMAGENET_FEATURES, classes=IMAGENET_CLASSES,
            train=(20, 32, 32), train_images=4000, train_steps={"adam": 200, "ggn": 10})
QUICK = Plan(solve=((8, 4, 4), (4, 4, 4)), step=((3, 4, 4),),
             features=IMAGENET_FEATURES, classes=IMAGENET_CLASSES,
             train=(3, 4, 4), train_images=2 * IMAGENET_CLASSES,
             train_steps={"adam": 20, "ggn": 4})


# ---- one row, in a process of its own ---------------------------------------------------

def sizes_of(spec):
    """Layer sizes of a row: ``features`` inputs, ``depth - 1`` hidden layers of ``width``
    units, ``classes`` outputs."""
    return [spec["features"]] + [spec["width"]] * (spec["depth"] - 1) + [spec["classes"]]


def build(xp, spec):
    """``(net, params, X, y)`` of a row on the array module ``xp``: the tanh MLP with bias
    at ``init_params(seed=0)``, a standard normal batch and labels in range, all on the
    device already (copying them there is not part of the timings)."""
    from tallskinny_np import MLP
    net = MLP(sizes_of(spec), activation="tanh", bias=True, dtype=np.dtype(spec["dtype"]))
    rng = np.random.default_rng(0)
    X = rng.standard_normal((spec["batch"], spec["features"])).astype(net.dtype)
    y = rng.integers(0, spec["classes"], spec["batch"])
    return net, xp.asarray(net.init_params(seed=0)), xp.asarray(X), xp.asarray(y)


def timed_run(xp, spec, problem, sync):
    """One setup + solve of the row: ``(setup seconds, solve seconds, figures)``, figures a
    call that returns those of :func:`solve_figures` or, for a step, of
    :func:`step_figures`, computed untimed and only for the row's last run."""
    from tallskinny_np import Curvature
    net, params, X, y = problem
    sync()
    t0 = time.perf_counter()
    curv = Curvature(net, params, X, y, kind=spec["kind"])
    sync()
    t1 = time.perf_counter()
    if spec["mode"] == "step":
        x, _ = curv.step_solve(curv.grad, spec["damping"])
    else:
        _, info = curv.solve(curv.grad, spec["damping"], return_info=True)
    sync()
    t2 = time.perf_counter()
    if spec["mode"] == "step":
        return t1 - t0, t2 - t1, lambda: step_figures(curv, x, spec["damping"])
    return t1 - t0, t2 - t1, lambda: solve_figures(info)


def solve_figures(info):
    """A certified solve's backward error, its bound and the path of its chain."""
    from tallskinny_np.backend import to_numpy
    return dict(backward_error=float(np.max(to_numpy(info.backward_error))),
                bound=float(info.bound), path=list(info.path[0]))


def step_figures(curv, x, damping):
    """An optimizer's step ``x = (H + damping I)^{-1} g``: a bound on its normwise
    backward error from its residual and the free lower bound on ``||H + damping I||``,
    and the level below which the step's solve does not refine
    (:data:`tallskinny_np.certified.STEP_BOUND`)."""
    from tallskinny_np.certified import STEP_BOUND
    from tallskinny_np.certify import backward_errors
    from tallskinny_np.norms import probe_norm
    g = curv.grad[:, None]
    r = g - curv._shifted_product(x[:, None], damping)
    eta = backward_errors(r, x[:, None], g, probe_norm(curv, damping))
    return dict(backward_error=float(np.max(eta)), bound=STEP_BOUND)


def measure_row(spec):
    """The figures of one row (see the module docstring); raises what the computation
    raises."""
    from tallskinny_np.backend import backend_module
    xp = backend_module(spec["backend"])
    gpu = xp is not np
    sync = xp.cuda.Device().synchronize if gpu else (lambda: None)
    # The row's net cut to 3 layers, untimed: its layers have the row's shapes, so the
    # kernels they need are compiled and loaded before the timings.
    timed_run(xp, spec, build(xp, dict(spec, depth=3)), sync)
    if gpu:
        pool = xp.get_default_memory_pool()
        pool.free_all_blocks()
    problem = build(xp, spec)
    runs, start = [], time.perf_counter()
    while len(runs) < spec["max_repeats"]:
        figures = None            # frees the last run's curvature before the next is built
        setup, solve, figures = timed_run(xp, spec, problem, sync)
        runs.append((setup, solve))
        if time.perf_counter() - start > ROW_REPEAT_SECONDS:
            break
    out = dict(status="ok", repeats=len(runs),
               seconds=statistics.median(s + t for s, t in runs),
               setup_seconds=statistics.median(s for s, _ in runs),
               solve_seconds=statistics.median(t for _, t in runs),
               all_seconds=[s + t for s, t in runs], **figures(),
               host_peak_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    if gpu:
        free, total = xp.cuda.runtime.memGetInfo()
        # The pool keeps what it once held, so its size after the runs is their peak.
        out.update(gpu_pool_peak_bytes=int(pool.total_bytes()),
                   gpu_used_bytes=int(total - free))
    return out


def worker():
    """``--worker``: measure the row whose spec (JSON) is on stdin and print its figures
    as one line ``ROW <json>``; a failure is a row too, with its one-line reason."""
    spec = json.loads(sys.stdin.read())
    try:
        out = measure_row(spec)
    except Exception as e:  # any failure of a row is reported, not raised
        out = dict(status="failed", reason=one_line(e))
    print("ROW " + json.dumps(out), flush=True)
    return 0


def one_line(error):
    """``'Name: first line of the message'``."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


# ---- the run ----------------------------------------------------------------------------

class Run:
    """The state of a run: its options, the environment, the rows measured so far; the
    report is written from it after every row."""

    def __init__(self, args):
        self.args = args
        self.out = Path(args.out)
        self.plan = QUICK if args.quick else FULL
        self.started = time.time()
        self.deadline = time.monotonic() + args.budget
        self.environment = environment(args.cpu_only)
        self.tests = None
        self.rows = []
        self.training = []
        self.finished = False
        self.cpu_gflops = dgemm_rate()
        self.section_deadline = self.deadline

    # -- budget --

    def start_section(self, name):
        """Give section ``name`` its share of the time left (unused shares carry over)."""
        names = list(SHARES)
        left = sum(SHARES[n] for n in names[names.index(name):])
        now = time.monotonic()
        self.section_deadline = now + max(0.0, self.deadline - now) * SHARES[name] / left

    def time_left(self):
        return self.section_deadline - time.monotonic()

    # -- rows --

    def row_specs(self):
        """The rows of sections 2 and 3, in the order they run; the exact steps on the GPU
        before those on the CPU, which only compare."""
        p, specs = self.plan, []
        for L, w, B in p.solve:
            for dtype in DTYPES:
                for backend in ("cupy", "numpy"):
                    specs.append(dict(section="solve", mode="certified", kind="hessian",
                                      damping=SOLVE_DAMPING, depth=L, width=w, batch=B,
                                      features=w, classes=SOLVE_CLASSES, dtype=dtype,
                                      backend=backend))
        for backend in ("cupy", "numpy"):
            for kind in STEP_KINDS:
                for D, w, B in p.step:
                    specs.append(dict(section="step", mode="step", kind=kind,
                                      damping=STEP_DAMPING, depth=D, width=w, batch=B,
                                      features=p.features, classes=p.classes,
                                      dtype="float64", backend=backend))
        return specs

    def measure(self, spec):
        """Measure one row in a worker process (or record why not) and rewrite the
        report."""
        from tallskinny_np import MLP
        spec = dict(spec, max_repeats=self.args.repeats)
        row = dict(spec, n_params=MLP(sizes_of(spec), bias=True).n_params)
        limit = self.time_left()
        cpu = spec["backend"] == "numpy"
        if cpu:
            # The prediction is a lower bound: a row may take a few times as long.
            row["predicted_seconds"] = self.cpu_prediction(spec)
            limit = min(limit, 3 * self.args.cpu_row_seconds)
        if not cpu and self.args.cpu_only:
            row.update(status="skipped", reason="no GPU: --cpu-only")
        elif cpu and row["predicted_seconds"] > self.args.cpu_row_seconds:
            row.update(status="skipped", reason=(
                f"predicted at least {row['predicted_seconds']:.0f} s (its flops at this "
                f"CPU's dgemm rate, {self.cpu_gflops:.0f} GFLOP/s) > --cpu-row-seconds "
                f"{self.args.cpu_row_seconds:g}"))
        elif limit < MIN_ROW_SECONDS:
            row.update(status="skipped", reason="the run's time budget ran out")
        else:
            row.update(self.in_worker(spec, limit))
        self.rows.append(row)
        self.write()
        return row

    def cpu_prediction(self, spec):
        """A lower bound on the seconds of one CPU setup + solve: the analytic useful flops
        at the single-threaded dgemm rate (float32: twice that rate)."""
        from tallskinny_np import MLP

        from benchmarks import flops
        lys = flops.layers(MLP(sizes_of(spec), bias=True), spec["batch"])
        rate = self.cpu_gflops * 1e9 * (2 if spec["dtype"] == "float32" else 1)
        return (flops.setup_flops(lys) + flops.riccati_flops(lys)) / rate

    def in_worker(self, spec, limit):
        """Run :func:`worker` on ``spec`` with a time limit; its stderr goes to
        workers.log."""
        cmd = [sys.executable, "-m", "benchmarks.gpu.run", "--worker"]
        with open(self.out / "workers.log", "a") as log:
            log.write(f"\n== {row_title(spec)}, {spec['dtype']}, {spec['backend']}\n")
            log.flush()
            try:
                done = subprocess.run(cmd, input=json.dumps(spec), stdout=subprocess.PIPE,
                                      stderr=log, text=True, cwd=ROOT, timeout=limit)
            except subprocess.TimeoutExpired:
                return dict(status="stopped", reason=f"after {limit:.0f} s, the time left "
                                                    f"for it")
        for line in done.stdout.splitlines():
            if line.startswith("ROW "):
                return json.loads(line[4:])
        return dict(status="failed", reason=f"the measuring process exited with status "
                                            f"{done.returncode} (see workers.log)")

    # -- tests and training --

    def run_tests(self):
        """The GPU tests (pytest's output in tests.log)."""
        limit = self.time_left()
        cmd = [sys.executable, *TESTS_COMMAND]
        self.tests = dict(command="python " + " ".join(TESTS_COMMAND))
        try:
            done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, cwd=ROOT, timeout=max(limit, MIN_ROW_SECONDS))
            output, status = done.stdout, done.returncode
        except subprocess.TimeoutExpired as e:
            output, status = (e.stdout or b"").decode(errors="replace"), None
        (self.out / "tests.log").write_text(output)
        lines = [line for line in output.splitlines() if line.strip()]
        self.tests.update(exit_status=status, summary=lines[-1] if lines else "",
                          status="passed" if status == 0 else "failed")
        if status is None:
            self.tests["summary"] = f"stopped after {limit:.0f} s, the time left for it"
        self.write()

    def train(self, optimizer):
        """One ``tallskinny-train`` run on synthetic data and its throughput; of the steps
        it committed if it was stopped."""
        (depth, width, batch), p = self.plan.train, self.plan
        backend = "numpy" if self.args.cpu_only else "cupy"
        steps = p.train_steps[optimizer]
        folder = self.out / "train" / f"{backend}-{optimizer}"
        row = dict(optimizer=optimizer, backend=backend, depth=depth, width=width,
                   batch=batch, images=p.train_images, steps=steps,
                   command=["tallskinny-train", "--data", "synthetic", "--synthetic-size",
                            str(p.train_images), "--depth", str(depth), "--width", str(width),
                            "--batch", str(batch), "--optimizer", optimizer, "--task", "train",
                            "--steps", str(steps), "--second-order-steps", str(steps),
                            "--eval-every", str(max(1, steps // TRAIN_COMMITS)), "--out",
                            str(folder), "--overwrite",
                            "--quiet", "--backend", backend])
        limit = self.time_left()
        if limit < MIN_ROW_SECONDS:
            row.update(status="skipped", reason="the run's time budget ran out")
        else:
            cmd = [sys.executable, "-m", "tallskinny_np.training.train", *row["command"][1:]]
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                                      timeout=limit)
                if done.returncode:
                    lines = (done.stderr or done.stdout).strip().splitlines()
                    row.update(status="failed", reason=(lines or ["(no output)"])[-1])
                else:
                    row.update(status="ok")
            except subprocess.TimeoutExpired:
                row.update(status="stopped", reason=f"after {limit:.0f} s, the time left "
                                                    f"for it")
            row.update(throughput(folder, optimizer, batch))
        self.training.append(row)
        self.write()

    # -- the report --

    def summary(self):
        """Everything the report states, as JSON-ready data."""
        return dict(environment=self.environment, quick=self.args.quick,
                    cpu_only=self.args.cpu_only, budget_seconds=self.args.budget,
                    cpu_row_seconds=self.args.cpu_row_seconds, repeats=self.args.repeats,
                    cpu_dgemm_gflops=self.cpu_gflops,
                    elapsed_seconds=time.time() - self.started, finished=self.finished,
                    tests=self.tests, rows=self.rows, ratios=ratios(self.rows),
                    training=self.training, targets=targets(self))

    def write(self):
        """report.json and report.md, each atomically."""
        from tallskinny_np.files import atomic_write_text, json_text
        data = self.summary()
        atomic_write_text(self.out / "report.json", json_text(data, indent=1) + "\n")
        atomic_write_text(self.out / "report.md", markdown(data))


def throughput(folder, optimizer, batch):
    """Images per second of a training run, from its metrics.csv: the ``wall`` column is
    the training time before each step (evaluations and checkpoints excluded), so its last
    row is the time of the steps before it. Also over the steps after the first, which
    alone pays for one-time costs. Empty before the run has committed a step."""
    try:
        with open(folder / "train" / optimizer / "metrics.csv", newline="") as f:
            rows = [(int(r["step"]), float(r["wall"])) for r in csv.DictReader(f)]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    if len(rows) < 2:
        return {}
    n, wall = rows[-1]
    out = dict(steps_done=n, seconds=wall, images_per_second=n * batch / wall if wall else None)
    first = dict(rows).get(1)
    if n >= 2 and first is not None and wall > first:
        out["images_per_second_after_first"] = (n - 1) * batch / (wall - first)
    summary = folder / "summary.txt"
    for line in summary.read_text().splitlines() if summary.exists() else ():
        if line.startswith("GPU memory held by CuPy's pool"):
            out["gpu_pool_peak"] = line.rsplit(":", 1)[1].strip()
    return out


def ratios(rows):
    """Per setting and dtype where both backends measured: CPU seconds over GPU seconds."""
    found = {}
    for r in rows:
        if r["status"] == "ok":
            key = (r["section"], r["kind"], r["depth"], r["width"], r["batch"], r["dtype"])
            found.setdefault(key, {})[r["backend"]] = r["seconds"]
    return [dict(section=s, kind=k, depth=L, width=w, batch=B, dtype=d, cpu_seconds=t["numpy"],
                 gpu_seconds=t["cupy"], speedup=t["numpy"] / t["cupy"])
            for (s, k, L, w, B, d), t in found.items() if len(t) == 2]


def find(rows, **match):
    """The first row whose fields equal ``match``, or None."""
    return next((r for r in rows if all(r.get(k) == v for k, v in match.items())), None)


def targets(run):
    """The two GPU targets, each MET, MISSED or NOT MEASURED with its figures."""
    L, w, B = SPEEDUP_POINT
    point = dict(depth=L, width=w, batch=B, dtype="float64")
    gpu = find(run.rows, section="solve", backend="cupy", **point)
    cpu = find(run.rows, section="solve", backend="numpy", **point)
    title = (f"setup + certified solve at L = {L}, width {w}, batch {B} (float64): GPU at "
             f"least {GPU_SPEEDUP_TARGET:g}x the CPU path")
    if gpu and cpu and gpu["status"] == cpu["status"] == "ok":
        speedup = cpu["seconds"] / gpu["seconds"]
        first = dict(target=title, verdict="MET" if speedup >= GPU_SPEEDUP_TARGET else "MISSED",
                     figures=f"{speedup:.1f}x ({fmt_s(gpu['seconds'])} on the GPU, "
                             f"{fmt_s(cpu['seconds'])} on the CPU)")
    else:
        first = dict(target=title, verdict="NOT MEASURED",
                     figures=why_not(run, gpu) if not gpu or gpu["status"] != "ok"
                     else why_not(run, cpu))
    D, w, B = LARGE_STEP
    title = (f"ImageNet-shaped exact step at (depth, width, batch) = ({D}, {w}, {B}) "
             f"completes on the GPU")
    steps = [r for r in run.rows if r["section"] == "step" and r["backend"] == "cupy"
             and (r["depth"], r["width"], r["batch"]) == LARGE_STEP]
    ok = [r for r in steps if r["status"] == "ok"]
    memory = run.environment.get("gpu_memory_bytes")
    device = (f" on {run.environment['gpu']} ({fmt_bytes(memory)})" if memory else "")
    if ok:
        second = dict(target=title, verdict="MET", figures="; ".join(
            f"{r['kind']}: {fmt_s(r['seconds'])}, peak GPU memory (CuPy pool) "
            f"{fmt_bytes(r.get('gpu_pool_peak_bytes'))}" for r in ok) + device)
    elif any(r["status"] in ("failed", "stopped") for r in steps):
        second = dict(target=title, verdict="MISSED", figures="; ".join(
            f"{r['kind']}: {r['reason']}" for r in steps) + device)
    else:
        second = dict(target=title, verdict="NOT MEASURED",
                      figures=why_not(run, steps[0] if steps else None))
    return [first, second]


def why_not(run, row):
    """Why a target's row gave no figure."""
    if row is None:
        return "--quick runs other settings" if run.args.quick else "not run yet"
    return row.get("reason", row["status"])


# ---- the environment --------------------------------------------------------------------

def environment(cpu_only):
    """Machine, versions and thread settings; the GPU's name, memory, CuPy and CUDA
    versions (a RuntimeError if CuPy or a device is missing, unless ``cpu_only``)."""
    import numba
    import scipy
    env = dict(date=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
               commit=git_commit(), cpu=cpu_model(), cpu_count=os.cpu_count(),
               loadavg_start=os.getloadavg(), python=platform.python_version(),
               numpy=np.__version__, scipy=scipy.__version__, numba=numba.__version__,
               blas_threads={v: os.environ.get(v) for v in
                             ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")})
    if cpu_only:
        env["gpu"] = "no GPU: --cpu-only"
        return env
    from tallskinny_np.backend import backend_module
    cupy = backend_module("cupy")
    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    name = props["name"]
    env.update(gpu=name.decode() if isinstance(name, bytes) else str(name),
               gpu_memory_bytes=int(props["totalGlobalMem"]), cupy=cupy.__version__,
               cuda_runtime=cuda_version(cupy.cuda.runtime.runtimeGetVersion()),
               cuda_driver=cuda_version(cupy.cuda.runtime.driverGetVersion()))
    return env


def cuda_version(v):
    """CUDA's version integer (12040) as '12.4'."""
    return f"{v // 1000}.{v % 1000 // 10}"


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit():
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=ROOT, timeout=10)
        return done.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def dgemm_rate(n=1024, repeats=3):
    """Best-of-``repeats`` GFLOP/s of an n x n float64 matmul on one BLAS thread (the
    sweeps' setting), for the CPU rows' predicted times."""
    from threadpoolctl import threadpool_limits
    A, B = np.random.default_rng(0).standard_normal((2, n, n))
    best = np.inf
    with threadpool_limits(1, user_api="blas"):
        for _ in range(repeats):
            t0 = time.perf_counter()
            A @ B
            best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


# ---- markdown ---------------------------------------------------------------------------

def fmt_s(s):
    return "-" if s is None else (f"{s * 1e3:.3g} ms" if s < 1 else f"{s:.3g} s")


def fmt_bytes(b):
    if b is None:
        return "-"
    return f"{b / 2 ** 30:.2f} GiB" if b >= 2 ** 30 else f"{b / 2 ** 20:.0f} MiB"


def fmt_rate(x):
    return "-" if x is None else (f"{x:,.0f}" if x >= 100 else f"{x:.3g}")


def fmt_e(e):
    return "-" if e is None else f"{e:.1e}"


def row_title(r):
    if r["section"] == "solve":
        return f"L = {r['depth']}, width {r['width']}, batch {r['batch']}"
    return f"({r['depth']}, {r['width']}, {r['batch']}), {r['kind']}"


def status_cell(r):
    return "ok" if r["status"] == "ok" else f"{r['status']}: {r['reason']}"


def rows_table(rows):
    head = ("| setting | dtype | backend | seconds (median) | repeats | setup | solve | "
            "backward error (bound) | peak GPU memory (pool / device) | host peak RSS | "
            "status |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        ok = r["status"] == "ok"
        gpu = (f"{fmt_bytes(r.get('gpu_pool_peak_bytes'))} / {fmt_bytes(r.get('gpu_used_bytes'))}"
               if ok and r["backend"] == "cupy" else "-")
        lines.append("| " + " | ".join([
            row_title(r), r["dtype"], r["backend"], fmt_s(r.get("seconds")),
            str(r.get("repeats", "-")) if ok else "-", fmt_s(r.get("setup_seconds")),
            fmt_s(r.get("solve_seconds")),
            f"{fmt_e(r.get('backward_error'))} ({fmt_e(r.get('bound'))})" if ok else "-",
            gpu, fmt_bytes(r.get("host_peak_bytes")), status_cell(r)]) + " |")
    return head + "\n".join(lines) + "\n"


def ratio_table(ratios, section):
    rs = [r for r in ratios if r["section"] == section]
    if not rs:
        return "No setting was measured on both backends.\n"
    head = ("| setting | dtype | CPU | GPU | GPU speed-up |\n|---|---|---|---|---|\n")
    return head + "\n".join(
        f"| {row_title(r)} | {r['dtype']} | {fmt_s(r['cpu_seconds'])} | "
        f"{fmt_s(r['gpu_seconds'])} | {r['speedup']:.1f}x |" for r in rs) + "\n"


def markdown(d):
    """The report's Markdown text."""
    env, out = d["environment"], []
    command = ["python -m benchmarks.gpu.run"] + [
        flag for flag, on in (("--cpu-only", d["cpu_only"]), ("--quick", d["quick"])) if on]
    out.append("# GPU report\n")
    out.append(f"`{' '.join(command)}`, {env['date']}"
               + (f", commit {env['commit']}" if env.get("commit") else "")
               + f"; {d['elapsed_seconds']:.0f} s of a {d['budget_seconds']:g} s budget"
               + ("." if d["finished"] else "; not finished (this report is rewritten after "
                                            "every row).") + "\n")
    out.append("## Machine\n")
    gpu = env["gpu"]
    if env.get("gpu_memory_bytes"):
        gpu += (f", {fmt_bytes(env['gpu_memory_bytes'])}; CuPy {env['cupy']}, CUDA runtime "
                f"{env['cuda_runtime']}, driver {env['cuda_driver']}")
    out.append(f"- GPU: {gpu}")
    out.append(f"- CPU: {env['cpu']}, {env['cpu_count']} cores, single-threaded dgemm "
               f"{d['cpu_dgemm_gflops']:.1f} GFLOP/s, load average at the start "
               f"{env['loadavg_start'][0]:.2f}; BLAS thread variables "
               + ", ".join(f"{k}={v}" for k, v in env["blas_threads"].items()))
    out.append(f"- Python {env['python']}, NumPy {env['numpy']}, SciPy {env['scipy']}, "
               f"numba {env['numba']}\n")
    out.append("## GPU tests\n")
    t = d["tests"]
    out.append("Not run (--skip-tests).\n" if t is None else
               f"`{t['command']}`: {t['status']} (exit status {t['exit_status']}): "
               f"{t['summary']}. Output in tests.log.\n")
    out.append("## Setup + certified solve\n")
    out.append(f"`Curvature(net, params, X, y)` then `curv.solve(curv.grad, {SOLVE_DAMPING}, "
               "return_info=True)` (the Hessian, certified; raises if uncertified): tanh MLP "
               f"with bias, input size = width, {SOLVE_CLASSES} classes, `init_params(seed=0)`, "
               "standard normal batch, arrays already on the device. Seconds: setup + solve, "
               f"median of the repeats (up to {d['repeats']}, fewer once a row has taken "
               f"{ROW_REPEAT_SECONDS:g} s), after an untimed run of the net cut to 3 "
               "layers. Backward error: `info.backward_error` (its certified bound). Peak "
               "GPU memory: the "
               "CuPy pool's size after the repeats (it keeps what it held) and the device's "
               "used memory then (context and libraries included).\n")
    solve = [r for r in d["rows"] if r["section"] == "solve"]
    out.append(rows_table(solve))
    out.append(ratio_table(d["ratios"], "solve"))
    out.append("## ImageNet-shaped exact step\n")
    out.append("One step as the optimizers take it: `Curvature(net, params, X, y, kind=kind)` "
               f"then `curv.step_solve(curv.grad, {STEP_DAMPING})`; (depth, width, batch), "
               f"{IMAGENET_FEATURES} input features (32x32x3), {IMAGENET_CLASSES} classes, "
               "tanh, bias, float64. Timed as above. Backward error: a bound from the "
               "step's residual and the free lower bound on `||H + damping I||`, computed "
               "after the timing (the bound in brackets: the level below which the step "
               "does not refine).\n")
    step = [r for r in d["rows"] if r["section"] == "step"]
    out.append(rows_table(step))
    out.append(ratio_table(d["ratios"], "step"))
    out.append("## Training throughput\n")
    out.append("`tallskinny-train --data synthetic` (32x32x3 images, 1000 classes), task "
               "train, the splits evaluated every quarter of the steps. Images/s: steps x "
               "batch over the training time of metrics.csv (evaluations and checkpoints "
               "excluded), over all steps and over those after the first; of the steps "
               "committed, where a run was stopped.\n")
    if d["training"]:
        out.append("| optimizer | backend | (depth, width, batch) | steps | seconds of training "
                   "| images/s | images/s after the first step | peak GPU memory (pool) | "
                   "status |\n|---|---|---|---|---|---|---|---|---|")
        for r in d["training"]:
            out.append(f"| {r['optimizer']} | {r['backend']} | ({r['depth']}, {r['width']}, "
                       f"{r['batch']}) | {r.get('steps_done', '-')} | {fmt_s(r.get('seconds'))} "
                       f"| {fmt_rate(r.get('images_per_second'))} | "
                       f"{fmt_rate(r.get('images_per_second_after_first'))} | "
                       f"{r.get('gpu_pool_peak', '-')} | {status_cell(r)} |")
        out.append("")
    out.append("## Targets\n")
    for t in d["targets"]:
        out.append(f"- {t['target']}: **{t['verdict']}**, {t['figures']}")
    return "\n".join(out) + "\n"


# ---- command line -----------------------------------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu.run",
        description="GPU tests, GPU benchmarks against the CPU path and training throughput, "
                    "in one report (report.md, report.json).")
    p.add_argument("--out", default="gpu-report", help="output folder (default gpu-report)")
    p.add_argument("--cpu-only", action="store_true",
                   help="no GPU: list the GPU rows as skipped, train with --backend numpy")
    p.add_argument("--quick", action="store_true", help="tiny settings (a smoke run)")
    p.add_argument("--budget", type=float, default=420.0,
                   help="seconds for the whole run (default 420)")
    p.add_argument("--cpu-row-seconds", type=float, default=45.0,
                   help="skip a CPU row predicted to take longer, stop one after 3 times "
                        "as long (default 45)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per row (default 3)")
    p.add_argument("--skip-tests", action="store_true", help="do not run the GPU tests")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.repeats < 1 or args.budget <= 0:
        p.error("--repeats and --budget must be positive")
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.worker:
        return worker()
    from tallskinny_np.files import output_folder
    try:
        output_folder(args.out)
        run = Run(args)
    except (ValueError, RuntimeError) as e:
        print(f"benchmarks.gpu.run: {e}" + ("" if args.cpu_only else
                                            " (--cpu-only runs without a GPU)"),
              file=sys.stderr)
        return 2
    (run.out / "workers.log").write_text("")
    run.write()
    if not args.skip_tests:
        run.start_section("tests")
        run.run_tests()
    specs = run.row_specs()
    for section in ("solve", "step"):
        run.start_section(section)
        for spec in specs:
            if spec["section"] == section:
                row = run.measure(spec)
                print(f"{row_title(row)}, {row['dtype']}, {row['backend']}: "
                      + (fmt_s(row["seconds"]) if row["status"] == "ok" else status_cell(row)),
                      flush=True)
    run.start_section("train")
    for optimizer in TRAIN_OPTIMIZERS:
        run.train(optimizer)
    run.finished = True
    run.write()
    print(f"report: {run.out / 'report.md'} (raw figures in report.json)")
    failed = (run.tests and run.tests["status"] == "failed") or any(
        r["status"] == "failed" for r in run.rows + run.training)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
