"""The activations and their derivatives are accurate at every finite input, a user's
activation is checked when the network is built, and a network
whose pre-activations are astronomically large has a finite, correct loss, gradient and
H v wherever the true values are finite.

Accuracy: ``(sigma, sigma', sigma'')`` agree with the textbook formulas evaluated in
extended precision (``np.longdouble``) to RELATIVE_ULPS units of eps, also in the tails,
where ``0.5 (1 + tanh(u / 2))`` rounds to 0 once ``exp(-|u|)`` drops below the unit
round-off (measured: at most 4.2 eps over the sampled inputs, both dtypes; that formula
had relative error 1 there). Below the smallest normal number the comparison is
absolute, to a few subnormal spacings. tanh's derivatives ``1 - tanh^2`` are held to
RELATIVE_ULPS eps absolutely: relative to their maximum, 1. Formulas that add terms
(silu's and gelu's derivatives) are held to RELATIVE_ULPS eps relative to the sum of the
terms' magnitudes (a sum is no more accurate than that), and gelu's further by the
condition ``1 + u^2`` of ``Phi(u) = erfc(-u / sqrt 2) / 2`` and ``phi(u) = exp(-u^2 / 2) /
sqrt(2 pi)`` at a rounded argument (``d log erfc(x) / d log x ~ -2 x^2`` in the tail,
``d log phi / d log u = -u^2``): in the tails the rounding of the argument, not the
formula, limits them. scipy's erfc flushes its subnormal results to 0, so gelu is held
absolutely, to ``(1 + u^2) |u|`` times the smallest normal number, where ``Phi`` or
``phi`` is below it (``|u| > 37``). gelu's reference is mpmath's, at 30 digits.

Networks: inputs scaled by 1e160 and 1e300 (1e30 in float32) saturate every unit. For
tanh and sigmoid the dense references of the verifier (complex step on an independent
backprop) are exact there: every saturated derivative is 0 to all digits. A softplus net
without bias is positively homogeneous in its input once every pre-activation is beyond
the kink's rounding (``softplus(u) = u`` and ``softplus'(u) = 1`` to all digits for
u > 37) and the softmax is saturated, so its loss, gradient and H scale exactly with the
input: at scale a they are ``a / 1e12`` times the dense references at scale 1e12, where
complex steps are still exact. The softmax's Hessian ``Lambda_s`` vanishes there while
``|zt_s|^2`` overflows, the case that made the loss layer's ``A v`` return inf - inf.
"""
import functools

import numpy as np
import pytest

from conftest import OPERATOR_ROUNDING, U32, Case
from tallskinny_np import MLP, Activation, Curvature
from tallskinny_np.activations import ACTIVATIONS, LEAKY_SLOPE, evaluate
from verify import reference
from verify.dense import dense_ggn, dense_hessian

DTYPES = (np.float64, np.float32)
RELATIVE_ULPS = 8
SUBNORMAL_ULPS = 8
EXTENDED = np.finfo(np.longdouble).eps < np.finfo(np.float64).eps
RAISE = dict(over="raise", invalid="raise", divide="raise")


def extended_reference(name, u):
    """``((sigma, sigma', sigma''), (scales))`` in long double by the textbook formulas,
    with the logistic's tails as ``s(-u) = 1 - s(u)`` and ``1 - 2 s(u) = -tanh(u / 2)`` so
    that nothing cancels; the scales are those the errors are measured against (module
    docstring): the value's magnitude, or the sum of the terms' magnitudes."""
    if name == "gelu":
        return gelu_reference(u.dtype.type)
    u = np.asarray(u, dtype=np.longdouble)
    one, zero = np.ones_like(u), np.zeros_like(u)
    with np.errstate(over="ignore", invalid="ignore"):
        if name == "tanh":
            t = np.tanh(u)
            s1 = 1 / np.cosh(u) ** 2
            return (t, s1, -2 * t * s1), None
        if name == "identity":
            return (u, one, zero), None
        if name in ("relu", "leaky_relu"):
            slope = 0 if name == "relu" else LEAKY_SLOPE
            return (np.where(u > 0, u, slope * u), np.where(u > 0, 1, slope) * one,
                    zero), None
        if name == "elu":
            e = np.exp(np.minimum(u, 0))
            return (np.where(u > 0, u, np.expm1(np.minimum(u, 0))), np.where(u > 0, 1, e),
                    np.where(u > 0, 0, e)), None
        s, s_minus = 1 / (1 + np.exp(-u)), 1 / (1 + np.exp(u))
        s1 = s * s_minus
        s2 = -s1 * np.tanh(u / 2)
        if name == "sigmoid":
            return (s, s1, s2), None
        if name == "silu":
            terms = (np.abs(u * s), s + np.abs(u * s1), 2 * s1 + np.abs(u * s2))
            return (u * s, s + u * s1, 2 * s1 + u * s2), terms
        # log(1 + e^u) = u + e^-u to long double precision beyond u = 40
        softplus = np.where(u > 40, u + np.exp(-np.abs(u)), np.log1p(np.exp(np.minimum(u, 40))))
        return (softplus, s, s1), None


