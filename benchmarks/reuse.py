"""Exact steps between factorizations against Hessian-free, in wall-clock: ordinary
training (``tallskinny-train``'s train task) on the embedded digits, depth 16, width 8,
tanh, gradient and curvature batch 128, with

- ``hf``: Hessian-free, truncated CG on the GGN (docs/math.md section 8.1);
- ``ggn-reuse``: the exact GGN step by conjugate gradients preconditioned with the held
  factorization, refactoring when the budget is spent (section 8.5);
- ``ggn``: the same exact step, factoring every step.

The runs are the training app's own (``tallskinny_np.training.train.main`` in this
process, one ``--compare``), with the same initialisation, data order and
Levenberg-Marquardt rule. The table gives each run's steps, training wall-clock (the app's:
the steps only), final training loss, the wall-clock and step at which it first reaches
Hessian-free's final training loss (at the evaluations, every ``--eval-every`` steps), and
the exact runs' Krylov iterations and factorizations; the target is that ``ggn-reuse``
gets there in less wall-clock than Hessian-free.

The report also counts a floor for reuse (:func:`floor`): a change of the damping alone
makes the held factorization an inexact preconditioner (docs/math.md section 8.5), so a
step of ``ggn``'s trajectory at which the damping changed costs at best about the
preconditioned solve of the best case, the same batch and parameters with the damping
doubled, timed in the same process at ``ggn``'s final parameters.

``OPENBLAS_NUM_THREADS=1 python -m benchmarks.reuse --out DIR [--steps N] [--budget B]``
writes ``DIR/reuse.md``, ``DIR/reuse.csv`` and ``DIR/reuse.png`` (training loss against
wall-clock), and the runs under ``DIR/runs``; ``--quick`` runs 20 steps (a smoke test of
the script in under a minute, not a measurement). Wall-clock needs a quiet machine.
"""
import argparse
import csv
import io
import json
import math
import os
import time
from pathlib import Path

import numpy as np

from tallskinny_np import MLP, Curvature
from tallskinny_np.files import atomic_write, atomic_write_text
from tallskinny_np.optim import BUDGET
from tallskinny_np.optim.reuse import preconditioned_solve
from tallskinny_np.training.datasets import load_digits
from tallskinny_np.training.store import METRICS, parse_rows
from tallskinny_np.training.train import main as train

METHODS = ("hf", "ggn-reuse", "ggn")
BATCH = 128
FIELDS = ("optimizer", "steps", "wall", "final_train_loss", "wall_to_hf", "steps_to_hf",
          "krylov_iterations", "krylov_per_step", "factorizations")


def run(out, steps, budget, eval_every):
    """The three runs of the training app under ``out/runs``; their metric rows."""
    runs = out / "runs"
    code = train(["--task", "train", "--compare", ",".join(METHODS), "--batch", str(BATCH),
                  "--curvature-batch", str(BATCH), "--second-order-steps", str(steps),
                  "--eval-every", str(eval_every), "--reuse-budget", str(budget),
                  "--out", str(runs), "--overwrite", "--quiet"])
    if code != 0:
        raise SystemExit(f"the training app failed (exit status {code})")
    path = runs / "train"
    return {name: parse_rows((path / name / METRICS).read_text(), path / name / METRICS)
            for name in METHODS}


def evaluations(rows):
    """The rows with a full training-split loss."""
    return [r for r in rows if not math.isnan(r.get("train_loss", math.nan))]


