"""Gradient and H v against finite differences.

``Curvature.grad`` (backprop, docs/math.md eqs. (2.8), (2.9)) is checked against central
differences of ``net.loss``, and ``Curvature.hvp`` (Pearlmutter as matrices, docs/math.md
section 3.4) against central differences of ``Curvature.grad`` along v, at fresh points
``params +- h v``.

Tolerances. With the fourth-order stencil of :func:`conftest.central_difference` the
finite-difference error is truncation ``h^4 |f^(5)| / 30`` plus rounding ``~ 1.5 e_f / h``,
where ``e_f`` is the rounding error of the differenced function (``~ u |loss|`` for the
loss; ``~ 100 u |g|`` for backprop's gradient, a sum over layers and samples). Along
coordinate axes, and along some unit directions v, the loss and its gradient have large
fifth derivatives (truncation up to 2e-9 and 8e-10 at h = 1e-3, falling as h^4), so both
use h = 3e-4, where the two terms balance: relative errors of at most 2.1e-11 (gradient)
and 1.7e-11 (H v) over the grid. 1e-9 leaves a 50x margin, while a wrong or missing
derivative term gives an error of order 1e-3 or more.
"""
import numpy as np
import pytest

from conftest import (GRID, KINDS, OPERATOR_ROUNDING, U64, central_difference,
                      dense_curvature, jacobian_fd)
from tallskinny_np import MLP, Curvature

FD_RTOL = 1e-9


@pytest.mark.parametrize("case", GRID, ids=str)
def test_gradient_matches_finite_differences(case):
    net, params, X, y = case.build()
    curv = Curvature(net, params, X, y)
    g_fd = jacobian_fd(lambda p: np.array([net.loss(p, X, y)]), params, h=3e-4)[0]
    assert curv.grad.shape == (net.n_params,)
    assert curv.loss == pytest.approx(float(net.loss(params, X, y)), rel=4 * U64)
    err = np.linalg.norm(curv.grad - g_fd) / np.linalg.norm(g_fd)
    assert err <= FD_RTOL, f"{case}: relative error of the gradient {err:.2e}"


@pytest.mark.parametrize("case", GRID, ids=str)
def test_hvp_matches_finite_differences_of_gradient(case):
    net, params, X, y = case.build()
    curv = Curvature(net, params, X, y)
    v = np.random.default_rng(case.seed + 1).standard_normal(net.n_params)
    v /= np.linalg.norm(v)
    Hv_fd = central_difference(lambda p: Curvature(net, p, X, y).grad, params, v, h=3e-4)
    Hv = curv.hvp(v)
    assert Hv.shape == v.shape
    err = np.linalg.norm(Hv - Hv_fd) / np.linalg.norm(Hv_fd)
    assert err <= FD_RTOL, f"{case}: relative error of H v {err:.2e}"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", GRID[:42], ids=str)
def test_hvp_matrix_of_vectors_matches_columns_and_is_symmetric(case, kind):
    """``hvp(V)`` with V of shape (n, k) is ``[hvp(v_1) ... hvp(v_k)]``, and the matrix
    built from the columns ``hvp(e_i)`` is symmetric (H and the GGN are). Both hold to the
    rounding of the product, ``conftest.OPERATOR_ROUNDING`` u relative to ``||H||``
    (observed: 10 u and 53 u); a wrong block (a missing transpose, a term in H v but not
    in its adjoint) gives an O(1) difference."""
    net, params, X, y = case.build()
    curv = Curvature(net, params, X, y, kind=kind)
    H = dense_curvature(case, kind)
    norm_H = np.linalg.norm(H, 2)
    V = np.random.default_rng(case.seed + 2).standard_normal((net.n_params, 3))
    HV = curv.hvp(V)
    assert HV.shape == V.shape
    columns = np.column_stack([curv.hvp(v) for v in V.T])
    assert (np.linalg.norm(HV - columns)
            <= OPERATOR_ROUNDING * U64 * norm_H * np.linalg.norm(V)), str(case)
    assert np.linalg.norm(H - H.T, 2) <= OPERATOR_ROUNDING * U64 * norm_H, str(case)


@pytest.mark.parametrize("bias", [True, False])
def test_split_and_join_are_the_per_layer_layout(bias):
    """``MLP.split`` gives each layer's ``[W_l, c_l]`` (the blocks of ``MLP.unpack``) with
    the trailing axes kept, and ``MLP.join`` is its inverse."""
    net = MLP([3, 4, 5, 2], bias=bias)
    v = np.random.default_rng(0).standard_normal(net.n_params)
    V = np.random.default_rng(1).standard_normal((net.n_params, 3))
    for part, (W, c) in zip(net.split(v), net.unpack(v)):
        expected = np.column_stack([W, c]) if bias else W
        np.testing.assert_array_equal(part, expected)
    for k, part in enumerate(net.split(V)[1].transpose(2, 0, 1)):
        np.testing.assert_array_equal(part, net.split(V[:, k])[1])
    np.testing.assert_array_equal(net.join(net.split(v)), v)
    np.testing.assert_array_equal(net.join(net.split(V)), V)
    with pytest.raises(ValueError, match="split needs"):
        net.split(V[1:])
    with pytest.raises(ValueError, match="join needs"):
        net.join(net.split(v)[1:])
