"""Exact steps between factorizations (docs/math.md section 8.5): the Krylov solve
preconditioned with an earlier factorization equals the certified solve to round-off, at
its backward error, for the GGN (conjugate gradients) and the Hessian (GMRES); the
optimizer takes DampedNewton's steps, refactors when the budget is spent, and refuses bad
parameters; in ``tallskinny-train`` a resumed run rebuilds the held factorization and
reproduces the uninterrupted rows, and a budget of 0 is ``ggn`` itself."""

import numpy as np
import pytest

from tallskinny_np import MLP, Curvature
from tallskinny_np.certify import backward_error_bound, residual_bound
from tallskinny_np.krylov import preconditioned_cg
from tallskinny_np.optim import (DampedNewton, PreconditionedNewton, loss_and_gradient,
                                 preconditioned_solve)
from tallskinny_np.training.train import main
from test_train import TINY, interrupt_and_resume
from test_train import metrics as rows



def problem(seed=0):
    net = MLP([5, 6, 6, 3], activation="tanh")
    rng = np.random.default_rng(seed)
    X, y = rng.standard_normal((12, 5)), rng.integers(0, 3, 12)
    return net, net.init_params(seed=seed), X, y


def dense(curv, damping):
    """``H + damping I`` as a dense matrix, from the O(L) products."""
    return curv.hvp(np.eye(curv.n_params)) + damping * np.eye(curv.n_params)


def substitution(curv, damping):
    fac = curv.factor(damping)
    return lambda v: curv._substitute(fac, "riccati", v[:, None])[:, 0]


@pytest.mark.parametrize("kind", ["ggn", "hessian"])
def test_preconditioned_solve_is_the_certified_solve(kind):
    """Held ``M = H_s + 0.5 I`` at other parameters, solved with ``H_t + 1.0 I``: the
    backward error against the dense matrix is within the certified bound and the step
    equals the certified direct solve's to cond(A) times that bound."""
    net, params, X, y = problem()
    held = Curvature(net, params, X, y, kind=kind)
    shifted = params + 0.05 * np.random.default_rng(1).standard_normal(params.shape)
    curv = Curvature(net, shifted, X, y, kind=kind)
    b = -curv.grad
    x, eta, spent = preconditioned_solve(curv, b, 1.0, substitution(held, 0.5), 200)
    target = residual_bound(net.n_params, net.dtype)
    assert eta <= target and 0 < spent < 200
    A = dense(curv, 1.0)
    true_eta = np.linalg.norm(b - A @ x) / (np.linalg.norm(A, 2) * np.linalg.norm(x)
                                            + np.linalg.norm(b))
    assert true_eta <= backward_error_bound(net.n_params, net.dtype)
    direct = curv.solve(b, 1.0)
    bound = 2 * np.linalg.cond(A) * backward_error_bound(net.n_params, net.dtype)
    assert np.linalg.norm(x - direct) <= bound * np.linalg.norm(direct)


def test_preconditioned_solve_stops_at_the_budget():
    """A held factorization at a damping 1e4 times smaller does not precondition within 3
    iterations: the budget is spent and the backward error stays above the target."""
    net, params, X, y = problem()
    curv = Curvature(net, params, X, y, kind="ggn")
    x, eta, spent = preconditioned_solve(curv, -curv.grad, 10.0, substitution(curv, 1e-3), 3)
    assert spent == 3 and eta > residual_bound(net.n_params, net.dtype)


def test_preconditioned_cg_with_the_exact_inverse_takes_one_step():
    """With M = A the first iterate is the solution; with M = I on an SPD A of n
    distinct eigenvalues CG needs n steps and stops at max_iter before that."""
    rng = np.random.default_rng(0)
    Q = np.linalg.qr(rng.standard_normal((6, 6)))[0]
    A = (Q * np.arange(1.0, 7.0)) @ Q.T
    r = rng.standard_normal(6)
    calls = []

    def exact(v):
        calls.append(1)
        return np.linalg.solve(A, v)
    d = preconditioned_cg(lambda v: A @ v, exact, r, 10, 1e-12)
    assert len(calls) == 1 and np.allclose(A @ d, r, rtol=0, atol=1e-12)
    calls.clear()
    d = preconditioned_cg(lambda v: A @ v, lambda v: calls.append(1) or v, r, 3, 1e-12)
    assert len(calls) == 3 and not np.allclose(A @ d, r, atol=1e-6)


@pytest.mark.parametrize("kind", ["ggn", "hessian"])
def test_steps_are_damped_newton_steps(kind):
    """Six steps on one batch: the same trials, dampings and parameters (to round-off) as
    DampedNewton, which factors every trial; after the first step the held factorization
    carries at least one step without refactoring."""
    net, params, X, y = problem(2)
    loss_at = lambda theta: float(net.loss(theta, X, y))          # noqa: E731
    reuse, direct = PreconditionedNewton(kind=kind, budget=60), DampedNewton(kind=kind)
    p, q = params.copy(), params.copy()
    infos = []
    for _ in range(6):
        loss, g, _ = loss_and_gradient(net, p, X, y)
        p, info = reuse.step(p, loss, g, Curvature(net, p, X, y, kind=kind), loss_at)
        loss, g, _ = loss_and_gradient(net, q, X, y)
        q, expected = direct.step(q, loss, g, Curvature(net, q, X, y, kind=kind), loss_at)
        assert (info["trials"], info["damping"]) == (expected["trials"], expected["damping"])
        np.testing.assert_allclose(p, q, rtol=0, atol=1e-9 * np.abs(q).max())
        infos.append(info)
    assert infos[0]["refactored"] >= 1 and infos[0]["krylov_iterations"] == 0
    assert any(i["refactored"] == 0 and i["krylov_iterations"] > 0 for i in infos[1:])


