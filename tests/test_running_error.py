"""The normwise bound on the O(L) product's rounding (docs/math.md eqs. (7.3h)-(7.3l)),
against the product in exact rational arithmetic and in double words; the certified
solve on deep nets where only it proves the figure, where nothing is proved, and with
products that underflow (eq. (7.3c))."""
import numpy as np
import pytest

from conftest import KINDS
from test_certify import DEEP, DEEP_NETWORKS, FRACTION, _arrays, _cast, _deep
from tallskinny_np import MLP, Curvature, UncertifiedSolveError
from tallskinny_np import norms
from tallskinny_np.certify import PRODUCT_ROUNDING, DoubleWord
from tallskinny_np.products import hvp, hvp_rounding
from tallskinny_np.running_error import hvp_rounding_normwise
from verify.dense import dense_hessian

NORMWISE = [("tanh", 16, 64, 1.0, True, 10, "hessian"),
            ("tanh", 16, 64, 2.0, True, 10, "hessian"),
            ("tanh", 16, 64, 3.0, True, 10, "hessian"),
            ("softplus", 16, 64, 1.0, True, 10, "hessian"),
            ("tanh", 16, 64, 1.0, True, 10, "ggn")]
"""Deep nets (depth 64, width 16, batch 16) whose chains of ``|Dz_l|`` grow by 1e27 to
1e65 beyond the chains themselves."""
NORMWISE_LOOSENESS = 1e6
"""How far above the product's actual error the normwise bound may lie on NORMWISE and
the small nets (measured: 3.4e2 to 3.7e5)."""


def _deep_batch(activation, width, depth, gain, bias, classes, kind, dtype=np.float64,
                batch=16, seed=1):
    net = MLP([width] * depth + [classes], activation=activation, bias=bias, dtype=dtype)
    params = net.init_params(seed=seed, gain=gain)
    rng = np.random.default_rng(seed)
    X, y = rng.standard_normal((batch, width)).astype(dtype), rng.integers(0, classes, batch)
    return net, Curvature(net, params, X, y, kind=kind)


def _word_product(curv, xs):
    """``H x`` in double words, and the normwise bound (7.3l) on its error at u_2."""
    words = hvp(curv.blocks, [DoubleWord(x, np.zeros_like(x)) for x in xs], _compiled=False)
    Hx = curv.net.join([w.hi for w in words]) + curv.net.join([w.lo for w in words])
    return Hx, hvp_rounding_normwise(curv.blocks, xs, DoubleWord.UNIT)[1]


@pytest.mark.parametrize("config, dtype", [(c, np.float64) for c in NORMWISE]
                         + [(NORMWISE[0], np.float32)], ids=str)
def test_the_normwise_bound_holds_on_deep_nets_and_is_not_far_off(config, dtype):
    """On deep nets where the componentwise bound is 1e27 to 1e65 times the product's
    error, the normwise bound (docs/math.md eq. (7.3l)) holds against the product in
    double words (whose own error it bounds at u_2) for both evaluation orders and lies
    within NORMWISE_LOOSENESS of the error (``-s`` prints the ratios)."""
    net, curv = _deep_batch(*config, dtype=dtype)
    xs = net.split(np.random.default_rng(3).standard_normal((net.n_params, 2)).astype(dtype))
    reference, e_ref = _word_product(curv, [x.astype(np.float64) for x in xs])
    p, e = hvp_rounding_normwise(curv.blocks, xs)
    E = np.linalg.norm(net.join(hvp_rounding(curv.blocks, xs)[1]), axis=0)
    for compiled in (True, False) if dtype == np.float64 else (False,):
        computed = net.join(hvp(curv.blocks, xs, _compiled=compiled)).astype(np.float64)
        error = np.linalg.norm(computed - reference, axis=0)
        print(f"{config} {np.dtype(dtype).name} compiled={compiled}: e / error = "
              f"{e / error}, ||E|| / error = {E / error}")
        assert np.all(error <= e + e_ref)
        assert np.all(np.linalg.norm(computed, axis=0) <= p)
        assert np.all(e <= NORMWISE_LOOSENESS * error)
        assert np.all(E > 1e20 * e)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("config", DEEP[:2] + DEEP_NETWORKS[:2], ids=str)
