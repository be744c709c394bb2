"""Bad input raises the documented error, and leaves no partial state.

Every invalid argument raises ValueError with a message naming the problem; a singular
system raises :class:`tallskinny_np.SingularPivotError` (a ``numpy.linalg.LinAlgError``)
naming the layer, never returns inf or nan, and leaves the Curvature able to solve.
"""
from fractions import Fraction

import numpy as np
import pytest

from conftest import GRID, KINDS, U64, condition_number, dense_curvature, relative_error
from tallskinny_np import MLP, Curvature, SingularPivotError, spectrum
from tallskinny_np.curvature import METHODS
from tallskinny_np.optim import (SGD, Adam, DampedNewton, GaussNewtonToNewton, HessianFree,
                                 SaddleFreeNewton, TrustRegion)

SIZES = [4, 3, 3, 3]


@pytest.fixture
def problem():
    """A small valid problem ``(net, params, X, y)``."""
    net = MLP(SIZES, activation="tanh", bias=True)
    rng = np.random.default_rng(0)
    return (net, net.init_params(seed=0, gain=1.2), rng.standard_normal((5, SIZES[0])),
            rng.integers(0, SIZES[-1], size=5))


@pytest.mark.parametrize("kwargs, match", [
    (dict(sizes=[4, 3]), "at least 2 layers"),
    (dict(sizes=[4]), "at least 2 layers"),
    (dict(sizes=[4, 0, 3]), "positive integers"),
    (dict(sizes=[4, 2.5, 3]), "positive integers"),
    (dict(sizes=[4, 3, 1]), "at least 2 classes"),
    (dict(activation="swish"), "unknown activation"),
    (dict(activation=["tanh"]), "one per hidden layer"),
    (dict(loss="l1"), "unknown loss"),
    (dict(residual="yes"), "residual must be True or False"),
    (dict(activation=None), "unknown activation"),
    (dict(dtype=np.float16), "dtype must be float64 or float32"),
    (dict(bias="yes"), "bias must be True or False"),
])
def test_bad_network(kwargs, match):
    kwargs = {"sizes": SIZES, **kwargs}
    with pytest.raises(ValueError, match=match):
        MLP(**kwargs)


def bad_data(net, params, X, y):
    """``(name, params, X, y, match)``: one invalid argument at a time."""
    c = net.n_classes
    nan_X, inf_params = X.copy(), params.copy()
    nan_X[1, 2] = np.nan
    inf_params[3] = np.inf
    return [
        ("X columns", params, X[:, :-1], y, r"X must have shape \(batch, 4\)"),
        ("X 1-d", params, X[0], y[:1], r"X must have shape \(batch, 4\)"),
        ("empty batch", params, X[:0], y[:0], "batch >= 1"),
        ("X nan", params, nan_X, y, "X contains non-finite"),
        ("X complex", params, X + 1j, y, "X must be a real array"),
        ("params length", params[:-1], X, y, rf"params must have shape \({net.n_params},\)"),
        ("params inf", inf_params, X, y, "params contain non-finite"),
        ("params complex", params + 1j, X, y, "params must be a real array"),
        ("params complex, zero imaginary part", params.astype(complex), X, y,
         "params must be a real array"),
        ("y length", params, X, y[:-1], r"y must have shape \(5,\)"),
        ("y float", params, X, y.astype(float), "integer class labels"),
        ("label -1", params, X, np.where(np.arange(5) == 2, -1, y), r"labels must lie in \[0, 3\)"),
        ("label c", params, X, np.where(np.arange(5) == 2, c, y), r"labels must lie in \[0, 3\)"),
    ]


@pytest.mark.parametrize("entry", ["loss", "curvature"])
def test_bad_data_and_params(problem, entry):
    net, params, X, y = problem
    for name, p, Xb, yb, match in bad_data(net, params, X, y):
        with pytest.raises(ValueError, match=match):
            if entry == "loss":
                net.loss(p, Xb, yb)
            else:
                Curvature(net, p, Xb, yb)


def test_unknown_kind(problem):
    with pytest.raises(ValueError, match="unknown curvature kind 'hessain'"):
        Curvature(*problem, kind="hessain")


@pytest.mark.parametrize("kind", KINDS)
def test_bad_vectors(problem, kind):
    net, params, X, y = problem
    curv = Curvature(net, params, X, y, kind=kind)
    n = net.n_params
    nan_b = np.ones(n)
    nan_b[-1] = np.nan
    for call, name in [(curv.hvp, "v"), (lambda b: curv.solve(b, 0.1), "b")]:
        for bad in [np.ones(n - 1), np.ones((n + 1, 2)), np.ones((n, 2, 2)), np.ones(())]:
            with pytest.raises(ValueError, match=rf"{name} must have shape \({n},\)"):
                call(bad)
        with pytest.raises(ValueError, match=f"{name} contains non-finite"):
            call(nan_b)
        with pytest.raises(ValueError, match=f"{name} contains non-finite"):
            call(np.full((n, 2), np.inf))
        with pytest.raises(ValueError, match=f"{name} must be a real array"):
            call(np.ones(n, dtype=complex))


