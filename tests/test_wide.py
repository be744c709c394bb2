"""The structured Riccati stages of the wide end layers (docs/math.md section 4.8) against
dense references on small analogues (input 300, 50 classes), and at ImageNet shape, where
the dense stages could not even be stored."""
import numpy as np
import pytest

from tallskinny_np import MLP, Curvature
from tallskinny_np.blocks import FirstLayer, GramA, LossLayer
from tallskinny_np.riccati import _use_structured, riccati_factor, riccati_solve
from tallskinny_np.wide import RangeFactor, RangeRows

U64 = np.finfo(np.float64).eps


def _wide_problem(seed, kind, bias, activation="tanh", sizes=(300, 6, 6, 6, 50), B=5):
    rng = np.random.default_rng(seed)
    net = MLP(list(sizes), activation=activation, bias=bias)
    params = net.init_params(seed=seed, gain=1.3)
    X = rng.standard_normal((B, sizes[0]))
    y = rng.integers(0, sizes[-1], B)
    return net, Curvature(net, params, X, y, kind=kind)


def _raw_solve(net, curv, b, eps, structured):
    fac = riccati_factor(curv.blocks, eps, _structured=structured)
    return net.join(riccati_solve(fac, net.split(b)))


CASES = [(kind, bias, "tanh" if bias else "softplus", eps)
         for kind, epss in (("hessian", (0.1, 1e-3, -0.05)), ("ggn", (0.1, 1e-3)))
         for bias in (True, False) for eps in epss]


@pytest.mark.parametrize("kind,bias,activation,eps", CASES)
def test_structured_end_stages_match_dense(kind, bias, activation, eps):
    net, curv = _wide_problem(11, kind, bias, activation)
    layers = curv.blocks.layers
    # by flop count: the range stage at layer 1 (batch 5 < 301 inputs) and Woodbury
    assert _use_structured(layers[0], None) and _use_structured(layers[-1], None)
    n = net.n_params
    M = curv.hvp(np.eye(n)) + eps * np.eye(n)
    b = np.random.default_rng(12).standard_normal((n, 2))
    x_ref = np.linalg.solve(M, b)
    w = np.linalg.eigvalsh(M)
    norm2, cond = np.abs(w).max(), np.abs(w).max() / np.abs(w).min()
    for structured in (None, False):         # False: the dense end stages
        x = _raw_solve(net, curv, b, eps, structured)
        err = np.linalg.norm(x - x_ref) / np.linalg.norm(x_ref)
        assert err <= 100 * cond * U64, f"{structured=}: error {err:.2e}, cond {cond:.2e}"
        assert (riccati_factor(curv.blocks, eps, inertia=True, _structured=structured).inertia
                == (int((w < 0).sum()), 0, int((w > 0).sum())))
    x = curv.solve(b, eps)
    berr = lambda z: (np.linalg.norm(M @ z - b)
                      / (norm2 * np.linalg.norm(z) + np.linalg.norm(b)))
    assert berr(x) <= 10 * max(berr(x_ref), U64)


def test_end_layers_A_are_never_dense():
    net, curv = _wide_problem(3, "hessian", True)
    first, loss = curv.blocks.layers[0], curv.blocks.layers[-1]
    assert isinstance(first, FirstLayer) and isinstance(first.A, GramA)
    assert isinstance(loss, LossLayer) and not hasattr(loss, "C")
    m, q = net.sizes[1], net.sizes[0] + 1
    assert curv.blocks.nbytes < 8 * m * q * q     # what a dense layer-1 A alone would take


@pytest.mark.parametrize("kind", ["hessian", "ggn"])
def test_imagenet_shape_solve(kind):
    """32x32x3 inputs and 1000 classes: dense stage 1 would factor a 24584-square Qxx
    (4.8 GB) and the loss stage a 9000-square one; the structured stages take seconds."""
    net, curv = _wide_problem(5, kind, True, sizes=(3072, 8, 8, 8, 1000), B=8)
    g = curv.grad
    x = curv.solve(g, 0.1)
    r = curv.hvp(x) + 0.1 * x - g
    assert np.linalg.norm(r) <= 1e-10 * np.linalg.norm(g)
    n_neg, n_zero, n_pos = curv.inertia(0.1)
    assert n_neg + n_zero + n_pos == net.n_params
    if kind == "ggn":
        assert (n_neg, n_zero) == (0, 0)


@pytest.mark.parametrize("strategy", [None, "eigh"])
@pytest.mark.parametrize("kind,eps", [("hessian", 0.1), ("hessian", -0.05), ("ggn", 1e-3)])
def test_range_of_the_batch_at_hidden_layers_matches_dense(kind, eps, strategy):
    """Batch 3 below the fan-in 13: every layer but the loss layer factors through its
    range stage (``structured=True``), with the dense solve's solution and inertia; also
    with the factorization of the GPU path ("eigh")."""
    net, curv = _wide_problem(7, kind, True, sizes=(6, 12, 12, 12, 4), B=3)
    n = net.n_params
    M = curv.hvp(np.eye(n)) + eps * np.eye(n)
    b = np.random.default_rng(8).standard_normal((n, 2))
    x_ref = np.linalg.solve(M, b)
    w = np.linalg.eigvalsh(M)
    cond = np.abs(w).max() / np.abs(w).min()
    fac = riccati_factor(curv.blocks, eps, _structured=True, _strategy=strategy)
    assert all(isinstance(st.factor, RangeFactor) for st in fac.stages[:-1])
    x = net.join(riccati_solve(fac, net.split(b)))
    assert np.linalg.norm(x - x_ref) <= 100 * cond * U64 * np.linalg.norm(x_ref)
    assert (riccati_factor(curv.blocks, eps, inertia=True, _structured=True,
                           _strategy=strategy).inertia
            == (int((w < 0).sum()), 0, int((w > 0).sum())))


