"""The softmax cross-entropy where the softmax saturates (the top class's pi rounds to 1 or
lies within a few thousand u of it): the action of ``Lambda_s`` and its diagonal
(docs/math.md eq. (2.14b)) and the verifier's ``Lambda_s`` against mpmath, and the GGN and
Hessian of a saturated relu net against the verifier, with the product's rounding bound
(eq. (7.3c)) in exact rational arithmetic. Undeflated, ``pi_t (v_t - pi . v)`` lost
``1 - pi_t`` to cancellation: the action's top entry was 0 instead of ``pi_t sum_{j != t}
pi_j / B``, and that net's GGN was off by its own size."""
import numpy as np
import pytest

from test_certify import FRACTION, _cast
from tallskinny_np import MLP, Curvature
from tallskinny_np.losses import (cross_entropy, hessian_action, hessian_diagonal,
                                  value_and_gradient)
from tallskinny_np.products import hvp, hvp_rounding
from verify import fd, reference
from verify.dense import dense_ggn, dense_hessian

mpmath = pytest.importorskip("mpmath")

LOGITS = [(23, -23, 0), (40, -40, 5), (40, -40, 0), (800, 0, -800), (1, 2, 3)]
"""One sample each: ``1 - pi_t`` about 1e-10 (undeflated, float64 kept 7 digits of it and
float32 none), 6e-16 (float64 kept one digit), 4e-18 (pi_t rounds to 1 in float64: none
was left), e^-800 (pi_t is 1 and every other pi underflows, as does every entry of
Lambda), and a softmax far from saturation."""


def _exact_lambda(O):
    """``Lambda_s = (diag(pi_s) - pi_s pi_s^T) / B`` of the logits O ``(B, c)`` by mpmath,
    as written, at 400 digits: enough to resolve ``1 - pi_t`` down to e^-800 (1e-348)."""
    B, c = O.shape
    with mpmath.workdps(400):
        out = []
        for row in O:
            e = [mpmath.exp(mpmath.mpf(float(o))) for o in row]
            pi = [x / mpmath.fsum(e) for x in e]
            out.append([[pi[i] * ((i == j) - pi[j]) / B for j in range(c)] for i in range(c)])
        return out


def _within(computed, exact, dtype, c):
    """``|computed - exact| <= tol |exact| + (c + 4) eta`` entry by entry, for computed
    entries of ``Lambda_s`` (c classes) against mpmath's of the same shape, eta the
    smallest subnormal number of dtype (each product that underflows errs by up to half of
    it). tol: the action's ``c + 4`` roundings (eq. (7.3c)), on a chain ``|f|`` at most 2c
    times the entry (``pi_t >= 1 / c``), and ``c + 2`` roundings of each of the entry's two
    factors of pi (exp, the sum, the division): ``(2c (c + 4) + 2 (c + 2)) u``, 52 u at
    c = 3 (measured: below 2 u in both precisions, and below 4 u for the verifier)."""
    u = float(np.finfo(dtype).eps) / 2
    tol = (2 * c * (c + 4) + 2 * (c + 2)) * u
    floor = (c + 4) * float(np.finfo(dtype).smallest_subnormal)
    with mpmath.workdps(400):
        exact = np.ravel(np.array(exact, dtype=object))
        return all(abs(mpmath.mpf(float(a)) - e) <= tol * abs(e) + floor
                   for a, e in zip(np.ravel(computed), exact))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("logits", LOGITS)
def test_the_action_and_its_diagonal_are_accurate_where_the_softmax_saturates(logits, dtype):
    """``Lambda_s`` applied to the identity, and its diagonal, from pi of the logits in
    dtype, within a few dozen u of mpmath's entry by entry."""
    O = np.array([logits], dtype=dtype)
    B, c = O.shape
    pi = cross_entropy(O, np.zeros(B, dtype=int))[1]
    exact = _exact_lambda(O)
    eye = np.broadcast_to(np.eye(c, dtype=dtype), (B, c, c))
    Lam = hessian_action("cross_entropy", pi, eye)
    assert Lam.dtype == dtype
    assert _within(Lam, exact, dtype, c)
    diagonal = hessian_diagonal("cross_entropy", pi, np.zeros((B, 1), dtype=dtype), c)
    assert _within(diagonal, [[row[k][k] for k in range(c)] for row in exact], dtype, c)


