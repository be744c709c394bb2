"""Certificates for the structured solves and eigenvalue counts (docs/math.md section 7).

Every quantity here needs only the exact O(L) product ``v -> (H + shift I) v`` and the
solve of a factorization, so it applies to every solver and to NumPy and CuPy alike.

- :func:`backward_errors`: per column, an upper bound on the normwise backward error
  ``||b - A x|| / (||A|| ||x|| + ||b||)`` from the residual and a lower bound on ``||A||``;
  :func:`backward_errors_of_h` makes it one against the exact H, from a bound on the
  residual's own error: :func:`residual_rounding` (from the bound of
  :func:`tallskinny_np.products.hvp_rounding` on the product's rounding) or
  :func:`accurate_residual` (the residual again, in :class:`DoubleWord` arithmetic);
  :func:`product_rounding` is the model for the columns where neither proves anything.
- :func:`factor_distance`: an estimate of ``||I - A F^{-1}||_2`` for a factorization F of A;
  below 1 it proves that A and F have the same inertia (docs/math.md section 7.3).

The Lanczos interval that bounds ``||H + s I||`` from below and the GMRES of GMRES-based
refinement are in :mod:`tallskinny_np.krylov`.
"""
import numpy as np
from numba import njit

from .backend import array_module
from .deprecation import moved
from .krylov import random_start
from .products import gamma, hvp, hvp_rounding
from .running_error import hvp_rounding_normwise

__getattr__ = moved(__name__, {"gmres": "tallskinny_np.krylov",
                               "lanczos_interval": "tallskinny_np.krylov"})

BOUND_FLOOR = 1000
"""The backward-error bound is ``u * max(n, BOUND_FLOOR)``: dense LU with partial pivoting
lands at a few u; the floor leaves room for the rounding of the O(L) product itself, which
reaches 4e3 u relative to ``||H|| ||x||`` where large terms cancel (docs/math.md
section 7.1)."""


PRODUCT_ROUNDING = 400
"""The model of the O(L) product's rounding, for the columns whose figure cannot be proved
(docs/math.md eq. (7.3g)): ``||fl(H x) - H x|| <= PRODUCT_ROUNDING u ||H|| ||x||``, about
three times the largest gap measured between a residual-based figure and the backward
error against the verifier's dense H (162 u); it also leaves 600 u of the bound's floor
to the residual, at which refinement and the fallbacks aim."""


def product_rounding(X, B, shift, norm, dtype):
    """Per column, what the model of the product's rounding adds to the backward error of
    x for ``A = H + shift I`` (docs/math.md eq. (7.3g)): ``c u ||H|| ||x|| / (||A|| ||x||
    + ||b||)`` with c :data:`PRODUCT_ROUNDING`, bounded without an upper bound on
    ``||H||`` by ``c u max(1, (nu + |shift|) ||x|| / (nu ||x|| + ||b||))`` for any lower
    bound ``nu <= ||A||`` (``||H|| <= ||A|| + |shift|``, and the ratio is monotone in
    ``||A||``)."""
    x, b = column_norms(X), column_norms(B)
    den = norm * x + b
    ratio = np.divide((norm + abs(shift)) * x, den, out=np.full_like(x, np.inf),
                      where=den > 0)
    u = float(np.finfo(dtype).eps / 2)
    return PRODUCT_ROUNDING * u * np.maximum(1.0, np.where(x > 0, ratio, 1.0))


def residual_rounding(P, E, X, shift, u):
    """A componentwise bound on ``|r - (b - A x)|`` for the residual ``r = fl(b - fl(H x)
    - shift x)`` computed with a product bounded by ``(P, E)`` of
    :func:`tallskinny_np.products.hvp_rounding` in an arithmetic of unit roundoff u,
    apart from the last subtraction's ``gamma_1 |r|`` (docs/math.md eq. (7.3d)):
    ``E + gamma_2 P + gamma_3 |shift| |x|``, float64 ``(n, k)`` (``gamma_3``: in float32
    the shift itself is rounded before it multiplies x)."""
    xp = array_module(X)
    return E + gamma(2, u) * P + gamma(3, u) * abs(shift) * xp.abs(X).astype(np.float64)


