"""The options of ``tallskinny-train`` (:mod:`tallskinny_np.training.train`): its
optimizers, tasks and step budgets, the learning rates tuned for the embedded default, and
the command line's parser."""
import argparse
import sys

from ..activations import ACTIVATIONS
from ..losses import LOSSES
from .cli import HelpFormatter, integer, positive_float
from .datasets import SCALES, SOURCES
from .folders import default_cache_dir
from .optimizers import DEFAULT_COMPARE, FIRST_ORDER, FLAGS, OPTIMIZERS

PROG = "tallskinny-train"
PROGRESS_EVERY = 60.0     # seconds between progress lines when stderr is not a terminal
TASKS = ("memorise", "train", "precision")
DEFAULT_STEPS = {"memorise": 3000, "train": 2000, "precision": 30000}
DEFAULT_SECOND_ORDER_STEPS = {"memorise": 300, "train": None,   # None: steps // 5
                              "precision": 300}
DIVERGENCE_FACTOR = 10.0
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
# precision (least time to a batch loss of 1e-8, `--task precision --lr-sweep
# 0.003,0.01,0.03`): adam in 25861 and 23275 steps at 0.003 and 0.01, never at 0.03; sgd
# never (best losses 1.5e-2, 1.4e-3, 3.8e-4 after 30000 steps).
LR_GRID = (3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)
TUNED_LR = {"memorise": {"sgd": 0.03, "adam": 0.01}, "train": {"sgd": 0.003, "adam": 0.001},
            "precision": {"sgd": 0.03, "adam": 0.01}}

