"""Activations and their first two derivatives (docs/math.md section 2.1, eqs. (2.1)-(2.3),
(2.3a)-(2.3e)): the activation protocol and the registry of built-in activations.

An activation is an :class:`Activation` record: its name, and its value ``sigma``, first
derivative ``sigma'`` and second derivative ``sigma''`` as vectorized functions of a
pre-activation array U (NumPy, or CuPy on the GPU path; the result has U's shape and
dtype), and the points ``kinks`` where a piecewise-linear activation is not
differentiable. :data:`ACTIVATIONS` is the one registry of the built-in ones: the
command-line programs' choices, the verifier, the tests' grids and the table of
docs/math.md come from it. A user's own activation is an :class:`Activation` passed to
:class:`tallskinny_np.MLP`, which checks its derivatives by :func:`check_activation`.

Numerics. The logistic function (sigmoid, softplus's and silu's derivatives) goes through
``e = exp(-|U|)``, which lies in [0, 1]: nothing overflows at any finite U, and the tails
keep their relative accuracy, where ``0.5 (1 + tanh(U / 2))`` rounds to 0 as soon as
``exp(-|U|)`` drops below the unit round-off (``|U|`` about 17 in float32, 37 in
float64). tanh's derivatives ``1 - tanh(U)^2`` are accurate to round-off relative to
their maximum, 1, but not in the tails. gelu's Gaussian density is evaluated at U clipped
to ``[-40, 40]``, beyond which it is 0 in both precisions, so that ``U^2`` never overflows
into ``0 * inf``.

At a kink (relu and leaky_relu at exactly 0) the derivative is torch's: ``relu'(0) = 0``
and ``leaky_relu'(0)`` the negative slope; the second derivative of both is 0 everywhere.
elu's second derivative jumps at 0, where it takes the left piece, ``e^0 = 1``.
"""
import math
from typing import Callable, NamedTuple

import numpy as np
import scipy.special

from .backend import array_module

LEAKY_SLOPE = 0.01
"""leaky_relu's negative slope (torch's default)."""


class Activation(NamedTuple):
    """An activation and its first two derivatives (docs/math.md section 2.1).

    ``f``, ``df`` and ``d2f`` map a pre-activation array U to ``sigma(U)``,
    ``sigma'(U)`` and ``sigma''(U)``, each of U's shape and dtype; ``kinks`` lists the
    points where a piecewise-linear activation is not differentiable (the verifier keeps
    its test points away from them); ``values``, optional, gives all three at once where
    they share their work (tanh, the logistic function, Phi), as the built-in ones do.

    Examples
    --------
    >>> import numpy as np
    >>> from tallskinny_np import MLP, Activation
    >>> cube = Activation("cube", lambda u: u ** 3, lambda u: 3 * u ** 2, lambda u: 6 * u)
    >>> MLP([3, 4, 2], activation=cube).activations[0].name
    'cube'
    """
    name: str
    f: Callable      # sigma(U)
    df: Callable     # sigma'(U)
    d2f: Callable    # sigma''(U)
    kinks: tuple = ()
    values: Callable | None = None   # U -> (f, df, d2f) at once, sharing their work


def _logistic(U):
    """``(s, s', s'')`` of the logistic function ``s = 1 / (1 + exp(-U))``, eq. (2.2):
    ``s = 1 / (1 + e)`` for ``U >= 0`` and ``e / (1 + e)`` below, ``s' = e / (1 + e)^2``,
    ``s'' = s' (1 - 2s) = -sign(U) s' (1 - e) / (1 + e)``, with ``e = exp(-|U|)``."""
    xp = array_module(U)
    e = xp.exp(-xp.abs(U))
    inv = 1 / (1 + e)
    pos = U >= 0
    s = xp.where(pos, inv, e * inv)
    s1 = e * inv * inv
    # 1 - e = -expm1(-|U|) keeps s'' accurate near 0, where 1 - 2s cancels
    s2 = xp.where(pos, s1, -s1) * (xp.expm1(-xp.abs(U)) * inv)
    return s, s1, s2


def _tanh(U):
    """``(t, 1 - t^2, -2 t (1 - t^2))`` with ``t = tanh(U)``, eq. (2.1)."""
    t = array_module(U).tanh(U)
    s1 = 1 - t * t
    return t, s1, -2 * t * s1


