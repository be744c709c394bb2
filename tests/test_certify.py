"""The certificates of docs/math.md section 7, piece by piece: the backward-error bound,
the bound on the O(L) product's rounding, the Lanczos interval, GMRES, the factor
distance, and the solve chain's paths, errors and warnings (the stress suite against
dense references is test_certified.py)."""
from fractions import Fraction
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import GRID, KINDS, dense_curvature
from tallskinny_np import (MLP, Curvature, SingularPivotError, UncertifiedSolveError,
                           UncertifiedSolveWarning)
from tallskinny_np import certified, norms, spectrum
from tallskinny_np.certify import (DoubleWord, backward_error_bound,
                                   backward_errors, factor_distance)
from tallskinny_np.krylov import gmres, lanczos_interval
from tallskinny_np.products import hvp, hvp_rounding
from verify.dense import dense_ggn, dense_hessian

RNG = np.random.default_rng(7)


def _symmetric(n, cond, rng):
    """A symmetric indefinite matrix with eigenvalues of modulus in [1/cond, 1]."""
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    w = np.geomspace(1 / cond, 1, n) * rng.choice([-1, 1], n)
    return (Q * w) @ Q.T, w


def _true_backward_error(A, x, b):
    return np.linalg.norm(b - A @ x) / (np.linalg.norm(A, 2) * np.linalg.norm(x)
                                        + np.linalg.norm(b))


@pytest.mark.parametrize("cond", [1e1, 1e8])
def test_backward_errors_bound_the_true_one_and_are_tight_with_the_norm(cond):
    A, _ = _symmetric(40, cond, RNG)
    X = np.linalg.solve(A, RNG.standard_normal((40, 3)))
    AX = A @ X
    B = AX + 1e-6 * np.linalg.norm(AX, axis=0) * RNG.standard_normal((40, 3))
    R = B - AX                                         # exact: B was formed from AX
    norm = np.linalg.norm(A, 2)
    true = np.linalg.norm(R, axis=0) / (norm * np.linalg.norm(X, axis=0)
                                        + np.linalg.norm(B, axis=0))
    cheap = backward_errors(R, X, B)
    sharp = backward_errors(R, X, B, norm=norm)
    assert np.all(cheap >= true * (1 - 1e-12))
    np.testing.assert_allclose(sharp, true, rtol=1e-12)
    if cond > 1e6:                                     # x along A's small eigenvalues
        assert np.all(cheap > 1e3 * sharp)


def test_lanczos_interval_lies_inside_the_spectrum_and_reaches_its_ends():
    A, w = _symmetric(200, 1e3, RNG)
    lo, hi = lanczos_interval(lambda v: A @ v, 200, np, np.float64)
    assert w.min() <= lo <= hi <= w.max()
    assert max(abs(lo), abs(hi)) >= 0.9 * np.abs(w).max()


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_lanczos_interval_is_nan_when_a_product_is_not_finite():
    """An operator that overflows on some vectors gives NaN, not the numbers that LAPACK
    returns for a tridiagonal matrix with NaN in it."""
    A, _ = _symmetric(50, 1e3, RNG)

    def overflowing(v):
        out = A @ v
        out[3] = np.inf
        return out

    assert np.all(np.isnan(lanczos_interval(overflowing, 50, np, np.float64)))


def test_gmres_with_an_exact_preconditioner_converges_in_one_step_and_without_in_n():
    A, _ = _symmetric(30, 1e3, RNG)
    r = RNG.standard_normal(30)
    Ainv = np.linalg.inv(A)
    calls = []
    d = gmres(lambda v: A @ v, lambda v: calls.append(1) or Ainv @ v, r, 30, 1e-12)
    assert len(calls) == 1 and np.linalg.norm(A @ d - r) <= 1e-10 * np.linalg.norm(r)
    d = gmres(lambda v: A @ v, lambda v: v, r, 30, 1e-12)
    assert np.linalg.norm(A @ d - r) <= 1e-8 * np.linalg.norm(r)


