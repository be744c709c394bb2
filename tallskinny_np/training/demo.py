"""``tallskinny-demo``: exact curvature of a tall-skinny MLP on the embedded digits.

The main job on the embedded default (no download): a deep, narrow tanh MLP on a seeded
batch of the standardised 8x8 UCI digits. It prints the network, the loss, the gradient
norm and a central finite-difference check of the gradient, then the time of one ``H v``
(docs/math.md section 3) and of ``(H + eps I)^{-1} g`` for every solver in
:data:`tallskinny_np.curvature.METHODS` (docs/math.md section 4), each checked by its relative
residual ``||(H + eps I) x - g|| / ||g||`` computed with ``H v``. The exit status is 0 when
every check passes, 1 otherwise.
"""
import argparse
import itertools
import time

import numpy as np

from ..activations import ACTIVATIONS
from ..curvature import METHODS, Curvature
from ..errors import SingularPivotError
from ..model import MLP
from .cli import integer, positive_float
from .datasets import channel_statistics, load_digits, standardize, whole

GRAD_CHECK_TOL = 1e-6   # relative error of the directional derivative, float64, step 1e-5
RESIDUAL_TOL = 1e-8     # relative residual of a solve in float64
TIME_BUDGET = 1.0       # seconds: stop repeating a timing once its runs add up to this


def standardised_digits():
    """``(X, y)``: all the embedded digits as float64 rows of 64 pixels, standardised as
    the training pipeline does (:func:`tallskinny_np.training.datasets.standardize`)."""
    images, labels = load_digits()
    images = images[..., None]                      # (N, 8, 8, 1): one colour channel
    mean, std = channel_statistics(whole(images, labels))
    return standardize(images, mean, std, np.float64), labels


def best_time(fn, repeats, budget=None):
    """The shortest wall-clock time of ``fn()`` in seconds, the number of runs and the
    last result: ``repeats`` runs, or fewer (at least one) once they add up to ``budget``
    seconds (default :data:`TIME_BUDGET`)."""
    budget = TIME_BUDGET if budget is None else budget
    times = []
    while len(times) < repeats and sum(times) < budget:
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), len(times), out


def fmt_time(seconds, runs):
    best = f"{seconds * 1e3:.2f} ms" if seconds < 1 else f"{seconds:.2f} s"
    return f"{best:>10} (best of {runs})"


def run_lengths(values):
    """``[520, 72, 72, 90]`` as ``'520, 72 (x2), 90'``."""
    runs = [(v, len(list(group))) for v, group in itertools.groupby(values)]
    return ", ".join(f"{v}" if k == 1 else f"{v} (x{k})" for v, k in runs)


def parser(n_samples):
    p = argparse.ArgumentParser(
        prog="tallskinny-demo",
        description="Gradient, H v and (H + damping I)^{-1} g of a deep, narrow MLP on the "
                    "embedded 8x8 digits, timed and checked (arXiv 2601.06096).")
    p.add_argument("--depth", type=integer(2), default=16,
                   help="number of layers L, the loss layer included (default 16)")
    p.add_argument("--width", type=integer(1), default=8,
                   help="width of the hidden layers (default 8)")
    p.add_argument("--batch", type=integer(1, n_samples), default=16,
                   help=f"samples in the batch, at most {n_samples} (default 16)")
    p.add_argument("--damping", type=positive_float, default=0.1,
                   help="eps in (H + eps I) x = g, > 0 (default 0.1)")
    p.add_argument("--seed", type=integer(0), default=0,
                   help="seed of the weights, the batch and the check direction (default 0)")
    p.add_argument("--activation", choices=sorted(ACTIVATIONS), default="tanh",
                   help="hidden activation (default tanh)")
    p.add_argument("--repeats", type=integer(1), default=3,
                   help=f"timings are the best of this many runs, or of fewer once they "
                        f"add up to {TIME_BUDGET:g} s (default 3)")
    return p


def verdict(ok):
    return "ok" if ok else "FAILED"


