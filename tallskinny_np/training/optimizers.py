"""The optimizers of ``tallskinny-train``, in one registry: their names (the choices of
``--optimizer`` and ``--compare``), the options that set their parameters, the curvature
kinds their steps build, and what their summaries name as their setting. Adding an
optimizer to the training app is one entry of :data:`OPTIMIZERS` (its class follows the
optimizer protocol of :mod:`tallskinny_np.optim`), and its options, if new, in
:data:`FLAGS`."""
from typing import Callable, NamedTuple

from ..optim import (BUDGET, SGD, Adam, DampedNewton, GaussNewtonToNewton, HessianFree,
                     ModifiedNewton, PreconditionedNewton, SaddleFreeNewton, TrustRegion)
from .cli import integer, nonnegative_float, or_word, positive_float

FLAGS = {
    "damping": dict(type=or_word("relative", nonnegative_float), default=1.0,
                    help="initial Levenberg-Marquardt damping of the damped second-order "
                         "methods (all but trust-region); 'relative': a quarter of the "
                         "curvature's 2-norm at the first step"),
    "radius": dict(type=positive_float, default=1.0, help="initial trust-region radius"),
    "negative_pairs": dict(type=integer(1), default=20,
                           help="saddle-free: flip at most this many of the most negative "
                                "eigenpairs of H (the others are absorbed by a larger "
                                "damping)"),
    "floor": dict(type=positive_float, default=1e-8,
                  help="modified-newton: the smallest eigenvalue of a modified pivot"),
    "backtrack": dict(type=integer(0), default=3,
                      help="damped second-order methods (not trust-region): halvings of a "
                           "rejected downhill step before the damping is raised"),
    "switch_loss": dict(type=or_word("predicted", positive_float), default=0.1,
                        help="ggn-newton: the batch loss at which Gauss-Newton steps give "
                             "way to Newton steps; 'predicted': when the Newton model "
                             "predicts a mispredicted Gauss-Newton step's reduction"),
    "reuse_budget": dict(type=integer(0), default=BUDGET,
                         help="ggn-reuse, newton-reuse: Krylov iterations preconditioned "
                              "with the held factorization before the curvature is factored "
                              "again"),
}
"""The options that set the second-order optimizers' parameters, ``--name-with-dashes``
for each key, with argparse's keywords; part of each run's trajectory (a checkpoint
resumes only with the same values)."""


class Choice(NamedTuple):
    """One optimizer of ``tallskinny-train``."""
    cls: type                 # follows the optimizer protocol (tallskinny_np.optim)
    keywords: Callable        # parsed options -> the constructor's keywords
    kinds: tuple              # the curvature kinds its steps build; () for first order
    setting: str              # "lr" or the state entry its summaries name
    holds: bool = False       # holds an earlier step's curvature and factors (its plan)


def _damped(args, **fixed):
    """The keywords of a damped optimizer: the Levenberg-Marquardt rule's options, and
    ``fixed``."""
    return dict(fixed, damping=args.damping, backtrack=args.backtrack)


OPTIMIZERS = {
    "sgd": Choice(SGD, lambda args: {"momentum": 0.9}, (), "lr"),
    "adam": Choice(Adam, lambda args: {}, (), "lr"),
    "newton": Choice(DampedNewton, lambda args: _damped(args, kind="hessian"), ("hessian",),
                     "damping"),
    "ggn": Choice(DampedNewton, lambda args: _damped(args, kind="ggn"), ("ggn",), "damping"),
    "ggn-newton": Choice(GaussNewtonToNewton,
                         lambda args: _damped(args, switch_loss=args.switch_loss),
                         ("ggn", "hessian"), "damping"),
    "ggn-reuse": Choice(PreconditionedNewton,
                        lambda args: _damped(args, kind="ggn", budget=args.reuse_budget),
                        ("ggn",), "damping", holds=True),
    "newton-reuse": Choice(PreconditionedNewton,
                           lambda args: _damped(args, kind="hessian", budget=args.reuse_budget),
                           ("hessian",), "damping", holds=True),
    "modified-newton": Choice(ModifiedNewton, lambda args: _damped(args, floor=args.floor),
                              ("hessian",), "damping"),
    "hf": Choice(HessianFree, lambda args: _damped(args, kind="ggn"), ("ggn",), "damping"),
    "hf-hessian": Choice(HessianFree, lambda args: _damped(args, kind="hessian"),
                         ("hessian",), "damping"),
    "saddle-free": Choice(SaddleFreeNewton,
                          lambda args: _damped(args, max_pairs=args.negative_pairs),
                          ("hessian",), "damping"),
    "trust-region": Choice(TrustRegion, lambda args: {"radius": args.radius}, ("hessian",),
                           "radius"),
}
DEFAULT_COMPARE = ("sgd", "adam", "ggn", "trust-region")
FIRST_ORDER = tuple(name for name, c in OPTIMIZERS.items() if c.cls.order == 1)


def build(name, args, lr):
    """The optimizer ``name`` with the parsed options ``args`` (and the learning rate lr
    for a first-order one).

    Examples
    --------
    >>> from argparse import Namespace
    >>> from tallskinny_np.training.optimizers import build
    >>> build("sgd", Namespace(), 0.1).momentum, build("ggn", Namespace(damping=2.0,
    ...                                                 backtrack=0), None).kind
    (0.9, 'ggn')
    """
    choice = OPTIMIZERS[name]
    if choice.cls.order == 1:
        return choice.cls(lr, **choice.keywords(args))
    return choice.cls(**choice.keywords(args))


def setting(name, opt):
    """What a summary names as the run's setting: ``'lr 0.01'``, ``'damping 1'``,
    ``'radius 1'``."""
    key = OPTIMIZERS[name].setting
    value = opt.lr if key == "lr" else opt.state[key]
    return f"{key} {value:g}"