@functools.lru_cache
def gelu_reference(dtype):
    """gelu's ``(sigma, sigma', sigma'')`` at :func:`sample_inputs` by mpmath (30 digits),
    and their scales (module docstring): ``1 + u^2`` (the condition of Phi and phi at a
    rounded u) times ``|u Phi|``, ``Phi + |u phi|`` and ``phi (2 + u^2)``, plus ``(1 + u^2)
    |u| tiny`` for results that scipy's erfc flushes from the subnormal range to 0."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 30
    u = sample_inputs(dtype)
    # beyond |u| = 50, Phi rounds to 0 or 1 and phi to 0 in float64, as at +-50
    inner = np.clip(u.astype(float), -50, 50)
    cdf = np.array([float(mpmath.ncdf(x)) for x in inner])
    pdf = np.array([float(mpmath.npdf(x)) for x in inner])
    v = u.astype(np.float64)
    w = np.clip(v, -1e10, 1e10)           # phi is 0 long before: no 0 * inf
    cond = 1 + w * w
    values = (v * cdf, cdf + v * pdf, pdf * (2 - w * w))
    flushed = cond * np.abs(w) * np.finfo(dtype).tiny / (RELATIVE_ULPS * np.finfo(dtype).eps)
    with np.errstate(over="ignore"):      # an infinite scale where u^2 |u| overflows
        scales = tuple(cond * terms + flushed for terms in (
            np.abs(v * cdf), cdf + np.abs(v * pdf), pdf * (2 + w * w)))
    return values, scales


def sample_inputs(dtype):
    """A fine grid over [-60, 60] (both tails of every formula), and logarithmic ones out
    to the largest powers of ten of the dtype."""
    top = np.log10(np.finfo(dtype).max)
    wide = np.logspace(-8, np.floor(top), 400)
    return np.concatenate([np.linspace(-60, 60, 24001), -wide, wide, [0.0]]).astype(dtype)


@pytest.mark.skipif(not EXTENDED, reason="long double is no wider than float64 here")
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_values_and_derivatives_match_extended_precision(name, dtype):
    u = sample_inputs(dtype)
    finfo = np.finfo(dtype)
    with np.errstate(**RAISE):
        got = evaluate(ACTIVATIONS[name], u)
    refs, scales = extended_reference(name, u)
    for k, (g, ref) in enumerate(zip(got, refs)):
        assert g.dtype == dtype
        if name == "tanh" and k > 0:
            # 1 - tanh^2 is accurate relative to its maximum only (module docstring)
            assert np.abs(g - ref).max() <= RELATIVE_ULPS * finfo.eps, k
            continue
        if scales is not None:
            # a sum of terms, or erfc at a rounded argument (module docstring); the
            # subnormal spacing for what underflows
            err = np.abs(g.astype(np.longdouble) - ref)
            bound = (RELATIVE_ULPS * finfo.eps * scales[k]
                     + SUBNORMAL_ULPS * finfo.smallest_subnormal)
            assert np.all(err <= bound), (k, u[np.argmax(err - bound)])
            continue
        normal = np.abs(ref) >= finfo.tiny
        rel = np.abs(g[normal] - ref[normal]) / np.abs(ref[normal])
        assert rel.max(initial=0) <= RELATIVE_ULPS * finfo.eps, k
        tiny = np.abs(g[~normal] - ref[~normal])
        assert tiny.max(initial=0) <= SUBNORMAL_ULPS * finfo.smallest_subnormal, k


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_extreme_inputs_give_the_limits_without_overflow(name, dtype):
    """At ``|u| >= 1e30`` every tail value is below the smallest subnormal: the results
    are the limits exactly, with no overflow or invalid operation on the way."""
    big = np.array([1e30, np.finfo(dtype).max] + ([1e160, 1e300] if dtype == np.float64
                                                  else []), dtype=dtype)
    u = np.concatenate([-big, big])
    with np.errstate(**RAISE):
        value, d1, d2 = evaluate(ACTIVATIONS[name], u)
    positive = u > 0
    zero = np.zeros_like(u)
    if name in ("softplus", "relu", "gelu", "silu"):
        expected = np.where(positive, u, 0), positive.astype(dtype), zero
    elif name == "identity":
        expected = u, np.ones_like(u), zero
    elif name == "elu":
        expected = np.where(positive, u, -1), positive.astype(dtype), zero
    elif name == "leaky_relu":
        slope = dtype(LEAKY_SLOPE)
        expected = np.where(positive, u, u * slope), np.where(positive, 1, slope), zero
    else:
        low = -1 if name == "tanh" else 0
        expected = np.where(positive, 1, low), np.zeros_like(u), np.zeros_like(u)
    for g, e in zip((value, d1, d2), expected):
        assert g.dtype == dtype
        np.testing.assert_array_equal(g, e)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_kinks_follow_torch(dtype):
    """At exactly 0: ``relu'(0) = 0`` and ``leaky_relu'(0)`` the negative slope, with
    second derivatives 0; elu's second derivative takes its left piece, 1."""
    zero = np.zeros(3, dtype=dtype)
    for name, slope, curvature in (("relu", 0, 0), ("leaky_relu", LEAKY_SLOPE, 0),
                                   ("elu", 1, 1)):
        value, d1, d2 = evaluate(ACTIVATIONS[name], zero)
        np.testing.assert_array_equal(value, 0)
        np.testing.assert_array_equal(d1, dtype(slope))
        np.testing.assert_array_equal(d2, curvature)
        assert ACTIVATIONS[name].kinks == (0.0,)


