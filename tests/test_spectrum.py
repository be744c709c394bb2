"""Inertia, spectrum slicing and the LinearOperator adapters against
``numpy.linalg.eigvalsh`` of the dense H built from ``hvp`` columns (conftest), on random
configurations, with shifts right next to eigenvalues."""
import numpy as np
import pytest
from scipy.sparse.linalg import LinearOperator, cg, eigsh, minres

from conftest import GRID, dense_curvature, dense_spectrum
from tallskinny_np import Curvature

CASES = GRID[:28]                  # every activation, bias and depth 2..8


def _curvature(case, kind):
    net, params, X, y = case.build()
    return Curvature(net, params, X, y, kind=kind)


def _near_shifts(w):
    """Shifts sigma with ``H + sigma I`` having an eigenvalue of modulus ``delta`` (right
    next to singular) but none closer: -lambda_i +- delta for a few well-separated
    lambda_i, delta = 1e-6 max(1, ||H||), far above the dense reference's rounding
    (about 4e3 u ||H||, conftest.OPERATOR_ROUNDING)."""
    delta = 1e-6 * max(1.0, np.abs(w).max())
    separated = [i for i in range(len(w))
                 if len(w) == 1 or np.abs(np.delete(w, i) - w[i]).min() > 4 * delta]
    chosen = [separated[k] for k in np.unique(np.linspace(0, len(separated) - 1, 3).astype(int))
              ] if separated else []
    return [s for i in chosen for s in (-w[i] - delta, -w[i] + delta)]


@pytest.mark.parametrize("kind", ["hessian", "ggn"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_inertia_matches_eigvalsh(case, kind):
    curv = _curvature(case, kind)
    w = dense_spectrum(case, kind)
    shifts = [0.1, 1e-3, -0.05] + _near_shifts(w)
    for shift in shifts:
        expected = (int((w + shift < 0).sum()), 0, int((w + shift > 0).sum()))
        assert curv.inertia(shift) == expected, f"shift {shift!r}"
        assert curv.count_eigenvalues_below(-shift) == expected[0]


def test_grid_exercises_shifts_next_to_eigenvalues():
    """Most cases have well-separated eigenvalues to sit next to (else the test above
    would only check easy shifts)."""
    for kind in ("hessian", "ggn"):
        near = [len(_near_shifts(dense_spectrum(c, kind))) for c in CASES]
        assert sum(n >= 4 for n in near) >= 0.75 * len(CASES), (kind, near)


@pytest.mark.parametrize("kind", ["hessian", "ggn"])
@pytest.mark.parametrize("case", CASES[::3], ids=str)
def test_positive_definiteness_and_lambda_min(case, kind):
    curv = _curvature(case, kind)
    w = dense_spectrum(case, kind)
    scale = max(1.0, np.abs(w).max())
    delta = 1e-6 * scale
    assert curv.is_positive_definite(-w[0] + delta)
    assert not curv.is_positive_definite(-w[0] - delta)
    lam = curv.lambda_min(tol=1e-10)
    # bisection to 1e-10 scale, then refinement: at worst the bracket width
    assert abs(lam - w[0]) <= 1e-9 * scale, f"lambda_min {lam!r} vs eigvalsh {w[0]!r}"


def test_solve_dampings_equals_separate_solves():
    curv = _curvature(GRID[5], "hessian")
    b = np.random.default_rng(0).standard_normal((curv.n_params, 2))
    xs = curv.solve_dampings(b, [0.1, 1.0, -0.05])
    assert isinstance(xs, list) and len(xs) == 3
    for x, d in zip(xs, [0.1, 1.0, -0.05]):
        np.testing.assert_allclose(x, _curvature(GRID[5], "hessian").solve(b, d),
                                   rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="empty"):
        curv.solve_dampings(b, [])
    with pytest.raises(ValueError, match="finite"):
        curv.solve_dampings(b, [0.1, np.nan])


@pytest.mark.parametrize("damping", [[0.1, 1.0], (0.1,), np.array([0.1]), np.array(0.1)])
def test_solve_takes_one_damping_and_returns_one_array(damping):
    curv = _curvature(GRID[5], "hessian")
    b = np.random.default_rng(0).standard_normal(curv.n_params)
    if np.ndim(damping) == 0:
        assert curv.solve(b, damping).shape == b.shape
    else:
        with pytest.raises(ValueError, match="solve_dampings"):
            curv.solve(b, damping)


def test_linear_operators_work_with_scipy():
    case = next(c for c in GRID if c.depth >= 4 and c.batch >= 3)
    curv = _curvature(case, "hessian")
    H = dense_curvature(case, "hessian")
    w = dense_spectrum(case, "hessian")
    n = curv.n_params
    op = curv.to_scipy()
    assert isinstance(op, LinearOperator) and op.shape == (n, n)
    v = np.random.default_rng(1).standard_normal(n)
    np.testing.assert_allclose(op @ v, H @ v, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(op.T @ v, H @ v, rtol=1e-10, atol=1e-12)
    lam = eigsh(op, k=1, which="SA", tol=1e-12)[0][0]
    assert abs(lam - w[0]) <= 1e-8 * max(1, abs(w).max())
    # The exact inverse as a preconditioner: MINRES on H + eps I converges at once.
    eps = 0.1
    shifted = LinearOperator((n, n), matvec=lambda x: curv.hvp(x) + eps * x, dtype=float)
    inv = curv.inverse(eps)
    np.testing.assert_allclose(inv @ v, np.linalg.solve(H + eps * np.eye(n), v),
                               rtol=1e-9, atol=1e-12)
    x, info = minres(shifted, v, M=inv, rtol=1e-12, maxiter=5)
    assert info == 0
    assert np.linalg.norm(shifted @ x - v) <= 1e-10 * np.linalg.norm(v)
    ggn = _curvature(case, "ggn")
    G = LinearOperator((n, n), matvec=lambda x: ggn.hvp(x) + eps * x, dtype=float)
    x, info = cg(G, v, M=ggn.inverse(eps), rtol=1e-12, maxiter=5)
    assert info == 0