def test_factor_distance_is_small_for_a_good_factor_and_large_for_a_wrong_one():
    A, _ = _symmetric(50, 1e2, RNG)
    good = np.linalg.inv(A + 1e-12 * np.eye(50))
    wrong = np.linalg.inv(A + 0.2 * np.eye(50))      # moves eigenvalues across zero
    omega = lambda F: factor_distance(lambda V: A @ V, lambda V: F @ V, 50, np, np.float64)
    assert omega(good) < 1e-8
    assert omega(wrong) > 1


def _curvature(case, kind="hessian"):
    net, params, X, y = case.build()
    return Curvature(net, params, X, y, kind=kind)


def test_a_well_conditioned_solve_is_certified_by_the_first_solve_without_lanczos():
    case = next(c for c in GRID if c.depth >= 4)
    curv = _curvature(case)
    b = RNG.standard_normal((curv.n_params, 2))
    x, info = curv.solve(b, 1.0, return_info=True)
    assert info.path == (("factor",), ("factor",))
    assert info.bound == backward_error_bound(curv.n_params, np.float64)
    A = dense_curvature(case, "hessian") + np.eye(curv.n_params)
    for j in range(2):
        assert _true_backward_error(A, x[:, j], b[:, j]) <= info.backward_error[j] + 1e-15
        assert info.backward_error[j] <= info.bound
    assert curv._interval is None                     # no Lanczos in the common case


def test_a_poor_factorization_is_rescued_by_gmres_and_the_path_says_so(monkeypatch):
    case = next(c for c in GRID if c.depth >= 4)
    curv = _curvature(case)
    solve = certified.SOLVERS["riccati"]

    def perturbed(fac, gs):                            # a factorization 10% off
        return [1.1 * x for x in solve[1](fac, gs)]

    monkeypatch.setitem(certified.SOLVERS, "riccati", (solve[0], perturbed))
    b = RNG.standard_normal(curv.n_params)
    x, info = curv.solve(b, 0.5, refine=0, return_info=True)
    assert info.path[0] == ("factor", "gmres")
    assert info.backward_error[0] <= info.bound
    A = dense_curvature(case, "hessian") + 0.5 * np.eye(curv.n_params)
    assert _true_backward_error(A, x, b) <= 10 * info.bound


def test_the_banded_solve_is_the_fallback_and_failure_raises_or_warns(monkeypatch):
    case = next(c for c in GRID if c.depth >= 4)
    curv = _curvature(case)
    solve = certified.SOLVERS["riccati"]
    banded = certified.SOLVERS[certified.BANDED]
    garbage = lambda fac, gs: [np.ones_like(x) for x in gs]
    monkeypatch.setitem(certified.SOLVERS, "riccati", (solve[0], garbage))
    b = RNG.standard_normal(curv.n_params)
    x, info = curv.solve(b, 0.5, return_info=True)
    assert info.path[0][-1] in ("banded", "refine") and "banded" in info.path[0]
    assert info.backward_error[0] <= info.bound

    monkeypatch.setitem(certified.SOLVERS, certified.BANDED, (banded[0], garbage))
    curv = _curvature(case)
    with pytest.raises(UncertifiedSolveError) as err:
        curv.solve(b, 0.5)
    assert err.value.step == "gmres" and err.value.backward_error[0] > err.value.bound
    with pytest.warns(UncertifiedSolveWarning):
        x, info = curv.solve(b, 0.5, uncertified="warn", return_info=True)
    assert info.backward_error[0] > info.bound and np.all(np.isfinite(x))