def test_budget_zero_and_a_large_damping_change_refactor():
    """Budget 0 factors every step; with budget 3 a damping raised 1e4-fold since the held
    factorization spends the budget, then refactors at the new damping."""
    net, params, X, y = problem()
    loss_at = lambda theta: float(net.loss(theta, X, y))          # noqa: E731
    loss, g, _ = loss_and_gradient(net, params, X, y)
    curv = Curvature(net, params, X, y, kind="ggn")
    opt = PreconditionedNewton(kind="ggn", budget=0)
    for _ in range(2):
        _, info = opt.step(params, loss, g, curv, loss_at)
        assert info["refactored"] == 1 and info["krylov_iterations"] == 0
    opt = PreconditionedNewton(damping=1e-3, kind="ggn", budget=3)
    opt.step(params, loss, g, curv, loss_at)
    assert opt.held is curv and opt.state["held_damping"] == 1e-3
    opt.state["damping"] = 10.0
    _, info = opt.step(params, loss, g, curv, loss_at)
    assert info["krylov_iterations"] == 3 and info["refactored"] == 1
    assert opt.state["held_damping"] == 10.0
    np.testing.assert_array_equal(opt.state["held_params"], params)


def test_after_failed_attempts_the_next_1_2_4_solves_factor_without_trying():
    """Dampings cycling through 1e-8, 1e-4 and 1, so that no held factorization
    preconditions the next step within a budget of 2: attempts at steps 1, 3, 6 and 11
    (after waits of 1, 2 and 4 steps that factor at once), 2 iterations each; a
    successful attempt resets the wait."""
    net, params, X, y = problem()
    loss_at = lambda theta: float(net.loss(theta, X, y))          # noqa: E731
    loss, g, _ = loss_and_gradient(net, params, X, y)
    curv = Curvature(net, params, X, y, kind="ggn")
    opt = PreconditionedNewton(damping=1e-8, kind="ggn", budget=2, trials=1)
    tried = []
    for step in range(12):
        opt.state["damping"] = 1e-8 * 1e4 ** (step % 3)
        _, info = opt.step(params, loss, g, curv, loss_at)
        assert info["refactored"] == 1
        tried.append(info["krylov_iterations"])
    assert [k for k, spent in enumerate(tried) if spent] == [1, 3, 6, 11]
    assert set(tried) == {0, 2} and opt.state["backoff"] == 8
    opt.state.update(wait=0, damping=opt.state["held_damping"])
    _, info = opt.step(params, loss, g, curv, loss_at)
    assert info["refactored"] == 0 and opt.state["backoff"] == 0


@pytest.mark.parametrize("keywords, name", [
    (dict(budget=-1), "budget"), (dict(budget=2.5), "budget"), (dict(budget=True), "budget"),
    (dict(kind="gauss"), "kind"), (dict(damping=-1.0), "damping"),
    (dict(factor=1.0), "factor")])
def test_bad_parameters_raise_naming_them(keywords, name):
    with pytest.raises(ValueError, match=name):
        PreconditionedNewton(**keywords)


@pytest.mark.parametrize("name, budget", [("ggn-reuse", "200"), ("ggn-reuse", "20"),
                                          ("newton-reuse", "200")])
def test_resume_rebuilds_the_held_factorization(tmp_path, monkeypatch, name, budget):
    """Interrupted in step 7 (checkpoint at step 6) and resumed, the run reproduces every
    row of the uninterrupted one, Krylov iterations and refactors included; with budget
    200 the factorization of step 0 is held across the checkpoint."""
    args = TINY + ["--optimizer", name, "--task", "train", "--curvature-batch", "8",
                   "--steps", "12", "--second-order-steps", "9", "--reuse-budget", budget]
    assert main(args + ["--out", str(tmp_path / "whole")]) == 0
    interrupt_and_resume(args, tmp_path / "cut", monkeypatch)
    whole = rows(tmp_path / "whole" / "train" / name / "metrics.csv")
    cut = rows(tmp_path / "cut" / "train" / name / "metrics.csv")
    drop = ("wall",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in cut] == \
        [{k: v for k, v in r.items() if k not in drop} for r in whole]
    used = [r for r in whole[7:-1] if r["refactored"] == "0"]
    assert all(int(r["krylov_iterations"]) > 0 for r in used)
    if budget == "200":
        assert len(used) == len(whole[7:-1]) > 0


def test_budget_zero_is_ggn(tmp_path):
    """``ggn-reuse --reuse-budget 0`` factors every step: the rows of ``ggn``."""
    args = TINY + ["--task", "train", "--curvature-batch", "8", "--steps", "6",
                   "--second-order-steps", "5", "--compare", "ggn,ggn-reuse",
                   "--reuse-budget", "0", "--out", str(tmp_path)]
    assert main(args) == 0
    keys = ("batch_loss", "train_loss", "rho", "damping", "trials")
    ggn, reuse = (rows(tmp_path / "train" / n / "metrics.csv") for n in ("ggn", "ggn-reuse"))
    assert [[r[k] for k in keys] for r in reuse] == [[r[k] for k in keys] for r in ggn]
    assert all(r["refactored"] == "1" for r in reuse[:-1])


def test_a_negative_budget_is_refused(capsys):
    with pytest.raises(SystemExit) as e:
        main(TINY + ["--optimizer", "ggn-reuse", "--reuse-budget", "-1"])
    assert e.value.code == 2 and "--reuse-budget" in capsys.readouterr().err
