"""The evidence behind the defaults of ``ggn-newton`` (docs/math.md section 8.6): its rules
for the first damping and for the switch from Gauss-Newton to Newton, each on a suite of
memorisation problems of ``tallskinny-train --task precision`` and several
initialisations, counted in steps (one factorization each, rejected trials added) and
seconds to a batch loss of 1e-8.

The rules (``GaussNewtonToNewton`` with):

- ``loss 0.1, damping 1``: the switch at a batch loss of 0.1 and a first damping of 1
  (the defaults);
- ``loss 0.1, relative``: the same switch, the first damping a quarter of ``||G||_2``
  (``--damping relative``);
- ``predicted, damping 1``: the switch by the models' predictions (``--switch-loss
  predicted``), damping 1;
- ``predicted, relative``: both, the rules that do not depend on the loss's scale.

The problems are the classifiers of the suite of :mod:`benchmarks.suite`; each one's
batch, network and initialisation are the app's for ``--seed`` (which also draws the
batch).
Step counts do not depend on the machine's load; the seconds do, and all rules of a problem
and seed run back to back.

``python -m benchmarks.defaults --out DIR [--seeds 0,1,2] [--only NAME,...] [--quick]``
writes ``DIR/report.md`` and ``DIR/defaults.csv`` (atomically); ``--quick`` runs one tiny
problem for a few steps (a smoke test, not a measurement).
"""
import argparse
import csv
import io
import os
import statistics
import sys
import time


from tallskinny_np import Curvature
from tallskinny_np.files import atomic_write_text
from tallskinny_np.optim import GaussNewtonToNewton, loss_and_gradient

from .suite import PROBLEMS as SUITE
from .suite import flags

TARGET = 1e-8
MAX_STEPS = 400
PROBLEMS = {name: flags(p) for name, p in SUITE.items() if not p.autoencoder}
"""The classification problems of the suite (:data:`benchmarks.suite.PROBLEMS`), as
``tallskinny-train`` options."""
RULES = {
    "loss 0.1, damping 1": {},
    "loss 0.1, relative": dict(damping=None),
    "predicted, damping 1": dict(switch_loss=None),
    "predicted, relative": dict(damping=None, switch_loss=None),
}
DEFAULT_RULE = "loss 0.1, damping 1"


def memorisation(options, seed):
    """``(net, params, X, y)``: the precision task's batch and initial parameters for
    ``tallskinny-train`` with ``options`` and ``--seed seed``."""
    from tallskinny_np.training.options import parse_args
    from tallskinny_np.training.train import load
    args = parse_args(["--task", "precision", "--seed", str(seed), *options])
    _, problem = load(args)
    problem.warm_up(("ggn", "hessian"))        # compile the kernels outside the timing
    X, y = problem.batch("precision", 0)
    return problem.net, problem.initial_params(), X, y


def time_to_target(net, params, X, y, rule, max_steps):
    """Steps, factorizations and seconds of ``GaussNewtonToNewton(**rule)`` until the batch
    loss is at most :data:`TARGET` (or ``max_steps``), and the last loss."""
    opt = GaussNewtonToNewton(**rule)
    loss_at = lambda p: float(net.loss(p, X, y))
    factorizations, start = 0, time.perf_counter()
    for step in range(max_steps + 1):
        loss, g, _ = loss_and_gradient(net, params, X, y)
        if loss <= TARGET or step == max_steps:
            break
        curv = Curvature(net, params, X, y, kind=opt.curvature_kind(loss))
        params, info = opt.step(params, loss, g, curv, loss_at)
        factorizations += info["trials"]
    return dict(steps=step, factorizations=factorizations, loss=loss,
                seconds=time.perf_counter() - start, reached=loss <= TARGET)


def summary(rows):
    """Per rule: runs reaching the target, median and worst steps over the runs that did,
    and the median over runs of its seconds over the default rule's (the same problem and
    seed; a run that did not reach the target counts with its seconds at the cap)."""
    by = {(r["problem"], r["seed"], r["rule"]): r for r in rows}
    lines = ["| rule | reached | median steps | worst steps | median time / default's |",
             "|---|---|---|---|---|"]
    for rule in RULES:
        mine = [r for r in rows if r["rule"] == rule]
        done = [r["steps"] for r in mine if r["reached"]]
        ratios = [r["seconds"] / by[(r["problem"], r["seed"], DEFAULT_RULE)]["seconds"]
                  for r in mine]
        lines.append(f"| {rule} | {len(done)} of {len(mine)} | "
                     f"{statistics.median(done) if done else '-'} | "
                     f"{max(done) if done else '-'} | {statistics.median(ratios):.2f} |")
    return lines


def report(rows, seeds, max_steps, command):
    """The markdown report: the summary and one row per problem, seed and rule."""
    lines = ["# Defaults of ggn-newton: steps to a batch loss of 1e-8", "",
             f"Command: `{command}`. Seeds {', '.join(map(str, seeds))}; at most "
             f"{max_steps} steps per run ('-': not reached, the last loss shown).", "",
             *summary(rows), "",
             "| problem | seed | rule | steps | factorizations | seconds | last loss |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        steps = r["steps"] if r["reached"] else "-"
        lines.append(f"| {r['problem']} | {r['seed']} | {r['rule']} | {steps} | "
                     f"{r['factorizations']} | {r['seconds']:.2f} | {r['loss']:.2e} |")
    return "\n".join(lines) + "\n"


def parse(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks.defaults",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder of report.md and defaults.csv")
    p.add_argument("--seeds", default="0,1,2",
                   help="comma-separated initialisation seeds (default 0,1,2)")
    p.add_argument("--only", help="comma-separated problem names (default: all)")
    p.add_argument("--quick", action="store_true", help="a smoke test: one tiny problem")
    args = p.parse_args(argv)
    try:
        args.seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        p.error(f"--seeds must be comma-separated integers; got {args.seeds!r}")
    names = args.only.split(",") if args.only else list(PROBLEMS)
    unknown = [n for n in names if n not in PROBLEMS]
    if unknown:
        p.error(f"unknown problem {unknown[0]!r}; choose from {', '.join(PROBLEMS)}")
    args.problems = {n: PROBLEMS[n] for n in names}
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    problems, max_steps = args.problems, MAX_STEPS
    if args.quick:
        problems = {"tiny": ["--depth", "3", "--width", "4", "--batch", "8"]}
        max_steps = 3
    rows = []
    for name, options in problems.items():
        for seed in args.seeds:
            net, params, X, y = memorisation(options, seed)
            for rule, keywords in RULES.items():
                r = time_to_target(net, params, X, y, keywords, max_steps)
                rows.append(dict(problem=name, seed=seed, rule=rule, **r))
                print(f"{name} seed {seed} {rule}: {r['steps']} steps, "
                      f"{r['seconds']:.2f} s, loss {r['loss']:.2e}", flush=True)
    os.makedirs(args.out, exist_ok=True)
    command = "python -m benchmarks.defaults " + " ".join(argv)
    atomic_write_text(os.path.join(args.out, "report.md"), report(rows, args.seeds, max_steps, command))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(os.path.join(args.out, "defaults.csv"), out.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