def test_the_normwise_bound_holds_against_the_exact_product(config, kind):
    """On small nets the normwise bound holds against the product of the stored blocks in
    exact rational arithmetic, within NORMWISE_LOOSENESS of the error."""
    net, params, X, y = _deep(*config, seed=1)
    curv = Curvature(net, params, X, y, kind=kind)
    xs = net.split(np.random.default_rng(3).standard_normal((net.n_params, 1)))
    exact = net.join(hvp(_cast(curv.blocks, FRACTION), [FRACTION(x) for x in xs],
                         _compiled=False))
    p, e = hvp_rounding_normwise(curv.blocks, xs)
    for compiled in (True, False):
        computed = net.join(hvp(curv.blocks, xs, _compiled=compiled))
        error = np.sqrt(np.sum((FRACTION(computed) - exact) ** 2, axis=0).astype(float))
        print(f"{config} {kind} compiled={compiled}: e / error = {e / error}")
        assert np.all(error <= e)
        assert np.all(np.linalg.norm(computed, axis=0) <= p)
        assert np.all(e <= NORMWISE_LOOSENESS * error)


@pytest.mark.parametrize("gain", [1.0, 3.0])
def test_on_deep_nets_the_figure_is_proved_and_bounds_the_backward_error(gain):
    """At depth 64, width 16 neither componentwise bound proves anything (docs/math.md
    section 7.1); the normwise one does, and the figure is at least the backward error
    against the stored blocks' H, its residual in double words less that residual's
    bound (7.3l) at u_2, with ``||A||`` replaced by the largest lower bound the solve may
    have used (which makes it larger)."""
    net, curv = _deep_batch("tanh", 16, 64, gain, True, 10, "hessian")
    B = np.random.default_rng(2).standard_normal((net.n_params, 2))
    shift = 0.5
    x, info = curv.solve(B, shift, return_info=True)
    assert np.all(info.proved) and np.all(info.backward_error <= info.bound)
    xs = net.split(x)
    E = net.join(hvp_rounding(curv.blocks, xs, DoubleWord.UNIT)[1])
    assert np.all(np.linalg.norm(E, axis=0) > 1e10 * np.linalg.norm(B, axis=0))
    Hx, e_ref = _word_product(curv, xs)
    r = np.linalg.norm(B - shift * x - Hx, axis=0) - e_ref
    nu = max(norms.probe_norm(curv, shift), norms.norm_lower_bound(curv, shift))
    low = r / (nu * np.linalg.norm(x, axis=0) + np.linalg.norm(B, axis=0))
    u = np.finfo(np.float64).eps / 2
    print(f"gain {gain}: reported {info.backward_error / u} u, at least {low / u} u")
    assert np.all(info.backward_error >= low)


def test_where_nothing_is_proved_the_solve_raises_or_flags_the_model():
    """Where no bound on the product's rounding proves a figure (here at depth 64 with a
    right-hand side near the top of float64's range, where the componentwise bounds grow
    beyond it and the ellipsoids' squares overflow), the default solve raises and
    ``uncertified="return"`` flags the model's figure (docs/math.md eq. (7.3g))."""
    net, curv = _deep_batch("tanh", 16, 64, 1.0, True, 10, "hessian", batch=4)
    b = curv.grad * (1e160 / np.linalg.norm(curv.grad))
    with pytest.raises(UncertifiedSolveError, match="could be proved") as raised:
        curv.solve(b, 0.5)
    assert not np.any(raised.value.proved)
    x, info = curv.solve(b, 0.5, return_info=True, uncertified="return")
    u = np.finfo(np.float64).eps / 2
    assert not np.any(info.proved)
    assert PRODUCT_ROUNDING * u <= info.backward_error[0] <= info.bound
    assert np.all(np.isfinite(x))