def residual_rounding_normwise(p, e, X, shift, u):
    """Per column, a bound on ``||r - (b - A x)||`` for the residual ``r = fl(b - fl(H x)
    - shift x)`` computed with a product bounded by ``(p, e)`` of
    :func:`tallskinny_np.running_error.hvp_rounding_normwise`, apart from the last
    subtraction's ``gamma_1 ||r||``: eq. (7.3d) in norms, ``e + gamma_2 p + gamma_3
    |shift| ||x||``."""
    return e + gamma(2, u) * p + gamma(3, u) * abs(shift) * column_norms(X)


def accurate_residual(blocks, xs, B, shift, join, normwise=False):
    """``(r, e)``: the residual ``b - (H + shift I) x`` of the columns of X (``xs`` their
    per-layer split, ``join`` its inverse) computed with :func:`tallskinny_np.products.hvp`
    in float64 for a float32 network and in double-word arithmetic
    (:class:`DoubleWord`) for a float64 one, and per column a bound e on the norm of its
    error apart from the last rounding's ``gamma_1 ||r||`` (docs/math.md eq. (7.3e)):
    that of the componentwise bound of :func:`residual_rounding`, or with ``normwise``
    the smaller of it and the normwise one of :func:`residual_rounding_normwise`. One
    product at about 40 times the flops of the working one."""
    xp = array_module(B)
    if xs[0].dtype != np.float64:
        xs = [x.astype(np.float64) for x in xs]
        u = float(np.finfo(np.float64).eps / 2)
        X = join(xs)
        HX = join(hvp(blocks, xs, _compiled=False))
        R = B.astype(np.float64) - (HX + shift * X)
        P, E = (join(v) for v in hvp_rounding(blocks, xs, u))
        e = column_norms(residual_rounding(P, E, X, shift, u))
        if normwise:
            e = np.minimum(e, residual_rounding_normwise(
                *hvp_rounding_normwise(blocks, xs, u), X, shift, u))
        return R.astype(B.dtype), e + gamma(1, u) * column_norms(R)
    u = DoubleWord.UNIT
    HX = join_words(join, hvp(blocks, [DoubleWord(x, xp.zeros_like(x)) for x in xs],
                              _compiled=False))
    X = join(xs)
    R = (DoubleWord(B, xp.zeros_like(B)) - DoubleWord.product(X, float(shift))) - HX
    P, E = (join(v) for v in hvp_rounding(blocks, xs, u))
    # the two subtractions round in double words, as the product's own sums
    e = column_norms(E + gamma(2, u) * (P + abs(shift) * xp.abs(X) + xp.abs(B)))
    if normwise:
        p, e_n = hvp_rounding_normwise(blocks, xs, u)
        e = np.minimum(e, e_n + gamma(2, u) * (p + abs(shift) * column_norms(X)
                                               + column_norms(B)))
    return R.hi + R.lo, e


def backward_errors_of_h(eta, e, X, B, norm, dtype):
    """Per column, a bound on the normwise backward error ``||b - A x|| / (||A|| ||x|| +
    ||b||)`` against the exact H (docs/math.md eq. (7.3f)), from ``eta``, the
    :func:`backward_errors` of the residual r as computed, and per column a bound e on
    ``||r - (b - A x)||`` apart from ``gamma_1 ||r||`` (:func:`residual_rounding`'s norms,
    :func:`residual_rounding_normwise`, :func:`accurate_residual`); ``norm`` a lower bound
    on ``||A||``. The norms themselves are computed to a factor ``1 + gamma_{2n+8}``,
    which is applied."""
    u = float(np.finfo(dtype).eps / 2)
    x, b = column_norms(X), column_norms(B)
    slack = 1 + gamma(2 * X.shape[0] + 8, u)
    den = norm * x + b
    e = np.where(np.isnan(e), np.inf, e)  # a bound that overflowed into nan bounds nothing
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):  # inf stays inf
        rho = np.where(e > 0, slack * e / den, 0.0)
        eta = slack * eta
        t = (gamma(1, u) * eta + rho) / (1 - gamma(1, u) * eta)
        return np.where(np.isfinite(eta), eta + (1 + eta) * t, np.inf)


