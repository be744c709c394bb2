"""Time to a loss target across a suite of memorisation problems: the default exact method
against Adam at its best of three learning rates, each run by ``tallskinny-train``.

Each problem of :data:`PROBLEMS` is the precision task of the training app: one fixed batch
of the digits memorised until its batch loss reaches the target (:data:`TARGET`, 1e-8).
The exact method is :data:`EXACT` with the app's defaults (no damping or switch options
passed, so the defaults of ``tallskinny_np/training/optimizers.py`` are what is measured);
Adam runs at each rate of :data:`LEARNING_RATES`, its best being the least time to the
target. Every run is its own ``python -m tallskinny_np.training.script`` process with one
BLAS thread and a step cap (:data:`CAPS`); a problem's runs go back to back. The ratio is
the exact method's training seconds to the target over best Adam's; a run that never
reaches the target counts its whole run as a lower bound on its time (``>T``), which makes
the ratio a bound too.

The autoencoder (``--loss mse --targets inputs``) cannot reach 1e-8: through a width-n
middle its reconstruction of the batch is at best that of the batch's first n principal
components (Eckart and Young) unless the nonlinearity does better, and in these runs
neither method goes below it. Its target is that loss times :data:`AUTOENCODER_MARGIN`,
computed from the app's own batch.

``python -m benchmarks.suite --out DIR [--quick] [--only NAMES]`` writes, atomically,
``DIR/suite.md`` (the command line, the table of time to the target and every run),
``DIR/suite.csv`` (one row per run) and ``DIR/suite.png`` (the ratio per problem), with
each run's app outputs under ``DIR/<problem>/<setting>/``. ``--deep`` runs the deep-narrow
comparison of :mod:`benchmarks.deep` instead. ``--quick`` caps every run at a few steps and
loosens the targets (:data:`QUICK`): a smoke test of the script, not a measurement.
"""
import argparse
import csv
import functools
import math
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PROG = "python -m benchmarks.suite"


class Problem(NamedTuple):
    """A memorisation problem of the training app: its network, batch and pixel scaling;
    an autoencoder of its inputs (``--loss mse --targets inputs``) or a classifier."""
    depth: int
    width: int
    activation: str
    batch: int
    scale: str = "standard"
    autoencoder: bool = False


PROBLEMS = {
    #                          depth width activation  batch
    "digits":          Problem(16,   8,    "tanh",     32),
    "digits-unit":     Problem(16,   8,    "tanh",     32, scale="unit"),
    "depth32":         Problem(32,   8,    "tanh",     32),
    "depth48-width16": Problem(48,   16,   "tanh",     32),
    "softplus-width4": Problem(16,   4,    "softplus", 64),
    "sigmoid-width16": Problem(16,   16,   "sigmoid",  32),
    "batch128":        Problem(16,   8,    "tanh",     128),
    "autoencoder":     Problem(16,   4,    "tanh",     32, autoencoder=True),
}
"""The suite, by name (``--only``). The (depth, width) pairs where Gauss-Newton-to-Newton
stalls far above the target (depth 48 at width 8 or less) are the deep mode's
(:mod:`benchmarks.deep`)."""

EXACT = "ggn-newton"
LEARNING_RATES = (0.003, 0.01, 0.03)
TARGET = 1e-8
AUTOENCODER_MARGIN = 1.01
CAPS = {"exact": 500, "first order": 50000}
"""Step caps. Adam takes 23275 steps to 1e-8 on the default problem; the exact method at
most 253 on these problems when it gets there."""
QUICK = {"caps": {"exact": 20, "first order": 300}, "target": 1.0, "margin": 2.0}
"""``--quick``: targets every run reaches in a few steps (the classifiers' loss 1, the
autoencoder's twice its floor)."""


def flags(problem):
    """The ``tallskinny-train`` options of a problem."""
    out = ["--depth", str(problem.depth), "--width", str(problem.width), "--activation",
           problem.activation, "--batch", str(problem.batch), "--scale", problem.scale]
    return out + (["--loss", "mse", "--targets", "inputs"] if problem.autoencoder else [])


def describe(problem):
    """``'depth 16, width 8, tanh, batch 32, standard'`` (``, autoencoder`` for one)."""
    return (f"depth {problem.depth}, width {problem.width}, {problem.activation}, batch "
            f"{problem.batch}, {problem.scale}" + (", autoencoder" if problem.autoencoder
                                                   else ""))