def test_without_fallback_the_chain_stops_after_the_first_factorization(monkeypatch):
    case = next(c for c in GRID if c.depth >= 4)
    solve = certified.SOLVERS["riccati"]
    calls = []
    banded = certified.SOLVERS[certified.BANDED]
    monkeypatch.setitem(certified.SOLVERS, certified.BANDED,
                        (lambda *a: calls.append(1) or banded[0](*a), banded[1]))
    garbage = lambda fac, gs: [np.ones_like(x) for x in gs]
    monkeypatch.setitem(certified.SOLVERS, "riccati", (solve[0], garbage))
    curv = _curvature(case)
    b = RNG.standard_normal(curv.n_params)
    with pytest.raises(UncertifiedSolveError):
        curv.solve(b, 0.5, refine=0, fallback=False)
    assert not calls
    x, info = curv.solve(b, 0.5, refine=0, fallback=False, uncertified="return",
                         return_info=True)
    assert not calls and "banded" not in info.path[0]
    assert info.bound < info.backward_error[0] < 1 and np.all(np.isfinite(x))
    x, info = curv.solve(b, 0.5, refine=0, return_info=True)
    assert calls and "banded" in info.path[0] and info.backward_error[0] <= info.bound


@pytest.mark.parametrize("fallback", [False, True])
def test_a_solve_that_is_nowhere_finite_raises_the_named_error(monkeypatch, fallback):
    case = next(c for c in GRID if c.depth >= 4)
    nan = lambda fac, gs: [np.full_like(x, np.nan) for x in gs]
    for key in ("riccati", certified.BANDED):
        factor = certified.SOLVERS[key][0]
        monkeypatch.setitem(certified.SOLVERS, key, (factor, nan))
    curv = _curvature(case)
    with pytest.raises(UncertifiedSolveError) as err:
        curv.solve(curv.grad, 0.5, fallback=fallback, uncertified="return")
    assert err.value.step == "factor" and np.isinf(err.value.backward_error[0])


def test_every_method_refuses_an_exactly_singular_shift():
    case = next(c for c in GRID if c.depth >= 3 and c.batch >= 3)
    H = dense_curvature(case, "hessian")
    lam = np.linalg.eigvalsh(H)[-1]
    b = RNG.standard_normal(H.shape[0])
    for method in ("riccati", "ldu", "banded"):
        with pytest.raises(SingularPivotError, match="singular"):
            _curvature(case).solve(b, -lam, method=method)


@pytest.mark.parametrize("bad, match", [("raise ", "uncertified"), (1.5, "integer")])
def test_solve_options_are_checked(bad, match):
    curv = _curvature(GRID[0])
    kwargs = {"uncertified": bad} if match == "uncertified" else {"refine": bad}
    with pytest.raises(ValueError, match=match):
        curv.solve(curv.grad, 0.1, **kwargs)


def _eigenvalue_classes(w, shift, tol, norm):
    """Which counts are certain for eigenvalues w of H at shift: (n_neg, n_pos) bounds."""
    return (int((w + shift < -tol * norm).sum()), int((w + shift > tol * norm).sum()))


@pytest.mark.parametrize("kind", ["hessian", "ggn"])
def test_inertia_from_certified_sweeps_agrees_with_eigvalsh(kind):
    case = next(c for c in GRID if c.depth >= 4 and c.batch >= 3)
    curv = _curvature(case, kind)
    w = np.linalg.eigvalsh(dense_curvature(case, kind))
    norm = curv.norm_estimate()
    for shift in (0.3, -0.05 if kind == "hessian" else 1e-3, 0.0):
        n_neg, n_zero, n_pos = curv.inertia(shift)
        sure_neg, sure_pos = _eigenvalue_classes(w, shift, np.sqrt(2.2e-16), norm)
        assert sure_neg <= n_neg <= curv.n_params - sure_pos - n_zero
        assert sure_pos <= n_pos and n_neg + n_zero + n_pos == curv.n_params
        if kind == "ggn" and shift == 0.0:
            assert n_neg == 0