def backward_error_bound(n, dtype):
    """The certified bound on the normwise backward error: ``u max(n, BOUND_FLOOR)``."""
    return float(np.finfo(dtype).eps / 2 * max(n, BOUND_FLOOR))


def residual_bound(n, dtype):
    """The residual's share of :func:`backward_error_bound`, at which a solve stops: the
    model of the product's rounding (:data:`PRODUCT_ROUNDING` u) takes the rest."""
    return backward_error_bound(n, dtype) - PRODUCT_ROUNDING * float(np.finfo(dtype).eps / 2)


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


def _two_sum(a, b):
    """Knuth's TwoSum: ``s + t = a + b`` exactly, ``s = fl(a + b)``."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _two_prod(a, b):
    """Dekker's TwoProduct: ``p + t = a b`` exactly, ``p = fl(a b)`` (no FMA needed), with
    Veltkamp's split of each factor into two halves of 26 bits (``2^27 + 1``)."""
    p = a * b
    c = 134217729.0 * a
    ah = c - (c - a)
    c = 134217729.0 * b
    bh = c - (c - b)
    al, bl = a - ah, b - bh
    return p, al * bl - (((p - ah * bh) - al * bh) - ah * bl)


# The same arithmetic on scalars, compiled, for the compiled matrix product.
_word_two_sum = njit(cache=True, inline="always")(_two_sum)
_word_two_prod = njit(cache=True, inline="always")(_two_prod)


