"""The exact step at the settings of ImageNet-style runs: 32x32x3 inputs (3072 features),
1000 classes, tanh, bias, float64, one BLAS thread (docs/math.md sections 4.9 and 5.1).

One exact step is what the optimizers take: ``Curvature(net, params, X, y, kind)`` plus
``step_solve(grad, 1.0)`` (in a checkout older than ``step_solve``, its optimizers' solve,
``solve(grad, 1.0, uncertified="return", fallback=False)``). Each measurement runs in a
subprocess of its own, which reports its wall time (median of its rounds after a warm-up
step) and its peak resident memory (``ru_maxrss``); so memory is the whole process's, the
interpreter and the compiled kernels included. Written (depth, width, batch).

- ``classes``: (20, 32, 32) at 1000 classes against the same network at 10 classes, GGN and
  Hessian, in alternating pairs: the ratios of time and of peak memory.
- ``tall-skinny``: (40, 128, 32), GGN and Hessian, one step each after a warm-up on a
  small net: seconds and peak memory, against the hidden stages' flop count
  (:func:`tallskinny_np.plan.plan`) at the same run's single-thread dgemm rate.
- ``versus-base``: (40, 64, 32), GGN, here and in another checkout (``--base PATH``) in
  alternating pairs: the speed-up and the ratio of peak memory (skipped without it).
- ``seed settings``: the original training script's baseline (20, 512, 256, first order:
  an Adam step measured), its Hessian setting (20, 256, 64) and its tall-skinny setting
  (40, 128, 32): the plan's memory and GFLOP of an exact step, measured where this machine
  can, and the largest curvature batch that fits in its memory and takes at most a
  minute at the measured dgemm rate; the rest marked as estimates.

``python -m benchmarks.imagenet --out DIR [--base PATH] [--quick]`` writes ``DIR/report.md``
and ``DIR/imagenet.json`` (atomically); ``--quick`` shrinks every setting so that the whole
run takes seconds (a smoke test of this script, not a measurement).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
INPUTS, CLASSES = 3072, 1000
PRACTICAL_SECONDS = 60.0
H100_FP64_FLOPS = 67e12
"""The H100's FP64 tensor-core peak: a floor for the time of a step on it, not an estimate
of what the CuPy path reaches."""

STEP_SCRIPT = """
import json, resource, sys, time
import numpy as np
from tallskinny_np import MLP, Curvature
from tallskinny_np.optim import Adam, loss_and_gradient
L, w, B, c, rounds = (int(a) for a in sys.argv[1:6])
kind, inputs = sys.argv[6], int(sys.argv[7])
rng = np.random.default_rng(0)
def problem(L, w, B, c):
    net = MLP([inputs] + [w] * (L - 1) + [c])
    return net, net.init_params(seed=0), rng.standard_normal((B, inputs)), rng.integers(0, c, B)
def step(net, params, X, y):
    if kind == "adam":
        opt = Adam(1e-3)
        _, g, _ = loss_and_gradient(net, params, X, y)
        return opt.step(params, g)
    curv = Curvature(net, params, X, y, kind)
    if hasattr(curv, "step_solve"):
        return curv.step_solve(curv.grad, 1.0)
    return curv.solve(curv.grad, 1.0, uncertified="return", fallback=False)
small = problem(4, 8, 4, 10)
step(*small)                                      # imports and compiled kernels
prob = problem(L, w, B, c)
if rounds > 1:
    step(*prob)                                   # a warm-up at size
times = []
for _ in range(rounds):
    t0 = time.perf_counter()
    step(*prob)
    times.append(time.perf_counter() - t0)