def test_an_inaccurate_sweep_is_not_trusted_and_the_dense_count_or_error_takes_over(
        monkeypatch):
    case = next(c for c in GRID if c.depth >= 4 and c.batch >= 3)
    w = np.linalg.eigvalsh(dense_curvature(case, "hessian"))
    solve = certified.SOLVERS["riccati"]
    # A substitution 2x off makes ||I - A F^{-1}|| = 1: no sweep may be trusted.
    monkeypatch.setitem(certified.SOLVERS, "riccati",
                        (solve[0], lambda fac, gs: [2.0 * x for x in solve[1](fac, gs)]))
    curv = _curvature(case)
    sigma = 0.5 * (w[2] + w[3])                       # between two separated eigenvalues
    assert w[3] - w[2] > 1e-3
    assert curv.count_eigenvalues_below(sigma) == 3
    assert curv._eigenvalues is not None              # the count came from the fallback
    monkeypatch.setattr(spectrum, "DENSE_INERTIA_MAX", 0)
    with pytest.raises(spectrum.UncertifiedInertiaError, match="cannot be certified"):
        _curvature(case).inertia(-sigma)


def test_the_free_norm_bound_is_a_principal_submatrix_of_h():
    case = next(c for c in GRID if c.depth >= 3 and c.batch >= 3)
    curv = _curvature(case)
    H = dense_curvature(case, "hessian")
    last = curv.net.split(np.arange(curv.n_params, dtype=float))[-1].astype(int).ravel()
    for shift in (0.0, 0.7, -3.0):
        expected = np.abs(np.diag(H)[last] + shift).max()
        assert norms.probe_norm(curv, shift) == pytest.approx(expected, rel=1e-12, abs=1e-15)
        assert norms.probe_norm(curv, shift) <= np.linalg.norm(H + shift * np.eye(len(H)), 2)


def _cast(blocks, fn):
    """A stand-in for ``blocks`` (what :func:`hvp` reads) with fn applied to every array."""
    def cast(a):
        if a is None or isinstance(a, str):            # the loss layer's name of its loss
            return a
        if isinstance(a, tuple):
            return type(a)(*map(cast, a))
        return fn(a)
    return SimpleNamespace(segments=[(i, cast(b)) for i, b in blocks.segments],
                           layers=[cast(b) for b in blocks.layers])


FRACTION = np.vectorize(Fraction, otypes=[object])
U_LD = float(np.finfo(np.longdouble).eps) / 2


def _arrays(blocks):
    out = []
    _cast(blocks, out.append)
    return out


def _assert_no_subnormals(curv):
    """The premise of the bound: Higham's model of rounding ignores underflow, and the
    products of blocks free of subnormal numbers with these vectors do not underflow."""
    tiny = np.finfo(curv.net.dtype).tiny
    assert all(np.all((a == 0) | (np.abs(a) >= tiny)) for a in _arrays(curv.blocks))


def _shifted_logits(net, params, size, seed):
    """Add one row w to every row of the loss layer's weights: every logit of a sample
    moves by ``w . z``, which the softmax ignores, so the loss and H are unchanged while
    the product's intermediates ``W_L y`` grow by ``|w| |y|`` and cancel in
    ``Lambda_s``: the cancellation behind the product's largest rounding errors."""
    W, _ = net.unpack(params)[-1]
    W += size * np.random.default_rng(seed).standard_normal(W.shape[1])


def _labels(net, rng, batch):
    """Uniform labels, or standard normal targets for the squared error."""
    c = net.sizes[-1]
    if net.loss_name == "mse":
        return rng.standard_normal((batch, c))
    return rng.integers(0, c, batch)


EXACT = [("softplus", True, 3.0, 0, np.float64), ("tanh", False, 4.0, 0, np.float64),
         ("sigmoid", True, 5.0, 0, np.float64), ("tanh", True, 2.0, 1e6, np.float64),
         ("softplus", False, 3.0, 0, np.float32), ("tanh", True, 2.0, 1e3, np.float32)]
NETWORKS = [("tanh", True, 2.0, np.float64, "mse", False),
            ("gelu", True, 2.0, np.float64, "mse", True),
            ("relu", False, 2.0, np.float64, "cross_entropy", True),
            ("leaky_relu", True, 3.0, np.float64, "mse", True),
            ("silu", False, 3.0, np.float64, "cross_entropy", True),
            ("identity", True, 1.0, np.float64, "mse", True),
            ("elu", True, 2.0, np.float32, "mse", True)]
