"""Today's operations, here and in another checkout, in alternating subprocess runs: the
check that a change leaves the speed of the package alone.

On four networks (tanh, bias, 10 or 1000 classes, batch 32: the digits shape (16, 8), a
deep one (64, 16), one whose hidden layers take the range stage (8, 32) and one whose loss
layer takes the structured 1000-class stage (6, 32)), each operation's median time over
its rounds: the gradient (``loss_and_gradient``), and per kind (GGN, Hessian) building the
``Curvature``, ``H v``, the optimizers' step (``step_solve(grad, 1.0)``; in a checkout
older than it, ``solve(grad, 1.0, uncertified="return", fallback=False)``), the certified
solve with its figure (``return_info=True``) and ``inertia(0.5)``. Each checkout runs in a process of its own with one BLAS thread, the two
in turn; the ratio of each operation is the median of its pairs' ratios.

``python -m benchmarks.versus --base PATH --out DIR [--pairs N] [--quick]`` writes
``DIR/report.md`` and ``DIR/versus.json`` (atomically); ``--quick`` shrinks the networks
and rounds so that the run takes seconds (a smoke test, not a measurement).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TIMING_SCRIPT = """
import json, statistics, sys, time
import numpy as np
from tallskinny_np import MLP, Curvature
from tallskinny_np.optim import loss_and_gradient
nets, rounds = json.loads(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
def median(f):
    f()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
def step(curv):
    if hasattr(curv, "step_solve"):
        return curv.step_solve(curv.grad, 1.0)
    return curv.solve(curv.grad, 1.0, uncertified="return", fallback=False)
out = {}
for name, (sizes, B, inertia) in nets.items():
    net = MLP(sizes)
    params = net.init_params(seed=0)
    X, y = rng.standard_normal((B, sizes[0])), rng.integers(0, sizes[-1], B)
    out[name + " gradient"] = median(lambda: loss_and_gradient(net, params, X, y))
    for kind in ("ggn", "hessian"):
        curv = Curvature(net, params, X, y, kind)
        v = rng.standard_normal(net.n_params)
        fresh = lambda: Curvature(net, params, X, y, kind)
        out[f"{name} {kind} curvature"] = median(fresh)
        out[f"{name} {kind} H v"] = median(lambda: curv.hvp(v))
        out[f"{name} {kind} step"] = median(lambda: step(fresh()))
        out[f"{name} {kind} certified solve"] = median(lambda: fresh().solve(
            curv.grad, 1.0, return_info=True, uncertified="return"))
        if inertia:
            out[f"{name} {kind} inertia"] = median(lambda: fresh().inertia(0.5))
print(json.dumps(out))
"""


def networks(quick):
    """``name -> (sizes, batch, whether to time the inertia)`` (module docstring)."""
    if quick:
        return {"digits (4, 4)": ([8] + [4] * 3 + [3], 4, True)}
    return {"digits (16, 8)": ([64] + [8] * 15 + [10], 32, True),
            "deep (64, 16)": ([16] + [16] * 63 + [10], 32, True),
            "range (8, 32)": ([256] + [32] * 7 + [100], 32, True),
            "1000 classes (6, 32)": ([768] + [32] * 5 + [1000], 32, False)}


def run(checkout, nets, rounds):
    """One timing process in ``checkout``: operation -> median seconds."""
    env = dict(os.environ, PYTHONPATH=str(checkout), OPENBLAS_NUM_THREADS="1",
               NUMBA_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", TIMING_SCRIPT, json.dumps(nets), str(rounds)],
                         env=env, cwd=checkout, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def commit(checkout):
    """The checkout's commit (``git rev-parse --short HEAD``), or "not a git checkout"."""
    done = subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else "not a git checkout"


def compare(here, base):
    """Per operation: the medians here and in the base, and the median of the pairs'
    ratios with the ratios themselves."""
    rows = {}
    for op in here[0]:
        ratios = [a[op] / b[op] for a, b in zip(here, base)]
        rows[op] = {"here": statistics.median(a[op] for a in here),
                    "base": statistics.median(b[op] for b in base),
                    "ratio": statistics.median(ratios), "ratios": ratios}
    return rows


def report(result):
    """report.md's text."""
    lines = [f"# Today's operations against {result['base']}"
             f"{' (--quick: not a measurement)' if result['quick'] else ''}", "",
             f"One BLAS thread, {result['pairs']} alternating pairs of processes; load "
             f"average {result['load_start'][0]:.2f} at the start, "
             f"{result['load_end'][0]:.2f} at the end. Ratio: here / base, the median of the "
             f"pairs'.", "",
             "| operation | here | base | ratio (pairs) |", "|---|---|---|---|"]
    for op, r in result["rows"].items():
        lines.append(f"| {op} | {r['here'] * 1e3:.2f} ms | {r['base'] * 1e3:.2f} ms | "
                     f"{r['ratio']:.3f} ({', '.join(f'{x:.2f}' for x in r['ratios'])}) |")
    ratios = [r["ratio"] for r in result["rows"].values()]
    lines += ["", f"Median over the operations {statistics.median(ratios):.3f}, range "
                  f"{min(ratios):.3f} to {max(ratios):.3f}."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.versus",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the other checkout")
    parser.add_argument("--out", required=True, help="folder of report.md and versus.json")
    parser.add_argument("--pairs", type=int, default=3, help="alternating pairs (default 3)")
    parser.add_argument("--quick", action="store_true",
                        help="a tiny network and one round: a smoke test, seconds")
    args = parser.parse_args(argv)
    from tallskinny_np.files import atomic_write_text, output_folder

    if not (Path(args.base) / "tallskinny_np" / "__init__.py").is_file():
        parser.error(f"--base {args.base} is not a checkout of this project")
    if args.pairs < 1:
        parser.error(f"--pairs must be at least 1; got {args.pairs}")
    try:
        out = Path(output_folder(args.out))
    except ValueError as e:
        parser.error(str(e))
    nets = networks(args.quick)
    rounds = 1 if args.quick else 3
    pairs = 1 if args.quick else args.pairs
    result = {"base": f"{args.base} ({commit(args.base)})", "quick": args.quick, "pairs": pairs,
              "load_start": os.getloadavg()}
    here, base = [], []
    for _ in range(pairs):
        here.append(run(ROOT, nets, rounds))
        base.append(run(Path(args.base), nets, rounds))
    result["rows"] = compare(here, base)
    result["load_end"] = os.getloadavg()
    atomic_write_text(out / "report.md", report(result))
    atomic_write_text(out / "versus.json", json.dumps(result, indent=1) + "\n")
    print(report(result), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
