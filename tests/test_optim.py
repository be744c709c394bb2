"""Optimizers: every Newton variant solves a convex quadratic in one
step; the Gauss-Newton step equals a dense solve of ``(J^T Lambda J + lam I) s = -g``; the
trust-region step satisfies the Moré-Sorensen optimality conditions and reaches the optimal
model value computed from a dense eigendecomposition, hard case included; the
Levenberg-Marquardt and radius rules follow rho; SGD and Adam follow their formulas;
Hessian-free CG converges to the dense damped Gauss-Newton step and truncates by Martens's
rule; the saddle-free step equals the dense ``(|H| + eps I)^{-1} g``, top-k variant and
near-singular ``H + eps I`` included.

The quadratic and eigenvalue-controlled problems use :class:`DenseCurvature`, a
curvature-like object built from a dense symmetric matrix with the interface the
optimizers use (``hvp``, ``solve``, ``is_positive_definite``, ``lambda_min``); the
network problems use :class:`tallskinny_np.Curvature` itself.
"""
import math

import numpy as np
import pytest
from scipy.optimize import brentq

from conftest import jacobian_fd
from tallskinny_np import MLP, Curvature, SingularPivotError
from tallskinny_np.losses import cross_entropy
from tallskinny_np.optim import (SGD, Adam, DampedNewton, HessianFree, SaddleFreeNewton,
                                 TrustRegion, loss_and_gradient, model_decrease,
                                 saddle_free_solve, truncated_cg, trust_region_subproblem)

EPS = np.finfo(np.float64).eps


class DenseCurvature:
    """The optimizers' view of a Curvature, for a dense symmetric matrix H."""

    def __init__(self, H):
        self.H = H
        self.eigenvalues = np.linalg.eigvalsh(H)
        self.zero = H.shape[0] * EPS * np.abs(self.eigenvalues).max()

    def hvp(self, v):
        return self.H @ v

    def solve(self, b, damping, **certificate):
        if np.min(np.abs(self.eigenvalues + damping)) <= self.zero:
            raise SingularPivotError(1, 0.0, "dense matrix")
        return np.linalg.solve(self.H + damping * np.eye(len(self.H)), b)

    def step_solve(self, g, damping):
        x = self.solve(g, damping)
        return x, float(x @ self.H @ x)

    def is_positive_definite(self, shift=0.0):
        return bool(self.eigenvalues[0] + shift > self.zero)

    def lambda_min(self, tol=1e-8):
        return float(self.eigenvalues[0])


def spd(n, cond, seed):
    rng = np.random.default_rng(seed)
    Q = np.linalg.qr(rng.standard_normal((n, n)))[0]
    return (Q * np.geomspace(1, cond, n)) @ Q.T


def with_spectrum(eigenvalues, seed):
    """A symmetric matrix with the given eigenvalues and its eigenvectors."""
    n = len(eigenvalues)
    Q = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))[0]
    return (Q * eigenvalues) @ Q.T, Q


@pytest.mark.parametrize("make", [
    lambda: DampedNewton(damping=0.0, kind="hessian"),
    lambda: DampedNewton(damping=0.0, kind="ggn"),
    lambda: TrustRegion(radius=100.0),
], ids=["newton", "ggn", "trust-region"])
def test_newton_variants_solve_a_convex_quadratic_in_one_step(make):
    A = spd(12, 1e3, seed=1)
    b = np.random.default_rng(2).standard_normal(12)
    f = lambda x: 0.5 * x @ A @ x - b @ x
    x0 = np.random.default_rng(3).standard_normal(12)
    x_star = np.linalg.solve(A, b)
    opt = make()
    x1, info = opt.step(x0, f(x0), A @ x0 - b, DenseCurvature(A), f)
    assert info["accepted"] and info["rho"] == pytest.approx(1, abs=1e-8)
    assert np.linalg.norm(x1 - x_star) <= 1e-10 * np.linalg.norm(x_star)


def tiny_net(seed=0, sizes=(5, 3, 3, 4), batch=6):
    net = MLP(list(sizes), activation="tanh")
    rng = np.random.default_rng(seed)
    params = net.init_params(seed=seed, gain=1.3)
    params += 0.1 * rng.standard_normal(net.n_params)
    X = rng.standard_normal((batch, sizes[0]))
    y = rng.integers(0, sizes[-1], batch)
    return net, params, X, y


