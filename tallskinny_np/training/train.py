"""``tallskinny-train``: train a tall-skinny MLP with first-order or exact second-order
steps (:mod:`tallskinny_np.optim`), and compare optimizers on the same data order and
initialisation; ``tallskinny-train evaluate`` scores a checkpoint
(:mod:`tallskinny_np.training.evaluate`).

With no arguments it runs the embedded default on the 8x8 digits (no download): a depth-16,
width-8 tanh MLP, comparing sgd, adam, ggn and trust-region on two tasks,

- ``memorise``: one fixed batch of ``--batch`` (32) training images, until 100% batch
  accuracy or the step budget;
- ``train``: ordinary minibatch training with evaluation of the full training and
  validation splits every ``--eval-every`` steps;
- ``precision`` (not part of the default): the memorise batch until its loss is at most
  ``--target-loss`` (1e-8), with the steps and time to each decade of loss;

then it prints a table per task, writes ``<task>.png`` (loss and accuracy against step and
against training wall-clock, one line per optimizer), ``summary.txt`` and
``summary-<task>.csv``.

Networks. ``--activation`` takes any built-in activation and ``--residual`` makes the
hidden layers of equal widths residual. With ``--loss mse`` the network regresses the
one-hot labels, or with ``--targets inputs`` its own scaled inputs: an autoencoder
through the width-``--width`` middle, which has no accuracy (memorise then runs its whole
budget, and the accuracy columns are empty).

Pixels. ``--scale standard`` (the default) standardises each colour channel with the
training split's mean and standard deviation; ``--scale unit`` divides the pixels by the
source's largest value (16 for the digits, 255 for 8-bit images), onto [0, 1]. The
checkpoint keeps the shift and divisor as its ``mean`` and ``std``, which
``tallskinny-train evaluate`` applies.

Step budgets. ``--steps`` is the budget of the first-order optimizers (defaults: 3000 for
memorise, 2000 for train, 30000 for precision) and ``--second-order-steps`` that of the
others (defaults: 300 for memorise and precision; a fifth of ``--steps`` for train).
``--epochs`` instead gives every optimizer the same number of epochs of the training
split, each in steps of its own gradient batch (``--second-order-steps``, if given, still
sets the second-order ones' budget).

Second-order optimizers: newton and ggn (exact damped solves), ggn-reuse and newton-reuse
(the same steps by Krylov solves preconditioned with a held factorization, factored again
after ``--reuse-budget`` iterations that do not reach the certified level), ggn-newton
(Gauss-Newton until the batch loss reaches ``--switch-loss``, Newton after),
modified-newton (the modified sweep's positive definite ``H + lam I + E``), hf and
hf-hessian (Hessian-free: truncated CG on the GGN or the Hessian), saddle-free (``|H|`` on
the negative eigenpairs, at most ``--negative-pairs`` of them) and trust-region, all on the
curvature of the first ``--curvature-batch`` samples, rebuilt every ``--curvature-every``
steps. Between rebuilds the same curvature and its factorization are reused with the new
gradient: the damping then only increases (after a rejected step), its decreases wait for
the last step before a rebuild. ggn-reuse and newton-reuse rebuild the curvature at the
current parameters every step (they only multiply by it) and keep their factorization in
the optimizer: its parameters, damping and batch step are in the checkpoint, and a
resumed run factors it again. ``--second-order-batch`` gives the second-order optimizers
their own gradient batch in the train task (the summaries count images as well as steps);
memorise and precision keep one batch for all.

Learning rates. Without ``--lr`` SGD (momentum 0.9) and Adam use the rates :data:`TUNED_LR`
chosen for the embedded default by ``--lr-sweep`` over the grid :data:`LR_GRID` (see the
note there); ``--lr-sweep`` reruns such a sweep on whatever data and network the other
flags give, then compares with the rates it picked.

Outputs under ``--out``: ``<task>/<optimizer>/metrics.csv`` (one row per step; full-split
evaluations every ``--eval-every`` steps) and ``checkpoint.npz``, committed together every
``--eval-every`` steps so that a run killed at any moment resumes on the identical
trajectory with every row (:mod:`tallskinny_np.training.store`); ``config.json``, the
figures and the summaries. An ``--out`` that holds runs needs ``--resume`` (continue them:
the data order is a function of the seed and the step only) or ``--overwrite``; one that
holds other files than these needs ``--overwrite``. One process at a time writes to an
``--out``: a second one is refused with the first one's process id and command (the lock
file ``--out/.lock``, :func:`tallskinny_np.training.files.locked`).

Interrupts. SIGINT (Ctrl-C) and SIGTERM end a run at the next step boundary (compiled
code is never interrupted, :mod:`tallskinny_np.training.signals`): the steps so far are
committed, one line names the signal and the ``--resume`` command, and the exit status is
130 or 143.

Divergence. A run stops, with a message and exit status 1, at the first step whose batch
loss is not finite or exceeds :data:`DIVERGENCE_FACTOR` times the batch loss of step 0;
the checkpoint keeps the last parameters before it.

Wall-clock counts only the training steps (gradient, curvature, solves, trial losses), not
evaluations or checkpoints. On a machine shared by several jobs set
``OPENBLAS_NUM_THREADS=1``: the Riccati solver's blocks are small, and BLAS threads
competing for cores slow it down many times over.
"""
import sys

