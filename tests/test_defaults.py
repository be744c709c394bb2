"""The scale-free rules of the damped optimizers (docs/math.md section 8.6): the relative
first damping is a quarter of the curvature's norm estimate, so that a loss multiplied by
a constant gives the same steps; the predicted switch of ``ggn-newton`` comes when the
Newton model predicts a mispredicted Gauss-Newton step's reduction to within 1/4, and not
otherwise;
``Curvature.with_kind`` gives the other kind's products from the same forward pass."""
import numpy as np
import pytest

from tallskinny_np import MLP, Curvature
from tallskinny_np.optim import DampedNewton, GaussNewtonToNewton, loss_and_gradient
from tallskinny_np.optim.newton import RELATIVE_DAMPING
from test_optim import DenseCurvature


class Quadratic(DenseCurvature):
    """``f(theta) = c (1/2 theta^T H theta - b^T theta + 10)`` (positive for the H and b
    of these tests), whose curvature is ``c H``; the "GGN" of this test is ``c G`` for
    another positive definite G (a model that is wrong by a fixed factor, as Gauss-Newton
    is near a memorised batch). As a curvature it is ``c G`` or ``c H`` by its kind."""

    def __init__(self, H, G, b, c=1.0, kind="ggn"):
        super().__init__(c * (G if kind == "ggn" else H))
        self.hessian, self.gnm, self.b, self.c, self.kind = H, G, b, c, kind

    def f(self, theta):
        return self.c * (0.5 * theta @ self.hessian @ theta - self.b @ theta + 10.0)

    def grad(self, theta):
        return self.c * (self.hessian @ theta - self.b)

    def norm_estimate(self):
        return float(np.abs(self.eigenvalues).max())

    def with_kind(self, kind):
        return Quadratic(self.hessian, self.gnm, self.b, self.c, kind)


def spd(n, seed, cond=100.0):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return Q @ np.diag(np.geomspace(1, cond, n)) @ Q.T


def trajectory(opt, q, steps=6):
    theta, dampings = np.zeros(len(q.b)), []
    for _ in range(steps):
        kind = opt.curvature_kind(q.f(theta))
        theta, info = opt.step(theta, q.f(theta), q.grad(theta), q.with_kind(kind), q.f)
        dampings.append(info["damping"])
    return theta, dampings


def test_the_first_damping_is_relative_and_the_steps_do_not_depend_on_the_loss_scale():
    H, b = spd(6, 0), np.ones(6)
    runs = {c: trajectory(DampedNewton(damping=None, kind="hessian"),
                         Quadratic(H, H, b, c, "hessian"))
            for c in (1e-3, 1.0, 1e3)}
    theta1, d1 = runs[1.0]
    assert d1[0] == pytest.approx(RELATIVE_DAMPING * np.linalg.norm(H, 2))
    for c, (theta, d) in runs.items():
        assert np.allclose(theta, theta1, rtol=1e-10, atol=0)
        assert np.allclose(np.array(d) / c, d1, rtol=1e-10)
    # with a fixed first damping the scaled problems take other steps
    fixed = {c: trajectory(DampedNewton(damping=1.0, kind="hessian"),
                           Quadratic(H, H, b, c, "hessian"), steps=1)[0] for c in (1e-3, 1e3)}
    assert not np.allclose(fixed[1e-3], fixed[1e3], rtol=1e-3)


@pytest.mark.parametrize("under, switches", [(1.5, True), (1.1, False)])
def test_ggn_newton_switches_when_the_newton_model_predicts_better(under, switches):
    """``G = H / under``: the undamped Gauss-Newton step ``-under H^{-1} g`` has the ratio
    ``(1 - under / 2) / (1 / 2)``, 1/2 for under = 1.5 (below 3/4, and the exact Newton
    model predicts the step exactly: a switch) and 0.9 for under = 1.1 (the Gauss-Newton
    model is good enough: no switch)."""
    H, b = spd(5, 1), np.ones(5)
    q = Quadratic(H, H / under, b)
    opt = GaussNewtonToNewton(damping=1e-6, switch_loss=None)
    theta = np.zeros(5)
    evaluated = []

    def loss_at(p):
        evaluated.append(p)
        return q.f(p)

    new, info = opt.step(theta, q.f(theta), q.grad(theta), q, loss_at)
    assert info["accepted"] and info["rho"] == pytest.approx(2 - under, rel=1e-4)
    assert opt.curvature_kind(q.f(new)) == ("hessian" if switches else "ggn")
    # the Newton model judges the step at the loss its trial evaluated: no second one
    assert len(evaluated) == 1 and opt.new_loss == q.f(new)


def test_ggn_newton_with_a_switch_loss_keeps_the_loss_rule():
    H, b = spd(5, 2), np.ones(5)
    q = Quadratic(H, H / 1.5, b)
    opt = GaussNewtonToNewton(damping=1e-6, switch_loss=1e-30)
    theta = np.zeros(5)
    opt.step(theta, q.f(theta), q.grad(theta), q, q.f)
    assert opt.curvature_kind(q.f(theta)) == "ggn"


def test_with_kind_shares_the_forward_pass_and_gives_that_kinds_products():
    net = MLP([4, 5, 5, 3], activation="tanh")
    rng = np.random.default_rng(0)
    params = net.init_params(seed=0)
    X, y = rng.standard_normal((7, 4)), rng.integers(0, 3, 7)
    ggn = Curvature(net, params, X, y, kind="ggn")
    v = rng.standard_normal(net.n_params)
    hessian = ggn.with_kind("hessian")
    assert hessian.linearization is ggn.linearization and hessian.kind == "hessian"
    assert np.array_equal(hessian.hvp(v), Curvature(net, params, X, y).hvp(v))
    assert np.array_equal(ggn.hvp(v), Curvature(net, params, X, y, kind="ggn").hvp(v))
    assert ggn.with_kind("ggn") is ggn
    with pytest.raises(ValueError, match="unknown curvature kind 'gn'"):
        ggn.with_kind("gn")
    _, g, _ = loss_and_gradient(net, params, X, y)
    assert np.allclose(hessian.solve(g, 1.0), Curvature(net, params, X, y).solve(g, 1.0),
                       rtol=1e-13, atol=0)
