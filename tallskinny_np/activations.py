"""Smooth activations and their first two derivatives (docs/math.md section 2.1,
eqs. (2.1)-(2.3)).

Each activation maps a pre-activation array U to ``(sigma(U), sigma'(U), sigma''(U))``.
The functions take the array module ``xp`` (numpy or cupy) so that one code path serves
both backends.

The logistic function (sigmoid, and softplus's derivatives) goes through
``e = exp(-|U|)``, which lies in [0, 1]: nothing overflows at any finite U, and the tails
keep their relative accuracy, where ``0.5 (1 + tanh(U / 2))`` rounds to 0 as soon as
``exp(-|U|)`` drops below the unit round-off (``|U|`` about 17 in float32, 37 in
float64). tanh's derivatives ``1 - tanh(U)^2`` are accurate to round-off relative to
their maximum, 1, but not in the tails.
"""


def _sigmoid(xp, U):
    """``(s, s', s'')`` of the logistic function ``s = 1 / (1 + exp(-U))``:
    ``s = 1 / (1 + e)`` for ``U >= 0`` and ``e / (1 + e)`` below, ``s' = e / (1 + e)^2``,
    ``s'' = s' (1 - 2s) = -sign(U) s' (1 - e) / (1 + e)``, with ``e = exp(-|U|)``."""
    e = xp.exp(-xp.abs(U))
    inv = 1 / (1 + e)
    pos = U >= 0
    s = xp.where(pos, inv, e * inv)
    s1 = e * inv * inv
    # 1 - e = -expm1(-|U|) keeps s'' accurate near 0, where 1 - 2s cancels
    s2 = xp.where(pos, s1, -s1) * (xp.expm1(-xp.abs(U)) * inv)
    return s, s1, s2


def _tanh(xp, U):
    t = xp.tanh(U)
    s1 = 1 - t * t
    return t, s1, -2 * t * s1


def _softplus(xp, U):
    # softplus(u) = max(u, 0) + log1p(exp(-|u|)); its derivatives are the logistic's
    s, s1, _ = _sigmoid(xp, U)
    return xp.maximum(U, 0) + xp.log1p(xp.exp(-xp.abs(U))), s, s1


ACTIVATIONS = {"tanh": _tanh, "sigmoid": _sigmoid, "softplus": _softplus}


def activation(name):
    """The function ``(xp, U) -> (sigma, sigma', sigma'')`` for an activation name."""
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}"
        ) from None
