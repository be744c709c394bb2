"""Certificates for the structured solves and eigenvalue counts (docs/math.md section 7).

Every quantity here needs only the exact O(L) product ``v -> (H + shift I) v`` and the
solve of a factorization, so it applies to every solver and to NumPy and CuPy alike.

- :func:`backward_errors`: per column, an upper bound on the normwise backward error
  ``||b - A x|| / (||A|| ||x|| + ||b||)`` from the residual and a lower bound on ``||A||``;
  :func:`product_rounding` adds what the rounding of the product that computed the
  residual can hide.
- :func:`factor_distance`: an estimate of ``||I - A F^{-1}||_2`` for a factorization F of A;
  below 1 it proves that A and F have the same inertia (docs/math.md section 7.3).

The Lanczos interval that bounds ``||H + s I||`` from below and the GMRES of GMRES-based
refinement are in :mod:`tallskinny_np.krylov`.
"""
import numpy as np

from .backend import array_module
from .deprecation import moved
from .krylov import random_start

__getattr__ = moved(__name__, {"gmres": "tallskinny_np.krylov",
                               "lanczos_interval": "tallskinny_np.krylov"})

BOUND_FLOOR = 1000
"""The backward-error bound is ``u * max(n, BOUND_FLOOR)``: dense LU with partial pivoting
lands at a few u; the floor leaves room for the rounding of the O(L) product itself, which
reaches 4e3 u relative to ``||H|| ||x||`` where large terms cancel (docs/math.md
section 7.1)."""


PRODUCT_ROUNDING = 400
"""The model of the O(L) product's rounding in the reported backward error:
``||fl(H x) - H x|| <= PRODUCT_ROUNDING u ||H|| ||x||``. The largest gap measured between a
certified solve's residual-based figure and its backward error against the verifier's
dense H was 162 u (softplus, depth 20, gain 3), 71 u on the certified grid of
tests/test_certified.py; 400 covers both with a margin and leaves 600 u of the bound's
floor to the residual (docs/math.md section 7.1)."""


def product_rounding(X, B, shift, norm, dtype):
    """Per column, what the rounding of the product adds to the backward error of x for
    ``A = H + shift I``: ``c u ||H|| ||x|| / (||A|| ||x|| + ||b||)`` with c
    :data:`PRODUCT_ROUNDING`, bounded without an upper bound on ``||H||`` by
    ``c u max(1, (nu + |shift|) ||x|| / (nu ||x|| + ||b||))`` for any lower bound
    ``nu <= ||A||`` (``||H|| <= ||A|| + |shift|``, and the ratio is monotone in
    ``||A||``)."""
    x, b = column_norms(X), column_norms(B)
    den = norm * x + b
    ratio = np.divide((norm + abs(shift)) * x, den, out=np.full_like(x, np.inf),
                      where=den > 0)
    u = float(np.finfo(dtype).eps / 2)
    return PRODUCT_ROUNDING * u * np.maximum(1.0, np.where(x > 0, ratio, 1.0))


def backward_error_bound(n, dtype):
    """The certified bound on the normwise backward error: ``u max(n, BOUND_FLOOR)``."""
    return float(np.finfo(dtype).eps / 2 * max(n, BOUND_FLOOR))


def column_norms(A):
    """The 2-norms of A's columns, as a NumPy array of floats; scaled, so that entries
    beyond 1e154 do not overflow the sum of squares."""
    xp = array_module(A)
    scale = xp.abs(A).max(axis=0)
    scale = xp.where(scale > 0, scale, 1)
    with np.errstate(invalid="ignore"):          # an inf column stays inf
        out = xp.linalg.norm(A / scale, axis=0) * scale
    return np.asarray(out.get() if xp is not np else out, dtype=float)


def backward_errors(R, X, B, norm=0.0):
    """Upper bounds, per column, on ``||b - A x|| / (||A|| ||x|| + ||b||)`` for the residual
    ``R = B - A X``. ``norm`` is a lower bound on ``||A||_2``; ``||A x|| = ||b - r||`` is one
    too, so the bound holds with ``norm = 0``, but is then loose when x is dominated by
    directions that A shrinks (ill-conditioned systems)."""
    r, x, b = column_norms(R), column_norms(X), column_norms(B)
    nu = np.maximum(norm, np.divide(column_norms(B - R), x, out=np.zeros_like(x),
                                    where=x > 0))
    den = nu * x + b
    return np.divide(r, den, out=np.where(r > 0, np.inf, 0.0), where=den > 0)


def factor_distance(apply, solve, n, xp, dtype, iterations=6, columns=4, seed=1,
                    stop_above=np.inf):
    """An estimate of ``omega = ||I - A F^{-1}||_2`` by block power iteration on
    ``W^T W``, ``W = I - A F^{-1}`` (A and F symmetric, so ``W^T = I - F^{-1} A``), from
    ``columns`` seeded random starts. Power iteration from a random start underestimates
    the largest singular value by a factor 4 or more (``omega^2`` by 16) only with
    probability below ``0.83 sqrt(n) (1/16)^(iterations - 3/2)`` per start (the estimate
    follows ``iterations - 1`` products with ``W^T W``; Kuczynski and
    Wozniakowski 1992); the caller asks for ``omega < 1/4`` to certify ``omega < 1``. The
    estimates never decrease (Rayleigh quotients of powers of a positive semi-definite
    matrix), so one at least ``stop_above`` is returned at once."""
    V = random_start(n, xp, dtype, seed, min(columns, n))
    estimate = 0.0
    for _ in range(iterations):
        V = V / xp.linalg.norm(V, axis=0)
        WV = V - apply(solve(V))
        WtWV = WV - solve(apply(WV))
        estimate = float(column_norms(WV).max())
        if not np.isfinite(estimate):
            return np.inf
        if estimate >= stop_above:
            return estimate
        V = WtWV
        if not float(column_norms(V).max()) > 0:
            break
    return estimate
