"""The Gauss-Newton matrix against ``J^T Lambda J`` (docs/math.md section 2.5, eq. (2.19)).

J is the central-difference Jacobian of ``net.logits`` flattened over the batch (row
``s * c + k`` is logit k of sample s, the row-major order of the ``B x c`` logits), Lambda
the block-diagonal Hessian of the batch-mean cross-entropy in the logits,
``Lambda_s = (diag(pi_s) - pi_s pi_s^T) / B``. Along coordinate axes the logits have large
fifth derivatives, so J uses h = 3e-4 as the gradient does (test_gradient_hvp.py); the
relative error of ``J^T Lambda J`` is then about 4e-12 over the grid, and 1e-9 leaves a
250x margin.

Rounding scale. ``G = J^T Lambda J`` is computed from J, Lambda and their products, so its
rounding error is of order ``u ||J||^2 ||Lambda||``, which can exceed ``u ||G||`` by 40x on
this grid (the softmax's null direction: logit shifts common to all classes are large in J
and cancel in Lambda). Positive semi-definiteness and the rank are asserted to that scale:
eigenvalues that should be zero are at most 60 u ``||J||^2 ||Lambda||`` in modulus on this
grid, and the tolerance is ``PSD_FACTOR = 1e3`` times that scale. A Hessian term leaking
into the GGN would show as a negative eigenvalue of order 1e-2 to 1 (the Hessians of this
grid reach -14), far beyond it.
"""
import numpy as np
import pytest
import scipy.linalg as sla

from conftest import DAMPINGS, GRID, U64, dense_curvature, dense_spectrum, jacobian_fd

FD_RTOL = 1e-9
PSD_FACTOR = 1e3


def logits_jacobian_and_lambda(case):
    """``(J, Lambda)``: the finite-difference Jacobian ``(B c, n)`` of the flattened
    logits and the block-diagonal softmax Hessian ``(B c, B c)`` of the mean loss."""
    net, params, X, y = case.build()
    J = jacobian_fd(lambda p: net.logits(p, X).ravel(), params, h=3e-4)
    O = net.logits(params, X)
    pi = np.exp(O - O.max(axis=1, keepdims=True))
    pi /= pi.sum(axis=1, keepdims=True)
    Lam = sla.block_diag(*[(np.diag(p) - np.outer(p, p)) / case.batch for p in pi])
    return J, Lam


@pytest.mark.parametrize("case", GRID, ids=str)
def test_ggn_hvp_matches_JT_Lambda_J(case):
    J, Lam = logits_jacobian_and_lambda(case)
    reference = J.T @ Lam @ J
    G = dense_curvature(case, "ggn")
    err = np.linalg.norm(G - reference) / np.linalg.norm(reference)
    assert err <= FD_RTOL, f"{case}: relative error of the GGN {err:.2e}"


@pytest.mark.parametrize("case", GRID, ids=str)
def test_ggn_is_positive_semidefinite_of_rank_at_most_B_times_c_minus_1(case):
    """G is positive semi-definite (so ``G + eps I`` is positive definite for every
    damping eps > 0 of the grid), and of rank at most ``B (c - 1)``: each Lambda_s has rank
    c - 1 (``Lambda_s 1 = 0``)."""
    J, Lam = logits_jacobian_and_lambda(case)
    n = J.shape[1]
    tol = PSD_FACTOR * U64 * np.linalg.norm(J, 2) ** 2 * np.linalg.norm(Lam, 2)
    w = dense_spectrum(case, "ggn")
    assert w[0] >= -tol, f"{case}: smallest eigenvalue {w[0]:.3g} (tolerance {tol:.3g})"
    rank = case.batch * (case.sizes[-1] - 1)
    assert np.all(np.abs(w[:max(n - rank, 0)]) <= tol), str(case)
    for eps in DAMPINGS["ggn"]:
        assert w[0] + eps > 0