"""The squared error's loss layer, residual layers (an identity in the stored Dz) and the
activations beyond the smooth three, whose blocks the bound reads as any others."""


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("activation, bias, gain, shifted, dtype, loss, residual",
                         [(*c, "cross_entropy", False) for c in EXACT]
                         + [(a, b, g, 0, d, loss, res) for a, b, g, d, loss, res in NETWORKS])
def test_the_product_bound_holds_in_exact_arithmetic(activation, bias, gain, shifted,
                                                     dtype, loss, residual, kind,
                                                     monkeypatch):
    """``|fl(H x) - H x| <= E`` and ``|fl(H x)| <= P`` entry by entry, with H x of the
    stored blocks in exact rational arithmetic, for both evaluation orders of the product
    and for the double-word one (docs/math.md eqs. (7.3b), (7.3c), (7.3e)), for both
    losses and with residual layers; the bound assumes no underflow, and the nets have no
    subnormal numbers in their blocks."""
    net = MLP([2, 3, 3, 3, 3, 3, 4], activation=activation, bias=bias, dtype=dtype,
              loss=loss, residual=residual)
    assert sum(net.residual_layers) == (4 if residual else 0)
    params = net.init_params(seed=5, gain=gain)
    if shifted:
        _shifted_logits(net, params, shifted, 5)
    rng = np.random.default_rng(5)
    X, y = rng.standard_normal((3, 2)).astype(dtype), _labels(net, rng, 3)
    curv = Curvature(net, params, X, y, kind=kind)
    _assert_no_subnormals(curv)
    xs = net.split(rng.standard_normal((net.n_params, 2)).astype(dtype))
    exact = hvp(_cast(curv.blocks, FRACTION), [FRACTION(x) for x in xs], _compiled=False)
    P, E = hvp_rounding(curv.blocks, xs)
    for compiled in (True, False) if dtype == np.float64 else (False,):
        computed = hvp(curv.blocks, xs, _compiled=compiled)
        for c, p, e, h in zip(computed, P, E, exact):
            assert np.all(np.abs(FRACTION(c) - h) <= FRACTION(e))
            assert np.all(np.abs(c) <= p)
    if dtype == np.float64:
        _, E = hvp_rounding(curv.blocks, xs, DoubleWord.UNIT)
        for compiled in (True, False):        # False: CuPy's code, on NumPy arrays
            monkeypatch.setattr(DoubleWord, "COMPILED", compiled)
            words = hvp(curv.blocks, [DoubleWord(x, np.zeros_like(x)) for x in xs],
                        _compiled=False)
            for w, e, h in zip(words, E, exact):
                assert np.all(np.abs(FRACTION(w.hi) + FRACTION(w.lo) - h) <= FRACTION(e))


DEEP = [("softplus", 3, 20, 3.0, False, 3), ("softplus", 3, 24, 3.0, True, 3),
        ("tanh", 4, 24, 5.0, True, 3), ("sigmoid", 4, 16, 4.0, False, 3)]
DEEP_NETWORKS = [("softplus", 3, 20, 3.0, False, 3, "mse", False),
                 ("tanh", 3, 4, 2.0, True, 1000, "mse", False),
                 ("gelu", 4, 12, 1.0, True, 3, "mse", True),
                 ("relu", 4, 12, 1.5, True, 3, "cross_entropy", True)]
"""Deep nets with the squared error's loss layer (one of 1000 outputs), residual layers,
or both."""
LOOSENESS = 1e6
"""How far above the product's actual error ``||E||`` may lie on the nets of DEEP, on
1000 classes and on DEEP_NETWORKS (measured: 8.6e2 to 1.6e5): the componentwise bound
adds up every rounding with its worst sign, and the absolute values of the blocks grow
faster along the chain than their products (on expanding nets by far more: 1e13 on the
README's digits net)."""


