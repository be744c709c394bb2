"""The symmetric pivot factorization (Cholesky or Bunch-Kaufman with rotated 2x2 blocks)
against dense references: its solve, its half solves, its inertia and its condition
estimate."""
import numpy as np
import pytest

from conftest import symmetric_matrix
from tallskinny_np import pivot


def _factor(Q, pd):
    F = np.array(Q, order="F")
    out = pivot.factor(F, pd)
    return F, out


@pytest.mark.parametrize("rows", [3, 20], ids=["trsv", "blocked"])
@pytest.mark.parametrize("kind", ["pd", "indefinite", "zero-diagonal"])
@pytest.mark.parametrize("p", [1, 2, 7, 64, 150])
def test_solve_inertia_rcond(kind, p, rows):
    """Few rows are solved one by one, more by column blocks of the triangle (p = 150:
    two whole blocks and a partial one)."""
    if kind == "zero-diagonal" and p == 1:
        pytest.skip("the 1 x 1 zero matrix is singular")
    Q = symmetric_matrix(kind, p, p)
    F, (k, perm, cs, sn, lam, order, n_pos, anorm, rcond) = _factor(Q, kind == "pd")
    assert k == (pivot.CHOLESKY if kind == "pd" else pivot.BUNCH_KAUFMAN)
    B = np.asfortranarray(np.random.default_rng(1).standard_normal((rows, p)))
    X = B.copy(order="F")
    pivot.solve_rows(k, F, perm, cs, sn, lam, order, n_pos, X)
    ref = np.linalg.solve(Q, B.T).T
    assert np.abs(X - ref).max() <= 1e-10 * np.abs(ref).max()
    w = np.linalg.eigvalsh(Q)
    assert pivot.inertia(k, lam, anorm) == (int((w < 0).sum()), 0, int((w > 0).sum()))
    assert n_pos == int((w > 0).sum())
    assert anorm == pytest.approx(np.abs(Q).sum(0).max())
    exact = 1 / (np.linalg.norm(Q, 1) * np.linalg.norm(np.linalg.inv(Q), 1))
    assert exact * (1 - 1e-10) <= rcond <= 3 * exact    # the estimate bounds ||Q^-1|| below


@pytest.mark.parametrize("rows", [5, 30], ids=["trsv", "blocked"])
@pytest.mark.parametrize("p", [40, 150])
@pytest.mark.parametrize("kind", ["pd", "indefinite", "zero-diagonal"])
def test_half_solves(kind, p, rows):
    """``W = G^{-1} X`` gives ``X^T Q^{-1} X = W^T S W``; the half solve of a block of
    rows of an F-order array (as the two threads of a stage take them) gives those rows
    of the whole array's, to rounding."""
    Q = symmetric_matrix(kind, p, 3)
    F, (k, perm, cs, sn, lam, order, n_pos, anorm, rcond) = _factor(Q, kind == "pd")
    X = np.random.default_rng(2).standard_normal((p, rows))
    W = np.array(X.T, order="F")
    pivot.half_solve(k, F, perm, cs, sn, lam, order, W)
    S = np.where(np.arange(p) < n_pos, 1.0, -1.0)
    ref = X.T @ np.linalg.solve(Q, X)
    assert np.abs(W @ (S[:, None] * W.T) - ref).max() <= 1e-10 * np.abs(ref).max()
    Wb = np.array(X.T, order="F")
    pivot.half_solve(k, F, perm, cs, sn, lam, order, Wb[rows // 3:])
    assert np.abs(Wb[rows // 3:] - W[rows // 3:]).max() <= 1e-13 * np.abs(W).max()


def test_singular_pivot_has_zero_rcond_and_a_zero_eigenvalue():
    Q = np.diag([1.0, -2.0, 0.0, 3.0])
    F, (k, perm, cs, sn, lam, order, n_pos, anorm, rcond) = _factor(Q, False)
    assert rcond == 0.0
    assert pivot.inertia(k, lam, anorm) == (1, 1, 2)


def test_barely_positive_definite_goes_to_bunch_kaufman():
    Q = np.diag([1.0, 1e-20, 2.0])
    F, (k, *_, rcond) = _factor(Q, True)
    assert k == pivot.BUNCH_KAUFMAN and rcond < 1e-15


@pytest.mark.parametrize("p", [1, 3, 4, 5, 8, 13, 72])
def test_onenorm_reads_the_lower_triangle(p):
    """Every remainder of the four partial sums per column; the upper triangle holds
    garbage, which must not be read."""
    rng = np.random.default_rng(p)
    M = rng.standard_normal((p, p))
    Q = np.asfortranarray(np.tril(M) + np.triu(np.full((p, p), 1e6), 1))
    full = np.tril(M) + np.tril(M, -1).T
    ref = np.abs(full).sum(axis=0).max()
    assert abs(pivot.onenorm(Q) - ref) <= 1e-14 * ref