from . import signals

if __name__ == "__main__":
    # python -m: a signal while the modules below load gets one line, not a traceback
    # (the installed script does this in tallskinny_np.training.script.train_main).
    signals.quiet_start("tallskinny-train")

import csv
import math
import os
import shlex
import time

import numpy as np
from tqdm.auto import tqdm

from .. import losses
from ..backend import array_module, backend_module
from ..curvature import Curvature
from ..files import atomic_write, atomic_write_text, describe_os_error, json_text, output_folder
from ..model import MLP
from ..optim import BUDGET, loss_and_gradient
from .cli import error
from .datasets import (augment, batch_index, check_batch, load_data, pixel_scaling,
                       standardize)
from .evaluate import accuracy, loss_targets, split_metrics
from .files import locked
from .options import (DIVERGENCE_FACTOR, LR_GRID, PROG, TUNED_LR, batch_size, budget,
                      parse_args)
from .preflight import check_plan, kernels_compiled
from .store import (CHECKPOINT, METRICS, RunFileError, append_rows, check_out, commit,
                    existing_runs, read_checkpoint, resume_metrics, start_metrics)
from .optimizers import FIRST_ORDER, FLAGS, OPTIMIZERS, build, setting
from .summary import comparisons, plot, summarize, table, targets, targets_table

def make_optimizer(name, args, task, lr=None):
    """Optimizer ``name`` of the registry (:mod:`tallskinny_np.training.optimizers`) with
    the options; a first-order one's rate is ``lr``, else ``--lr``, else the tuned one."""
    return build(name, args, lr or args.lr or TUNED_LR[task].get(name))


class Diverged(FloatingPointError):
    """A run whose loss left the range :data:`DIVERGENCE_FACTOR` allows, or whose steps
    failed; the message says where and what to change."""