def test_loss_and_gradient_match_finite_differences_and_curvature():
    net, params, X, y = tiny_net()
    loss, g, pi = loss_and_gradient(net, params, X, y)
    curv = Curvature(net, params, X, y)
    g_fd = jacobian_fd(lambda p: np.array([net.loss(p, X, y)]), params, h=3e-4)[0]
    assert loss == pytest.approx(float(net.loss(params, X, y)), rel=1e-14)
    assert np.linalg.norm(g - g_fd) <= 1e-9 * np.linalg.norm(g_fd)
    assert np.linalg.norm(g - curv.grad) <= 1e-13 * np.linalg.norm(g)
    assert np.allclose(pi.sum(axis=1), 1) and np.all(pi > 0)


def gauss_newton_dense(net, params, X):
    """``J^T Lambda J`` with J the Jacobian of the logits by complex steps (exact to
    rounding) and ``Lambda = blockdiag((diag(pi_s) - pi_s pi_s^T) / B)``."""
    h = 1e-30
    J = np.column_stack([net.logits(params + 1j * h * e, X).imag.ravel() / h
                         for e in np.eye(net.n_params)])
    pi = cross_entropy(net.logits(params, X), np.zeros(len(X), dtype=int))[1]
    B, c = pi.shape
    Lam = np.zeros((B * c, B * c))
    for s in range(B):
        Lam[s * c:(s + 1) * c, s * c:(s + 1) * c] = (np.diag(pi[s]) - np.outer(pi[s], pi[s])) / B
    return J.T @ Lam @ J


def test_gauss_newton_step_equals_dense_solve_with_curvature_subbatch():
    net, params, X, y = tiny_net(seed=4)
    lam = 0.5
    loss, g, _ = loss_and_gradient(net, params, X, y)           # gradient batch: 6
    curv = Curvature(net, params, X[:3], y[:3], kind="ggn")    # curvature batch: 3
    G = gauss_newton_dense(net, params, X[:3])
    s_dense = -np.linalg.solve(G + lam * np.eye(net.n_params), g)
    opt = DampedNewton(damping=lam, kind="ggn")
    new, info = opt.step(params, loss, g, curv, lambda p: float(net.loss(p, X, y)))
    assert info["accepted"] and info["damping"] == lam
    assert np.linalg.norm((new - params) - s_dense) <= 1e-10 * np.linalg.norm(s_dense)


@pytest.mark.parametrize("kind", ["ggn", "hessian"])
def test_newton_step_takes_its_model_from_the_solve_residual(kind):
    """The damped Newton step's solve (step_solve) matches the certified solve to
    round-off, its ``x^T H x`` the product's, and the step computes no further product
    for the model: the reduction ratio equals the one from ``model_decrease``."""
    net, params, X, y = tiny_net(seed=4)
    loss, g, _ = loss_and_gradient(net, params, X, y)
    curv = Curvature(net, params, X, y, kind=kind)
    x, xHx = curv.step_solve(g, 0.5)
    x_cert = curv.solve(g, 0.5)
    assert np.linalg.norm(x - x_cert) <= 1e-13 * np.linalg.norm(x_cert)
    assert abs(xHx - x @ curv.hvp(x)) <= 1e-13 * abs(xHx) + 1e-15 * (x @ x)
    products = []
    hvp = curv.hvp
    curv.hvp = lambda v: products.append(v) or hvp(v)
    loss_at = lambda p: float(net.loss(p, X, y))
    opt = DampedNewton(damping=0.5, kind=kind, backtrack=0)
    new, info = opt.step(params, loss, g, curv, loss_at)
    assert products == []
    s = new - params
    rho = (loss - loss_at(new)) / model_decrease(curv, g, s)
    assert info["rho"] == pytest.approx(rho, rel=1e-10)