print(json.dumps({"seconds": sorted(times),
                  "peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def run_step(checkout, L, w, B, c, kind, rounds, inputs=INPUTS):
    """One subprocess measurement in ``checkout``: median seconds and peak bytes."""
    env = dict(os.environ, PYTHONPATH=str(checkout), OPENBLAS_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", STEP_SCRIPT, str(L), str(w), str(B), str(c),
                          str(rounds), kind, str(inputs)],
                         env=env, cwd=checkout, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return statistics.median(result["seconds"]), result["peak_bytes"]


def dgemm_rate(n=1024, repeats=5):
    """The best single-thread float64 matmul rate (flop/s) at n x n, in a subprocess with
    one BLAS thread."""
    code = (f"import time, numpy as np\nA = np.random.default_rng(0).standard_normal(({n}, {n}))"
            f"\nbest = 1e9\nfor _ in range({repeats}):\n    t = time.perf_counter()\n"
            f"    A @ A\n    best = min(best, time.perf_counter() - t)\nprint(2 * {n} ** 3 / best)")
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    return float(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                text=True, check=True).stdout)


def pairs(a, b, n):
    """``n`` alternating measurements of the callables a and b: lists of their results."""
    ra, rb = [], []
    for _ in range(n):
        ra.append(a())
        rb.append(b())
    return ra, rb


def ratio_summary(ra, rb):
    """Median of the pairwise ratios of time and of peak memory, with their ranges."""
    t = [x[0] / y[0] for x, y in zip(ra, rb)]
    m = [x[1] / y[1] for x, y in zip(ra, rb)]
    return {"time_ratio": statistics.median(t), "time_ratios": t,
            "memory_ratio": statistics.median(m), "memory_ratios": m,
            "seconds": [statistics.median(x[0] for x in ra), statistics.median(y[0] for y in rb)],
            "peak_bytes": [max(x[1] for x in ra), max(y[1] for y in rb)]}


def practical_batch(net, B, kind, rate, memory):
    """The largest curvature batch up to B whose plan fits in ``memory`` bytes and takes at
    most :data:`PRACTICAL_SECONDS` at ``rate`` flop/s (None if even 1 does not)."""
    from tallskinny_np.plan import BASE_BYTES, plan
    for b in range(B, 0, -1):
        p = plan(net, b, kind)
        if p.peak - BASE_BYTES <= memory and p.flops / rate <= PRACTICAL_SECONDS:
            return b
    return None


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.imagenet",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder of report.md and imagenet.json")
    parser.add_argument("--base", help="another checkout to time (40, 64, 32) against")
    parser.add_argument("--quick", action="store_true",
                        help="tiny settings: a smoke test of the script, seconds")
    parser.add_argument("--pairs", type=int, default=3, help="alternating pairs (default 3)")
    args = parser.parse_args(argv)
    from tallskinny_np import MLP
    from tallskinny_np.plan import BASE_BYTES, available_bytes, gigabytes, plan

    q = args.quick
    inputs = 48 if q else INPUTS
    classes = 50 if q else CLASSES
    small, tall, mid = ((4, 6, 6), (5, 8, 6), (5, 7, 6)) if q else \
        ((20, 32, 32), (40, 128, 32), (40, 64, 32))
    seeds = [("baseline", (20, 512, 256), "adam"), ("Hessian setting", (20, 256, 64), "hessian"),
             ("tall-skinny setting", (40, 128, 32), "ggn")]
    if q:
        seeds = [(n, tall if n == "tall-skinny setting" else (4, 10, 8), k)
                 for n, _, k in seeds]
    n_pairs = 1 if q else args.pairs
    rate = dgemm_rate(256 if q else 1024)
    memory = available_bytes()
    result = {"dgemm_flops": rate, "available_bytes": memory, "quick": q, "inputs": inputs,
              "classes": classes, "shapes": {"small": small, "tall": tall, "mid": mid},
              "load_start": os.getloadavg()}

    step = lambda checkout, shape, c, kind, rounds: run_step(checkout, *shape, c, kind, rounds,
                                                             inputs)
    result["classes_ratio"] = {}
    for kind in ("ggn", "hessian"):
        ra, rb = pairs(lambda: step(ROOT, small, classes, kind, 3),
                       lambda: step(ROOT, small, 10, kind, 3), n_pairs)
        result["classes_ratio"][kind] = ratio_summary(ra, rb)

    result["tall_skinny"] = {}
    for kind in ("ggn", "hessian"):
        net = MLP([inputs] + [tall[1]] * (tall[0] - 1) + [classes])
        p = plan(net, tall[2], kind)
        hidden = sum(ly.flops for ly in p.layers[1:-1])
        seconds, peak = step(ROOT, tall, classes, kind, 1)
        result["tall_skinny"][kind] = {"seconds": seconds, "peak_bytes": peak,
                                       "hidden_flops": hidden, "plan_peak": p.peak,
                                       "plan_flops": p.flops,
                                       "floor_ratio": seconds / (hidden / rate)}

    if args.base:
        ra, rb = pairs(lambda: step(ROOT, mid, classes, "ggn", 1),
                       lambda: step(Path(args.base), mid, classes, "ggn", 1), n_pairs)
        result["versus_base"] = dict(ratio_summary(ra, rb), base=args.base)

    result["seeds"] = []
    for name, shape, kind in seeds:
        L, w, B = shape
        net = MLP([inputs] + [w] * (L - 1) + [classes])
        row = {"name": name, "shape": shape, "kind": kind}
        if kind == "adam":
            row["seconds"], row["peak_bytes"] = step(ROOT, shape, classes, "adam", 5)
            kind = "ggn"
        elif shape == tall:                        # measured above
            row["step_seconds"] = result["tall_skinny"][kind]["seconds"]
            row["peak_bytes"] = result["tall_skinny"][kind]["peak_bytes"]
        p = plan(net, B, kind)
        row.update(plan_peak=p.peak, plan_flops=p.flops, estimate_seconds=p.flops / rate,
                   h100_floor_seconds=p.flops / H100_FP64_FLOPS,
                   fits=memory is None or p.peak - BASE_BYTES <= memory,
                   practical_batch=practical_batch(net, B, kind, rate, memory or np.inf))
        result["seeds"].append(row)
    result["load_end"] = os.getloadavg()
    write(Path(args.out), result, gigabytes)
    return 0


def write(out, result, gigabytes):
    """report.md and imagenet.json, each replaced atomically."""
    out.mkdir(parents=True, exist_ok=True)
    rate = result["dgemm_flops"]
    shape = lambda name: str(tuple(result["shapes"][name]))
    lines = [f"# The exact step at ImageNet shape{' (--quick: not a measurement)' if result['quick'] else ''}",
             "",
             f"{result['inputs']} inputs, {result['classes']} classes, tanh, bias, float64, one "
             f"BLAS thread; single-thread dgemm {rate / 1e9:.1f} GFLOP/s; load average "
             f"{result['load_start'][0]:.2f} at the start, {result['load_end'][0]:.2f} at the "
             f"end. Peak memory is the process's resident peak.", "",
             f"## {result['classes']} classes against 10, {shape('small')}", "",
             f"| kind | {result['classes']} classes | 10 classes | time ratio (pairs) | memory ratio |",
             "|---|---|---|---|---|"]
    for kind, r in result["classes_ratio"].items():
        lines.append(f"| {kind} | {r['seconds'][0]:.3f} s, {gigabytes(r['peak_bytes'][0])} | "
                     f"{r['seconds'][1]:.3f} s, {gigabytes(r['peak_bytes'][1])} | "
                     f"{r['time_ratio']:.2f} ({', '.join(f'{x:.2f}' for x in r['time_ratios'])}) | "
                     f"{r['memory_ratio']:.2f} |")
    lines += ["", f"## The tall-skinny setting, {shape('tall')}", "",
              "| kind | seconds | peak memory | plan's peak | hidden stages' GFLOP | "
              "their time at dgemm's rate | ratio |", "|---|---|---|---|---|---|---|"]
    for kind, r in result["tall_skinny"].items():
        lines.append(f"| {kind} | {r['seconds']:.1f} | {gigabytes(r['peak_bytes'])} | "
                     f"{gigabytes(r['plan_peak'])} | {r['hidden_flops'] / 1e9:.0f} | "
                     f"{r['hidden_flops'] / rate:.1f} s | {r['floor_ratio']:.2f} |")
    if "versus_base" in result:
        r = result["versus_base"]
        lines += ["", f"## Against another checkout, {shape('mid')}, GGN", "",
                  f"Here {r['seconds'][0]:.1f} s and {gigabytes(r['peak_bytes'][0])}, "
                  f"the other checkout {r['seconds'][1]:.1f} s and "
                  f"{gigabytes(r['peak_bytes'][1])}: speed-up {1 / r['time_ratio']:.2f} "
                  f"(pairs {', '.join(f'{1 / x:.2f}' for x in r['time_ratios'])}), peak "
                  f"memory ratio {r['memory_ratio']:.2f}."]
    lines += ["", "## The original training script's settings", "",
              "| setting | (depth, width, batch) | exact step: memory | GFLOP | seconds here | "
              "curvature batch practical here |", "|---|---|---|---|---|---|"]
    for r in result["seeds"]:
        measured = (f"Adam step {r['seconds'] * 1e3:.1f} ms (measured)" if "seconds" in r
                    else f"{r['step_seconds']:.0f}, {gigabytes(r['peak_bytes'])} (measured)"
                    if "step_seconds" in r
                    else f"{r['estimate_seconds']:.0f} (estimate)" if r["fits"]
                    else f"does not fit; on an H100 at least {r['h100_floor_seconds']:.1f} "
                         f"(estimate)")
        lines.append(f"| {r['name']} | {tuple(r['shape'])} | {gigabytes(r['plan_peak'])} "
                     f"(estimate) | {r['plan_flops'] / 1e9:.0f} | {measured} | "
                     f"{r['practical_batch'] or 'none'} |")
    lines += ["", f"A curvature batch is practical when its exact step fits in the memory "
                  f"available ({gigabytes(result['available_bytes'] or 0)}) and its flops "
                  f"take at most {PRACTICAL_SECONDS:.0f} s at the measured dgemm rate."]
    for name, text in (("report.md", "\n".join(lines) + "\n"),
                       ("imagenet.json", json.dumps(result, indent=1) + "\n")):
        with tempfile.NamedTemporaryFile("w", dir=out, delete=False, suffix=".partial") as f:
            f.write(text)
        os.replace(f.name, out / name)


if __name__ == "__main__":
    sys.exit(main())
