"""``tallskinny-train``: train a tall-skinny MLP with first-order or exact second-order
steps (:mod:`tallskinny_np.optim`), and compare optimizers on the same data order and
initialisation.

With no arguments it runs the embedded default on the 8x8 digits (no download): a depth-16,
width-8 tanh MLP, comparing sgd, adam, ggn and trust-region on two tasks,

- ``memorise``: one fixed batch of ``--batch`` (32) training images, until 100% batch
  accuracy or the step budget;
- ``train``: ordinary minibatch training with evaluation of the full training and
  validation splits every ``--eval-every`` steps;

then it prints a table per task (steps and wall-clock to 100% batch accuracy, best losses,
validation accuracy), writes ``<task>.png`` (loss and accuracy against step and against
wall-clock, one line per optimizer), ``summary.txt`` and ``summary-<task>.csv``.

Step budgets. ``--steps`` is the budget of the first-order optimizers (defaults: 3000 for
memorise, 2000 for train) and ``--second-order-steps`` that of newton, ggn and
trust-region (defaults: 300 for memorise; a fifth of ``--steps`` for train, the horizon of
the issue's target "reach Adam's final training loss in at most 1/5 of Adam's steps").
``--epochs`` sets ``--steps`` in epochs of the training split.

Learning rates. Without ``--lr`` SGD (momentum 0.9) and Adam use :data:`TUNED_LR`, chosen
for the embedded default by ``tallskinny-train --lr-sweep`` over the grid
:data:`LR_GRID` (see the note there); ``--lr-sweep`` reruns such a sweep (on whatever data
and network the other flags give) and then compares with the rates it picked.

Outputs under ``--out``: ``<task>/<optimizer>/metrics.csv`` (one row per step; full-split
evaluations every ``--eval-every`` steps), ``<task>/<optimizer>/checkpoint.npz`` (written
atomically at every evaluation and at the end), ``config.json``, the figures and the
summary. ``--resume`` continues each run from its checkpoint on the identical trajectory:
the data order is a function of the seed and the step only, and the checkpoint holds the
parameters and the optimizer state.

Wall-clock counts only the training steps (gradient, curvature, solves, trial losses), not
evaluations. On a machine shared by several jobs set ``OPENBLAS_NUM_THREADS=1``: the
Riccati solver's blocks are small, and BLAS threads competing for cores slow it down many
times over.
"""
import argparse
import csv
import json
import math
import os
import sys
import time

import numpy as np
from tqdm.auto import tqdm

from ..backend import array_module, backend_module, to_numpy
from ..curvature import Curvature
from ..model import MLP, cross_entropy
from ..optim import SGD, Adam, DampedNewton, TrustRegion, loss_and_gradient
from .cli import integer, nonnegative_float, positive_float
from .datasets import (SOURCES, atomic_write_text, batch_index, channel_statistics,
                       default_cache_dir, load_data, standardize)

OPTIMIZERS = ("sgd", "adam", "newton", "ggn", "trust-region")
FIRST_ORDER = ("sgd", "adam")
DEFAULT_COMPARE = ("sgd", "adam", "ggn", "trust-region")
TASKS = ("memorise", "train")
DEFAULT_STEPS = {"memorise": 3000, "train": 2000}
DEFAULT_SECOND_ORDER_STEPS = {"memorise": 300, "train": None}   # None: steps // 5

# The learning-rate grid of --lr-sweep, and the rates it picked for the embedded default
# (digits, depth 16, width 8, tanh, batch 32, seed 0, float64; momentum 0.9 for SGD) with
# `tallskinny-train --compare sgd,adam --lr-sweep`. memorise: fewest steps to 100% batch
# accuracy (3000 at most; ties: lowest batch loss); train: lowest final training loss after
# 2000 steps. Results (steps to 100% / final training loss; '-' not reached):
#   lr             3e-4    1e-3    3e-3    1e-2    3e-2    0.1     0.3     1
#   memorise sgd   -       -       -       1250    717     -       -       -
#   memorise adam  1604    378     171     113     -       -       -       -
#   train sgd      1.803   1.356   0.708   0.790   2.304   2.308   2.481   3.394
#   train adam     1.026   0.185   0.317   1.540   2.316   2.349   2.556   3.007
LR_GRID = (3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)
TUNED_LR = {"memorise": {"sgd": 0.03, "adam": 0.01}, "train": {"sgd": 0.003, "adam": 0.001}}

