"""python -m verify (installed: tallskinny-verify): check every step of the structured algorithm
on a small random MLP against dense references.

The network has --layers affine layers (the loss layer included): --inputs inputs,
--layers - 1 hidden layers of --width units and --classes classes (outputs for --loss
mse), residual with --residual. Its weights are drawn from --seed with standard deviation
gain / sqrt(fan-in) and zero biases; the batch X is standard normal and the labels uniform
(the targets standard normal), both from --seed; for an activation with a kink a sample is
redrawn until its pre-activations are at least 0.05 from it. Prints one line per checked
step; exit status 0 if every check passes, 1 if one fails, 2 for a refused configuration
(for example a network too large for the dense references) or an unwritable --json.
"""
import argparse
import os
import sys

import numpy as np

from tallskinny_np import MLP
from tallskinny_np.activations import ACTIVATIONS
from tallskinny_np.blocks import KINDS
from tallskinny_np.losses import LOSSES

from tallskinny_np.files import atomic_write_text, describe_os_error, json_text

from .checks import check_all, draw_batch
from .fd import METHODS

def prog():
    """The program's name as it was run: the installed script ``tallskinny-verify``, or
    ``python -m verify`` from a checkout."""
    if os.path.basename(sys.argv[0]) == "tallskinny-verify":
        return "tallskinny-verify"
    return "python -m verify"


def positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {text}")
    return value


def parser():
    p = argparse.ArgumentParser(prog=prog(), description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=positive, default=5,
                   help="affine layers L, the loss layer included (>= 2; default 5)")
    p.add_argument("--width", type=positive, default=4, help="hidden width (default 4)")
    p.add_argument("--batch", type=positive, default=3, help="batch size B (default 3)")
    p.add_argument("--inputs", type=positive, default=5, help="input size n_0 (default 5)")
    p.add_argument("--classes", type=positive, default=3,
                   help="classes n_L, or outputs for --loss mse (default 3)")
    p.add_argument("--activation", choices=sorted(ACTIVATIONS), default="tanh",
                   help="hidden activation (default tanh)")
    p.add_argument("--loss", choices=LOSSES, default="cross_entropy",
                   help="the loss layer's loss (default cross_entropy)")
    p.add_argument("--residual", action=argparse.BooleanOptionalAction, default=False,
                   help="hidden layers of equal widths add their input (default: "
                        "--no-residual)")
    p.add_argument("--bias", action=argparse.BooleanOptionalAction, default=True,
                   help="biases in every layer (default: --bias)")
    p.add_argument("--kind", choices=KINDS, default="hessian",
                   help="curvature checked: the Hessian or the Gauss-Newton matrix "
                        "(default hessian)")
    p.add_argument("--damping", type=float, default=0.1,
                   help="eps of H + eps I (default 0.1)")
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                   help="precision of the structured computation (default float64)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the weights, the batch and the labels (default 0)")
    p.add_argument("--gain", type=float, default=1.0,
                   help="weights ~ N(0, gain^2 / fan_in) (default 1)")
    p.add_argument("--method", choices=METHODS, default="complex-step",
                   help="how the independent dense H is differentiated "
                        "(default complex-step)")
    p.add_argument("--json", metavar="PATH", help="also write the report as JSON to PATH "
                                                  "(its folder must exist)")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    folder = os.path.dirname(os.path.abspath(args.json)) if args.json else None
    if folder and not os.path.isdir(folder):
        print(f"{prog()}: error: --json {args.json}: the folder {folder} does not exist",
              file=sys.stderr)
        return 2
    sizes = [args.inputs] + [args.width] * (args.layers - 1) + [args.classes]
    try:
        net = MLP(sizes, activation=args.activation, bias=args.bias, dtype=args.dtype,
                  loss=args.loss, residual=args.residual)
        params = net.init_params(seed=args.seed, gain=args.gain)
        X, y = draw_batch(net, params, np.random.default_rng(args.seed), args.batch)
        report = check_all(net, params, X, y, kind=args.kind, damping=args.damping,
                           method=args.method)
    except ValueError as e:
        print(f"{prog()}: error: {e}", file=sys.stderr)
        return 2
    print(report)
    if args.json:
        # json_text turns NumPy scalars (float32 errors of a float32 run) into numbers;
        # the file is replaced whole, never left truncated.
        try:
            atomic_write_text(args.json, json_text(report.to_dict(), allow_nan=False,
                                                   indent=1) + "\n")
        except OSError as e:
            print(f"{prog()}: error: --json {describe_os_error(e)}", file=sys.stderr)
            return 2
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
