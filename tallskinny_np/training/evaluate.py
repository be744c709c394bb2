"""``tallskinny-train evaluate``: the loss and top-1/top-5 accuracy of a checkpoint on a
split of its data (or of other data of the same shape and classes); for an autoencoder
(``--targets inputs``) the loss alone.

A checkpoint holds everything needed
(:func:`tallskinny_np.training.store.read_checkpoint`): the layer sizes, activations,
loss, residual layers and targets, the parameters, the per-channel normalisation of the
training pixels and the class names, checked against each other and against the data; the
data are found again from the run's own ``--data`` (relative paths from the folder the run
started in) unless given.
"""
import argparse
import os
import sys

import numpy as np

from .. import losses
from ..backend import array_module, backend_module
from ..files import describe_os_error
from ..model import MLP
from . import signals
from .cli import HelpFormatter, error
from .datasets import SOURCES, load_data, standardize
from .folders import default_cache_dir
from .store import CHECKPOINT, RunFileError, read_checkpoint

PROG = "tallskinny-train evaluate"


TARGETS = ("labels", "inputs")


def loss_targets(net, targets, X, labels):
    """What the net's loss compares its outputs with for a batch: the labels (the
    cross-entropy's), their one-hot rows (the MSE's regression onto the classes), or for
    ``targets="inputs"`` the scaled inputs X themselves (an autoencoder)."""
    if targets == "inputs":
        return X
    if net.loss_name == "mse":
        xp = array_module(X)
        return (labels[:, None] == xp.arange(net.sizes[-1])).astype(net.dtype)
    return labels


def accuracy(O, labels, targets):
    """The batch's top-1 accuracy of the outputs O against the labels; nan for an
    autoencoder, which has no classes to be right about."""
    if targets == "inputs":
        return float("nan")
    return float((O.argmax(axis=1) == labels).mean())


def split_metrics(net, params, split, mean, std, xp=np, chunk=4096, top=(1,),
                  targets="labels"):
    """Mean loss and the top-k accuracy for each k of ``top`` (nan for ``targets="inputs"``)
    over a whole split, its images scaled with ``mean`` and ``std`` (the checkpoint's
    normalisation: per-channel statistics, or 0 and the largest pixel value), in chunks of
    ``chunk`` images."""
    total, hits = 0.0, np.zeros(len(top))
    for start in range(0, len(split), chunk):
        images, y = split.batch(np.arange(start, min(start + chunk, len(split))))
        X = standardize(images, mean, std, net.dtype, xp)
        y = xp.asarray(y)
        O = net.logits(params, X)
        loss = losses.value(net.loss_name, O, loss_targets(net, targets, X, y))
        total += float(loss) * len(y)
        if targets == "labels":
            # Rank of the true class: the number of classes with a larger output.
            rank = (O > O[xp.arange(len(y)), y][:, None]).sum(axis=1)
            hits += [float((rank < k).sum()) for k in top]
    if targets == "inputs":
        return (total / len(split),) + (float("nan"),) * len(top)
    return (total / len(split),) + tuple(float(h) / len(split) for h in hits)


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog=PROG, formatter_class=HelpFormatter,
        description="Loss and top-1/top-5 accuracy of a trained network on a data split.")
    p.add_argument("checkpoint", metavar="RUN",
                   help=f"a {CHECKPOINT} written by tallskinny-train, or the folder holding it")
    p.add_argument("--split", choices=("val", "train"), default="val",
                   help="which split of the data to evaluate")
    p.add_argument("--data", nargs="+", metavar=("SOURCE", "PATH"),
                   help=f"other data ({' | '.join(SOURCES)} with its paths) of the same image "
                        f"size and classes (default: the run's own)")
    p.add_argument("--cache-dir", default=default_cache_dir(),
                   help="where decoded image files are cached")
    p.add_argument("--devkit", help="the ILSVRC2012 devkit (folder or .tar.gz), for a flat "
                                    "validation folder")
    p.add_argument("--workers", type=int, help="DataLoader processes decoding image files "
                                               "(default: up to 8, one per core)")
    p.add_argument("--skip-unreadable", action="store_true",
                   help="leave out image files that cannot be decoded (default: stop at "
                        "the first, naming it)")
    p.add_argument("--allow-empty-classes", action="store_true",
                   help="keep class folders without images as classes")
    p.add_argument("--backend", choices=("numpy", "cupy"), default="numpy",
                   help="array library (cupy: on the GPU)")
    return p.parse_args(argv)