def trust_region_optimum(H, g, radius):
    """The optimal value of ``min g^T p + 1/2 p^T H p, ||p|| <= radius`` from the
    eigendecomposition of H: the secular equation by bracketing, and the hard case
    completed along the lowest eigenvector."""
    w, V = np.linalg.eigh(H)
    gt = V.T @ g
    model = lambda p: g @ p + 0.5 * p @ H @ p
    if w[0] > 0 and np.linalg.norm(gt / w) <= radius:
        return model(-V @ (gt / w))
    norm = lambda lam: np.linalg.norm(gt / (w + lam))
    lo = max(0.0, -w[0])
    low = np.abs(w - w[0]) <= 1e-9 * np.abs(w).max()          # the lowest eigenspace
    if np.all(np.abs(gt[low]) <= 1e-12 * np.linalg.norm(g)):
        rest = -gt[~low] / (w[~low] + lo)
        if np.linalg.norm(rest) <= radius:                    # the hard case
            p = V[:, ~low] @ rest
            return model(p + V[:, low][:, 0] * math.sqrt(radius ** 2 - p @ p))
    hi = lo + np.linalg.norm(g) / radius + np.abs(w).max() + 1
    a = lo if w[0] > 0 else lo + 1e-13 * hi                 # the pole of ||p(lam)||
    lam = brentq(lambda t: norm(t) - radius, a, hi, xtol=1e-15, rtol=1e-15)
    return model(-V @ (gt / (w + lam)))


def check_more_sorensen(H, g, radius, s, lam, rtol):
    """The optimality conditions of Moré and Sorensen's Lemma 2.1 for (s, lam), and the
    model value against the dense optimum."""
    w = np.linalg.eigvalsh(H)
    scale = np.abs(w).max()
    ns = np.linalg.norm(s)
    assert lam >= 0
    assert w[0] + lam >= -1e-9 * scale, "H + lam I is not positive semi-definite"
    r = np.linalg.norm(H @ s + lam * s + g)
    assert r <= 1e-7 * (scale * ns + np.linalg.norm(g)), f"residual {r:.2e}"
    assert ns <= (1 + rtol) * radius
    assert lam * abs(radius - ns) <= 1e-7 * (scale + lam) * radius
    value, best = g @ s + 0.5 * s @ H @ s, trust_region_optimum(H, g, radius)
    assert value <= best + 1e-7 * abs(best), f"model {value} above the optimum {best}"


def boundary_case():
    H, _ = with_spectrum(np.linspace(-2, 5, 10), seed=5)
    return H, np.random.default_rng(6).standard_normal(10), 0.7


def interior_case():
    return spd(10, 50, seed=7), np.random.default_rng(8).standard_normal(10), 1e3


def hard_case(multiplicity):
    eig = np.concatenate([[-1.5] * multiplicity, np.linspace(0.5, 4, 10 - multiplicity)])
    H, Q = with_spectrum(eig, seed=9)
    g = np.random.default_rng(10).standard_normal(10)
    g -= Q[:, :multiplicity] @ (Q[:, :multiplicity].T @ g)   # g orthogonal to them
    w = eig[multiplicity:] + 1.5
    inside = np.linalg.norm((Q[:, multiplicity:].T @ g) / w)
    return H, g, 2 * inside                                  # ||s(-lambda_1)|| < radius


CASES = {"boundary": boundary_case, "interior": interior_case,
         "hard": lambda: hard_case(1), "hard-double": lambda: hard_case(2)}


@pytest.mark.parametrize("name", CASES)
def test_trust_region_step_satisfies_more_sorensen_conditions(name):
    H, g, radius = CASES[name]()
    rtol = 1e-10
    s, lam = trust_region_subproblem(DenseCurvature(H), g, radius, rtol=rtol)
    check_more_sorensen(H, g, radius, s, lam, rtol)
    if name.startswith("hard"):
        assert lam == pytest.approx(1.5, rel=1e-6)
        assert np.linalg.norm(s) == pytest.approx(radius, rel=1e-9)