class Problem:
    """The network, the data and the pixel scaling (``--scale``) shared by the runs of a
    comparison, so that every optimizer sees the same initialisation and data order."""

    def __init__(self, args, data):
        self.args = args
        self.data = data
        self.xp = backend_module(args.backend)
        self.dtype = np.dtype(args.dtype)
        self.mean, self.std = pixel_scaling(data, args.scale)
        outputs = data.n_features if args.targets == "inputs" else len(data.classes)
        sizes = [data.n_features] + [args.width] * (args.depth - 1) + [outputs]
        self.net = MLP(sizes, activation=args.activation, dtype=self.dtype, loss=args.loss,
                       residual=args.residual)

    def describe(self):
        """``'depth L, width n, tanh, P parameters'``, with the residual layers, the MSE
        and the autoencoder named where chosen."""
        kind = "".join([", residual" if self.args.residual else "",
                        ", mse" if self.args.loss == "mse" else "",
                        ", autoencoder" if self.args.targets == "inputs" else ""])
        return (f"depth {self.args.depth}, width {self.args.width}, {self.args.activation}"
                f"{kind}, {self.net.n_params:,} parameters")

    def warm_up(self, kinds):
        """Compile and load what the first curvature computations need (numba kernels,
        LAPACK wrappers) outside the timed steps: a curvature of each kind on two samples,
        with a solve and an inertia."""
        X, y = self.batch("memorise", 0)
        with signals.deferred():      # compiled code must not see an exception
            for kind in kinds:
                curv = Curvature(self.net, self.initial_params(), X[:2], y[:2], kind=kind)
                curv.solve(curv.grad, 1.0)
                curv.is_positive_definite(1.0)

    def initial_params(self):
        return self.xp.asarray(self.net.init_params(seed=self.args.seed))

    def batch(self, task, step, size=None):
        """The gradient batch of ``step`` (``size`` images, default ``--batch``): always
        the first batch for memorise and precision; augmented (``--augment``) for train."""
        n = len(self.data.train)
        images, labels = self.data.train.batch(
            batch_index(n, size or self.args.batch, step if task == "train" else 0,
                        self.args.seed))
        if task == "train" and self.args.augment == "crop-flip":
            images = augment(images, self.args.seed, step)
        X = standardize(images, self.mean, self.std, self.dtype, self.xp)
        return X, loss_targets(self.net, self.args.targets, X, self.xp.asarray(labels))

    def accuracy(self, out, y):
        """The batch accuracy of the outputs (softmax or logits) against the targets y of
        :meth:`batch`: their labels, or for the MSE their one-hot rows; nan for an
        autoencoder."""
        labels = y.argmax(axis=1) if y.ndim == 2 and self.args.targets == "labels" else y
        return accuracy(out, labels, self.args.targets)

    def evaluate(self, params, split):
        """Mean loss and top-1 accuracy of a whole split."""
        return split_metrics(self.net, params, split, self.mean, self.std, self.xp,
                             targets=self.args.targets)

    def checkpoint(self, params, opt, step, wall, loss0, config):
        """What :func:`tallskinny_np.training.store.commit` stores for this problem."""
        return {"params": params, "opt": opt.state, "step": step, "wall": wall,
                "loss0": loss0, "config": config, "mean": self.mean, "std": self.std,
                "cwd": os.getcwd(),
                "classes": list(self.data.classes),
                "network": {"sizes": list(self.net.sizes),
                            "activation": self.net.activation_names,
                            "dtype": str(self.dtype), "loss": self.net.loss_name,
                            "residual": self.net.residual, "targets": self.args.targets}}


def batch_loss(net, params, X, y):
    """The loss of a trial point; nan where it is not finite (no exception, no warning)."""
    xp = array_module(params)
    with np.errstate(all="ignore"):
        if not bool(xp.all(xp.isfinite(params))):
            return math.nan
        return float(losses.value(net.loss_name, net.logits(params, X), y))


def update(problem, task, step, opt, params, loss, grad, X, y, held):
    """One step of ``opt`` from ``params`` with the gradient batch's loss and gradient;
    the curvature (second order) is that of the first ``--curvature-batch`` samples,
    rebuilt every ``--curvature-every`` steps and otherwise taken from ``held`` (or, after
    a resume, rebuilt where the optimizer state says it was). Returns the new parameters
    and the optimizer's info (empty for first order)."""
    net, xp = problem.net, problem.xp
    if opt.order == 1:
        new = opt.step(params, grad)
        if not bool(xp.all(xp.isfinite(new))):
            raise FloatingPointError(f"the parameters became non-finite (lr {opt.lr:g})")
        return new, {}
    cb = problem.args.curvature_batch or len(y)
    kind = opt.curvature_kind(loss)
    # One that holds a factorization (ggn-reuse, newton-reuse) takes the curvature at the
    # current parameters every step: it only multiplies by it, unless it refactors.
    reuses = hasattr(opt, "held")
    rebuilt = (reuses or step % problem.args.curvature_every == 0
               or ("curv" in held and held["curv"].kind != kind))
    if rebuilt:
        opt.state.update(curvature_params=params, curvature_step=step)
        held["curv"] = Curvature(net, params, X[:cb], y[:cb], kind=kind)
    elif "curv" not in held:
        Xc, yc = problem.batch(task, opt.state["curvature_step"], len(y))
        held["curv"] = Curvature(net, opt.state["curvature_params"], Xc[:cb], yc[:cb],
                                 kind=kind)
    if reuses and opt.held is None and "held_params" in opt.state:     # after a resume
        Xh, yh = problem.batch(task, opt.state["held_step"], len(y))
        opt.held = Curvature(net, opt.state["held_params"], Xh[:cb], yh[:cb], kind=kind)
    # A damping that stays keeps the held factorization: it decreases only before a rebuild.
    hold = not reuses and (step + 1) % problem.args.curvature_every != 0
    new, info = opt.step(params, loss, grad, held["curv"],
                         lambda p: batch_loss(net, p, X, y), hold)
    if reuses and opt.held is held["curv"]:        # factored in this step, on its batch
        opt.state["held_step"] = step
    return new, dict(info, curvature=int(rebuilt))


