"""The certificates of docs/math.md section 7, piece by piece: the backward-error bound,
the Lanczos interval, GMRES, the factor distance, and the solve chain's paths, errors and
warnings (the stress suite against dense references is test_certified.py)."""
import numpy as np
import pytest

from conftest import GRID, dense_curvature
from tallskinny_np import (MLP, Curvature, SingularPivotError, UncertifiedSolveError,
                           UncertifiedSolveWarning)
from tallskinny_np import certified, norms, spectrum
from tallskinny_np.certify import (PRODUCT_ROUNDING, backward_error_bound, backward_errors,
                                   factor_distance)
from tallskinny_np.krylov import gmres, lanczos_interval
from verify.dense import dense_hessian

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


def test_a_well_conditioned_solve_is_certified_by_the_first_solve_and_one_product():
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


@pytest.mark.parametrize("activation, width, depth, gain, seed", [
    ("softplus", 3, 20, 3.0, 2), ("softplus", 4, 20, 3.0, 2), ("softplus", 3, 20, 3.0, 1),
    ("tanh", 4, 24, 5.0, 1)])
def test_the_reported_backward_error_bounds_that_against_the_dense_h(activation, width,
                                                                      depth, gain, seed):
    """On deep, high-gain nets the reported figure bounds the backward error against the
    verifier's dense H (residual in long double), not only against the computed O(L)
    product: it includes the product's rounding (docs/math.md section 7.1). Without that
    term the figure fell below the dense one here (to 0.003 u against 0.01 u)."""
    net = MLP([width] * depth + [3], activation=activation, bias=False)
    params = net.init_params(seed=seed, gain=gain)
    rng = np.random.default_rng(seed)
    X, y = rng.standard_normal((4, width)), rng.integers(0, 3, 4)
    curv = Curvature(net, params, X, y)
    H = dense_hessian(net, params, X, y)
    w = np.linalg.eigvalsh((H + H.T) / 2)
    B = rng.standard_normal((net.n_params, 2))
    u = np.finfo(np.float64).eps / 2
    for delta in (10.0, 1e-2, 1e-6):
        shift = delta * np.abs(w).max()
        x, info = curv.solve(B, shift, return_info=True)
        M = (H + shift * np.eye(net.n_params)).astype(np.longdouble)
        r = (B.astype(np.longdouble) - M @ x.astype(np.longdouble)).astype(np.float64)
        dense = np.linalg.norm(r, axis=0) / (np.abs(w + shift).max() * np.linalg.norm(x, axis=0)
                                             + np.linalg.norm(B, axis=0))
        assert np.all(info.backward_error >= dense), (delta, info.backward_error / u,
                                                     dense / u)
        assert np.all(info.backward_error >= PRODUCT_ROUNDING * u)
        assert np.all(info.backward_error <= info.bound)