def _deep(activation, width, depth, gain, bias, classes, loss="cross_entropy",
          residual=False, *, seed, dtype=np.float64):
    net = MLP([width] * depth + [classes], activation=activation, bias=bias, dtype=dtype,
              loss=loss, residual=residual)
    params = net.init_params(seed=seed, gain=gain)
    rng = np.random.default_rng(seed)
    X, y = rng.standard_normal((4, width)).astype(dtype), _labels(net, rng, 4)
    return net, params, X, y


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("config", DEEP + [("tanh", 3, 4, 2.0, True, 1000)] + DEEP_NETWORKS,
                         ids=str)
def test_the_product_bound_on_deep_nets_and_how_loose_it_is(config, kind, dtype):
    """The bound against the product of the stored blocks in long double (itself
    bounded by :func:`hvp_rounding` at long double's unit roundoff), on deep, high-gain
    nets, on a loss layer of 1000 classes or outputs and on the squared error's loss layer
    and residual layers; ``||E||`` within LOOSENESS of the product's actual error (with
    ``-s`` the ratios are printed)."""
    net, params, X, y = _deep(*config, seed=1, dtype=dtype)
    curv = Curvature(net, params, X, y, kind=kind)
    _assert_no_subnormals(curv)
    xs = net.split(np.random.default_rng(3).standard_normal((net.n_params, 2)).astype(dtype))
    reference = net.join(hvp(_cast(curv.blocks, lambda a: a.astype(np.longdouble)),
                             [x.astype(np.longdouble) for x in xs], _compiled=False))
    E_ref = net.join(hvp_rounding(curv.blocks, xs, U_LD)[1])
    P, E = (net.join(v) for v in hvp_rounding(curv.blocks, xs))
    for compiled in (True, False) if dtype == np.float64 else (False,):
        computed = net.join(hvp(curv.blocks, xs, _compiled=compiled))
        error = np.abs(computed - reference)
        assert np.all(error <= E + E_ref)
        assert np.all(np.abs(computed) <= P)
        if np.any(error > 0):              # else H x is zero: a saturated softmax
            ratio = np.linalg.norm(E) / float(np.linalg.norm(error))
            print(f"{config} {kind} {np.dtype(dtype).name} compiled={compiled}: "
                  f"||E|| / ||error|| = {ratio:.3g}")
            assert ratio <= LOOSENESS


def _backward_error(M, x, b, norm):
    """``||b - M x|| / (norm ||x|| + ||b||)`` per column, the residual in long double."""
    r = b.astype(np.longdouble) - M @ x.astype(np.longdouble)
    return (np.linalg.norm(r.astype(np.float64), axis=0)
            / (norm * np.linalg.norm(x, axis=0) + np.linalg.norm(b, axis=0)))


def _against_the_blocks(curv, x, b, shift, norm):
    """Per column, bounds ``(low, gap)``: ``low`` below the backward error against the H
    of ``curv``'s stored blocks (its product in long double, less that product's own
    bound), ``gap`` above ``||(H_dense - H_blocks) x||`` relative to the same scale once
    ``H_blocks x`` is known; the latter is the rounding of the network's evaluation (its
    forward pass, the blocks' formation, the verifier's own), which no product sees."""
    net = curv.net
    xs = net.split(x)
    Hx = net.join(hvp(_cast(curv.blocks, lambda a: a.astype(np.longdouble)),
                      [v.astype(np.longdouble) for v in xs], _compiled=False))
    E_ref = np.linalg.norm(net.join(hvp_rounding(curv.blocks, xs, U_LD)[1]), axis=0)
    scale = norm * np.linalg.norm(x, axis=0) + np.linalg.norm(b, axis=0)
    r = np.linalg.norm((b - shift * x.astype(np.longdouble) - Hx).astype(np.float64), axis=0)
    return (r - E_ref) / scale, Hx, E_ref / scale


SOLVES = [("softplus", 3, 20, 3.0, False, 2, "hessian"),
          ("softplus", 4, 20, 3.0, False, 2, "hessian"),
          ("softplus", 4, 20, 3.0, False, 2, "ggn"),
          ("softplus", 3, 20, 3.0, False, 1, "hessian"),
          ("softplus", 3, 20, 3.0, False, 1, "ggn"),
          ("tanh", 4, 24, 5.0, False, 1, "hessian"), ("tanh", 4, 24, 5.0, False, 1, "ggn"),
          ("tanh", 4, 16, 3.0, True, 3, "hessian"), ("tanh", 4, 16, 3.0, True, 3, "ggn"),
          ("sigmoid", 4, 16, 4.0, True, 4, "hessian"), ("sigmoid", 4, 16, 4.0, True, 4, "ggn")]