def trajectory_config(args, task, name, lr):
    """What determines a run's trajectory; a checkpoint only resumes the same one."""
    keys = ("source", "paths", "resolution", "classes", "val_fraction", "synthetic_size",
            "scale", "augment", "depth", "width", "activation", "loss", "residual", "targets",
            "batch", "curvature_batch", "curvature_every", "target_loss", "dtype", "seed", *FLAGS)
    config = {k: getattr(args, k) for k in keys}
    config.update(task=task, optimizer=name, lr=lr if name in FIRST_ORDER else None,
                  batch=batch_size(args, task, name))
    return config


PRE_NETWORK_OPTIONS = {"loss": "cross_entropy", "residual": False, "targets": "labels",
                       "reuse_budget": BUDGET, "scale": "standard"}


def diverged(loss, loss0):
    """The divergence rule of the module docstring."""
    return not math.isfinite(loss) or loss > DIVERGENCE_FACTOR * loss0


# ---- a run ------------------------------------------------------------------------------

def resume(problem, out_dir, opt, config):
    """``(params, step, wall, loss0, rows)`` from the run's checkpoint (and its committed
    metrics rows), with the optimizer state restored into ``opt``."""
    path = os.path.join(out_dir, CHECKPOINT)
    ck = read_checkpoint(path)
    # a checkpoint from before these options were recorded ran with their defaults
    ck["config"] = {**PRE_NETWORK_OPTIONS, **ck["config"]}
    if ck["config"] != config:
        diff = ", ".join(f"{k} {ck['config'].get(k)!r} there, {config.get(k)!r} now"
                         for k in sorted(set(ck["config"]) | set(config))
                         if ck["config"].get(k) != config.get(k))
        raise ValueError(f"{path} belongs to another run ({diff}); use another --out or "
                         f"--overwrite")
    if ck["params"].shape != (problem.net.n_params,):
        raise ValueError(f"{path}: {ck['params'].size} parameters, the network has "
                         f"{problem.net.n_params}")
    xp = problem.xp
    opt.state = {k: xp.asarray(v) if isinstance(v, np.ndarray) else v
                 for k, v in ck["opt"].items()}
    rows = resume_metrics(out_dir, ck)
    params = xp.asarray(ck["params"].astype(problem.dtype))
    return params, ck["step"], ck["wall"], ck["loss0"], rows