EPILOG = f"""\
tallskinny-train evaluate RUN [--split val|train]  reports the loss and top-1/top-5 accuracy
of a checkpoint (see tallskinny-train evaluate --help).

Data sources (--data SOURCE [PATH ...]):
  digits                  the embedded 8x8 digits (no download)
  synthetic               random images of ImageNet shape
  imagefolder PATH        ILSVRC2012 as distributed (train/<wnid>/, flat val/ and the devkit),
                          its archives, or train/<class>/ with val/<class>/, or <class>/
                          (needs pip install 'tallskinny-np[imagenet]')
  imagenet-npz PATH ...   Imagenet32/64 batch files or folders, e.g. both
                          Imagenet32_train_npz Imagenet32_val_npz (the official val set is
                          then the validation split)

A run stops with exit status 1 when its batch loss is not finite or exceeds
{DIVERGENCE_FACTOR:g} times its batch loss at step 0; the checkpoint keeps the parameters
from before. Exit status 2: bad options, data or files, a full disk, or an --out or image
cache in use by another process; 130 and 143: stopped by SIGINT (Ctrl-C) or SIGTERM, with
the steps so far saved (--resume continues).
"""


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog=PROG, formatter_class=HelpFormatter, epilog=EPILOG,
        description="Train a tall-skinny MLP with SGD, Adam or exact second-order steps. "
                    "With no arguments: the embedded digits comparison.")
    p.add_argument("--data", nargs="+", default=["digits"], metavar=("SOURCE", "PATH"),
                   help=f"the data: {' | '.join(SOURCES)}, with the paths the source takes "
                        f"(see below)")
    p.add_argument("--resolution", type=integer(1), help="image side r (default: the "
                   "source's own; 32 for imagefolder and synthetic)")
    p.add_argument("--classes", type=integer(2), help="keep the first K classes "
                                                      "(default: all)")
    p.add_argument("--val-fraction", type=float, default=0.2,
                   help="validation share when the source has no validation split")
    p.add_argument("--synthetic-size", type=integer(1), default=20000,
                   help="images of --data synthetic")
    p.add_argument("--cache-dir", default=default_cache_dir(),
                   help="where imagefolder images are cached after decoding")
    p.add_argument("--devkit", help="the ILSVRC2012 devkit (folder or .tar.gz) labelling a "
                                    "flat val/ folder (default: looked for beside val/)")
    p.add_argument("--workers", type=integer(0), help="DataLoader processes decoding image "
                   "files (default: one per core, at most 8)")
    p.add_argument("--skip-unreadable", action="store_true",
                   help="leave out image files that cannot be decoded, each named in a "
                        "warning (default: stop at the first, naming it)")
    p.add_argument("--allow-empty-classes", action="store_true",
                   help="keep class folders without images as classes, with a warning "
                        "(default: refuse them)")
    p.add_argument("--scale", choices=SCALES, default="standard",
                   help="pixel scaling: standard (zero mean, unit variance per channel over "
                        "the training split) or unit (divided by the largest pixel value, "
                        "onto [0, 1]: 16 for the digits, 255 for 8-bit images)")
    p.add_argument("--augment", choices=("none", "crop-flip"), default="none",
                   help="training-batch augmentation of the train task: crop-flip pads by "
                        "r/8, crops back at a random offset and mirrors half the images")
    p.add_argument("--depth", type=integer(2), default=16,
                   help="L, the number of affine layers (loss layer included)")
    p.add_argument("--width", type=integer(1), default=8, help="units per hidden layer")
    p.add_argument("--activation", default="tanh", choices=sorted(ACTIVATIONS),
                   help="hidden activation")
    p.add_argument("--loss", default="cross_entropy", choices=LOSSES,
                   help="the loss: cross-entropy against the labels, or the mean squared "
                        "error against the --targets")
    p.add_argument("--targets", choices=("labels", "inputs"), default="labels",
                   help="what the network predicts: the labels (one-hot for --loss mse), "
                        "or its own inputs (an autoencoder; needs --loss mse)")
    p.add_argument("--residual", action=argparse.BooleanOptionalAction, default=False,
                   help="hidden layers of equal widths add their input")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--optimizer", choices=tuple(OPTIMIZERS), help="run this optimizer alone")
    group.add_argument("--compare", type=optimizer_list,
                       help=f"comma-separated optimizers (default {','.join(DEFAULT_COMPARE)})")
    p.add_argument("--task", choices=TASKS + ("both",), default="both",
                   help="memorise one batch, train on the split, both, or precision "
                        "(memorise to --target-loss)")
    p.add_argument("--target-loss", type=positive_float, default=1e-8,
                   help="the batch loss at which the precision task stops")
    p.add_argument("--lr", type=positive_float, help="SGD/Adam learning rate (default: tuned "
                   "for the embedded digits: sgd 0.03/0.003/0.03, adam 0.01/0.001/0.01 for "
                   "memorise/train/precision)")
    p.add_argument("--lr-sweep", type=float_list, nargs="?", const=(),
                   help="tune the SGD/Adam rates first: comma-separated rates, or none for "
                        f"the grid {','.join(f'{x:g}' for x in LR_GRID)} (default: no sweep)")
    for name, keywords in FLAGS.items():
        p.add_argument("--" + name.replace("_", "-"), **keywords)
    p.add_argument("--curvature-every", type=integer(1), default=1,
                   help="rebuild the curvature every N steps and reuse it in between")
    p.add_argument("--batch", type=integer(1), default=32, help="images per gradient batch")
    p.add_argument("--curvature-batch", type=integer(1),
                   help="the curvature's sub-batch of the gradient batch (default: all)")
    p.add_argument("--second-order-batch", type=integer(1),
                   help="train task: images per gradient batch of the second-order "
                        "optimizers (default: --batch)")
    steps = p.add_mutually_exclusive_group()
    steps.add_argument("--steps", type=integer(1), help="first-order step budget "
                       "(default: 3000 memorise, 2000 train, 30000 precision)")
    steps.add_argument("--epochs", type=positive_float,
                       help="budget of every optimizer in epochs of the training split "
                            "(--second-order-steps still overrides it for the second-order "
                            "ones)")
    p.add_argument("--second-order-steps", type=integer(1), help="budget of the second-order "
                   "optimizers (default: 300 memorise and precision, --steps / 5 train, "
                   "--epochs if given)")
    p.add_argument("--eval-every", type=integer(1), default=20,
                   help="steps between evaluations of the full splits and checkpoints")
    p.add_argument("--backend", choices=("numpy", "cupy"), default="numpy",
                   help="array library (cupy: on the GPU)")
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                   help="floating-point precision of the network and its training")
    p.add_argument("--seed", type=integer(0), default=0,
                   help="seed of the initial weights, the data order and the split")
    p.add_argument("--out", default="tallskinny-train-out", help="output folder")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue the runs under --out from their checkpoints")
    again.add_argument("--overwrite", action="store_true",
                       help="replace the runs under --out")
    p.add_argument("--quiet", action="store_true",
                   help="print only the summary and errors (no progress bars on a terminal, "
                        f"no progress line every {PROGRESS_EVERY:g} s elsewhere)")
    args = p.parse_args(argv)
    args.source, args.paths = args.data[0], args.data[1:]
    if args.source not in SOURCES:
        p.error(f"--data takes SOURCE [PATH ...] with SOURCE one of {', '.join(SOURCES)}; "
                f"got {' '.join(args.data)}")
    args.optimizers = ((args.optimizer,) if args.optimizer
                       else tuple(args.compare or DEFAULT_COMPARE))
    args.tasks = ("memorise", "train") if args.task == "both" else (args.task,)
    for flag, size in (("--batch", args.batch), ("--second-order-batch",
                                                  args.second_order_batch)):
        if args.curvature_batch is not None and size is not None and args.curvature_batch > size:
            p.error(f"--curvature-batch ({args.curvature_batch}) is a sub-batch of the "
                    f"gradient batch and cannot exceed {flag} ({size})")
    if args.targets == "inputs" and args.loss != "mse":
        p.error("--targets inputs (an autoencoder) needs --loss mse")
    if not 0 <= args.val_fraction < 1:
        p.error(f"--val-fraction must lie in [0, 1); got {args.val_fraction}")
    args.progress = sys.stderr.isatty() and not args.quiet
    # Without a terminal for the bars, a line at a steady interval shows the run is alive.
    args.report_every = None if args.quiet or args.progress else PROGRESS_EVERY
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
    """The step budget of optimizer ``name`` in ``task`` (see the module docstring):
    ``--epochs`` are epochs of the optimizer's own gradient batch for every optimizer,
    unless ``--second-order-steps`` gives the second-order ones a budget in steps."""
    if name not in FIRST_ORDER and args.second_order_steps:
        return args.second_order_steps
    if args.epochs:
        return max(1, int(args.epochs * (n_train // batch_size(args, task, name))))
    steps = args.steps or DEFAULT_STEPS[task]
    if name in FIRST_ORDER:
        return steps
    return DEFAULT_SECOND_ORDER_STEPS[task] or max(1, steps // 5)


def batch_size(args, task, name):
    """The gradient batch of optimizer ``name`` in ``task``: ``--second-order-batch`` for
    the second-order ones in the train task, else ``--batch`` (memorise and precision
    keep one batch for all, the problem they compare on)."""
    if task == "train" and name not in FIRST_ORDER and args.second_order_batch:
        return args.second_order_batch
    return args.batch