def summarize(runs):
    """One dict of :data:`FIELDS` per run."""
    target = evaluations(runs["hf"])[-1]["train_loss"]
    out = []
    for name, rows in runs.items():
        hit = next((r for r in evaluations(rows) if r["train_loss"] <= target), None)
        steps = rows[-1]["step"]
        # the last row is the evaluation after the last step: no step of its own
        krylov = sum(r["krylov_iterations"] for r in rows[:-1]
                     if not math.isnan(r["krylov_iterations"]))
        # every trial of ggn factors; hf never does
        factored = (0 if name == "hf" else sum(r["trials"] for r in rows[:-1]) if name == "ggn"
                    else sum(r["refactored"] for r in rows[:-1]))
        out.append(dict(optimizer=name, steps=steps, wall=rows[-1]["wall"],
                        final_train_loss=evaluations(rows)[-1]["train_loss"],
                        wall_to_hf=hit and hit["wall"], steps_to_hf=hit and hit["step"],
                        krylov_iterations=krylov if name == "ggn-reuse" else None,
                        krylov_per_step=krylov / steps if name == "ggn-reuse" else None,
                        factorizations=factored))
    return target, out


def best_case(runs_dir, damping, repeats=5):
    """The cheapest reuse step after a change of the damping: ``ggn``'s network at its
    final parameters (its checkpoint) on the first :data:`BATCH` digits, factored at
    ``damping`` and solved at twice it by :func:`preconditioned_solve` to the certified
    level. Returns the Krylov iterations and the medians (seconds) of that solve, one
    product, one substitution and one factorization, each timed ``repeats`` times."""
    saved = np.load(runs_dir / "train" / "ggn" / "checkpoint.npz")
    network = json.loads(str(saved["network"]))
    images, labels = load_digits()
    X = (images.reshape(len(images), -1) - saved["mean"][0]) / saved["std"][0]
    net = MLP(network["sizes"], activation=network["activation"])
    curv = Curvature(net, saved["params"], X[:BATCH], labels[:BATCH], kind="ggn")
    fac = curv.factor(damping)
    v = curv.grad[:, None]

    def M_inv(r):
        return curv._substitute(fac, "riccati", r[:, None])[:, 0]

    def median_time(f):
        f()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            f()
            times.append(time.perf_counter() - t0)
        return float(np.median(times))

    iterations = preconditioned_solve(curv, -curv.grad, 2 * damping, M_inv, 1000)[2]
    return dict(
        iterations=iterations,
        solve=median_time(lambda: preconditioned_solve(curv, -curv.grad, 2 * damping, M_inv,
                                                       1000)),
        product=median_time(lambda: curv._shifted_product(v, damping)),
        substitution=median_time(lambda: curv._substitute(fac, "riccati", v)),
        factorization=median_time(lambda: Curvature(net, curv.params, *curv.data,
                                                    kind="ggn").factor(damping)))


def floor(runs, summary, runs_dir):
    """The floor of ``ggn-reuse``'s time to hf's final loss (module docstring): the steps of
    ``ggn`` up to it at which the damping changed, times :func:`best_case`'s solve at the
    median damping of those steps. None where ``ggn`` does not get there."""
    steps = next(s["steps_to_hf"] for s in summary if s["optimizer"] == "ggn")
    if steps is None:
        return None
    rows = runs["ggn"][:steps]
    changes = sum(1 for a, b in zip(rows, rows[1:]) if b["damping"] != a["damping"])
    damping = float(np.median([r["damping"] for r in rows]))
    return dict(best_case(runs_dir, damping), changes=changes, steps=steps, damping=damping)


def cell(v, spec):
    return "-" if v is None else format(v, spec)