def principal_floor(problem):
    """The least mean squared error of reconstructing the problem's batch through ``width``
    affine dimensions: the sum of its centred singular values squared beyond the first
    ``width``, over its entries (Eckart-Young). The batch is the app's own."""
    from tallskinny_np.training.options import parse_args
    from tallskinny_np.training.train import load
    _, app = load(parse_args(flags(problem) + ["--task", "precision", "--quiet"]))
    X = np.asarray(app.batch("precision", 0)[0], dtype=np.float64)
    s = np.linalg.svd(X - X.mean(axis=0), compute_uv=False)
    return float((s[problem.width:] ** 2).sum() / X.size)


def target_of(problem, quick):
    """The problem's target loss, to four significant digits (what the app is given)."""
    if not problem.autoencoder:
        return QUICK["target"] if quick else TARGET
    margin = QUICK["margin"] if quick else AUTOENCODER_MARGIN
    return float(f"{margin * principal_floor(problem):.4g}")


class RunFailed(RuntimeError):
    """A run of the app that ended with an error other than divergence."""


def run_app(folder, problem_flags, optimizer, steps, target, lr=None):
    """One precision run of ``tallskinny-train`` into ``folder``: a dict of its summary
    row (``diverged``: the app's message if it diverged, else None) and its command."""
    first = ["--lr", f"{lr:g}", "--steps"] if lr is not None else ["--second-order-steps"]
    command = [sys.executable, "-m", "tallskinny_np.training.script", "--task", "precision",
               "--optimizer", optimizer, *first, str(steps),
               "--target-loss", repr(target), "--eval-every", "1000", "--quiet",
               "--overwrite", "--out", str(folder), *problem_flags]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OPENBLAS_NUM_THREADS="1",
               NUMBA_NUM_THREADS="1")
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    shown = shlex.join(["python", *command[1:]])
    last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
    if done.returncode == 1 and "diverged" in last:    # the app's divergence exit
        return {"diverged": last, "command": shown}
    if done.returncode != 0:
        raise RunFailed(f"{shown} exited with status {done.returncode}: {last}")
    with open(Path(folder) / "summary-precision.csv", newline="") as f:
        row = next(csv.DictReader(f))
    return dict(row, diverged=None, command=shown)


def number(text):
    """A summary field as a number; None where empty (not reached)."""
    return None if text in ("", None) else float(text)


def result(row, problem_name, setting, target):
    """The suite's record of a run: time and steps to the target (None where not
    reached), the run's own steps, seconds and best loss."""
    key = f"{target:g}"
    out = {"problem": problem_name, "setting": setting, "target": target,
           "diverged": row["diverged"] is not None, "command": row["command"]}
    if row["diverged"]:
        return dict(out, reached=False, steps_to_target=None, seconds_to_target=None,
                    steps=None, seconds=None, best_loss=None)
    steps_to = number(row[f"steps_to_{key}"])
    return dict(out, reached=steps_to is not None,
                steps_to_target=None if steps_to is None else int(steps_to),
                seconds_to_target=number(row[f"wall_to_{key}"]), steps=int(row["steps"]),
                seconds=float(row["wall"]), best_loss=float(row["best_batch_loss"]))


def time_to_target(runs):
    """``(seconds, bound)`` of the best of ``runs`` (one setting each): the least time to
    the target where one reached it (bound ``""``), else a lower bound ``">"``: the least
    of the runs' whole times, each below its own time to the target; ``(None, "")`` when
    every run diverged."""
    reached = [r["seconds_to_target"] for r in runs if r["reached"]]
    if reached:
        return min(reached), ""
    ran = [r["seconds"] for r in runs if not r["diverged"]]
    return (min(ran), ">") if ran else (None, "")


def ratio(exact, adam):
    """``(value, bound)``: exact seconds over best Adam's (:func:`time_to_target` of
    each); ``"<"`` where Adam's is a lower bound, ``">"`` where the exact one's is, and
    value None where both are, or one is missing or Adam's is 0."""
    (e, e_bound), (a, a_bound) = exact, adam
    if e is None or not a or (e_bound and a_bound):
        return None, ""
    return e / a, "<" if a_bound else e_bound