SOLVED_NETWORKS = [("tanh", 4, 16, 3.0, True, 3, "hessian", "mse", False),
                   ("tanh", 4, 16, 3.0, True, 3, "ggn", "mse", False),
                   ("gelu", 4, 12, 1.5, True, 2, "hessian", "mse", True),
                   ("relu", 4, 8, 1.5, True, 2, "hessian", "cross_entropy", True),
                   ("relu", 4, 12, 1.5, True, 2, "ggn", "mse", True)]
"""Deep nets with the squared error's loss layer, residual layers, or both."""


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("activation, width, depth, gain, bias, seed, kind, loss, residual",
                         [(*c, "cross_entropy", False) for c in SOLVES] + SOLVED_NETWORKS)
def test_the_reported_backward_error_bounds_that_against_the_exact_h(
        activation, width, depth, gain, bias, seed, kind, loss, residual, dtype):
    """On deep, high-gain nets the reported figure is at least the backward error
    against the H of the stored blocks (docs/math.md eq. (7.3f)), and against the
    verifier's dense H up to the measured difference between the two, which is the
    rounding of the network's evaluation, not of the product. With only the residual of
    the computed product the figure fell to 0.003 u where the dense one was 0.01 u.
    ``-s`` prints the figures: where the bound of the product's rounding certifies, the
    figure is up to a few hundred u above the dense one; where the residual in double
    words decides, within a few percent of it."""
    net, params, X, y = _deep(activation, width, depth, gain, bias, 3, loss, residual,
                              seed=seed, dtype=dtype)
    curv = Curvature(net, params, X, y, kind=kind)
    dense = (dense_hessian if kind == "hessian" else dense_ggn)(
        net, params.astype(np.float64), X.astype(np.float64), y)
    w = np.linalg.eigvalsh((dense + dense.T) / 2)
    B = np.random.default_rng(seed).standard_normal((net.n_params, 2)).astype(dtype)
    u = np.finfo(dtype).eps / 2
    # float32 refuses condition numbers beyond 1 / (its bound), about 2e4
    for delta in (10.0, 1e-2, 1e-5)[:3 if dtype == np.float64 else 2]:
        shift = float(delta * np.abs(w).max())
        x, info = curv.solve(B, shift, return_info=True, uncertified="return")
        norm = np.abs(w + shift).max()
        true = _backward_error(dense + shift * np.eye(net.n_params), x, B, norm)
        low, Hx, _ = _against_the_blocks(curv, x, B, shift, norm)
        gap = (np.linalg.norm((dense.astype(np.longdouble) @ x - Hx).astype(np.float64),
                              axis=0)
               / (norm * np.linalg.norm(x, axis=0) + np.linalg.norm(B, axis=0)))
        print(f"{activation} L={depth} {kind} {loss} residual={residual} "
              f"{np.dtype(dtype).name} delta={delta:g}: "
              f"reported {info.backward_error / u} u, dense {true / u} u, "
              f"evaluation gap {gap / u} u")
        assert np.all(info.proved)
        assert np.all(info.backward_error >= low)
        assert np.all(info.backward_error >= true - gap)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("activation, loss, residual", [
    ("tanh", "mse", False), ("gelu", "mse", True), ("relu", "cross_entropy", True),
    ("relu", "mse", True)])