COLUMNS = ("step", "wall", "batch_loss", "batch_acc", "train_loss", "train_acc", "val_loss",
           "val_acc", "accepted", "rho", "damping", "radius", "trials")
INT_COLUMNS = ("step", "accepted", "trials")


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="tallskinny-train",
        description="Train a tall-skinny MLP with SGD, Adam or exact second-order steps. "
                    "With no arguments: the embedded digits comparison.")
    p.add_argument("--data", nargs="+", default=["digits"], metavar=("SOURCE", "PATH"),
                   help="digits | synthetic | imagefolder PATH | imagenet-npz PATH")
    p.add_argument("--resolution", type=integer(1), help="image side r (default: the "
                   "source's own; 32 for imagefolder and synthetic)")
    p.add_argument("--classes", type=integer(1), help="keep the first K classes")
    p.add_argument("--val-fraction", type=float, default=0.2,
                   help="validation share when the source has no validation split")
    p.add_argument("--synthetic-size", type=integer(1), default=20000,
                   help="images of --data synthetic")
    p.add_argument("--cache-dir", default=None,
                   help=f"resized ImageFolder images (default {default_cache_dir()})")
    p.add_argument("--depth", type=integer(1), default=16,
                   help="L, the number of affine layers (loss layer included)")
    p.add_argument("--width", type=integer(1), default=8)
    p.add_argument("--activation", default="tanh", choices=("tanh", "sigmoid", "softplus"))
    group = p.add_mutually_exclusive_group()
    group.add_argument("--optimizer", choices=OPTIMIZERS)
    group.add_argument("--compare", type=optimizer_list,
                       help=f"comma-separated optimizers (default {','.join(DEFAULT_COMPARE)})")
    p.add_argument("--task", choices=TASKS + ("both",), default="both")
    p.add_argument("--lr", type=positive_float, help="SGD/Adam learning rate "
                   "(default: TUNED_LR of the task)")
    p.add_argument("--lr-sweep", type=float_list, nargs="?", const=(),
                   help="tune the SGD/Adam rates first: comma-separated rates, or none for "
                        "the built-in grid")
    p.add_argument("--damping", type=nonnegative_float, default=1.0,
                   help="initial Levenberg-Marquardt damping of newton and ggn")
    p.add_argument("--radius", type=positive_float, default=1.0,
                   help="initial trust-region radius")
    p.add_argument("--batch", type=integer(1), default=32)
    p.add_argument("--curvature-batch", type=integer(1),
                   help="the curvature's sub-batch of the gradient batch (default: all)")
    steps = p.add_mutually_exclusive_group()
    steps.add_argument("--steps", type=integer(1), help="first-order step budget "
                       "(default: 3000 memorise, 2000 train)")
    steps.add_argument("--epochs", type=positive_float,
                       help="first-order budget in epochs of the training split")
    p.add_argument("--second-order-steps", type=integer(1), help="budget of newton, ggn "
                   "and trust-region (default: 300 memorise, --steps / 5 train)")
    p.add_argument("--eval-every", type=integer(1), default=20,
                   help="steps between evaluations of the full splits and checkpoints")
    p.add_argument("--backend", choices=("numpy", "cupy"), default="numpy")
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="tallskinny-train-out")
    p.add_argument("--resume", action="store_true",
                   help="continue every run from its checkpoint under --out")
    args = p.parse_args(argv)
    source, *path = args.data
    if source not in SOURCES or len(path) > 1:
        p.error(f"--data takes SOURCE [PATH] with SOURCE one of {', '.join(SOURCES)}; got "
                f"{' '.join(args.data)}")
    args.source, args.path = source, (path[0] if path else None)
    args.optimizers = ((args.optimizer,) if args.optimizer
                       else tuple(args.compare or DEFAULT_COMPARE))
    args.tasks = TASKS if args.task == "both" else (args.task,)
    if args.curvature_batch is not None and args.curvature_batch > args.batch:
        p.error(f"--curvature-batch ({args.curvature_batch}) is a sub-batch of the "
                f"gradient batch and cannot exceed --batch ({args.batch})")
    if args.depth < 2:
        p.error("--depth must be at least 2 (a hidden layer and the loss layer)")
    return args


def float_list(text):
    return tuple(positive_float(t) for t in text.split(",") if t)