def _softplus(U):
    # softplus(u) = max(u, 0) + log1p(exp(-|u|)); its derivatives are the logistic's
    xp = array_module(U)
    return xp.maximum(U, 0) + xp.log1p(xp.exp(-xp.abs(U)))


def _erfc(U):
    xp = array_module(U)
    if xp is np:
        # SciPy has no long-double erfc: the wide evaluation (evaluation.py) takes float64's
        return scipy.special.erfc(U.astype(np.float64) if U.dtype.itemsize > 8 else U
                                  ).astype(U.dtype, copy=False)
    import cupyx.scipy.special
    return cupyx.scipy.special.erfc(U)


def _normal_cdf(U):
    """``Phi(U) = erfc(-U / sqrt(2)) / 2``, accurate in the left tail (no ``1 + erf``)."""
    return 0.5 * _erfc(U * -(1 / math.sqrt(2)))


def _normal_pdf(U):
    """``phi(U)`` at U clipped to [-40, 40], where it is 0 beyond in both precisions."""
    xp = array_module(U)
    V = xp.clip(U, -40, 40)
    return xp.exp(-0.5 * V * V) * (1 / math.sqrt(2 * math.pi))


def _gelu_values(U):
    """gelu and its derivatives from one evaluation of Phi and phi, eq. (2.3c)."""
    xp = array_module(U)
    V = xp.clip(U, -40, 40)
    cdf, pdf = _normal_cdf(U), _normal_pdf(V)
    return U * cdf, cdf + U * pdf, pdf * (2 - V * V)


def _silu_values(U):
    """silu and its derivatives from one evaluation of the logistic function, eq. (2.3d)."""
    s, s1, s2 = _logistic(U)
    return U * s, s + U * s1, 2 * s1 + U * s2


def _part(values, i):
    """The i-th of the three values of ``values`` (an activation's ``values``), alone."""
    return lambda U: values(U)[i]


def _zeros(U):
    return array_module(U).zeros_like(U)


def _ones(U):
    return array_module(U).ones_like(U)


def _relu(U):
    return array_module(U).maximum(U, 0)


def _relu_d1(U):
    """1 above 0, 0 at and below it (torch's ``relu'(0) = 0``)."""
    return (U > 0).astype(U.dtype)


def _leaky_relu(U):
    return array_module(U).where(U > 0, U, U * LEAKY_SLOPE)


def _leaky_relu_d1(U):
    """1 above 0, the negative slope at and below it (torch's convention at 0)."""
    return array_module(U).where(U > 0, 1, LEAKY_SLOPE).astype(U.dtype)


def _identity(U):
    return U.copy()


def _elu(U):
    # expm1 keeps the relative accuracy near 0; its argument is never positive
    xp = array_module(U)
    return xp.where(U > 0, U, xp.expm1(xp.minimum(U, 0)))


def _elu_d1(U):
    """1 above 0, ``e^u`` at and below it (the left piece at 0, as torch)."""
    xp = array_module(U)
    return xp.where(U > 0, 1, xp.exp(xp.minimum(U, 0))).astype(U.dtype)


def _elu_d2(U):
    """0 above 0, ``e^u`` at and below it."""
    xp = array_module(U)
    return xp.where(U > 0, 0, xp.exp(xp.minimum(U, 0))).astype(U.dtype)


ACTIVATIONS = {a.name: a for a in (
    Activation("tanh", lambda U: array_module(U).tanh(U), _part(_tanh, 1), _part(_tanh, 2),
               values=_tanh),
    Activation("sigmoid", _part(_logistic, 0), _part(_logistic, 1), _part(_logistic, 2),
               values=_logistic),
    Activation("softplus", _softplus, _part(_logistic, 0), _part(_logistic, 1),
               values=lambda U: (_softplus(U),) + _logistic(U)[:2]),
    Activation("identity", _identity, _ones, _zeros),
    Activation("relu", _relu, _relu_d1, _zeros, kinks=(0.0,)),
    Activation("leaky_relu", _leaky_relu, _leaky_relu_d1, _zeros, kinks=(0.0,)),
    Activation("gelu", _part(_gelu_values, 0), _part(_gelu_values, 1),
               _part(_gelu_values, 2), values=_gelu_values),
    Activation("silu", _part(_silu_values, 0), _part(_silu_values, 1),
               _part(_silu_values, 2), values=_silu_values),
    Activation("elu", _elu, _elu_d1, _elu_d2, kinks=(0.0,)),
)}
"""The built-in activations by name (docs/math.md section 2.1, table (2.3a))."""