@pytest.mark.parametrize("kind,eps", [("hessian", 0.1), ("hessian", -0.05), ("ggn", 1e-3)])
def test_range_of_the_batch_in_float32(kind, eps):
    """The array-module range stages in float32 (the GPU path's arithmetic, and its
    broadcast subtraction of Xp's term, on the CPU) solve the network of
    :func:`test_range_of_the_batch_at_hidden_layers_matches_dense` to ``100 cond u32``
    (observed: at most 0.18)."""
    net, c64 = _wide_problem(7, kind, True, sizes=(6, 12, 12, 12, 4), B=3)
    net32 = MLP(net.sizes, activation="tanh", bias=True, dtype=np.float32)
    rng = np.random.default_rng(7)
    X, y = rng.standard_normal((3, 6)), rng.integers(0, 4, 3)
    c32 = Curvature(net32, net.init_params(seed=7, gain=1.3).astype(np.float32),
                    X.astype(np.float32), y, kind=kind)
    n = net.n_params
    M = c64.hvp(np.eye(n)) + eps * np.eye(n)
    w = np.linalg.eigvalsh(M)
    cond = np.abs(w).max() / np.abs(w).min()
    b = np.random.default_rng(8).standard_normal((n, 2))
    fac = riccati_factor(c32.blocks, eps, _structured=True)
    assert all(isinstance(st.factor, RangeFactor) for st in fac.stages[:-1])
    x = net32.join(riccati_solve(fac, net32.split(b.astype(np.float32))))
    x_ref = np.linalg.solve(M, b)
    assert x.dtype == np.float32
    u32 = np.finfo(np.float32).eps / 2
    assert np.linalg.norm(x - x_ref) <= 100 * cond * u32 * np.linalg.norm(x_ref)


@pytest.mark.parametrize("kind,eps", [("hessian", 0.1), ("hessian", -0.05), ("ggn", 1e-3)])
def test_compiled_range_stage_matches_array_module(kind, eps):
    """The range stages on NumPy in float64 (T, ``Y = Q^T Qxy`` and ``P_{l-1}`` by the
    compiled dense stage on the blocks in the basis, the substitutions through ``W``,
    after the structured loss stage) against the array-module ones
    (through ``strategy="lapack"``, which form Qxy whole): the same pivot solves and rcond
    layer by layer, the same solution block by block, and the same inertia."""
    net, curv = _wide_problem(7, kind, True, sizes=(6, 12, 12, 12, 4), B=3)
    fast = riccati_factor(curv.blocks, eps, _structured=True)
    ref = riccati_factor(curv.blocks, eps, _structured=True, _strategy="lapack")
    assert all(isinstance(st.rows, RangeRows) for st in fast.stages[1:-1])
    rng = np.random.default_rng(10)
    for st, st_ref in zip(fast.stages[:-1], ref.stages[:-1]):
        u = rng.standard_normal((st.factor.V.shape[0] * st.factor.m, 2))
        x, x_ref = st.factor.solve(u), st_ref.factor.solve(u)
        assert np.linalg.norm(x - x_ref) <= 1e-10 * np.linalg.norm(x_ref)
        assert st.factor.rcond == pytest.approx(st_ref.factor.rcond, rel=1e-10)
    gs = net.split(rng.standard_normal((net.n_params, 3)))
    for l, (x, x_ref) in enumerate(zip(riccati_solve(fast, gs), riccati_solve(ref, gs))):
        assert np.linalg.norm(x - x_ref) <= 1e-10 * np.linalg.norm(x_ref), l
    assert (riccati_factor(curv.blocks, eps, inertia=True, _structured=True).inertia
            == riccati_factor(curv.blocks, eps, inertia=True, _structured=True,
                              _strategy="lapack").inertia)


@pytest.mark.parametrize("strategy", ["lapack", "eigh"])
def test_array_module_range_stages_keep_the_outside_part_exact(strategy):
    """The array-module range stages (the GPU path's) take the part of ``qx`` outside
    ``range(Q)`` from ``-g`` alone and apply Dx to ``Q Q^T x``: the rounding of
    ``Dx^T p_l`` and of x's large outside part, amplified by ``1 / eps``, once cost three
    orders of magnitude (9.5e-10 and 7.8e-10 here, against 3.3e-13 compiled)."""
    rng = np.random.default_rng(3)
    net = MLP([7, 5, 5, 5, 10], activation="softplus")
    curv = Curvature(net, net.init_params(seed=3, gain=1.5), rng.standard_normal((4, 7)),
                     rng.integers(0, 10, 4))
    eps = 0.05
    M = curv.hvp(np.eye(net.n_params)) + eps * np.eye(net.n_params)
    b = rng.standard_normal((net.n_params, 2))
    x_ref = np.linalg.solve(M, b)
    w = np.linalg.eigvalsh(M)
    cond = np.abs(w).max() / np.abs(w).min()
    fac = riccati_factor(curv.blocks, eps, _structured=True, _strategy=strategy)
    x = net.join(riccati_solve(fac, net.split(b)))
    assert np.linalg.norm(x - x_ref) <= 100 * cond * U64 * np.linalg.norm(x_ref)