def run(problem, task, name, out_dir, lr=None):
    """Train optimizer ``name`` on ``task``; returns the metric rows (dicts). With
    ``--resume`` continues from ``out_dir/checkpoint.npz``. Rows and checkpoint are
    committed every ``--eval-every`` steps, after the step's loss passed the divergence
    rule (so diverged parameters are never checkpointed), and at the end."""
    args = problem.args
    os.makedirs(out_dir, exist_ok=True)
    opt = make_optimizer(name, args, task, lr)
    config = trajectory_config(args, task, name, getattr(opt, "lr", None))
    steps = budget(args, task, name, len(problem.data.train))
    size = batch_size(args, task, name)
    if args.resume and os.path.exists(os.path.join(out_dir, CHECKPOINT)):
        params, step, wall, loss0, rows = resume(problem, out_dir, opt, config)
        committed = step
    else:
        if args.resume:
            check_no_rows(out_dir)
        start_metrics(out_dir)
        params, step, wall = problem.initial_params(), 0, 0.0
        loss0, rows, committed = None, [], None
    pending = []              # rows since the last commit
    held = {}                 # the curvature reused between rebuilds
    evaluate = task == "train"
    bar = tqdm(total=steps, initial=step, desc=f"{task} {name}", unit="step", leave=False,
               dynamic_ncols=True, disable=not args.progress)
    next_report = time.monotonic() + (args.report_every or 0)
    with bar, signals.deferred():
        while True:
            if signals.pending():
                # A signal arrived during the last step: save up to here, then stop.
                if step != committed:
                    commit(out_dir, pending, len(rows),
                           problem.checkpoint(params, opt, step, wall, loss0, config))
                signals.raise_pending()
            X, y = problem.batch(task, step, size)
            last = step >= steps
            row = {"step": step}
            if evaluate and (step % args.eval_every == 0 or last):
                row["train_loss"], row["train_acc"] = problem.evaluate(params,
                                                                       problem.data.train)
                row["val_loss"], row["val_acc"] = problem.evaluate(params, problem.data.val)
            start = time.perf_counter()
            loss, grad, pi = loss_and_gradient(problem.net, params, X, y)
            elapsed = time.perf_counter() - start
            row.update(wall=wall, batch_loss=loss, batch_acc=problem.accuracy(pi, y))
            loss0 = loss if loss0 is None else loss0
            if diverged(loss, loss0):
                stop(out_dir, pending + [row], name, opt, committed,
                     f"its batch loss {loss:.4g} at step {step} is "
                     + (f"more than {DIVERGENCE_FACTOR:g} times that of step 0 ({loss0:.4g})"
                        if math.isfinite(loss) else "not finite"))
            done = last or (task == "memorise" and row["batch_acc"] == 1.0) or (
                task == "precision" and loss <= args.target_loss)
            if step != committed and (step % args.eval_every == 0 or done):
                commit(out_dir, pending, len(rows),
                       problem.checkpoint(params, opt, step, wall, loss0, config))
                pending, committed = [], step
            if done:
                rows.append(row)
                append_rows(out_dir, [row])
                break
            start = time.perf_counter()    # the commit above is not training time
            try:
                new, info = update(problem, task, step, opt, params, loss, grad, X, y, held)
            except FloatingPointError as e:
                stop(out_dir, pending + [row], name, opt, committed,
                     f"step {step} failed: {e}")
            except MemoryError as e:
                raise MemoryError(
                    f"out of memory in step {step} of {name} ({e}); the curvature of a batch "
                    f"of {args.curvature_batch or size} is what takes the memory: lower "
                    f"--curvature-batch") from None
            row.update(info)
            rows.append(row)
            pending.append(row)
            params, wall, step = new, wall + elapsed + time.perf_counter() - start, step + 1
            bar.update()
            bar.set_postfix(loss=f"{loss:.3g}", acc=f"{row['batch_acc']:.2f}", refresh=False)
            if args.report_every is not None and time.monotonic() >= next_report:
                print(f"{task} {name}: step {step} of {steps}, batch loss {loss:.4g}, "
                      f"{wall:.1f} s of training", flush=True)
                next_report = time.monotonic() + args.report_every
    if not args.quiet:
        print(f"{task} {name}: {step} steps, {wall:.2f} s of training, final batch loss "
              f"{rows[-1]['batch_loss']:.4g}")
    return rows


def check_no_rows(out_dir):
    """A RunFileError if ``metrics.csv`` in ``out_dir`` holds rows: without the checkpoint
    they were committed with, resuming would silently start over and rewrite them."""
    path = os.path.join(out_dir, METRICS)
    if os.path.exists(path):
        with open(path, "rb") as f:
            n_rows = sum(1 for line in f if line.strip()) - 1
        if n_rows > 0:
            raise RunFileError(f"{path} holds {n_rows} row(s) but the {CHECKPOINT} they were "
                               f"committed with is missing; pass --overwrite to start this "
                               f"run over")


