"""float32 end to end, and its error against float64 on the same network.

``MLP(..., dtype=np.float32)`` computes everything in float32: ``net.loss`` is a
``numpy.float32``, ``grad``, ``hvp`` and ``solve`` return float32 arrays (``Curvature.loss``
is documented as a Python float). The float64 reference is the package run in float64 on
the float32-rounded parameters and inputs (exactly representable in float64), so the
difference is the precision of the computation alone.

Bounds, in units of u32 = 6e-8, with what was measured on the grid (84 cases, both kinds):

- loss and gradient: 100 u32 (observed 4.4 and 11). Both are short sums of products over
  at most 8 layers, each layer adding a few roundings.
- H v, normwise ``||dHv|| / (||H|| ||v||)``: HVP_FACTOR = ``conftest.OPERATOR_ROUNDING``
  = 4e3 u32 (observed 330). Two float64 evaluations of the same H at the same vector
  differ by up to 3.8e3 u normwise on this grid (where ``||H||`` is small against the
  products of blocks that form it, the softmax's null direction cancels); float32 rounding
  has the same structure.
- solve: ``||dx|| / ||x|| <= HVP_FACTOR * cond(H + eps I) * u32``: the float32 system is
  the float64 one perturbed normwise by at most HVP_FACTOR u32 (previous item), and a
  backward-stable solve adds at most 100 u32, so first-order perturbation theory gives the
  bound. Observed: riccati 448, ldu 7.7, banded 68 (times cond u32).

Refusals. A pivot is "singular to working precision" when its reciprocal condition estimate
is below eps (u32 = 6e-8 here; LAPACK's xGESVX criterion, ``tallskinny_np.errors``). The
LDU and banded solvers test the pivots of the augmented system K', whose conditioning is
not that of ``H + eps I``: on the GGN of sizes [5, 3, 1, 4, 5], softplus, no bias, B = 3,
with eps = 1, cond(G + I) = 1.13 while the LDU pivot Sigma_3 has cond 9.7e5 (float64); in
float32 the LDU factorization refuses it. A refused pivot is not a singular system: the
certified solve (docs/math.md section 7.2) goes on to the other factorizations, and
``test_float32_accepts_well_conditioned_systems`` asserts that no method refuses a system
with cond <= 1e3 (before the certified solve, the LDU refused 16 and the banded LU 1 of the
grid's 442 such systems).
"""
import functools

import numpy as np
import pytest

from conftest import (DAMPINGS, GRID, KINDS, OPERATOR_ROUNDING, U32, condition_number,
                      dense_curvature)
from tallskinny_np import MLP, Curvature, SingularPivotError
from tallskinny_np.errors import UncertifiedInertiaError
from tallskinny_np.curvature import METHODS

LOSS_GRAD_FACTOR = 100.0
HVP_FACTOR = OPERATOR_ROUNDING
WELL_CONDITIONED = 1e3


def same_network(case):
    """``(c32, c64)``: Curvatures in float32 and in float64 at the same (float32-rounded)
    parameters and inputs, for each kind."""
    net32, params, X, y = case.build(np.float32)
    net64 = MLP(case.sizes, activation=case.activation, bias=case.bias, dtype=np.float64)
    return {kind: (Curvature(net32, params, X, y, kind=kind),
                   Curvature(net64, params.astype(np.float64), X.astype(np.float64), y,
                             kind=kind))
            for kind in KINDS}


@functools.lru_cache(maxsize=None)
def float32_solves(method):
    """``(case, kind, damping, cond, relative error or None if refused)`` for every
    system of the grid solved in float32 by ``method``."""
    out = []
    for case in GRID:
        pairs = same_network(case)
        n = pairs[KINDS[0]][0].n_params
        b = np.random.default_rng(case.seed + 4).standard_normal(n)
        for kind, (c32, c64) in pairs.items():
            for damping in DAMPINGS[kind]:
                cond = condition_number(case, kind, damping)
                try:
                    x32 = c32.solve(b.astype(np.float32), damping, method=method)
                except SingularPivotError:
                    out.append((case, kind, damping, cond, None))
                    continue
                assert x32.dtype == np.float32 and x32.shape == b.shape
                x64 = c64.solve(b, damping, method=method)
                out.append((case, kind, damping, cond,
                            np.linalg.norm(x32 - x64) / np.linalg.norm(x64)))
    return out