def best_adam(runs):
    """The Adam run shown as best: the least time to the target, else the lowest loss."""
    live = [r for r in runs if not r["diverged"]] or runs
    return min(live, key=lambda r: (not r["reached"], r["seconds_to_target"] or 0,
                                    r["best_loss"] if r["best_loss"] is not None
                                    else math.inf))


def run_problem(out, name, problem, caps, quick, say):
    """The exact run and the Adam runs of one problem, back to back: their records, with
    the ratio on the exact one's and ``best`` marking the best Adam."""
    target = target_of(problem, quick)
    p_flags = flags(problem)
    exact = result(run_app(out / name / EXACT, p_flags, EXACT, caps["exact"], target),
                   name, f"{EXACT} (defaults)", target)
    say(line(exact))
    adam = []
    for lr in LEARNING_RATES:
        adam.append(result(run_app(out / name / f"adam-lr{lr:g}", p_flags, "adam",
                                   caps["first order"], target, lr),
                           name, f"adam lr {lr:g}", target))
        say(line(adam[-1]))
    best = best_adam(adam)
    value, bound = ratio(time_to_target([exact]), time_to_target(adam))
    exact.update(ratio=value, ratio_bound=bound, best=False)
    for r in adam:
        r.update(ratio=None, ratio_bound="", best=r is best)
    return [exact] + adam


def line(r):
    """A progress line for one run."""
    if r["diverged"]:
        return f"{r['problem']}: {r['setting']} diverged"
    if r["reached"]:
        return (f"{r['problem']}: {r['setting']} reached {r['target']:g} in "
                f"{r['steps_to_target']} steps, {r['seconds_to_target']:.2f} s")
    return (f"{r['problem']}: {r['setting']} did not reach {r['target']:g} in {r['steps']} "
            f"steps, {r['seconds']:.2f} s (best loss {r['best_loss']:.3g})")


def seconds_text(seconds, bound):
    return "-" if seconds is None else f"{bound}{seconds:.2f}"


def steps_text(r):
    if r["diverged"]:
        return "diverged"
    return f"{r['steps_to_target']}" if r["reached"] else f">{r['steps']}"


def ratio_text(value, bound):
    return "-" if value is None else f"{bound}{value:.3g}"


CSV_FIELDS = ("problem", "setting", "target", "reached", "diverged", "steps_to_target",
              "seconds_to_target", "steps", "seconds", "best_loss", "best", "ratio",
              "ratio_bound", "command")


