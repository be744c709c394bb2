"""The activations and their derivatives are accurate at every finite input, and a network
whose pre-activations are astronomically large has a finite, correct loss, gradient and
H v wherever the true values are finite.

Accuracy: ``(sigma, sigma', sigma'')`` agree with the textbook formulas evaluated in
extended precision (``np.longdouble``) to RELATIVE_ULPS units of eps, also in the tails,
where ``0.5 (1 + tanh(u / 2))`` rounds to 0 once ``exp(-|u|)`` drops below the unit
round-off (measured: at most 4.2 eps over the sampled inputs, both dtypes; that formula
had relative error 1 there). Below the smallest normal number the comparison is
absolute, to a few subnormal spacings. tanh's derivatives ``1 - tanh^2`` are held to
RELATIVE_ULPS eps absolutely: relative to their maximum, 1.

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
import numpy as np
import pytest

from conftest import OPERATOR_ROUNDING, U32, Case
from tallskinny_np import Curvature
from tallskinny_np.activations import ACTIVATIONS
from verify import reference
from verify.dense import dense_ggn, dense_hessian

DTYPES = (np.float64, np.float32)
RELATIVE_ULPS = 8
SUBNORMAL_ULPS = 8
EXTENDED = np.finfo(np.longdouble).eps < np.finfo(np.float64).eps
RAISE = dict(over="raise", invalid="raise", divide="raise")


def extended_reference(name, u):
    """``(sigma, sigma', sigma'')`` in long double by the textbook formulas, with the
    logistic's tails as ``s(-u) = 1 - s(u)`` and ``1 - 2 s(u) = -tanh(u / 2)`` so that
    nothing cancels."""
    u = np.asarray(u, dtype=np.longdouble)
    with np.errstate(over="ignore"):
        if name == "tanh":
            t = np.tanh(u)
            s1 = 1 / np.cosh(u) ** 2
            return t, s1, -2 * t * s1
        s, s_minus = 1 / (1 + np.exp(-u)), 1 / (1 + np.exp(u))
        s1 = s * s_minus
        s2 = -s1 * np.tanh(u / 2)
        if name == "sigmoid":
            return s, s1, s2
        # log(1 + e^u) = u + e^-u to long double precision beyond u = 40
        softplus = np.where(u > 40, u + np.exp(-np.abs(u)), np.log1p(np.exp(np.minimum(u, 40))))
        return softplus, s, s1


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
        got = ACTIVATIONS[name](np, u)
    for k, (g, ref) in enumerate(zip(got, extended_reference(name, u))):
        assert g.dtype == dtype
        if name == "tanh" and k > 0:
            # 1 - tanh^2 is accurate relative to its maximum only (module docstring)
            assert np.abs(g - ref).max() <= RELATIVE_ULPS * finfo.eps, k
            continue
        normal = np.abs(ref) >= finfo.tiny
        rel = np.abs(g[normal] - ref[normal]) / np.abs(ref[normal])
        assert rel.max() <= RELATIVE_ULPS * finfo.eps, (k, u[normal][rel.argmax()])
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
        value, d1, d2 = ACTIVATIONS[name](np, u)
    positive = u > 0
    if name == "softplus":
        expected = np.where(positive, u, 0), positive.astype(dtype), np.zeros_like(u)
    else:
        low = -1 if name == "tanh" else 0
        expected = np.where(positive, 1, low), np.zeros_like(u), np.zeros_like(u)
    for g, e in zip((value, d1, d2), expected):
        assert g.dtype == dtype
        np.testing.assert_array_equal(g, e)


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