def report(summary, target, args, bound):
    """The markdown report: settings, the table, the target's verdict and its floor."""
    by = {s["optimizer"]: s for s in summary}
    reuse, hf = by["ggn-reuse"], by["hf"]
    met = reuse["wall_to_hf"] is not None and reuse["wall_to_hf"] < hf["wall"]
    lines = [f"# Exact steps between factorizations against Hessian-free"
             f"{' (--quick: not a measurement)' if args.quick else ''}", "",
             f"Train task on the embedded digits, depth 16, width 8, tanh, gradient and "
             f"curvature batch {BATCH}, {args.steps} steps each, evaluations every "
             f"{args.eval_every} steps, reuse budget {args.budget}; load average "
             f"{os.getloadavg()[0]:.2f} at the end. Wall-clock counts the training steps "
             f"only.", "",
             f"| optimizer | steps | wall-clock [s] | final training loss | wall-clock [s] / "
             f"step to hf's final loss {target:.4f} | Krylov iterations (per step) | "
             f"factorizations |", "|---|---|---|---|---|---|---|"]
    for s in summary:
        krylov = ("-" if s["krylov_iterations"] is None
                  else f"{s['krylov_iterations']} ({s['krylov_per_step']:.1f})")
        reached = ("-" if s["wall_to_hf"] is None
                   else f"{s['wall_to_hf']:.2f} / {s['steps_to_hf']}")
        lines.append(f"| {s['optimizer']} | {s['steps']} | {s['wall']:.2f} | "
                     f"{s['final_train_loss']:.4f} | {reached} | {krylov} | "
                     f"{s['factorizations']} |")
    lines += ["", f"Target: ggn-reuse reaches Hessian-free's final training loss in less "
                  f"wall-clock than Hessian-free ({hf['wall']:.2f} s): "
                  f"{'MET' if met else 'MISSED'} "
                  f"({cell(reuse['wall_to_hf'], '.2f')} s)."]
    if bound is not None:
        least = bound["changes"] * bound["solve"]
        lines += ["", f"Floor: ggn's damping changed at {bound['changes']} of its "
                      f"{bound['steps']} steps to hf's final loss. After a change of the "
                      f"damping alone (the same batch and parameters, damping "
                      f"{bound['damping']:.3g} doubled: the best case of reuse) the "
                      f"preconditioned solve takes {bound['iterations']} Krylov iterations, "
                      f"{1e3 * bound['solve']:.1f} ms in this run (a product "
                      f"{1e3 * bound['product']:.2f} ms, a substitution "
                      f"{1e3 * bound['substitution']:.2f} ms, a factorization "
                      f"{1e3 * bound['factorization']:.1f} ms). The best case at each of "
                      f"those steps alone comes to {bound['changes']} x "
                      f"{1e3 * bound['solve']:.1f} ms = {least:.2f} s, "
                      f"{least / hf['wall']:.2f} times hf's {hf['wall']:.2f} s."]
    return "\n".join(lines) + "\n"


def plot(runs, path, target):
    """Training loss against wall-clock, one line per run, hf's final loss dotted."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
    for name, rows in runs.items():
        ev = [r for r in evaluations(rows) if r["wall"] > 0]
        ax.plot([r["wall"] for r in ev], [r["train_loss"] for r in ev], marker=".", label=name)
    ax.axhline(target, color="k", linestyle=":", label="hf's final training loss")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training wall-clock [s], log scale")
    ax.set_ylabel("training-split cross-entropy [nats]")
    ax.set_title(f"Digits, depth 16, width 8, batch {BATCH}: exact steps against "
                 f"Hessian-free")
    ax.grid(alpha=0.3)
    ax.legend()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120), mode="wb")
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reuse",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder of reuse.md, reuse.csv, reuse.png")
    parser.add_argument("--steps", type=int, default=400,
                        help="steps of each optimizer (default 400, the train task's)")
    parser.add_argument("--budget", type=int, default=BUDGET,
                        help=f"ggn-reuse's Krylov budget (default {BUDGET})")
    parser.add_argument("--eval-every", type=int, default=10,
                        help="steps between evaluations of the training split (default 10)")
    parser.add_argument("--quick", action="store_true",
                        help="20 steps, evaluations every 5: a smoke test, under a minute")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.eval_every = 20, 5
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = run(out, args.steps, args.budget, args.eval_every)
    target, summary = summarize(runs)
    text = io.StringIO(newline="")
    w = csv.DictWriter(text, FIELDS, lineterminator="\n")
    w.writeheader()
    w.writerows({k: "" if v is None else v for k, v in s.items()} for s in summary)
    atomic_write_text(out / "reuse.csv", text.getvalue())
    bound = floor(runs, summary, out / "runs")
    atomic_write_text(out / "reuse.md", report(summary, target, args, bound))
    plot(runs, out / "reuse.png", target)
    print((out / "reuse.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