@pytest.mark.parametrize("hard", [False, True], ids=["easy", "hard"])
def test_trust_region_step_on_a_network_hessian(hard):
    """The same conditions with Curvature's inertia, solves and lambda_min on an
    indefinite network Hessian; in the hard case the gradient is projected off the lowest
    eigenvector of the dense Hessian."""
    net, params, X, y = tiny_net(seed=11, sizes=(4, 3, 3, 3), batch=5)
    curv = Curvature(net, params, X, y)
    H = np.column_stack([curv.hvp(e) for e in np.eye(net.n_params)])
    H = 0.5 * (H + H.T)
    w, V = np.linalg.eigh(H)
    assert w[0] < -1e-3 and w[1] - w[0] > 1e-3, "the point should be indefinite"
    g = curv.grad
    radius = 0.5
    if hard:
        g = g - V[:, 0] * (V[:, 0] @ g)
        gt = (V.T @ g)[1:]
        radius = 2 * np.linalg.norm(gt / (w[1:] - w[0]))
    rtol = 1e-9
    s, lam = trust_region_subproblem(curv, g, radius, rtol=rtol)
    check_more_sorensen(H, g, radius, s, lam, rtol)
    if hard:
        assert lam == pytest.approx(-w[0], rel=1e-6)


def scripted(curv, x0, loss, g, rho):
    """A loss function whose reduction ratio for any step from x0 is exactly rho."""
    return lambda p: loss - rho * model_decrease(curv, g, p - x0)


@pytest.mark.parametrize("rho, factor, accepted", [
    (0.9, 1 / 3, True), (0.5, 1.0, True), (0.1, 3.0, True), (-1.0, 3.0, False)])
def test_levenberg_marquardt_rule(rho, factor, accepted):
    A = spd(6, 10, seed=12)
    x0, g = np.zeros(6), np.ones(6)
    curv = DenseCurvature(A)
    opt = DampedNewton(damping=0.3, kind="ggn", factor=3.0, trials=1)
    new, info = opt.step(x0, 1.0, g, curv, scripted(curv, x0, 1.0, g, rho))
    assert info["accepted"] is accepted and info["rho"] == pytest.approx(rho)
    assert opt.state["damping"] == pytest.approx(0.3 * factor)
    assert bool(np.any(new != x0)) is accepted


@pytest.mark.parametrize("rho, accepted", [(0.9, True), (0.5, True), (0.1, True),
                                           (-1.0, False)])
def test_trust_radius_rule(rho, accepted):
    H, _ = with_spectrum(np.linspace(-1, 3, 6), seed=13)
    x0, g = np.zeros(6), np.ones(6)
    curv = DenseCurvature(H)
    opt = TrustRegion(radius=0.4, rtol=1e-6, trials=1)
    new, info = opt.step(x0, 1.0, g, curv, scripted(curv, x0, 1.0, g, rho))
    ns = np.linalg.norm(new - x0) if accepted else 0.4
    assert info["accepted"] is accepted
    expected = {0.9: 0.8, 0.5: 0.4}.get(rho, ns / 4)
    assert opt.state["radius"] == pytest.approx(expected, rel=1e-5)


def test_rejected_trials_retry_with_more_damping_then_give_up():
    A = spd(4, 10, seed=14)
    curv = DenseCurvature(A)
    opt = DampedNewton(damping=1.0, kind="ggn", factor=2.0, trials=4, max_failures=6)
    x0 = np.ones(4)
    new, info = opt.step(x0, 1.0, np.ones(4), curv, lambda p: math.nan)
    assert not info["accepted"] and info["trials"] == 4 and np.all(new == x0)
    assert opt.state["damping"] == 16.0
    with pytest.raises(FloatingPointError, match="non-finite"):
        opt.step(x0, 1.0, np.ones(4), curv, lambda p: math.inf)


class RefusingCurvature(DenseCurvature):
    """A curvature whose solves are refused below a damping, as near a memorised batch
    where H has negative eigenvalues far larger than its positive ones."""

    def __init__(self, H, refuse_below):
        super().__init__(H)
        self.refuse_below = refuse_below

    def solve(self, b, damping, **certificate):
        if damping < self.refuse_below:
            raise SingularPivotError(3, 1e-17, "Riccati pivot block Qxx")
        return super().solve(b, damping)


