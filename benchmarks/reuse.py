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

``OPENBLAS_NUM_THREADS=1 python -m benchmarks.reuse --out DIR [--steps N] [--budget B]``
writes ``DIR/reuse.md``, ``DIR/reuse.csv`` and ``DIR/reuse.png`` (training loss against
wall-clock), and the runs under ``DIR/runs``; ``--quick`` runs 20 steps (a smoke test of
the script in under a minute, not a measurement). Wall-clock needs a quiet machine.
"""
import argparse
import csv
import io
import math
import os
from pathlib import Path

from tallskinny_np.files import atomic_write, atomic_write_text
from tallskinny_np.optim import BUDGET
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


def cell(v, spec):
    return "-" if v is None else format(v, spec)


def report(summary, target, args):
    """The markdown report: settings, the table, the target's verdict."""
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
    atomic_write_text(out / "reuse.md", report(summary, target, args))
    plot(runs, out / "reuse.png", target)
    print((out / "reuse.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