def checked_network(ck, path):
    """The MLP a checkpoint describes, after checking its fields against each other: the
    layer sizes, activations, loss, residual layers and dtype make a network whose
    parameter count is that of ``params``; ``mean`` and ``std`` are finite per-channel
    vectors (std > 0) of a channel count that divides the input size; the class names are
    as many as the outputs (an autoencoder's outputs as its inputs). A RunFileError naming
    the file and the field otherwise. A checkpoint written before the loss, residual
    layers and targets were recorded has the defaults (cross-entropy on the labels, no
    residual layers)."""
    network = ck["network"]
    try:
        net = MLP(network["sizes"], activation=network["activation"], dtype=network["dtype"],
                  loss=network.get("loss", "cross_entropy"),
                  residual=network.get("residual", False))
        if network.get("targets", "labels") not in TARGETS:
            raise ValueError(f"unknown targets {network['targets']!r}")
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise RunFileError(f"{path}: its 'network' field does not describe a network of "
                           f"this program ({network!r}: {e})") from None
    if ck["params"].size != net.n_params:
        raise RunFileError(f"{path}: its layer sizes {list(net.sizes)} take {net.n_params} "
                           f"parameters, but its 'params' field holds {ck['params'].size}")
    mean, std = ck["mean"], ck["std"]
    for name, v in (("mean", mean), ("std", std)):
        if v.ndim != 1 or v.size == 0 or v.shape != mean.shape or not np.all(np.isfinite(v)):
            raise RunFileError(f"{path}: its '{name}' field ({v.shape}) is not a finite "
                               f"vector of one value per colour channel like 'mean' "
                               f"({mean.shape})")
    if not np.all(std > 0) or net.sizes[0] % mean.size:
        raise RunFileError(f"{path}: its normalisation ('mean' and 'std', {mean.size} "
                           f"channels) does not fit its {net.sizes[0]} inputs with std > 0")
    if network.get("targets") == "inputs":
        if net.sizes[-1] != net.sizes[0]:
            raise RunFileError(f"{path}: an autoencoder's {net.sizes[-1]} outputs must be "
                               f"as many as its {net.sizes[0]} inputs")
    elif len(ck["classes"]) != net.sizes[-1]:
        raise RunFileError(f"{path}: its 'classes' field names {len(ck['classes'])} classes, "
                           f"its network has {net.sizes[-1]} outputs")
    return net


def data_paths(ck, paths):
    """The run's data paths, those recorded relative to the folder the run started in
    (its ``cwd`` field) taken from there."""
    start = ck.get("cwd")
    return [os.path.join(start, p) if start and not os.path.isabs(p) else p for p in paths]


def evaluate(args):
    path = args.checkpoint
    if os.path.isdir(path):
        path = os.path.join(path, CHECKPOINT)
    ck = read_checkpoint(path)
    config = ck["config"]
    net = checked_network(ck, path)
    source, paths = (args.data[0], args.data[1:]) if args.data else (
        config["source"], data_paths(ck, config["paths"]))
    data = load_data(source, paths, config["resolution"], config["classes"],
                     config["val_fraction"], config["seed"], args.cache_dir,
                     config["synthetic_size"], args.devkit, args.workers,
                     skip_unreadable=args.skip_unreadable,
                     allow_empty_classes=args.allow_empty_classes)
    sizes = list(net.sizes)
    targets = ck["network"].get("targets", "labels")
    outputs = data.n_features if targets == "inputs" else len(data.classes)
    if data.n_features != sizes[0] or outputs != sizes[-1]:
        raise ValueError(f"the data have {data.n_features} inputs and {len(data.classes)} "
                         f"classes; the network of {path} takes {sizes[0]} and {sizes[-1]}")
    if data.train.images.shape[-1] != ck["mean"].size:
        raise ValueError(f"the data's images have {data.train.images.shape[-1]} colour "
                         f"channels; the normalisation of {path} has {ck['mean'].size}")
    if list(data.classes) != list(ck["classes"]):
        raise ValueError(f"the data's class names differ from those of {path} (first: "
                         f"{data.classes[0]} vs {ck['classes'][0]})")
    xp = backend_module(args.backend)
    split = data.val if args.split == "val" else data.train
    loss, top1, top5 = split_metrics(net, xp.asarray(ck["params"].astype(net.dtype)), split,
                                     ck["mean"], ck["std"], xp, top=(1, min(5, sizes[-1])),
                                     targets=targets)
    print(f"checkpoint  {path} (step {ck['step']})")
    print(f"data        {' '.join([source, *paths])}: {args.split} split, {len(split)} images")
    print(f"network     {net!r}")
    print(f"loss        {loss:.4f}")
    if targets == "labels":
        print(f"top-1       {top1:.4f}")
        print(f"top-5       {top5:.4f}")
    return 0


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        with signals.handling():
            return evaluate(args)
    except signals.Interrupted as e:
        return error(PROG, f"interrupted by {e.name}", e.status)
    except OSError as e:
        return error(PROG, describe_os_error(e))
    except (ValueError, ImportError) as e:
        return error(PROG, e)