def write_csv(f, records):
    w = csv.DictWriter(f, CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for r in records:
        w.writerow({k: "" if r[k] is None else int(r[k]) if isinstance(r[k], bool)
                    else r[k] for k in CSV_FIELDS})


def report(records, command, caps, quick):
    """suite.md's text: the command, the table of time to the target per problem and the
    table of every run."""
    by = {}
    for r in records:
        by.setdefault(r["problem"], []).append(r)
    lines = [f"# Time to the target: {EXACT} against Adam"
             + (" (--quick: not a measurement)" if quick else ""), "",
             f"`{command}`", "",
             f"Precision task of `tallskinny-train` (one fixed batch of the digits memorised "
             f"until its batch loss reaches the target), each run its own process with one "
             f"BLAS thread. Exact: `{EXACT}` with the app's defaults, at most "
             f"{caps['exact']} steps; Adam: the best of learning rates "
             f"{', '.join(f'{lr:g}' for lr in LEARNING_RATES)}, at most "
             f"{caps['first order']} steps each. Seconds count training steps only. '>T': "
             f"not reached in the run's T seconds (its cap); the ratio is then a bound. The "
             f"autoencoder's target is {QUICK['margin'] if quick else AUTOENCODER_MARGIN:g} "
             f"times the batch's best reconstruction through its width (its principal "
             f"components).", "",
             "| problem | network | target | exact steps | exact s | best Adam | Adam steps "
             "| Adam s | ratio exact/Adam |", "|---|---|---|---|---|---|---|---|---|"]
    for name, runs in by.items():
        exact, adam = runs[0], runs[1:]
        best = next(r for r in adam if r["best"])
        a_seconds = time_to_target(adam)
        lines.append(
            f"| {name} | {describe(PROBLEMS[name])} | {exact['target']:g} | "
            f"{steps_text(exact)} | {seconds_text(*time_to_target([exact]))} | "
            f"{best['setting'] if best['reached'] else 'none reached'} | "
            f"{steps_text(best) if best['reached'] else '-'} | {seconds_text(*a_seconds)} | "
            f"{ratio_text(exact['ratio'], exact['ratio_bound'])} |")
    lines += ["", "## Every run", "",
              "| problem | setting | steps to target | seconds to target | steps | seconds "
              "| best loss |", "|---|---|---|---|---|---|---|"]
    for r in records:
        if r["diverged"]:
            lines.append(f"| {r['problem']} | {r['setting']} | diverged | - | - | - | - |")
            continue
        lines.append(f"| {r['problem']} | {r['setting']} | {steps_text(r)} | "
                     f"{seconds_text(*time_to_target([r]))} | {r['steps']} | "
                     f"{r['seconds']:.2f} | {r['best_loss']:.3g} |")
    return "\n".join(lines) + "\n"


def plot(records, path, title):
    """The ratio exact/best Adam per problem on a log scale: a dot where both reached the
    target, a triangle pointing to where the ratio lies where it is a bound."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from tallskinny_np.files import atomic_write
    shown = [r for r in records if r["setting"].startswith(EXACT)]
    fig, ax = plt.subplots(figsize=(8, 1.5 + 0.45 * len(shown)), layout="constrained")
    for i, r in enumerate(shown):
        if not r["ratio"]:
            ax.text(1, i, " no ratio: neither reached the target", va="center")
            continue
        marker = {"": "o", "<": "<", ">": ">"}[r["ratio_bound"]]
        ax.plot(r["ratio"], i, marker=marker, color="C0", markersize=9)
        ax.text(r["ratio"], i - 0.3, ratio_text(r["ratio"], r["ratio_bound"]), ha="center")
    ax.axvline(1, color="k", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_ylim(len(shown) - 0.5, -0.8)
    ax.set_yticks(range(len(shown)), [r["problem"] for r in shown])
    ax.set_xlabel(f"training seconds to the target, {EXACT} / best Adam (log scale; "
                  f"triangles: bounds)")
    ax.set_ylabel("problem")
    ax.grid(alpha=0.3, axis="x")
    ax.set_title(title)
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120), mode="wb")
    plt.close(fig)


def names_list(text):
    return tuple(t.strip() for t in text.split(",") if t.strip())


def main(argv=None):
    from . import deep
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder of the report and the runs")
    parser.add_argument("--quick", action="store_true",
                        help="a few steps per run and loose targets: a smoke test, seconds")
    parser.add_argument("--only", type=names_list, metavar="NAMES",
                        help=f"comma-separated problems of {', '.join(PROBLEMS)}, or with "
                             f"--deep of {', '.join(deep.CONFIGS)} (default: all)")
    parser.add_argument("--deep", action="store_true",
                        help="the deep-narrow comparison of every optimizer instead")
    args = parser.parse_args(argv)
    from tallskinny_np.files import atomic_write, atomic_write_text, output_folder
    from tallskinny_np.training.cli import error

    table = deep.CONFIGS if args.deep else PROBLEMS
    unknown = [n for n in args.only or () if n not in table]
    if unknown or args.only == ():
        return error(PROG, f"unknown problem(s) {', '.join(unknown) or '(none given)'}; "
                           f"choose from {', '.join(table)}")
    try:
        out = Path(output_folder(args.out))
    except ValueError as e:
        return error(PROG, e)
    command = shlex.join([*PROG.split(), *argv])
    say = functools.partial(print, flush=True)
    try:
        if args.deep:
            return deep.run(out, args.only or tuple(table), args.quick, command, say)
        caps = QUICK["caps"] if args.quick else CAPS
        records = []
        for name in args.only or PROBLEMS:
            records += run_problem(out, name, PROBLEMS[name], caps, args.quick, say)
        text = report(records, command, caps, args.quick)
        atomic_write_text(out / "suite.md", text)
        atomic_write(out / "suite.csv", lambda f: write_csv(f, records))
        plot(records, out / "suite.png", f"Time to the target: {EXACT} against the best "
                                         f"Adam" + (" (--quick)" if args.quick else ""))
    except (RunFailed, OSError, ValueError) as e:
        return error(PROG, e, status=1)
    print(text, end="")
    return 0

if __name__ == "__main__":
    sys.exit(main())