def test_the_reported_figure_bounds_the_exact_backward_error(activation, loss, residual,
                                                             kind):
    """On the squared error's loss layer and residual layers the reported figure is at
    least the backward error against the stored blocks' H, its residual in exact rational
    arithmetic and ``||A||`` from above (docs/math.md eq. (7.3f)), and it is proved."""
    net = MLP([2, 3, 3, 3, 3, 3, 4], activation=activation, loss=loss, residual=residual)
    params = net.init_params(seed=4, gain=2.0)
    rng = np.random.default_rng(4)
    X, y = rng.standard_normal((3, 2)), _labels(net, rng, 3)
    curv = Curvature(net, params, X, y, kind=kind)
    _assert_no_subnormals(curv)
    eye = np.eye(net.n_params)
    H = curv.hvp(eye)
    # ||H|| <= ||fl(H)|| + ||fl(H) - H||_F, fl(H) the computed columns
    norm_h = (np.linalg.norm(H, 2) * (1 + 1e-12)
              + np.linalg.norm(net.join(hvp_rounding(curv.blocks, net.split(eye))[1])))
    B = rng.standard_normal((net.n_params, 2))
    u = np.finfo(np.float64).eps / 2
    for delta in (10.0, 1e-2, 1e-5):
        shift = delta * np.abs(np.linalg.eigvalsh((H + H.T) / 2)).max()
        x, info = curv.solve(B, shift, return_info=True, uncertified="return")
        exact = net.join(hvp(_cast(curv.blocks, FRACTION), net.split(FRACTION(x)),
                             _compiled=False))
        r = FRACTION(B) - FRACTION(shift) * FRACTION(x) - exact
        r = np.sqrt(np.sum(r * r, axis=0).astype(float))
        low = r / ((1 + 1e-12) * (norm_h + shift) * np.linalg.norm(x, axis=0)
                   + np.linalg.norm(B, axis=0))
        print(f"{activation} {loss} residual={residual} {kind} delta={delta:g}: "
              f"reported {info.backward_error / u} u, at least {low / u} u")
        assert np.all(info.proved)
        assert np.all(info.backward_error >= low)


def test_a_product_that_cancels_is_not_reported_below_its_error():
    """Where the softmax cancels large logits (:func:`_shifted_logits`, a common part of
    about 1e7 in every logit, which ``W_L y`` rounds at its size before any subtraction, so
    that no deflation of ``Lambda_s`` removes it) the product errs by thousands of u
    relative to ``||H|| ||x||``: the backward error against the stored blocks' H (its
    residual in exact rational arithmetic, ``||A||`` from above) is at least 1.1e4 u,
    where the model of the product's rounding allows 400 u. The figure bounds it, and the
    solve is refused."""
    net = MLP([4] * 6 + [3], activation="tanh", bias=True)
    params = net.init_params(seed=3, gain=2.0)
    _shifted_logits(net, params, 1e7, 1)
    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((4, 4)), rng.integers(0, 3, 4)
    curv = Curvature(net, params, X, y)
    _assert_no_subnormals(curv)
    eye = np.eye(net.n_params)
    H = curv.hvp(eye)
    shift = 0.1 * np.abs(np.linalg.eigvalsh((H + H.T) / 2)).max()
    B = rng.standard_normal((net.n_params, 2))
    with pytest.raises(UncertifiedSolveError):
        curv.solve(B, shift)
    x, info = curv.solve(B, shift, return_info=True, uncertified="return")
    exact = net.join(hvp(_cast(curv.blocks, FRACTION), net.split(FRACTION(x)),
                         _compiled=False))
    r = FRACTION(B) - FRACTION(shift) * FRACTION(x) - exact
    r = np.sqrt(np.sum(r * r, axis=0).astype(float))
    # ||A|| <= ||fl(H)|| + ||fl(H) - H||_F + shift, fl(H) the computed columns
    norm = (np.linalg.norm(H, 2) * (1 + 1e-12) + shift
            + np.linalg.norm(net.join(hvp_rounding(curv.blocks, net.split(eye))[1])))
    low = r / ((1 + 1e-12) * norm * np.linalg.norm(x, axis=0) + np.linalg.norm(B, axis=0))
    u = np.finfo(np.float64).eps / 2
    print(f"reported {info.backward_error / u} u, at least {low / u} u")
    assert np.all(low > 2 * info.bound)
    assert np.all(info.backward_error >= low)