def test_products_that_underflow_are_bounded():
    """With subnormal entries in x, the products' terms are subnormal and err by up to
    half the smallest subnormal number each, absolutely, far beyond any bound relative to
    them; both bounds hold against the exact product with their term ``k eta_min``
    (docs/math.md eqs. (7.3c), (7.3h))."""
    net, params, X, y = _deep("softplus", 3, 6, 3.0, True, 3, seed=1)
    curv = Curvature(net, params, X, y)
    x = np.random.default_rng(3).standard_normal((net.n_params, 1)) * 1e-315
    xs = net.split(x)
    exact = net.join(hvp(_cast(curv.blocks, FRACTION), [FRACTION(v) for v in xs],
                         _compiled=False))
    P, E = (net.join(v) for v in hvp_rounding(curv.blocks, xs))
    _, e = hvp_rounding_normwise(curv.blocks, xs)
    tiny = np.finfo(np.float64).tiny
    for compiled in (True, False):
        computed = net.join(hvp(curv.blocks, xs, _compiled=compiled))
        assert np.any((computed != 0) & (np.abs(computed) < tiny))       # subnormal
        error = np.abs(FRACTION(computed) - exact).astype(float)
        assert np.all(error <= E)
        assert np.sqrt(np.sum(error ** 2)) <= e[0]
        # far beyond any relative model: the absolute term is what bounds it
        assert np.any(error > 1e3 * np.finfo(np.float64).eps * np.abs(computed))


def test_on_a_deep_narrow_net_the_figure_bounds_the_backward_error_against_the_dense_h():
    """At depth 64, width 4 (1275 parameters, small enough for the verifier's dense H)
    the componentwise bound is 1e10 ``||b||`` and proves nothing; the normwise one
    proves the figure, which is at least the backward error against the dense H, its
    residual in long double, up to the difference at x between the dense H and the
    blocks' (their product in double words plus its bound (7.3l) at u_2): the rounding
    of the network's evaluation, which no product sees."""
    net = MLP([4] * 64 + [3], activation="tanh")
    params = net.init_params(seed=1)
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((4, 4)), rng.integers(0, 3, 4)
    curv = Curvature(net, params, X, y)
    B = rng.standard_normal((net.n_params, 2))
    shift = 0.5
    x, info = curv.solve(B, shift, return_info=True)
    assert np.all(info.proved)
    xs = net.split(x)
    E = np.linalg.norm(net.join(hvp_rounding(curv.blocks, xs)[1]), axis=0)
    assert np.all(E > np.linalg.norm(B, axis=0))
    dense = dense_hessian(net, params, X, y)
    norm = np.abs(np.linalg.eigvalsh((dense + dense.T) / 2) + shift).max()
    scale = norm * np.linalg.norm(x, axis=0) + np.linalg.norm(B, axis=0)
    r = (B.astype(np.longdouble)
         - (dense + shift * np.eye(net.n_params)) @ x.astype(np.longdouble))
    true = np.linalg.norm(r.astype(np.float64), axis=0) / scale
    Hx, e_ref = _word_product(curv, xs)
    dense_x = (dense.astype(np.longdouble) @ x).astype(np.float64)
    gap = (np.linalg.norm(dense_x - Hx, axis=0) + e_ref) / scale
    u = np.finfo(np.float64).eps / 2
    print(f"reported {info.backward_error / u} u, dense {true / u} u, gap {gap / u} u")
    assert np.all(info.backward_error >= true - gap)
    assert np.all(info.backward_error <= info.bound)


def test_blocks_with_subnormal_entries_are_bounded():
    """A float32 GELU net at gain 8 has subnormal numbers among its blocks' entries,
    whose products underflow; both bounds hold against the exact product of the stored
    blocks (docs/math.md eqs. (7.3c), (7.3h))."""
    net = MLP([3] * 4 + [3], activation="gelu", dtype=np.float32)
    params = net.init_params(seed=1, gain=8.0)
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((4, 3)).astype(np.float32), rng.integers(0, 3, 4)
    curv = Curvature(net, params, X, y)
    tiny = np.finfo(np.float32).tiny
    assert any(np.any((a != 0) & (np.abs(a) < tiny)) for a in _arrays(curv.blocks))
    x = np.random.default_rng(3).standard_normal((net.n_params, 2)).astype(np.float32)
    xs = net.split(x)
    exact = net.join(hvp(_cast(curv.blocks, FRACTION), [FRACTION(v) for v in xs],
                         _compiled=False))
    P, E = (net.join(v) for v in hvp_rounding(curv.blocks, xs))
    p, e = hvp_rounding_normwise(curv.blocks, xs)
    computed = net.join(hvp(curv.blocks, xs))
    error = np.abs(FRACTION(computed) - exact).astype(float)
    assert np.all(error <= E) and np.all(np.abs(computed) <= P)
    assert np.all(np.sqrt(np.sum(error ** 2, axis=0)) <= e)
    assert np.all(np.linalg.norm(computed.astype(np.float64), axis=0) <= p)