@pytest.mark.parametrize("case", GRID[::2], ids=str)
def test_float32_loss_gradient_hvp(case):
    net32, params, X, y = case.build(np.float32)
    loss32 = net32.loss(params, X, y)
    assert isinstance(loss32, np.float32)
    v = np.random.default_rng(case.seed + 5).standard_normal(net32.n_params)
    for kind, (c32, c64) in same_network(case).items():
        assert c32.loss == float(loss32)
        assert abs(c32.loss - c64.loss) <= LOSS_GRAD_FACTOR * U32 * abs(c64.loss)
        assert c32.grad.dtype == np.float32 and c32.grad.shape == (net32.n_params,)
        assert (np.linalg.norm(c32.grad - c64.grad)
                <= LOSS_GRAD_FACTOR * U32 * np.linalg.norm(c64.grad))
        Hv = c32.hvp(v.astype(np.float32))
        assert Hv.dtype == np.float32 and Hv.shape == v.shape
        V = c32.hvp(np.stack([v, -v], axis=1).astype(np.float32))
        assert V.dtype == np.float32 and V.shape == (net32.n_params, 2)
        norm_H = np.linalg.norm(dense_curvature(case, kind), 2)
        err = np.linalg.norm(Hv - c64.hvp(v)) / (norm_H * np.linalg.norm(v))
        assert err <= HVP_FACTOR * U32, f"{case} {kind}: H v error {err / U32:.3g} u32"


@pytest.mark.parametrize("method", METHODS)
def test_float32_solve_error_bounded_by_cond(method):
    solved = [r for r in float32_solves(method) if r[4] is not None]
    worst = max(solved, key=lambda r: r[4] / r[3])
    case, kind, damping, cond, err = worst
    assert err <= HVP_FACTOR * cond * U32, (
        f"{method}: float32 error {err:.3g} = {err / (cond * U32):.3g} cond u32 at "
        f"{case} kind={kind} damping={damping} cond={cond:.3g}")


@pytest.mark.parametrize("method", METHODS)
def test_float32_accepts_well_conditioned_systems(method):
    refused = [r for r in float32_solves(method)
               if r[4] is None and r[3] <= WELL_CONDITIONED]
    assert not refused, (
        f"{method}: {len(refused)} float32 systems with cond <= {WELL_CONDITIONED:g} "
        f"refused, the best conditioned {min(r[3] for r in refused):.3g}: "
        f"{min(refused, key=lambda r: r[3])[:3]}")


def _overflowing_curvature():
    """Softplus passes huge inputs on (its slope tends to 1): at inputs of 1e20 H's
    entries reach 1e19 and more, and the inner products of the Lanczos steps (their
    squares) overflow float32."""
    net = MLP([3, 4, 4, 3], activation="softplus", bias=True, dtype=np.float32)
    rng = np.random.default_rng(0)
    X = (1e20 * rng.standard_normal((5, 3))).astype(np.float32)
    return Curvature(net, net.init_params(seed=1), X, rng.integers(0, 3, 5), kind="hessian")


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_float32_overflowing_hessian_is_refused_not_counted():
    """Where ||H|| is out of float32's reach, the Ritz interval is NaN, every eigenvalue
    count is refused with a named error (it returned all positive before), and the solve
    is refused; no overflow warning reaches the caller."""
    curv = _overflowing_curvature()
    assert all(np.isnan(curv.ritz_interval()))
    counts = [curv.norm_estimate, lambda: curv.inertia(0.1), curv.lambda_min,
              lambda: curv.count_eigenvalues_below(-0.1),
              lambda: curv.is_positive_definite(0.1)]
    for count in counts:
        with pytest.raises(UncertifiedInertiaError, match="too large for float32"):
            count()
    with pytest.raises(np.linalg.LinAlgError):
        curv.solve(curv.grad, 0.1)