@pytest.mark.parametrize("label", [0, 1])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("logits", LOGITS)
def test_the_loss_and_gradient_are_accurate_where_the_softmax_saturates(logits, dtype, label):
    """The loss and its gradient in the logits (eqs. (1.2), (2.6), (2.6b)) within the
    tolerance of :func:`_within` of mpmath's, at a label on the top class (class 0 of the
    saturated logits) and off it. On the top class, ``log(sum e)`` and ``pi_t - 1`` were
    differences of numbers near 1: where pi_t rounds to 1 the loss and that gradient entry
    were 0 instead of ``sum_{j != t} pi_j`` and minus it."""
    O = np.array([logits], dtype=dtype)
    c = O.shape[1]
    value, G, _ = value_and_gradient("cross_entropy", O, np.array([label]))
    assert G.dtype == dtype
    with mpmath.workdps(400):
        e = [mpmath.exp(mpmath.mpf(float(o))) for o in O[0]]
        total = mpmath.fsum(e)
        loss = mpmath.log(total) - mpmath.mpf(float(O[0, label]))
        gradient = [[e[j] / total - (j == label) for j in range(c)]]
    assert _within([value], [loss], dtype, c)
    assert _within(G, gradient, dtype, c)


@pytest.mark.parametrize("wide", [False, True])
@pytest.mark.parametrize("logits", LOGITS)
def test_the_verifiers_lambda_is_accurate_where_the_softmax_saturates(logits, wide):
    """The verifier's ``Lambda_s``, the complex-step Jacobian of its gradient in the logits
    (:func:`verify.dense.gauss_newton`), within float64's tolerance of :func:`_within` of
    mpmath's, in float64 and in long double."""
    O = np.array([logits], dtype=np.float64)
    Lam = fd.jacobian(lambda o: reference.cross_entropy_gradient(o, np.array([1])), O,
                      "complex-step", wide)
    assert _within(Lam, _exact_lambda(O), np.float64, O.shape[1])


def _saturated_relu_net():
    """A residual relu net whose logits lie 46 to 555 apart: every sample's top pi is 1 or
    within 1e-20 of it."""
    net = MLP([4] * 8 + [3], activation="relu", bias=True, loss="cross_entropy",
              residual=True)
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((4, 4)), rng.integers(0, 3, 4)
    return net, net.init_params(seed=1, gain=3.0), X, y


@pytest.mark.parametrize("kind", ["ggn", "hessian"])
def test_the_curvature_of_a_saturated_net_matches_the_verifier(kind):
    """The product's H (all columns) against the verifier's dense one in float64 and in
    long double, to 1e-10 relative; the GGN is 1e-19 times the Hessian here and was off
    by its own size."""
    net, params, X, y = _saturated_relu_net()
    curv = Curvature(net, params, X, y, kind=kind)
    top_two = np.sort(curv.linearization.O, axis=1)[:, -2:]
    assert np.all(top_two[:, 1] - top_two[:, 0] > 46)
    H = curv.hvp(np.eye(net.n_params))
    dense = dense_ggn if kind == "ggn" else dense_hessian
    for wide in (False, True):
        D = dense(net, params, X, y, wide=wide).astype(np.float64)
        assert np.abs(H - D).max() <= 1e-10 * np.abs(D).max()


@pytest.mark.parametrize("kind", ["ggn", "hessian"])
def test_the_product_bound_holds_in_exact_arithmetic_where_the_softmax_saturates(kind):
    """``|fl(H x) - H x| <= E`` and ``|fl(H x)| <= P`` entry by entry (eq. (7.3c) with
    ``k_L = c + 4`` and the deflated chain of ``|Lambda_s|``), H x of the stored blocks in
    exact rational arithmetic, for both evaluation orders."""
    net, params, X, y = _saturated_relu_net()
    curv = Curvature(net, params, X, y, kind=kind)
    xs = net.split(np.random.default_rng(2).standard_normal((net.n_params, 2)))
    exact = hvp(_cast(curv.blocks, FRACTION), [FRACTION(x) for x in xs], _compiled=False)
    P, E = hvp_rounding(curv.blocks, xs)
    for compiled in (True, False):
        for c, p, e, h in zip(hvp(curv.blocks, xs, _compiled=compiled), P, E, exact):
            assert np.all(np.abs(FRACTION(c) - h) <= FRACTION(e))
            assert np.all(np.abs(c) <= p)
