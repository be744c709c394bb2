"""The softmax cross-entropy loss layer's stage by its structure (docs/math.md section 4.9)
against the dense loss stage formed from the same blocks: ``P_{L-1}``, the pivot's solve,
the gain and ``C^T``, the inertia, on a grid of class counts (2, 10, 1000), batches below
and above ``n + 1``, both kinds, with and without bias, and at damping 0, where the GGN is
singular and refused."""
import numpy as np
import pytest

from tallskinny_np import MLP, Curvature, SingularPivotError, riccati
from tallskinny_np.blocks import LossLayer, to_dense
from tallskinny_np.loss_stage import LossCross, LossFactor, LossGain, loss_stage, loss_update
from tallskinny_np.riccati import _use_structured, riccati_factor, riccati_solve

U64 = np.finfo(np.float64).eps


def _loss_layer(kind, bias, c, n, B, seed=0, gain=1.3):
    rng = np.random.default_rng(seed)
    net = MLP([7, n, n, c], activation="tanh", bias=bias)
    X = rng.standard_normal((B, 7))
    y = rng.integers(0, c, B)
    curv = Curvature(net, net.init_params(seed=seed, gain=gain), X, y, kind=kind)
    return curv.blocks.layers[-1]


# (c, n, B): batch below n + 1, at it and above it; 1000 classes at a small width (its
# dense reference is a 4000-square matrix: two cases)
GRID = [(2, 5, 3), (2, 5, 9), (10, 5, 4), (10, 3, 8), (10, 4, 5)]
CASES = [(kind, bias, size, eps) for kind, epss in (("hessian", (0.1, 1e-3, -0.05)),
                                                    ("ggn", (0.1, 1e-3)))
         for bias in (True, False) for size in GRID for eps in epss]
CASES += [("hessian", True, (1000, 3, 6), -0.05), ("ggn", False, (1000, 3, 6), 1e-3)]


@pytest.mark.parametrize("kind,bias,size,eps", CASES)
def test_structured_loss_stage_matches_dense(kind, bias, size, eps):
    """Every quantity the sweep takes from the loss stage agrees with the dense stage's
    to 1e-12 relative (``P_{L-1}`` on both the compiled and the array-module path), and the
    inertia is exact."""
    blk = _loss_layer(kind, bias, *size)
    D = to_dense(blk)
    Qxx = D.A + eps * np.eye(D.A.shape[0])
    f = loss_stage(blk, eps)
    P_ref = D.S - D.C.T @ np.linalg.solve(Qxx, D.C)
    for compiled in (True, False):
        P = loss_update(f, blk, compiled)
        assert np.abs(P - P_ref).max() <= 1e-12 * np.abs(P_ref).max(), compiled
        assert np.array_equal(P, P.T)
    w = np.linalg.eigvalsh(Qxx)
    cond = np.abs(w).max() / np.abs(w).min()
    rng = np.random.default_rng(1)
    u = rng.standard_normal((Qxx.shape[0], 2))
    x_ref = np.linalg.solve(Qxx, u)
    assert np.linalg.norm(f.solve(u) - x_ref) <= 1e-12 * max(1, cond / 1e3) * np.linalg.norm(x_ref)
    y = rng.standard_normal((D.C.shape[1], 2))
    Ky_ref = -np.linalg.solve(Qxx, D.C @ y)
    assert (np.linalg.norm(LossGain(f, blk) @ y - Ky_ref)
            <= 1e-12 * max(1, cond / 1e3) * np.linalg.norm(Ky_ref))
    k = rng.standard_normal((D.C.shape[0], 2))
    assert np.linalg.norm(LossCross(blk).T @ k - D.C.T @ k) <= 1e-13 * np.linalg.norm(D.C.T @ k)
    assert f.inertia == (int((w < 0).sum()), 0, int((w > 0).sum()))


