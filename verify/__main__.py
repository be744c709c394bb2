"""``python -m verify``: check every step of the structured algorithm on a small random MLP.

The network has ``--layers`` affine layers (the loss layer included): ``--inputs`` inputs,
``--layers - 1`` hidden layers of ``--width`` units and ``--classes`` classes. Parameters
are ``MLP.init_params(seed, gain)`` (zero biases); the batch X is standard normal and the
labels uniform, both from ``--seed``. Prints the table of :func:`verify.check_all`; exit
status 0 if every check passes, 1 if one fails, 2 for a refused configuration (for
example above the size limit of :func:`verify.dense.check_size`).
"""
import argparse
import sys

import numpy as np

from tallskinny_np import MLP
from tallskinny_np.activations import ACTIVATIONS
from tallskinny_np.blocks import KINDS

from .checks import check_all
from .fd import METHODS


def positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {text}")
    return value


def parser():
    p = argparse.ArgumentParser(prog="python -m verify", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=positive, default=5,
                   help="affine layers L, the loss layer included (>= 2; default 5)")
    p.add_argument("--width", type=positive, default=4, help="hidden width (default 4)")
    p.add_argument("--batch", type=positive, default=3, help="batch size B (default 3)")
    p.add_argument("--inputs", type=positive, default=5, help="input size n_0 (default 5)")
    p.add_argument("--classes", type=positive, default=3, help="classes n_L (default 3)")
    p.add_argument("--activation", choices=sorted(ACTIVATIONS), default="tanh")
    p.add_argument("--bias", action=argparse.BooleanOptionalAction, default=True,
                   help="biases in every layer (default: --bias)")
    p.add_argument("--kind", choices=KINDS, default="hessian")
    p.add_argument("--damping", type=float, default=0.1,
                   help="eps of H + eps I (default 0.1)")
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--gain", type=float, default=1.0,
                   help="weights ~ N(0, gain^2 / fan_in) (default 1)")
    p.add_argument("--method", choices=METHODS, default="complex-step",
                   help="how the independent dense H is differentiated "
                        "(default complex-step)")
    p.add_argument("--json", metavar="PATH", help="also write the report as JSON to PATH")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    sizes = [args.inputs] + [args.width] * (args.layers - 1) + [args.classes]
    try:
        net = MLP(sizes, activation=args.activation, bias=args.bias, dtype=args.dtype)
        params = net.init_params(seed=args.seed, gain=args.gain)
        rng = np.random.default_rng(args.seed)
        X = rng.standard_normal((args.batch, args.inputs)).astype(args.dtype)
        y = rng.integers(0, args.classes, size=args.batch)
        report = check_all(net, params, X, y, kind=args.kind, damping=args.damping,
                           method=args.method)
    except ValueError as e:
        print(f"python -m verify: error: {e}", file=sys.stderr)
        return 2
    print(report)
    if args.json:
        with open(args.json, "w") as f:
            f.write(report.to_json(indent=1) + "\n")
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