def stop(out_dir, rows, name, opt, committed, what):
    """Keep the rows up to the failed step in ``metrics.csv`` (the checkpoint keeps the
    parameters of its last commit, step ``committed``) and raise :class:`Diverged`."""
    append_rows(out_dir, rows)
    hint = f"; lower --lr (now {opt.lr:g})" if opt.order == 1 else ""
    kept = ("no checkpoint was written" if committed is None
            else f"{CHECKPOINT} keeps step {committed}")
    raise Diverged(f"{name} diverged: {what}{hint}. {os.path.join(out_dir, METRICS)} holds "
                   f"the rows up to that step; {kept}")


# ---- learning-rate sweep --------------------------------------------------------------

def sweep(problem, task, names, grid, out):
    """Run each first-order optimizer of ``names`` at each rate of ``grid`` (the built-in
    :data:`LR_GRID` when empty); return the chosen rate per optimizer and report lines.
    The score: fewest steps to 100% (memorise), least time to ``--target-loss``
    (precision), lowest final training loss (train)."""
    chosen, lines = {}, []
    for name in names:
        scores = []
        for lr in grid or LR_GRID:
            try:
                rows = run(problem, task, name,
                           os.path.join(out, "sweep", task, f"{name}-lr{lr:g}"), lr=lr)
            except FloatingPointError:
                scores.append((math.inf, math.inf, lr, "diverged"))
                continue
            if task == "memorise":
                hit = next((r for r in rows if r["batch_acc"] == 1.0), None)
                key = (hit["step"] if hit else math.inf, min(r["batch_loss"] for r in rows))
                text = f"steps to 100%: {hit['step'] if hit else '-'}"
            elif task == "precision":
                best = min(r["batch_loss"] for r in rows)
                hit = rows[-1] if best <= problem.args.target_loss else None
                key = (hit["wall"] if hit else math.inf, best)
                text = (f"time to loss {problem.args.target_loss:g}: "
                        + (f"{hit['wall']:.2f} s ({hit['step']} steps)" if hit
                           else f"- (best {best:.2e})"))
            else:
                final = [r["train_loss"] for r in rows
                         if not math.isnan(r.get("train_loss", math.nan))][-1]
                key, text = (final, 0.0), f"final train loss {final:.4f}"
            scores.append(key + (lr, text))
        best = min(scores)
        chosen[name] = best[2]
        lines += [f"  {task} {name} lr {lr:g}: {text}" for *_, lr, text in scores]
        lines.append(f"  chosen for {task} {name}: lr {best[2]:g}")
    return chosen, lines


# ---- main -----------------------------------------------------------------------------

def load(args):
    """The data and the problem, checked against the options."""
    data = load_data(args.source, args.paths, args.resolution, args.classes,
                     args.val_fraction, args.seed, args.cache_dir, args.synthetic_size,
                     args.devkit, args.workers, args.progress or args.report_every or False,
                     args.skip_unreadable, args.allow_empty_classes)
    for line in data.warnings:
        print(f"{PROG}: warning: {line}", file=sys.stderr)
    check_batch(args.batch, data)
    if args.second_order_batch:
        check_batch(args.second_order_batch, data, "--second-order-batch")
    if not len(data.val):
        raise ValueError("the validation split is empty; raise --val-fraction")
    return data, Problem(args, data)


def curvature_kinds(args):
    """The curvature kinds the chosen optimizers build (empty for first order alone)."""
    return {kind for name in args.optimizers for kind in OPTIMIZERS[name].kinds}