@pytest.mark.parametrize("kind", KINDS)
def test_no_columns_give_empty_results(problem, kind):
    """``(n_params, 0)`` is a matrix of no vectors, as in NumPy and SciPy: the product and
    the solves return ``(n_params, 0)`` (once an obscure reshape error), the solve's info
    has no columns, and ``modified_solve`` still reports its modification's norm."""
    net, params, X, y = problem
    curv = Curvature(net, params, X, y, kind=kind)
    empty = np.zeros((net.n_params, 0))
    assert curv.hvp(empty).shape == (net.n_params, 0)
    x, info = curv.solve(empty, 0.1, return_info=True)
    assert x.shape == (net.n_params, 0) and info.backward_error.shape == (0,)
    assert info.path == () and info.bound > 0
    x, e_norm = curv.modified_solve(empty, 0.1, floor=1e-2)
    assert x.shape == (net.n_params, 0) and e_norm >= 0
    assert curv.to_scipy().matmat(empty).shape == (net.n_params, 0)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("damping", [np.nan, np.inf, -np.inf, "0.1", None, True, 1 + 1j])
def test_damping_not_a_finite_real(problem, kind, damping):
    curv = Curvature(*problem, kind=kind)
    with pytest.raises(ValueError, match="damping must be a finite real number"):
        curv.solve(np.ones(curv.n_params), damping)


def test_negative_damping_for_ggn(problem):
    curv = Curvature(*problem, kind="ggn")
    with pytest.raises(ValueError, match="damping must be >= 0 for kind='ggn'"):
        curv.solve(np.ones(curv.n_params), -0.05)


def test_unknown_method(problem):
    curv = Curvature(*problem)
    with pytest.raises(ValueError, match="unknown solve method 'cholesky'"):
        curv.solve(np.ones(curv.n_params), 0.1, method="cholesky")


def test_integer_and_numpy_dampings_are_real_numbers(problem):
    """``damping`` is any real number: an int or a NumPy scalar means the same float."""
    curv = Curvature(*problem)
    b = np.random.default_rng(1).standard_normal(curv.n_params)
    x = curv.solve(b, 1.0)
    assert np.array_equal(curv.solve(b, 1), x)
    assert np.array_equal(curv.solve(b, np.float64(1.0)), x)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", GRID[::4], ids=str)
def test_zero_damping_raises_singular_pivot_and_leaves_no_state(case, kind, method):
    """H and the GGN are singular (the softmax is invariant to a logit shift common to all
    classes, so moving every row of ``W_L`` by the same vector leaves the loss unchanged:
    ``H d = 0``). damping = 0 must raise SingularPivotError naming a layer whose pivot is
    singular, or the whole matrix when the solution proves it singular, not return inf or
    nan; the same Curvature then solves a valid system correctly (backward-stable forward
    error bound ``2 cond * 100 u``, as in test_solve.py)."""
    net, params, X, y = case.build()
    curv = Curvature(net, params, X, y, kind=kind)
    b = np.random.default_rng(case.seed).standard_normal(net.n_params)
    with pytest.raises(SingularPivotError) as info:
        curv.solve(b, 0.0, method=method)
    err = info.value
    assert isinstance(err, np.linalg.LinAlgError)
    assert np.isfinite(err.rcond) and err.rcond >= 0
    if err.layer is None:
        assert "the matrix H + damping I is singular" in str(err)
    else:
        assert isinstance(err.layer, int) and 1 <= err.layer <= net.n_layers
        assert f"layer {err.layer}" in str(err)
    H = dense_curvature(case, kind)
    x = curv.solve(b, 0.1, method=method)
    M = H + 0.1 * np.eye(net.n_params)
    assert relative_error(x, np.linalg.solve(M, b)) <= (
        200 * U64 * condition_number(case, kind, 0.1))


@pytest.mark.parametrize("method", METHODS)
def test_failed_calls_leave_no_state(problem, method):
    """A solve that raised (bad b, bad damping, singular) changes nothing: repeating it
    raises again, and the damping of the last successful solve still gives its solution."""
    net, params, X, y = problem
    curv = Curvature(net, params, X, y)
    b = np.random.default_rng(2).standard_normal(net.n_params)
    x = curv.solve(b, 0.3, method=method)
    for bad_b, bad_damping, error in [(b[:-1], 0.3, ValueError), (b, np.nan, ValueError),
                                      (b, 0.0, SingularPivotError)]:
        for _ in range(2):
            with pytest.raises(error):
                curv.solve(bad_b, bad_damping, method=method)
        assert np.array_equal(curv.solve(b, 0.3, method=method), x)