def evaluate(act, U):
    """``(sigma(U), sigma'(U), sigma''(U))`` of the :class:`Activation` act (eq. (2.1)
    and section 2.1's table), each of U's dtype."""
    values = (act.values(U) if act.values is not None
              else (act.f(U), act.df(U), act.d2f(U)))
    return tuple(v.astype(U.dtype, copy=False) for v in values)


def value(act, U):
    """``sigma(U)`` of the :class:`Activation` act, of U's dtype (eq. (1.1))."""
    return act.f(U).astype(U.dtype, copy=False)


def activation(spec):
    """The :class:`Activation` of a registered name or of an :class:`Activation` record
    (checked by :func:`check_activation`).

    Raises
    ------
    ValueError
        For an unknown name, a value that is neither, or a record whose derivatives
        disagree with central differences (naming the activation and the derivative).
    """
    if isinstance(spec, Activation):
        check_activation(spec)
        return spec
    try:
        return ACTIVATIONS[spec]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown activation {spec!r}; choose one of {sorted(ACTIVATIONS)} or pass an "
            f"Activation(name, f, df, d2f)"
        ) from None


CHECK_POINTS = np.linspace(-6, 6, 121) + 0.0123
"""Where :func:`check_activation` compares derivatives with central differences: a grid
over [-6, 6] shifted off the integers (and so off 0, the usual kink)."""
CHECK_STEP = 1e-4
CHECK_RTOL = 1e-6


def check_activation(act):
    """Check a user's :class:`Activation` against central differences (docs/math.md
    section 2.1): at each point u of :data:`CHECK_POINTS` farther than ``2 h`` from a
    declared kink, with ``h = CHECK_STEP max(1, |u|)``, ``D = (g(u + h) - g(u - h)) / 2h``
    must agree with the claimed derivative d of g (``g = f, d = df`` and
    ``g = df, d = d2f``) to

        |d(u) - D(u)| <= CHECK_RTOL max_u' |D(u')| + 1e3 eps_mach max_u' |g(u' +- h')| / h

    the first term for the truncation error ``h^2 |g^(3)| / 6`` (about 2e-9 |g^(3)|), the
    second for the rounding of g's values, amplified by ``1 / h``. A wrong derivative (a
    missing factor or term) misses by a size comparable with the derivative itself.

    Raises
    ------
    ValueError
        For a derivative that fails, or a function whose result is not finite or not of
        the input's shape, naming the activation and the function.
    """
    if not (isinstance(act.name, str) and act.name):
        raise ValueError(f"an Activation's name must be a non-empty string; got {act.name!r}")
    for label in ("f", "df", "d2f"):
        if not callable(getattr(act, label)):
            raise ValueError(f"activation {act.name!r}: {label} must be a function")
    u = CHECK_POINTS
    for kink in act.kinks:
        u = u[np.abs(u - kink) > 2 * CHECK_STEP * max(1.0, abs(kink)) + 1e-12]
    h = CHECK_STEP * np.maximum(1.0, np.abs(u))
    for g, d, name in (("f", "df", "first derivative df"),
                       ("df", "d2f", "second derivative d2f")):
        up, down, claimed = (_values(act, fn, x) for fn, x in
                             ((g, u + h), (g, u - h), (d, u)))
        D = (up - down) / ((u + h) - (u - h))
        size = max(np.abs(up).max(), np.abs(down).max())
        tol = CHECK_RTOL * np.abs(D).max() + 1e3 * np.finfo(np.float64).eps * size / h
        bad = np.abs(claimed - D) > tol
        if bad.any():
            i = int(np.argmax(np.abs(claimed - D) - tol))
            raise ValueError(
                f"activation {act.name!r}: its {name} disagrees with central differences "
                f"at u = {u[i]:.4g}: {claimed[i]:.6g} against {D[i]:.6g} (tolerance "
                f"{tol[i]:.2g})")


def _values(act, label, u):
    """``act.<label>(u)`` as a finite float64 array of u's shape, else a ValueError naming
    the activation and the function."""
    try:
        out = np.asarray(getattr(act, label)(u), dtype=np.float64)
    except Exception as e:
        raise ValueError(f"activation {act.name!r}: {label} raised {type(e).__name__}: "
                         f"{e}") from None
    if out.shape != u.shape or not np.all(np.isfinite(out)):
        raise ValueError(f"activation {act.name!r}: {label} must return finite values of "
                         f"its input's shape; got shape {out.shape}")
    return out