def sine():
    return Activation("sine", np.sin, np.cos, lambda u: -np.sin(u))


@pytest.mark.parametrize("wrong, message", [
    (dict(df=lambda u: np.cos(u) * 1.001), "first derivative df"),
    (dict(df=np.sin), "first derivative df"),
    (dict(d2f=np.sin), "second derivative d2f"),
    (dict(d2f=lambda u: -np.sin(u) + 1e-4), "second derivative d2f"),
])
def test_wrong_derivative_of_own_activation_is_refused(wrong, message):
    """A derivative off by a factor 1.001 or a constant 1e-4 fails the check that the
    correct one passes (:func:`tallskinny_np.activations.check_activation`)."""
    MLP([2, 3, 2], activation=sine())
    with pytest.raises(ValueError, match=f"activation 'sine': its {message}"):
        MLP([2, 3, 2], activation=sine()._replace(**wrong))


def test_own_activation_that_is_not_a_function_of_its_input_is_refused():
    for bad, message in ((dict(f=lambda u: np.sin(u)[:1]), "f must return"),
                         (dict(df=lambda u: np.log(u - 10)), "df must return"),
                         (dict(d2f=3.0), "d2f must be a function"),
                         (dict(name=""), "name must be a non-empty string")):
        with pytest.raises(ValueError, match=message):
            with np.errstate(invalid="ignore"):
                MLP([2, 3, 2], activation=sine()._replace(**bad))


def test_activation_list_and_unknown_names():
    net = MLP([2, 3, 3, 3, 2], activation=["relu", sine(), "gelu"])
    assert [a.name for a in net.activations] == ["relu", "sine", "gelu"]
    assert net.activation_names == ["relu", "sine", "gelu"]
    with pytest.raises(ValueError, match="one per hidden layer: 3"):
        MLP([2, 3, 3, 3, 2], activation=["relu", "gelu"])
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        MLP([2, 3, 2], activation="swish")
    with pytest.raises(ValueError, match="unknown activation 3"):
        MLP([2, 3, 2], activation=[3])


def test_the_math_note_tabulates_every_activation():
    """docs/math.md section 2.1's table has one row per registered activation (the
    registry is the one list)."""
    from pathlib import Path
    text = (Path(__file__).resolve().parents[1] / "docs" / "math.md").read_text()
    text = text[text.index("### 2.1 Activations"):text.index("### 2.2 ")]
    rows = {line.split("|")[1].strip().strip("`") for line in text.splitlines()
            if line.startswith("| `")}
    assert rows == set(ACTIVATIONS)