@pytest.mark.parametrize("strategy", [None, "eigh"])
@pytest.mark.parametrize("kind", ["hessian", "ggn"])
@pytest.mark.parametrize("size", [(10, 5, 4), (10, 3, 8)])
def test_sweep_with_the_structured_loss_stage_solves(kind, size, strategy, monkeypatch):
    """The whole sweep with the structured loss stage (and the dense stages elsewhere)
    solves like the dense sweep, and counts alike; also with the GPU path's factorization
    (``strategy="eigh"``: the array-module stages, as CuPy runs them)."""
    monkeypatch.setattr(riccati, "_use_structured", lambda blk, _: isinstance(blk, LossLayer))
    c, n, B = size
    rng = np.random.default_rng(3)
    net = MLP([7, n, n, n, c], activation="softplus")
    curv = Curvature(net, net.init_params(seed=3, gain=1.5), rng.standard_normal((B, 7)),
                     rng.integers(0, c, B), kind=kind)
    eps = 0.05
    fac = riccati_factor(curv.blocks, eps, _strategy=strategy)
    assert isinstance(fac.stages[-1].factor, LossFactor)
    M = curv.hvp(np.eye(net.n_params)) + eps * np.eye(net.n_params)
    b = rng.standard_normal((net.n_params, 2))
    x_ref = np.linalg.solve(M, b)
    w = np.linalg.eigvalsh(M)
    cond = np.abs(w).max() / np.abs(w).min()
    x = net.join(riccati_solve(fac, net.split(b)))
    assert np.linalg.norm(x - x_ref) <= 100 * cond * U64 * np.linalg.norm(x_ref)
    assert (riccati_factor(curv.blocks, eps, inertia=True, _strategy=strategy).inertia
            == (int((w < 0).sum()), 0, int((w > 0).sum())))


@pytest.mark.parametrize("kind", ["hessian", "ggn"])
def test_structured_loss_stage_in_float32(kind):
    """The array-module loss stage in float32 (the GPU path's arithmetic on the CPU), at
    1000 classes: the sweep's solution within ``100 cond u32`` of the float64 dense solve."""
    rng = np.random.default_rng(4)
    sizes, B = [7, 4, 4, 1000], 6
    X, y = rng.standard_normal((B, 7)), rng.integers(0, 1000, B)
    nets = [MLP(sizes, dtype=d) for d in (np.float64, np.float32)]
    params = nets[0].init_params(seed=4, gain=1.3)
    c64, c32 = (Curvature(net, params.astype(net.dtype), X.astype(net.dtype), y, kind=kind)
                for net in nets)
    eps = 0.05
    n = nets[0].n_params
    M = c64.hvp(np.eye(n)) + eps * np.eye(n)
    w = np.linalg.eigvalsh(M)
    cond = np.abs(w).max() / np.abs(w).min()
    b = rng.standard_normal((n, 2))
    fac = riccati_factor(c32.blocks, eps, _structured=True)
    assert isinstance(fac.stages[-1].factor, LossFactor)
    x = nets[1].join(riccati_solve(fac, nets[1].split(b.astype(np.float32))))
    x_ref = np.linalg.solve(M, b)
    assert x.dtype == np.float32
    u32 = np.finfo(np.float32).eps / 2
    assert np.linalg.norm(x - x_ref) <= 100 * cond * u32 * np.linalg.norm(x_ref)


@pytest.mark.parametrize("size", [(10, 5, 4), (10, 3, 8), (1000, 3, 6)])
def test_damping_zero_is_refused(size):
    """At damping 0 the loss layer's pivot is singular (``Lambda_s 1 = 0``, docs/math.md
    eq. (3.8)): the structured stage says so, below and above ``B = n + 1``, and the
    singular GGN is refused as by the dense stage."""
    blk = _loss_layer("ggn", True, *size)
    f = loss_stage(blk, 0.0)
    assert f.rcond < U64
    c, n, B = size
    rng = np.random.default_rng(0)
    net = MLP([7, n, n, c])
    curv = Curvature(net, net.init_params(seed=0, gain=1.3), rng.standard_normal((B, 7)),
                     rng.integers(0, c, B), kind="ggn")
    with pytest.raises(SingularPivotError):
        riccati_factor(curv.blocks, 0.0, _structured=True)
    with pytest.raises(SingularPivotError):
        curv.solve(curv.grad, 0.0)


@pytest.mark.parametrize("kind", ["hessian", "ggn"])
def test_a_thousand_classes_take_the_structured_stage(kind):
    """At 1000 classes the flop count picks the structured stage, never the dense one,
    and the certified solve goes through it."""
    rng = np.random.default_rng(5)
    net = MLP([20, 6, 6, 1000])
    curv = Curvature(net, net.init_params(seed=5), rng.standard_normal((8, 20)),
                     rng.integers(0, 1000, 8), kind=kind)
    loss = curv.blocks.layers[-1]
    assert isinstance(loss, LossLayer) and _use_structured(loss, None)
    x, info = curv.solve(curv.grad, 0.01, return_info=True)
    assert info.backward_error[0] <= info.bound
    assert isinstance(curv._factors["riccati"][1].stages[-1].factor, LossFactor)
