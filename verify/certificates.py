"""The certified figure against the backward error at the exact H, on a grid of deep nets at
high gain: ``python -m verify.certificates [--every N]``.

The reference is the dense H (or GGN) of :mod:`verify.reference`, which shares no code with
the package, by a complex step in complex long double (``verify.dense_hessian(...,
wide=True)``): its rounding is 2^-11 of float64's, so the backward error of a solution
against it is known to about ``u_ld / u = 4.9e-4`` u. For every network of the grid
(activations with a long-double reference, gains 1 and 3, depths 8 and 20, widths 3 and 4,
both kinds and losses, residual layers for tanh and relu, seeds 1 and 2, batch 4, 3
classes or outputs) and shifts ``10, 1e-2, 1e-5`` times ``||H||`` and ``1e-9 ||H||`` beside
an eigenvalue in the middle of the spectrum, two right-hand sides are solved by
``Curvature.solve(..., return_info=True, uncertified="return")`` twice: as the package does
(the figure with the measured rounding of the network's evaluation, docs/math.md eq.
(7.3m)) and without that measurement. Printed: per variant, the columns whose figure is
proved, certified, and below the backward error against the reference, and the smallest
and median ratio of figure to backward error; then each proved column below it. Float64 only; a
platform whose long double is float64 has no reference (exit status 2).
"""
import argparse
import itertools
import sys

import numpy as np

from tallskinny_np import MLP, Curvature, evaluation

from .dense import dense_ggn, dense_hessian

ACTIVATIONS = ("tanh", "sigmoid", "softplus", "relu", "silu", "elu")
SHIFTS = (10.0, 1e-2, 1e-5)
U = np.finfo(np.float64).eps / 2


def grid():
    """The networks: ``(activation, gain, depth, width, kind, loss, residual)``."""
    return [c for c in itertools.product(ACTIVATIONS, (1.0, 3.0), (8, 20), (3, 4),
                                         ("hessian", "ggn"), ("cross_entropy", "mse"),
                                         (False, True))
            if not c[6] or c[0] in ("tanh", "relu")]


def solves(config, seed):
    """Per shift ``(shift / ||H||, {measured: (figure, proved, certified, against the
    reference)})`` for the two columns; the shifts at which a solve raised are left out."""
    activation, gain, depth, width, kind, loss, residual = config
    net = MLP([width] * depth + [3], activation=activation, loss=loss, residual=residual)
    params = net.init_params(seed=seed, gain=gain)
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((4, width))
    y = rng.integers(0, 3, 4) if loss == "cross_entropy" else rng.standard_normal((4, 3))
    dense = (dense_hessian if kind == "hessian" else dense_ggn)(net, params, X, y, wide=True)
    dense = (dense + dense.T) / 2
    w = np.linalg.eigvalsh(dense.astype(np.float64))
    top = np.abs(w).max()
    B = rng.standard_normal((net.n_params, 2))
    middle = w[np.argmin(np.abs(w - np.median(w)))]
    out = []
    for shift in [s * top for s in SHIFTS] + [-middle + 1e-9 * top]:
        row = {}
        for measured in (True, False):
            curv = Curvature(net, params, X, y, kind=kind)
            try:
                x, info = _solve(curv, B, shift, measured)
            except np.linalg.LinAlgError:
                break
            r = (B.astype(dense.dtype) - dense @ x.astype(dense.dtype)
                 - shift * x.astype(dense.dtype)).astype(np.float64)
            true = np.linalg.norm(r, axis=0) / (np.abs(w + shift).max()
                                                * np.linalg.norm(x, axis=0)
                                                + np.linalg.norm(B, axis=0))
            row[measured] = (info.backward_error, info.proved,
                             info.proved & (info.backward_error <= info.bound), true)
        if len(row) == 2:
            out.append((shift / top, row))
    return out


def _solve(curv, B, shift, measured):
    """The solve, without the evaluation's measurement unless ``measured``."""
    if measured:
        return curv.solve(B, shift, return_info=True, uncertified="return")
    wide = evaluation.wide_dtype
    evaluation.wide_dtype = lambda dtype: None
    try:
        return curv.solve(B, shift, return_info=True, uncertified="return")
    finally:
        evaluation.wide_dtype = wide


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m verify.certificates",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--every", type=int, default=1,
                        help="take every N-th network of the grid (default 1: all 256)")
    args = parser.parse_args(argv)
    if args.every < 1:
        parser.error(f"--every must be a positive integer; got {args.every}")
    if not np.finfo(np.longdouble).eps < np.finfo(np.float64).eps:
        print("no reference: long double is float64 on this platform", file=sys.stderr)
        return 2
    columns = {True: [], False: []}
    raised = 0
    for config in grid()[::args.every]:
        for seed in (1, 2):
            done = solves(config, seed)
            raised += len(SHIFTS) + 1 - len(done)
            for shift, row in done:
                for measured, (figure, proved, certified, true) in row.items():
                    columns[measured] += [(config, seed, shift, *c) for c in
                                          zip(figure, proved, certified, true)]
    print(f"{len(grid()[::args.every])} networks x 2 seeds, {raised} solves raised")
    for measured, name in ((True, "as solved"), (False, "without the evaluation")):
        rows = columns[measured]
        proved = [r for r in rows if r[4]]
        below = [r for r in proved if r[3] < r[6]]
        # a column exact against the reference (backward error 0) has no ratio
        ratios = [r[3] / r[6] for r in proved if r[6] > 0]
        print(f"{name}: {len(rows)} columns, {len(proved)} proved, "
              f"{sum(r[5] for r in rows)} certified, {len(below)} proved below the "
              f"backward error against the reference; ratio of figure to it: smallest "
              f"{min(ratios):.3g}, median {np.median(ratios):.3g}")
        for config, seed, shift, figure, _, _, true in below:
            print(f"  {config} seed {seed} shift {shift:.0e} ||H||: figure {figure / U:.4g} u, "
                  f"against the reference {true / U:.4g} u")
    return 0


if __name__ == "__main__":
    sys.exit(main())