def check_gradient(net, params, X, y, g, u, h=1e-5):
    """Print and check ``g . u`` against the central difference of the loss along u."""
    fd = (net.loss(params + h * u, X, y) - net.loss(params - h * u, X, y)) / (2 * h)
    error = abs(g @ u - fd) / abs(fd)
    ok = bool(error < GRAD_CHECK_TOL)
    print(f"grad check     g.u = {g @ u:.10e}, central difference (h = {h:g}) = {fd:.10e}, "
          f"relative error {error:.1e}  {verdict(ok)}")
    return ok


def time_and_check_solve(method, new_curvature, curv, u, eps, repeats):
    """Time ``solve(g, eps, method)``, then a second right-hand side u on the cached
    factors, and check the relative residual of the solution with ``curv.hvp``."""
    g = curv.grad
    # A Curvature keeps its factorization: the first solve of fresh ones (from
    # ``new_curvature()``) times the factorization plus the substitutions.
    fresh = [new_curvature() for _ in range(repeats)]
    first_solves = iter(fresh)
    try:
        t_solve, n_solve, x = best_time(
            lambda: next(first_solves).solve(g, eps, method=method), repeats)
        t_again, n_again, _ = best_time(
            lambda: fresh[n_solve - 1].solve(u, eps, method=method), repeats)
    except SingularPivotError as err:
        print(f"  solve {method:<8} failed: {err}")
        return False
    residual = np.linalg.norm(curv.hvp(x) + eps * x - g) / np.linalg.norm(g)
    ok = bool(residual < RESIDUAL_TOL)
    print(f"  solve {method:<8} factor + solve {fmt_time(t_solve, n_solve)}")
    print(f"        {'':<8} cached factors {fmt_time(t_again, n_again)}")
    print(f"        {'':<8} residual ||(H + {eps:g} I) x - g|| / ||g|| = {residual:.2e}  "
          f"{verdict(ok)}")
    return ok


def main(argv=None):
    X_all, y_all = standardised_digits()
    args = parser(len(X_all)).parse_args(argv)
    rng = np.random.default_rng(args.seed)
    batch = rng.choice(len(X_all), size=args.batch, replace=False)
    X, y = X_all[batch], y_all[batch]
    net = MLP([X.shape[1]] + [args.width] * (args.depth - 1) + [int(y_all.max()) + 1],
              activation=args.activation, bias=True)
    params = net.init_params(seed=args.seed, gain=1.0)

    print("tallskinny-demo: exact curvature of a tall-skinny MLP (arXiv 2601.06096)")
    print(f"network        {net!r}")
    print(f"               L = {net.n_layers} layers, {net.n_params} parameters "
          f"(p_l = {run_lengths(net.layer_params)}), "
          f"a_l = B n_l = {args.batch * args.width} activations per hidden layer")
    print(f"data           {args.batch} of {len(X_all)} standardised 8x8 digits "
          f"(seed {args.seed})")

    def new_curvature():
        return Curvature(net, params, X, y)

    t_blocks, n_blocks, curv = best_time(new_curvature, args.repeats)
    g = curv.grad
    print(f"loss           {curv.loss:.6f}")
    print(f"||grad||       {np.linalg.norm(g):.6e}")

    u = rng.standard_normal(net.n_params)
    u /= np.linalg.norm(u)
    all_ok = check_gradient(net, params, X, y, g, u)

    print(f"timings        wall clock, best of up to {args.repeats} runs")
    print(f"  derivative blocks (Curvature)   {fmt_time(t_blocks, n_blocks)}")
    t_hvp, n_hvp, _ = best_time(lambda: curv.hvp(g), args.repeats)
    print(f"  H v                             {fmt_time(t_hvp, n_hvp)}")
    for method in METHODS:
        all_ok &= time_and_check_solve(method, new_curvature, curv, u, args.damping,
                                       args.repeats)
    print("all checks passed" if all_ok else "SOME CHECKS FAILED")
    return 0 if all_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