def test_refused_solves_raise_the_damping_by_the_factor_squared():
    A = spd(5, 10, seed=15)
    curv = RefusingCurvature(A, refuse_below=1e-5)
    opt = DampedNewton(damping=1e-8, kind="hessian", factor=2.0, trials=5, max_failures=10)
    f = lambda p: 0.5 * p @ A @ p - p.sum()
    x0 = np.zeros(5)
    new, info = opt.step(x0, f(x0), A @ x0 - 1, curv, f)
    assert not info["accepted"] and opt.state["damping"] == pytest.approx(1e-8 * 4 ** 5)
    new, info = opt.step(x0, f(x0), A @ x0 - 1, curv, f)
    assert info["accepted"] and info["damping"] == pytest.approx(1e-8 * 4 ** 5)
    assert opt.state["failures"] == 0


@pytest.mark.parametrize("backtrack, accepted_t", [(0, None), (1, None), (2, 0.25), (3, 0.25)])
def test_a_rejected_downhill_step_is_backtracked_to_the_armijo_point(backtrack, accepted_t):
    # The model's curvature is a quarter of the true quadratic's, so its Newton step s is
    # four times too long: f(s) > f(0), f(s/2) = f(0), f(s/4) < f(0).
    A = spd(5, 10, seed=16)
    f = lambda p: 0.5 * p @ A @ p - p.sum()
    x0 = np.zeros(5)
    opt = DampedNewton(damping=0.0, kind="hessian", trials=1, backtrack=backtrack)
    new, info = opt.step(x0, f(x0), A @ x0 - 1, DenseCurvature(A / 4), f)
    s = np.linalg.solve(A / 4, np.ones(5))
    assert info["rho"] < 0 and opt.state["damping"] == 1e-8      # min_damping
    if accepted_t is None:
        assert not info["accepted"] and np.all(new == x0)
    else:
        assert info["accepted"] and np.allclose(new, accepted_t * s, rtol=1e-12)


def test_sgd_momentum_and_adam_formulas():
    g0, g1 = np.array([1.0, -2.0]), np.array([0.5, 0.5])
    sgd = SGD(lr=0.1, momentum=0.9)
    x = sgd.step(sgd.step(np.zeros(2), g0), g1)
    assert np.allclose(x, -0.1 * g0 - 0.1 * (0.9 * g0 + g1), rtol=1e-15)
    adam = Adam(lr=0.01)
    x = adam.step(np.zeros(2), g0)       # bias-corrected first step: lr * sign(g)
    assert np.allclose(x, -0.01 * np.sign(g0), rtol=1e-7)
    x = adam.step(x, g1)
    m = (0.9 * 0.1 * g0 + 0.1 * g1) / (1 - 0.9 ** 2)
    v = (0.999 * 0.001 * g0 ** 2 + 0.001 * g1 ** 2) / (1 - 0.999 ** 2)
    assert np.allclose(x, -0.01 * np.sign(g0) - 0.01 * m / (np.sqrt(v) + 1e-8), rtol=1e-12)


def test_hessian_free_cg_converges_to_the_dense_damped_gauss_newton_step():
    net, params, X, y = tiny_net(seed=4)
    lam = 0.5
    loss, g, _ = loss_and_gradient(net, params, X, y)
    curv = Curvature(net, params, X[:3], y[:3], kind="ggn")
    G = gauss_newton_dense(net, params, X[:3])
    s_dense = -np.linalg.solve(G + lam * np.eye(net.n_params), g)
    opt = HessianFree(damping=lam, progress=0.0)              # no truncation: to rtol
    new, info = opt.step(params, loss, g, curv, lambda p: float(net.loss(p, X, y)))
    assert info["accepted"] and 0 < info["cg_iterations"] <= net.n_params
    assert np.linalg.norm((new - params) - s_dense) <= 1e-10 * np.linalg.norm(s_dense)
    # The warm start: from the solution itself (decay 1) CG has nothing left to do.
    opt.decay = 1.0
    s, extra = opt.direction(curv, g, lam)
    assert extra["cg_iterations"] == 0
    assert np.linalg.norm(s - s_dense) <= 1e-10 * np.linalg.norm(s_dense)