def optimizer_list(text):
    names = tuple(t.strip() for t in text.split(",") if t.strip())
    bad = [n for n in names if n not in OPTIMIZERS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown optimizer(s) {bad}; choose from "
                                         f"{', '.join(OPTIMIZERS)}")
    return names


def budget(args, task, name, n_train):
    """The step budget of optimizer ``name`` in ``task`` (see the module docstring)."""
    steps = args.steps or DEFAULT_STEPS[task]
    if args.epochs:
        steps = max(1, int(args.epochs * (n_train // args.batch)))
    if name in FIRST_ORDER:
        return steps
    return args.second_order_steps or DEFAULT_SECOND_ORDER_STEPS[task] or max(1, steps // 5)


def make_optimizer(name, args, task, lr=None):
    lr = lr or args.lr or TUNED_LR[task].get(name)
    if name == "sgd":
        return SGD(lr, momentum=0.9)
    if name == "adam":
        return Adam(lr)
    if name == "trust-region":
        return TrustRegion(radius=args.radius)
    return DampedNewton(damping=args.damping, kind="ggn" if name == "ggn" else "hessian")


def setting(name, opt):
    if name in FIRST_ORDER:
        return f"lr={opt.lr:g}"
    if name == "trust-region":
        return "radius0={:g}".format(opt.state["radius"])
    return "damping0={:g}".format(opt.state["damping"])


class Problem:
    """The network, the data and the standardisation shared by the runs of a comparison,
    so that every optimizer sees the same initialisation and data order."""

    def __init__(self, args, data):
        self.args = args
        self.data = data
        self.xp = backend_module(args.backend)
        self.dtype = np.dtype(args.dtype)
        self.mean, self.std = channel_statistics(data.train)
        sizes = [data.n_features] + [args.width] * (args.depth - 1) + [len(data.classes)]
        self.net = MLP(sizes, activation=args.activation, dtype=self.dtype)

    def warm_up(self, kinds):
        """Compile and load what the first curvature computations need (numba kernels,
        LAPACK wrappers) outside the timed steps: a curvature of each kind on two samples,
        with a solve and an inertia."""
        X, y = self.batch("memorise", 0)
        for kind in kinds:
            curv = Curvature(self.net, self.initial_params(), X[:2], y[:2], kind=kind)
            curv.solve(curv.grad, 1.0)
            curv.is_positive_definite(1.0)

    def initial_params(self):
        return self.xp.asarray(self.net.init_params(seed=self.args.seed))

    def arrays(self, split, index):
        images, labels = split.batch(index)
        X = standardize(images, self.mean, self.std, self.dtype, self.xp)
        return X, self.xp.asarray(labels)

    def batch(self, task, step):
        """The gradient batch of ``step``: always the first batch for memorise."""
        n = len(self.data.train)
        return self.arrays(self.data.train,
                           batch_index(n, self.args.batch, 0 if task == "memorise" else step,
                                       self.args.seed))

    def evaluate(self, params, split, chunk=4096):
        """Mean loss and accuracy of a whole split, in chunks."""
        total = correct = 0.0
        for start in range(0, len(split), chunk):
            X, y = self.arrays(split, np.arange(start, min(start + chunk, len(split))))
            loss, pi = cross_entropy(self.net.logits(params, X), y)
            total += float(loss) * len(y)
            correct += float((pi.argmax(axis=1) == y).sum())
        return total / len(split), correct / len(split)


def batch_loss(net, params, X, y):
    """The loss of a trial point; nan where it is not finite (no exception, no warning)."""
    xp = array_module(params)
    with np.errstate(all="ignore"):
        if not bool(xp.all(xp.isfinite(params))):
            return math.nan
        return float(cross_entropy(net.logits(params, X), y)[0])


def update(problem, opt, params, loss, grad, X, y):
    """One step of ``opt`` from ``params`` with the gradient batch's loss and gradient;
    the curvature (second order) is that of the first ``--curvature-batch`` samples.
    Returns the new parameters and the optimizer's info (empty for first order)."""
    net, xp = problem.net, problem.xp
    if opt.kind is None:
        new = opt.step(params, grad)
        if not bool(xp.all(xp.isfinite(new))):
            raise FloatingPointError(
                f"the parameters became non-finite (lr={opt.lr:g}); lower --lr")
        return new, {}
    cb = problem.args.curvature_batch or len(y)
    curv = Curvature(net, params, X[:cb], y[:cb], kind=opt.kind)
    return opt.step(params, loss, grad, curv, lambda p: batch_loss(net, p, X, y))


# ---- checkpoints and metrics ---------------------------------------------------------

def trajectory_config(args, task, name, lr):
    """What determines a run's trajectory; a checkpoint only resumes the same one."""
    keys = ("source", "path", "resolution", "classes", "val_fraction", "synthetic_size",
            "depth", "width", "activation", "damping", "radius", "batch", "curvature_batch",
            "dtype", "seed")
    config = {k: getattr(args, k) for k in keys}
    config.update(task=task, optimizer=name, lr=lr if name in FIRST_ORDER else None)
    return config


def save_checkpoint(path, params, opt, step, wall, config):
    """Parameters, optimizer state, step and training wall-clock, written atomically."""
    arrays = {f"opt.{k}": to_numpy(v) for k, v in opt.state.items()}
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        np.savez(f, params=to_numpy(params), step=step, wall=wall,
                 config=json.dumps(config), **arrays)
    os.replace(tmp, path)


def load_checkpoint(path, opt, config, xp):
    with np.load(path) as ck:
        saved = json.loads(str(ck["config"]))
        if saved != config:
            diff = {k: (saved.get(k), config.get(k)) for k in set(saved) | set(config)
                    if saved.get(k) != config.get(k)}
            raise ValueError(f"{path} belongs to another run (checkpoint vs now: {diff}); "
                             f"use another --out or drop --resume")
        opt.state = {k[4:]: (ck[k].item() if ck[k].ndim == 0 else xp.asarray(ck[k]))
                     for k in ck.files if k.startswith("opt.")}
        return xp.asarray(ck["params"]), int(ck["step"]), float(ck["wall"])


def read_metrics(path, before):
    """The rows of a metrics CSV with step < ``before``, as dicts of numbers (the counts
    as ints, so that a rewritten file is identical)."""
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        rows = [{k: math.nan if v == "" else int(v) if k in INT_COLUMNS else float(v)
                 for k, v in row.items()} for row in csv.DictReader(f)]
    return [r for r in rows if r["step"] < before]


def write_metrics(path, rows):
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, COLUMNS)
        w.writeheader()
        w.writerows({k: csv_value(r.get(k, math.nan)) for k in COLUMNS} for r in rows)
    os.replace(tmp, path)


def csv_value(v):
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, float) and math.isnan(v):
        return ""
    return repr(v) if isinstance(v, float) else v


# ---- a run ------------------------------------------------------------------------------

def run(problem, task, name, out_dir, lr=None):
    """Train optimizer ``name`` on ``task``; returns the metric rows (dicts). Resumes from
    ``out_dir/checkpoint.npz`` with ``--resume``."""
    args, xp = problem.args, problem.xp
    os.makedirs(out_dir, exist_ok=True)
    opt = make_optimizer(name, args, task, lr)
    config = trajectory_config(args, task, name, getattr(opt, "lr", None))
    ckpt, metrics = os.path.join(out_dir, "checkpoint.npz"), os.path.join(out_dir, "metrics.csv")
    steps = budget(args, task, name, len(problem.data.train))
    params, step, wall = problem.initial_params(), 0, 0.0
    if args.resume and os.path.exists(ckpt):
        # A finished run recomputes only its last row; a larger budget continues it.
        params, step, wall = load_checkpoint(ckpt, opt, config, xp)
    rows = read_metrics(metrics, step)
    evaluate = task == "train"
    bar = tqdm(total=steps, initial=step, desc=f"{task} {name}", unit="step", leave=False,
               dynamic_ncols=True)
    try:
        while True:
            X, y = problem.batch(task, step)
            last = step >= steps
            row = {"step": step}
            if evaluate and (step % args.eval_every == 0 or last):
                row["train_loss"], row["train_acc"] = problem.evaluate(params,
                                                                       problem.data.train)
                row["val_loss"], row["val_acc"] = problem.evaluate(params, problem.data.val)
            start = time.perf_counter()
            loss, grad, pi = loss_and_gradient(problem.net, params, X, y)
            if not math.isfinite(loss):
                raise FloatingPointError(
                    f"the batch loss is not finite at step {step} of {name}"
                    + (f" (lr={opt.lr:g}); lower --lr" if opt.kind is None else ""))
            acc = float((pi.argmax(axis=1) == y).mean())
            row.update(wall=wall, batch_loss=loss, batch_acc=acc)
            if last or (task == "memorise" and acc == 1.0):
                rows.append(row)
                break
            try:
                new, info = update(problem, opt, params, loss, grad, X, y)
            except MemoryError as e:
                raise MemoryError(
                    f"out of memory in step {step} of {name} ({e}); the curvature of a batch "
                    f"of {args.curvature_batch or args.batch} is what takes the memory: lower "
                    f"--curvature-batch") from None
            row.update(info)
            rows.append(row)
            params, wall, step = new, wall + time.perf_counter() - start, step + 1
            bar.update()
            bar.set_postfix(loss=f"{loss:.3g}", acc=f"{acc:.2f}", refresh=False)
            if step % args.eval_every == 0:
                save_checkpoint(ckpt, params, opt, step, wall, config)
                write_metrics(metrics, rows)
    finally:
        bar.close()
    save_checkpoint(ckpt, params, opt, step, wall, config)
    write_metrics(metrics, rows)
    return rows


# ---- summaries and figures ----------------------------------------------------------------

def first(rows, predicate):
    """The first row satisfying predicate, or None."""
    return next((r for r in rows if predicate(r)), None)


def column(rows, key):
    return [r[key] for r in rows if key in r and not math.isnan(r[key])]


def summarize(task, runs, batch):
    """One summary dict per optimizer (``runs`` maps name -> (setting, rows))."""
    out = []
    adam_final = None
    if task == "train" and "adam" in runs:
        adam_final = column(runs["adam"][1], "train_loss")[-1]
    for name, (label, rows) in runs.items():
        steps, wall = rows[-1]["step"], rows[-1]["wall"]
        s = {"optimizer": name, "setting": label, "steps": steps, "wall": wall,
             "images_per_s": steps * batch / wall if wall > 0 else None,
             "best_batch_loss": min(column(rows, "batch_loss"))}
        if task == "memorise":
            hit = first(rows, lambda r: r["batch_acc"] == 1.0)
            s.update(steps_to_100=hit and hit["step"], wall_to_100=hit and hit["wall"],
                     final_batch_loss=rows[-1]["batch_loss"])
        else:
            ev = [r for r in rows if "train_loss" in r and not math.isnan(r["train_loss"])]
            s.update(final_train_loss=ev[-1]["train_loss"],
                     best_train_loss=min(r["train_loss"] for r in ev),
                     final_val_acc=ev[-1]["val_acc"], best_val_acc=max(r["val_acc"] for r in ev),
                     best_val_loss=min(r["val_loss"] for r in ev))
            if adam_final is not None:
                hit = first(ev, lambda r: r["train_loss"] <= adam_final)
                s.update(steps_to_adam_final=hit and hit["step"],
                         wall_to_adam_final=hit and hit["wall"])
        out.append(s)
    return out


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def table(task, summary, header):
    if task == "memorise":
        cols = [("optimizer", "optimizer", "s"), ("setting", "setting", "s"),
                ("steps to 100%", "steps_to_100", "d"), ("time to 100% [s]", "wall_to_100", ".2f"),
                ("best batch loss", "best_batch_loss", ".3e"), ("steps run", "steps", "d"),
                ("time [s]", "wall", ".2f"), ("images/s", "images_per_s", ".0f")]
    else:
        cols = [("optimizer", "optimizer", "s"), ("setting", "setting", "s"),
                ("steps", "steps", "d"), ("time [s]", "wall", ".2f"),
                ("images/s", "images_per_s", ".0f"), ("final train loss", "final_train_loss", ".4f"),
                ("best train loss", "best_train_loss", ".4f"),
                ("best val loss", "best_val_loss", ".4f"),
                ("final val acc", "final_val_acc", ".4f"), ("best val acc", "best_val_acc", ".4f"),
                ("steps to Adam's final train loss", "steps_to_adam_final", "d"),
                ("time to it [s]", "wall_to_adam_final", ".2f")]
    cells = [[title for title, _, _ in cols]]
    for s in summary:
        cells.append([fmt(s.get(key), spec) if spec != "d" or s.get(key) is None
                      else str(int(s[key])) for _, key, spec in cols])
    widths = [max(len(r[i]) for r in cells) for i in range(len(cols))]
    lines = [header] + ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def targets(task, summary, adam_rows):
    """The issue's targets for the embedded default, as sentences with the ratios
    (``adam_rows``: Adam's metric rows, for the step ratios of target (b))."""
    by = {s["optimizer"]: s for s in summary}
    second = [s for s in summary if s["optimizer"] not in FIRST_ORDER]
    first_order = [s for s in summary if s["optimizer"] in FIRST_ORDER]
    lines = []
    if task == "memorise" and second and first_order:
        reached = [s for s in second if s["steps_to_100"] is not None]
        fo = [s for s in first_order if s["steps_to_100"] is not None]
        best_fo = min(fo, key=lambda s: s["wall_to_100"]) if fo else None
        for s in reached:
            ok_steps = s["steps_to_100"] <= 150
            if best_fo:
                ratio = s["wall_to_100"] / best_fo["wall_to_100"]
                vs = (f"{s['wall_to_100']:.2f} s vs {best_fo['wall_to_100']:.2f} s for "
                      f"{best_fo['optimizer']} (time ratio {ratio:.2f}; "
                      f"{'faster' if ratio < 1 else 'slower'})")
            else:
                vs = "no first-order method reached 100% within its budget"
            lines.append(f"target (a) {s['optimizer']}: 100% batch accuracy in "
                         f"{int(s['steps_to_100'])} steps (<= 150: "
                         f"{'yes' if ok_steps else 'no'}), {vs}")
        if not reached:
            lines.append("target (a): no second-order method reached 100% batch accuracy")
    if task == "train" and "adam" in by and second:
        adam = by["adam"]
        hits = [s for s in second if s.get("steps_to_adam_final") is not None]
        if hits:
            best = min(hits, key=lambda s: s["steps_to_adam_final"])
            ratio = best["steps_to_adam_final"] / adam["steps"]
            lines.append(
                f"target (b) {best['optimizer']}: reached Adam's final training loss "
                f"{adam['final_train_loss']:.4f} at step {int(best['steps_to_adam_final'])} "
                f"of Adam's {int(adam['steps'])} (ratio {ratio:.3f}; <= 1/5: "
                f"{'yes' if ratio <= 0.2 else 'no'}), in {best['wall_to_adam_final']:.2f} s vs "
                f"Adam's {adam['wall']:.2f} s; validation accuracy "
                f"{best['final_val_acc']:.4f} vs Adam's {adam['final_val_acc']:.4f}")
        else:
            lines.append(f"target (b): no second-order method reached Adam's final training "
                         f"loss {adam['final_train_loss']:.4f} within its budget")
        for s in second:
            # The converse ratio: Adam's steps to the loss this method ended with.
            hit = first(adam_rows, lambda r: r.get("train_loss", math.inf)
                        <= s["final_train_loss"])
            if hit:
                lines.append(f"  Adam needed {int(hit['step'])} steps to reach "
                             f"{s['optimizer']}'s final training loss "
                             f"{s['final_train_loss']:.4f} (after {int(s['steps'])} steps): "
                             f"step ratio {s['steps'] / max(hit['step'], 1):.3f}")
    return lines


def plot(task, runs, path):
    """Loss and accuracy against step and wall-clock, one colour per optimizer."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), constrained_layout=True)
    if task == "memorise":
        series = [("batch_loss", "-"), ("batch_acc", "-")]
        titles = ("batch loss", "batch accuracy")
    else:
        series = [("train_loss", "-"), ("val_loss", "--"), ("train_acc", "-"),
                  ("val_acc", "--")]
        titles = ("loss (solid: train, dashed: validation)",
                  "accuracy (solid: train, dashed: validation)")
    for i, (name, (label, rows)) in enumerate(runs.items()):
        colour = f"C{i}"
        for key, style in series:
            pts = [(r["step"], r["wall"], r[key]) for r in rows
                   if key in r and not math.isnan(r[key])]
            if not pts:
                continue
            step, wall, value = zip(*pts)
            row = 0 if key.endswith("loss") else 1
            kw = dict(color=colour, linestyle=style,
                      label=f"{name} ({label})" if style == "-" else None)
            axes[row, 0].plot(step, value, **kw)
            axes[row, 1].plot(wall, value, **kw)
    for row, title in enumerate(titles):
        for col, xlabel in enumerate(("step", "wall-clock [s]")):
            ax = axes[row, col]
            ax.set_title(title)
            ax.set_xlabel(xlabel)
            ax.grid(alpha=0.3)
            if row == 0:
                ax.set_yscale("log")
            if col == 1:  # times from milliseconds (first order) to minutes (second order)
                ax.set_xscale("symlog", linthresh=1e-2)
                ax.set_xlim(left=0)
    axes[0, 0].legend()
    fig.suptitle(task)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---- learning-rate sweep --------------------------------------------------------------

def sweep(problem, task, names, grid, out):
    """Run each first-order optimizer of ``names`` at each rate of ``grid`` (the built-in
    :data:`LR_GRID` when empty); return the chosen rate per optimizer and report lines."""
    chosen, lines = {}, []
    for name in names:
        scores = []
        for lr in grid or LR_GRID:
            try:
                rows = run(problem, task, name, os.path.join(out, "sweep", task, f"{name}-lr{lr:g}"),
                           lr=lr)
            except FloatingPointError:
                scores.append((math.inf, math.inf, lr, "diverged"))
                continue
            if task == "memorise":
                hit = first(rows, lambda r: r["batch_acc"] == 1.0)
                key = (hit["step"] if hit else math.inf, min(column(rows, "batch_loss")))
                text = f"steps to 100%: {hit['step'] if hit else '-'}"
            else:
                final = column(rows, "train_loss")[-1]
                key, text = (final, 0.0), f"final train loss {final:.4f}"
            scores.append(key + (lr, text))
        best = min(scores)
        chosen[name] = best[2]
        lines += [f"  {task} {name} lr={lr:g}: {text}" for *_, lr, text in scores]
        lines.append(f"  -> {task} {name}: lr={best[2]:g}")
    return chosen, lines


# ---- main -----------------------------------------------------------------------------

def main(argv=None):
    """Entry point of ``tallskinny-train`` and ``python -m tallskinny_np.train``."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        data = load_data(args.source, args.path, args.resolution, args.classes,
                         args.val_fraction, args.seed, args.cache_dir, args.synthetic_size)
        problem = Problem(args, data)
    except (FileNotFoundError, ValueError, ImportError, RuntimeError) as e:
        print(f"tallskinny-train: error: {e}", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    atomic_write_text(os.path.join(args.out, "config.json"),
                      json.dumps(vars(args), indent=1, default=str))
    print(f"data: {' '.join(args.data)}: {len(data.train)} training and "
          f"{len(data.val)} validation images of {data.train.images.shape[1:]}, "
          f"{len(data.classes)} classes"
          + (f"; skipped {data.skipped} unreadable image files" if data.skipped else ""))
    print(f"network: {problem.net!r}, {problem.net.n_params} parameters")
    report = []
    try:
        problem.warm_up({make_optimizer(n, args, "train").kind
                         for n in args.optimizers} - {None})
        for task in args.tasks:
            rates = {}
            if args.lr_sweep is not None:
                fo = [n for n in args.optimizers if n in FIRST_ORDER]
                rates, lines = sweep(problem, task, fo, args.lr_sweep, args.out)
                report += [f"learning-rate sweep ({task}):"] + lines
            runs = {}
            for name in args.optimizers:
                rows = run(problem, task, name, os.path.join(args.out, task, name),
                           lr=rates.get(name))
                label = setting(name, make_optimizer(name, args, task, rates.get(name)))
                runs[name] = (label, rows)
            summary = summarize(task, runs, args.batch)
            header = (f"{task}: {args.source}, {problem.net!r}, batch {args.batch}, "
                      f"curvature batch {args.curvature_batch or args.batch}, seed {args.seed}")
            report += ["", table(task, summary, header)]
            report += targets(task, summary, runs.get("adam", (None, []))[1])
            plot(task, runs, os.path.join(args.out, f"{task}.png"))
            with open(os.path.join(args.out, f"summary-{task}.csv"), "w", newline="") as f:
                w = csv.DictWriter(f, list(summary[0]))
                w.writeheader()
                w.writerows(summary)
    except (FloatingPointError, MemoryError, ValueError) as e:
        print(f"tallskinny-train: error: {e}", file=sys.stderr)
        return 1
    if args.backend == "cupy":
        pool = problem.xp.get_default_memory_pool()
        report.append(f"GPU memory held by CuPy's pool (its peak): "
                      f"{pool.total_bytes() / 2**30:.2f} GiB")
    text = "\n".join(report)
    print(text)
    atomic_write_text(os.path.join(args.out, "summary.txt"), text + "\n")
    print(f"figures, metrics and checkpoints in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