SIZES = (3, 5, 5, 5, 3)
SEED = 2
SOFTPLUS_ANCHOR = 1e12


def saturated_problem(activation, bias, scale, dtype=np.float64):
    """``(net, params, X, y)`` with the input of a unit-scale problem times ``scale``."""
    net, params, X, y = Case(SIZES, activation, bias, 4, 1.0, SEED).build(dtype)
    return net, params, X * dtype(scale), y


def preactivations(net, params, X):
    """Every layer's ``Z W^T + c`` (the logits last), by the verifier's forward pass."""
    thetas = reference.split(net, params)
    Zs = reference.hidden(net, thetas, X)
    return [reference.affine(net.bias, t, Z) for t, Z in zip(thetas, Zs)]


def references(activation, bias, scale, kind):
    """``(loss, gradient, dense H)`` of :func:`saturated_problem` at ``scale`` divided by
    ``scale / at``, in float64 from the verifier at ``at``: ``at = scale`` for tanh and
    sigmoid, SOFTPLUS_ANCHOR for softplus (module docstring), where the test checks that
    every unit is beyond the kink's rounding and every softmax saturated, so that the
    scaling is exact."""
    dense = dense_hessian if kind == "hessian" else dense_ggn
    at = SOFTPLUS_ANCHOR if activation == "softplus" else scale
    net, params, X, y = saturated_problem(activation, bias, at)
    if activation == "softplus":
        *hidden, logits = preactivations(net, params, X)
        assert not bias and min(np.abs(U).min() for U in hidden) > 40
        top2 = np.sort(logits, axis=1)[:, -2:]
        assert np.all(top2[:, 1] - top2[:, 0] > 800)     # exp(-800) is 0 in float64
    with np.errstate(all="ignore"):   # complex steps through saturated units
        return (reference.loss(net, params, X, y), reference.gradient(net, params, X, y),
                dense(net, params, X, y)), scale / at


NETWORK_CASES = [(activation, bias) for activation in ("tanh", "sigmoid")
                 for bias in (True, False)] + [("softplus", False)]


def check_against_references(curv, v, activation, bias, scale, tol, hvp_tol):
    """Loss, gradient and H v of ``curv`` against :func:`references`, relative to their
    size, after dividing by the scale ratio (the norms of H v at scale 1e300 would
    overflow)."""
    (loss, grad, H), ratio = references(activation, bias, scale, curv.kind)
    with np.errstate(**RAISE):
        Hv = curv.hvp(v)
    assert Hv.dtype == curv.net.dtype and np.all(np.isfinite(Hv))
    assert np.isfinite(curv.loss) and np.all(np.isfinite(curv.grad))
    assert abs(curv.loss / ratio - loss) <= tol * abs(loss)
    assert np.linalg.norm(curv.grad / ratio - grad) <= tol * np.linalg.norm(grad)
    assert np.linalg.norm(Hv / ratio - H @ v) <= (
        hvp_tol * np.linalg.norm(H, 2) * np.linalg.norm(v))


@pytest.mark.parametrize("kind", ["hessian", "ggn"])
@pytest.mark.parametrize("scale", [1e160, 1e300])
@pytest.mark.parametrize("activation, bias", NETWORK_CASES)
def test_saturated_network_float64(activation, bias, scale, kind):
    net, params, X, y = saturated_problem(activation, bias, scale)
    with np.errstate(**RAISE):
        loss = net.loss(params, X, y)
        curv = Curvature(net, params, X, y, kind=kind)
    assert loss == curv.loss
    v = np.random.default_rng(1).standard_normal(net.n_params)
    check_against_references(curv, v, activation, bias, scale, 1e-10, 1e-10)


@pytest.mark.parametrize("kind", ["hessian", "ggn"])
@pytest.mark.parametrize("activation, bias", NETWORK_CASES)
def test_saturated_network_float32(activation, bias, kind):
    """Inputs of 1e30 in float32 (whose largest number is 3.4e38): the float64 references
    to float32 accuracy, with the bounds of test_float32.py."""
    scale = 1e30
    net, params, X, y = saturated_problem(activation, bias, scale, np.float32)
    with np.errstate(**RAISE):
        curv = Curvature(net, params, X, y, kind=kind)
    v = np.random.default_rng(1).standard_normal(net.n_params).astype(np.float32)
    check_against_references(curv, v, activation, bias, scale, 100 * U32,
                             OPERATOR_ROUNDING * U32)