def test_truncated_cg_stops_by_martens_rule():
    A = spd(300, 1e6, seed=21)
    b = np.random.default_rng(22).standard_normal(300)
    apply = lambda v: A @ v
    phi = lambda x: 0.5 * x @ A @ x - b @ x
    x, i, stop = truncated_cg(apply, b, progress=5e-4, max_iter=1000)
    assert stop == "progress"                         # truncated: far from converged
    assert np.linalg.norm(A @ x - b) > 1e-6 * np.linalg.norm(b)
    k = max(10, i // 10)
    before = lambda j: truncated_cg(apply, b, progress=0.0, max_iter=j, rtol=0)[0]
    assert np.allclose(before(i), x, rtol=0, atol=1e-12 * np.linalg.norm(x))
    assert (phi(x) - phi(before(i - k))) / phi(x) < k * 5e-4     # the rule holds at i
    j = i - 1                                                     # and not one step earlier
    kj = max(10, j // 10)
    assert not (phi(before(j)) - phi(before(j - kj))) / phi(before(j)) < kj * 5e-4


def test_truncated_cg_stops_at_negative_curvature():
    H, _ = with_spectrum(np.linspace(-2, 1, 8), seed=23)
    b = np.random.default_rng(24).standard_normal(8)
    x, i, stop = truncated_cg(lambda v: H @ v, b, max_iter=50)
    assert stop == "negative curvature"
    assert 0.5 * x @ H @ x - b @ x <= 0          # no iterate worse than the start


def dense_abs_solve(H, g, eps, pairs=None):
    """``(|H|_k + shift I)^{-1} g`` from the eigendecomposition: the ``pairs`` most negative
    eigenvalues flipped (all by default), shift ``eps`` or, when negatives remain,
    ``eps - lambda_{pairs+1}``."""
    w, U = np.linalg.eigh(H)
    neg = int((w < 0).sum())
    k = neg if pairs is None else min(pairs, neg)
    shift = eps - (w[k] if k < neg else 0.0)
    flipped = np.where(np.arange(len(w)) < k, np.abs(w), w)
    return U @ ((U.T @ g) / (flipped + shift)), w, shift


@pytest.mark.parametrize("seed, eps, pairs", [(0, 0.1, None), (2, 1e-3, None), (1, 0.05, 4)])
def test_saddle_free_step_equals_the_dense_absolute_value_solve(seed, eps, pairs):
    net, params, X, y = tiny_net(seed)
    curv = Curvature(net, params, X, y)
    H = curv @ np.eye(net.n_params)
    x_dense, w, shift = dense_abs_solve(H, curv.grad, eps, pairs)
    negative = int((w < -1e-8).sum())
    assert 2 <= negative < net.n_params - 1               # Lanczos, not the dense fallback
    x, info = saddle_free_solve(curv, curv.grad, eps, max_pairs=pairs)
    assert info["negative"] == negative and info["shift"] == pytest.approx(shift, rel=1e-12)
    assert np.linalg.norm(x - x_dense) <= 1e-10 * np.linalg.norm(x_dense)
    opt = SaddleFreeNewton(damping=eps, max_pairs=pairs, trials=1)
    new, step = opt.step(params, curv.loss, curv.grad, curv,
                         lambda p: float(net.loss(p, X, y)))
    if step["accepted"]:
        assert np.linalg.norm((params - new) - x_dense) <= 1e-10 * np.linalg.norm(x_dense)
    assert model_decrease(curv, curv.grad, -x) > 0     # the H-model always predicts a decrease


def test_saddle_free_step_when_eps_nearly_cancels_a_negative_eigenvalue():
    net, params, X, y = tiny_net(0)
    curv = Curvature(net, params, X, y)
    H = curv @ np.eye(net.n_params)
    w = np.linalg.eigvalsh(H)
    eps = -w[1] * (1 + 1e-9)                   # H + eps I has an eigenvalue -1e-9 |w_1|
    x_dense, _, _ = dense_abs_solve(H, curv.grad, eps)
    x, _ = saddle_free_solve(curv, curv.grad, eps)
    assert np.linalg.norm(x - x_dense) <= 1e-10 * np.linalg.norm(x_dense)
    plain = curv.solve(curv.grad, eps)         # what the uncorrected solve amplifies
    assert np.linalg.norm(plain) > 1e6 * np.linalg.norm(x_dense)

