"""The factors of :func:`tallskinny_np.symmetric.sym_factor` (compiled Cholesky or
Bunch-Kaufman in float64, LAPACK's in float32, ``eigh``) against dense references: their
solve, inertia and condition estimate, and the zero tolerance on singular blocks."""
import numpy as np
import pytest

from conftest import backward_error, symmetric_matrix
from tallskinny_np import pivot
from tallskinny_np.symmetric import EighFactor, LapackFactor, sym_factor

FACTORS = [(np.float64, None, pivot.PivotFactor), (np.float32, None, LapackFactor),
           (np.float64, "eigh", EighFactor), (np.float32, "eigh", EighFactor)]


@pytest.mark.parametrize("dtype, strategy, factor_type", FACTORS)
@pytest.mark.parametrize("kind", ["pd", "indefinite", "zero-diagonal"])
@pytest.mark.parametrize("p", [2, 9, 70])
def test_solve_inertia_rcond(dtype, strategy, factor_type, kind, p):
    Q = symmetric_matrix(kind, p, p).astype(dtype)
    f = sym_factor(Q, positive_definite=kind == "pd", strategy=strategy)
    assert isinstance(f, factor_type)
    Q64 = Q.astype(np.float64)
    w = np.linalg.eigvalsh(Q64)
    assert f.inertia == (int((w < 0).sum()), 0, int((w > 0).sum()))
    u = float(np.finfo(dtype).eps) / 2
    b = np.random.default_rng(1).standard_normal((p, 3)).astype(dtype)
    for rhs in (b, b[:, 0]):
        x = f.solve(rhs)
        assert x.dtype == dtype and x.shape == rhs.shape
        assert backward_error(Q64, x.astype(np.float64), rhs) <= 10 * p * u
    if strategy == "eigh":                   # the 2-norm reciprocal condition number
        exact = np.abs(w).min() / np.abs(w).max()
        assert f.rcond == pytest.approx(exact, rel=10 * p * u / exact)
    else:                                    # a 1-norm estimate, a lower bound on ||Q^-1||
        exact = 1 / (np.linalg.norm(Q64, 1) * np.linalg.norm(np.linalg.inv(Q64), 1))
        assert exact * (1 - 100 * p * u) <= f.rcond <= 3 * exact


@pytest.mark.parametrize("dtype, strategy, factor_type", FACTORS)
def test_singular_block_counts_a_zero_eigenvalue(dtype, strategy, factor_type):
    f = sym_factor(np.diag([1.0, -2.0, 0.0, 3.0]).astype(dtype), strategy=strategy)
    assert f.inertia == (1, 1, 2) and f.rcond == 0.0


@pytest.mark.parametrize("dtype, strategy, factor_type", FACTORS[:2])
def test_barely_positive_definite_goes_to_bunch_kaufman(dtype, strategy, factor_type):
    """A block expected to be positive definite whose Cholesky is not accepted is counted
    by Bunch-Kaufman, which sees its tiny pivot as a zero eigenvalue."""
    tiny = 1e-20 if dtype == np.float64 else 1e-10
    f = sym_factor(np.diag([1.0, tiny, 2.0]).astype(dtype), positive_definite=True)
    cholesky = (f.arrays[1] == pivot.CHOLESKY if factor_type is pivot.PivotFactor
                else f.ipiv is None)
    assert not cholesky and f.inertia == (0, 1, 2)


def test_unknown_strategy_is_refused():
    with pytest.raises(ValueError, match="strategy 'lu'"):
        sym_factor(np.eye(2), strategy="lu")