def compare(args, problem):
    """Run every task and optimizer; the report's lines."""
    report = []
    kinds = curvature_kinds(args)
    if kinds:
        check_plan(args, problem, kinds)
        if not args.quiet and not kernels_compiled():
            print("compiling the solver's kernels once (about a minute; numba caches them "
                  "for later runs)", flush=True)
    problem.warm_up(kinds)
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
            runs[name] = (setting(name, make_optimizer(name, args, task, rates.get(name))),
                          rows)
        sizes = {name: batch_size(args, task, name) for name in runs}
        summary = summarize(task, runs, sizes, targets(task, args.target_loss))
        second_batch = {sizes[n] for n in runs if n not in FIRST_ORDER} - {args.batch}
        what = (f"{' '.join(args.data)}, {problem.describe()}, batch {args.batch}"
                + (f", second-order batch {second_batch.pop()}" if second_batch else "")
                + (f", curvature batch {args.curvature_batch}" if args.curvature_batch else "")
                + f", seed {args.seed}")
        report += ["", table(task, summary, f"{task}: {what}")]
        report += ["", targets_table(task, summary, targets(task, args.target_loss))]
        report += comparisons(task, summary, runs)
        plot(task, runs, os.path.join(args.out, f"{task}.png"),
             f"{task}: {' '.join(args.data)}, {problem.describe()}, batch {args.batch}",
             args.loss)
        atomic_write(os.path.join(args.out, f"summary-{task}.csv"),
                     lambda f: write_csv(f, summary))
    return report


def write_csv(f, summary):
    w = csv.DictWriter(f, list(summary[0]))
    w.writeheader()
    w.writerows(summary)


def train(args):
    output_folder(args.out)
    with locked(args.out, "--out"):
        check_out(args)
        return train_locked(args)


def train_locked(args):
    """:func:`train` with the lock of ``--out`` held."""
    data, problem = load(args)
    atomic_write_text(os.path.join(args.out, "config.json"),
                      json_text(vars(args), indent=1))
    if not args.quiet:
        print(f"data: {' '.join(args.data)}: {len(data.train)} training and "
              f"{len(data.val)} validation images of "
              f"{'x'.join(map(str, data.train.images.shape[1:]))}, "
              f"{len(data.classes)} classes"
              + (f"; skipped {data.skipped} unreadable image files" if data.skipped else ""))
        for d in data.decode:
            print(f"read {d['files']} decoded images from the cache {d['cache']}"
                  if d["cached"] else
                  f"decoded {d['files']} image files in {d['seconds']:.1f} s "
                  f"({d['images_per_s']:.0f} images/s, {d['workers']} workers)")
        print(f"network: {problem.describe()}")
    report = compare(args, problem)
    if args.backend == "cupy":
        pool = problem.xp.get_default_memory_pool()
        report.append(f"GPU memory held by CuPy's pool (its peak): "
                      f"{pool.total_bytes() / 2**30:.2f} GiB")
    text = "\n".join(report)
    print(text)
    atomic_write_text(os.path.join(args.out, "summary.txt"), text + "\n")
    if not args.quiet:
        print(f"figures, metrics and checkpoints in {args.out}")
    return 0


def interrupted(e, args, argv):
    """The message of a run stopped by a signal: which, and how to go on."""
    if not existing_runs(args.out):
        return f"interrupted by {e.name} before any step was saved"
    again = [a for a in argv if a != "--overwrite"]
    again += [] if "--resume" in again else ["--resume"]
    return (f"interrupted by {e.name}; the checkpoints under {args.out} are intact, "
            f"continue with: {shlex.join([PROG, *again])}")


def main(argv=None):
    """Entry point of ``tallskinny-train`` (``tallskinny-train evaluate ...`` scores a
    checkpoint) and ``python -m tallskinny_np.training.train``."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["evaluate"]:
        from .evaluate import main as evaluate
        return evaluate(argv[1:])
    args = parse_args(argv)
    try:
        with signals.handling():
            return train(args)
    except signals.Interrupted as e:
        return error(PROG, interrupted(e, args, argv), e.status)
    except (FloatingPointError, MemoryError) as e:
        return error(PROG, e, status=1)
    except OSError as e:
        return error(PROG, describe_os_error(e))
    except (ValueError, ImportError, RuntimeError) as e:
        return error(PROG, e)


if __name__ == "__main__":
    sys.exit(main())