class DoubleWord:
    """A float64 array as the unevaluated sum ``hi + lo``, ``|lo| <= u |hi|``, with what
    the array-module products of :func:`tallskinny_np.products.hvp` ask of a vector:
    sums, differences, products and matrix products with float64 arrays, division by a
    number, sums over an axis, transposes, reshapes, slices (docs/math.md eq. (7.3e)).

    Each operation is exact but for the rounding of the low parts, so that its error
    is at most :attr:`UNIT` times the same operation on absolute values (the sloppy
    double-word sum: ``gamma_2`` of ``|t| + |lo_a| + |lo_b|``, each at most ``u`` times
    the operands; Joldes, Muller and Popescu 2017): the model of
    :func:`tallskinny_np.products.hvp_rounding` with ``u`` :attr:`UNIT`, about ``10 u^2``.
    Products and sums of more than two terms go by TwoProduct and a pairwise tree of
    these sums (a matrix product on NumPy: by the same sums in order, compiled). Outside
    the model: operands beyond ``2^996`` (the split overflows) and products that
    underflow."""
    UNIT = 10 * (np.finfo(np.float64).eps / 2) ** 2
    COMPILED = True
    """Whether matrix products of NumPy arrays run by the compiled :func:`_word_matmul`
    (False: by the array-module code of CuPy, so that it is tested on the CPU)."""
    __array_ufunc__ = None                 # NumPy's and CuPy's operators defer to ours

    def __init__(self, hi, lo):
        self.hi, self.lo = hi, lo

    @classmethod
    def _normal(cls, hi, t):
        return cls(*_two_sum(hi, t))

    @classmethod
    def product(cls, a, b):
        """``a b`` of two float64 operands, exactly."""
        return cls._normal(*_two_prod(a, b))

    shape = property(lambda self: self.hi.shape)
    ndim = property(lambda self: self.hi.ndim)
    dtype = property(lambda self: self.hi.dtype)

    def transpose(self, *axes):
        return DoubleWord(self.hi.transpose(*axes), self.lo.transpose(*axes))

    def reshape(self, *shape):
        return DoubleWord(self.hi.reshape(*shape), self.lo.reshape(*shape))

    def __getitem__(self, key):
        return DoubleWord(self.hi[key], self.lo[key])

    def __setitem__(self, key, value):
        self.hi[key], self.lo[key] = value.hi, value.lo

    def __add__(self, other):
        if not isinstance(other, DoubleWord):
            other = DoubleWord(other, 0.0)
        s, t = _two_sum(self.hi, other.hi)
        return DoubleWord._normal(s, t + (self.lo + other.lo))

    __radd__ = __add__

    def __neg__(self):
        return DoubleWord(-self.hi, -self.lo)

    def __sub__(self, other):
        return self + (-other)

    def __rsub__(self, other):
        return (-self) + other

    def __mul__(self, a):
        if isinstance(a, DoubleWord):
            raise TypeError("a product of two double words is not needed here")
        p, t = _two_prod(self.hi, a)
        return DoubleWord._normal(p, t + self.lo * a)

    __rmul__ = __mul__

    def __truediv__(self, d):
        q = self.hi / d
        p, t = _two_prod(q, d)
        return DoubleWord._normal(q, ((self.hi - p) - t + self.lo) / d)

    def __matmul__(self, A):
        if self.COMPILED and array_module(self.hi) is np:
            return self._compiled_matmul(A.transpose(*range(A.ndim - 2), -1, -2),
                                         transposed=True)
        return (self[..., :, :, None] * A[..., None, :, :]).sum(axis=-2)

    def __rmatmul__(self, A):
        if self.COMPILED and array_module(self.hi) is np:
            return self._compiled_matmul(A, transposed=False)
        return (self[..., None, :, :] * A[..., :, :, None]).sum(axis=-2)

    def _compiled_matmul(self, A, transposed):
        """``A @ self`` (``self @ A^T`` when ``transposed``) on NumPy by
        :func:`_word_matmul`: the same products and double-word sums, one after the other
        (as many in a row as the tree's or fewer), without NumPy's temporaries."""
        V = self.transpose(*range(self.ndim - 2), -1, -2) if transposed else self
        batch = np.broadcast_shapes(A.shape[:-2], V.shape[:-2])
        (M, N), r = A.shape[-2:], V.shape[-1]
        stack = lambda a, shape: np.ascontiguousarray(
            np.broadcast_to(a, batch + shape)).reshape((-1,) + shape)
        hi, lo = _word_matmul(stack(A, (M, N)), stack(V.hi, (N, r)), stack(V.lo, (N, r)))
        out = DoubleWord(hi.reshape(batch + (M, r)), lo.reshape(batch + (M, r)))
        return out.transpose(*range(out.ndim - 2), -1, -2) if transposed else out

    def sum(self, axis, keepdims=False):
        """The sum over ``axis`` by a pairwise tree of double-word sums."""
        xp = array_module(self.hi)
        hi, lo = xp.moveaxis(self.hi, axis, 0), xp.moveaxis(self.lo, axis, 0)
        while hi.shape[0] > 1:
            half = hi.shape[0] // 2
            s = DoubleWord(hi[:half], lo[:half]) + DoubleWord(hi[half:2 * half],
                                                             lo[half:2 * half])
            hi = xp.concatenate([s.hi, hi[2 * half:]])
            lo = xp.concatenate([s.lo, lo[2 * half:]])
        if keepdims:
            return DoubleWord(xp.moveaxis(hi, 0, axis), xp.moveaxis(lo, 0, axis))
        return DoubleWord(hi[0], lo[0])


def join_words(join, parts):
    """:meth:`MLP.join` of per-layer double words."""
    return DoubleWord(join([p.hi for p in parts]), join([p.lo for p in parts]))


@njit(cache=True)
def _word_matmul(A, Vh, Vl):
    """``A @ (Vh + Vl)`` for A ``(b, M, N)`` and the double words ``(b, N, r)``, by
    :class:`DoubleWord`'s product and sum, accumulated in order: ``(hi, lo)``."""
    nb, M, N = A.shape
    r = Vh.shape[2]
    hi, lo = np.empty((nb, M, r)), np.empty((nb, M, r))
    for i in range(nb):
        for j in range(M):
            for c in range(r):
                sh, sl = 0.0, 0.0
                for k in range(N):
                    a = A[i, j, k]
                    p, t = _word_two_prod(Vh[i, k, c], a)
                    ph, pl = _word_two_sum(p, t + Vl[i, k, c] * a)
                    s, t = _word_two_sum(sh, ph)
                    sh, sl = _word_two_sum(s, t + (sl + pl))
                hi[i, j, c], lo[i, j, c] = sh, sl
    return hi, lo
