"""``tallskinny-train evaluate``: the loss and top-1/top-5 accuracy of a checkpoint on a
split of its data (or of other data of the same shape and classes).

A checkpoint holds everything needed (:func:`tallskinny_np.training.store.read_checkpoint`):
the layer sizes and activation, the parameters, the per-channel normalisation of the
training pixels and the class names; the data are found again from the run's own
``--data`` unless given.
"""
import argparse
import os
import sys

import numpy as np

from ..backend import backend_module
from ..model import MLP, cross_entropy
from . import signals
from .cli import HelpFormatter, error
from .datasets import SOURCES, load_data, standardize
from .files import describe_os_error
from .folders import default_cache_dir
from .store import CHECKPOINT, read_checkpoint

PROG = "tallskinny-train evaluate"


def split_metrics(net, params, split, mean, std, xp=np, chunk=4096, top=(1,)):
    """Mean cross-entropy and the top-k accuracy for each k of ``top`` over a whole split,
    its images standardised with ``mean`` and ``std``, in chunks of ``chunk`` images."""
    total, hits = 0.0, np.zeros(len(top))
    for start in range(0, len(split), chunk):
        images, y = split.batch(np.arange(start, min(start + chunk, len(split))))
        X = standardize(images, mean, std, net.dtype, xp)
        y = xp.asarray(y)
        O = net.logits(params, X)
        loss, _ = cross_entropy(O, y)
        total += float(loss) * len(y)
        # Rank of the true class: the number of classes with a larger logit.
        rank = (O > O[xp.arange(len(y)), y][:, None]).sum(axis=1)
        hits += [float((rank < k).sum()) for k in top]
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
    p.add_argument("--backend", choices=("numpy", "cupy"), default="numpy",
                   help="array library (cupy: on the GPU)")
    return p.parse_args(argv)


def evaluate(args):
    path = args.checkpoint
    if os.path.isdir(path):
        path = os.path.join(path, CHECKPOINT)
    ck = read_checkpoint(path)
    config, network = ck["config"], ck["network"]
    source, paths = (args.data[0], args.data[1:]) if args.data else (config["source"],
                                                                      config["paths"])
    data = load_data(source, paths, config["resolution"], config["classes"],
                     config["val_fraction"], config["seed"], args.cache_dir,
                     config["synthetic_size"], args.devkit, args.workers)
    sizes = network["sizes"]
    if data.n_features != sizes[0] or len(data.classes) != sizes[-1]:
        raise ValueError(f"the data have {data.n_features} inputs and {len(data.classes)} "
                         f"classes; the network of {path} takes {sizes[0]} and {sizes[-1]}")
    if list(data.classes) != list(ck["classes"]):
        raise ValueError(f"the data's class names differ from those of {path} (first: "
                         f"{data.classes[0]} vs {ck['classes'][0]})")
    xp = backend_module(args.backend)
    net = MLP(sizes, activation=network["activation"], dtype=network["dtype"])
    split = data.val if args.split == "val" else data.train
    loss, top1, top5 = split_metrics(net, xp.asarray(ck["params"].astype(net.dtype)), split,
                                     ck["mean"], ck["std"], xp, top=(1, min(5, sizes[-1])))
    print(f"checkpoint  {path} (step {ck['step']})")
    print(f"data        {' '.join([source, *paths])}: {args.split} split, {len(split)} images")
    print(f"loss        {loss:.4f}")
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
