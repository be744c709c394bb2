"""Smooth activations and their first two derivatives (docs/math.md section 2.1,
eqs. (2.1)-(2.3)).

Each activation maps a pre-activation array U to ``(sigma(U), sigma'(U), sigma''(U))``.
The functions take the array module ``xp`` (numpy or cupy) so that one code path serves
both backends.
"""


def _tanh(xp, U):
    t = xp.tanh(U)
    s1 = 1 - t * t
    return t, s1, -2 * t * s1


def _sigmoid(xp, U):
    # 0.5 (1 + tanh(u/2)) is the logistic function without overflow for large |u|.
    s = 0.5 * (1 + xp.tanh(0.5 * U))
    s1 = s * (1 - s)
    return s, s1, s1 * (1 - 2 * s)


def _softplus(xp, U):
    # softplus(u) = max(u, 0) + log1p(exp(-|u|)) is exact and never overflows.
    out = xp.maximum(U, 0) + xp.log1p(xp.exp(-xp.abs(U)))
    s = 0.5 * (1 + xp.tanh(0.5 * U))
    return out, s, s * (1 - s)


ACTIVATIONS = {"tanh": _tanh, "sigmoid": _sigmoid, "softplus": _softplus}


def activation(name):
    """The function ``(xp, U) -> (sigma, sigma', sigma'')`` for an activation name."""
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}"
        ) from None