def test_inputs_are_not_modified(problem):
    net, params, X, y = problem
    copies = [a.copy() for a in (params, X, y)]
    curv = Curvature(net, params, X, y)
    net.loss(params, X, y)
    v = np.ones(net.n_params)
    curv.hvp(v)
    curv.solve(v, 0.1)
    for a, c in zip((params, X, y, v), copies + [np.ones(net.n_params)]):
        assert np.array_equal(a, c)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_counts_at_shifts_far_beyond_the_norm_need_no_eigenvalues(problem, monkeypatch,
                                                                  dtype):
    """At 1e300 (and beyond float32's range) H + shift I is trivially definite: the counts
    are certified without a sweep and without the dense eigenvalues."""
    net, params, X, y = problem
    net = MLP(SIZES, activation="tanh", bias=True, dtype=dtype)
    curv = Curvature(net, params.astype(dtype), X, y)
    monkeypatch.setattr(spectrum, "_dense_negative_count", None)   # any use fails
    n = net.n_params
    for big in (1e300, 1e39, 1e5):
        assert curv.inertia(big) == (0, 0, n) and curv.inertia(-big) == (n, 0, 0)
        assert curv.count_eigenvalues_below(big) == n
        assert curv.count_eigenvalues_below(-big) == 0
        assert curv.is_positive_definite(big) and not curv.is_positive_definite(-big)
    assert curv._eigenvalues is None


def test_damping_beyond_the_dtype_and_fraction_dampings(problem):
    net, params, X, y = problem
    net32 = MLP(SIZES, activation="tanh", bias=True, dtype=np.float32)
    curv32 = Curvature(net32, params.astype(np.float32), X, y)
    for bad in (1e39, -1e300):
        with pytest.raises(ValueError, match=r"damping .* is beyond the range of the "
                                             r"network's dtype float32"):
            curv32.solve(curv32.grad, bad)
    x = curv32.solve(curv32.grad, 3e38)    # in range: x = g / 3e38, subnormal numbers
    np.testing.assert_allclose(x.astype(np.float64) * 3e38, curv32.grad, rtol=1e-3,
                               atol=1e-3 * np.abs(curv32.grad).max())
    curv = Curvature(net, params, X, y)
    np.testing.assert_array_equal(curv.solve(curv.grad, Fraction(1, 10)),
                                  curv.solve(curv.grad, 0.1))
    assert curv.inertia(Fraction(1, 10)) == curv.inertia(0.1)
    with pytest.raises(ValueError, match="damping must be a finite real number"):
        curv.solve(curv.grad, Fraction(10 ** 400))


def test_arrays_times_the_curvature_from_the_left(problem):
    net, params, X, y = problem
    curv = Curvature(net, params, X, y)
    V = np.random.default_rng(1).standard_normal((net.n_params, 3))
    np.testing.assert_array_equal(V.T @ curv, curv.hvp(V).T)
    np.testing.assert_array_equal(V[:, 0] @ curv, curv.hvp(V[:, 0]))
    with pytest.raises(ValueError, match=rf"v in v @ curv must have shape "
                                         rf"\({net.n_params},\) or \(k, {net.n_params}\)"):
        V @ curv


@pytest.mark.parametrize("call, name", [
    (lambda: MLP(SIZES).init_params(gain=np.nan), "gain"),
    (lambda: MLP(SIZES).init_params(gain=np.inf), "gain"),
    (lambda: MLP(SIZES).init_params(gain=-1.0), "gain"),
    (lambda: MLP(SIZES, dtype="garbage"), "dtype"),
    (lambda: SGD(lr=np.inf), "lr"),
    (lambda: Adam(lr=np.nan), "lr"),
    (lambda: DampedNewton(factor=np.inf), "factor"),
    (lambda: DampedNewton(damping=np.inf), "damping"),
    (lambda: DampedNewton(trials=2.5), "trials"),
    (lambda: TrustRegion(trials=2.0), "trials"),
    (lambda: TrustRegion(radius=np.inf, max_radius=np.inf), "max_radius"),
    (lambda: HessianFree(max_iter=1.5), "max_iter"),
    (lambda: GaussNewtonToNewton(switch_loss=np.inf), "switch_loss"),
    (lambda: SaddleFreeNewton(max_pairs=1.5), "max_pairs"),
])
def test_non_finite_and_non_integer_settings_name_the_argument(call, name):
    with pytest.raises(ValueError, match=rf"^{name} must be"):
        call()
