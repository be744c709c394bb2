"""The array-module code paths: what CuPy runs is exercised here on the CPU with NumPy, and
compared with the NumPy-only paths (numba kernels, LAPACK); on a CUDA machine the marked
GPU tests compare every quantity with the CPU float64 result."""
import numpy as np
import pytest

from tallskinny_np import MLP, Curvature
from tallskinny_np import kernels
from tallskinny_np.blocks import (FirstLayer, GramA, HiddenLayer, block_diagonal, dense_A,
                                  dense_C, second_derivative_blocks, with_ones)
from tallskinny_np.riccati import riccati_factor, riccati_solve


def _problem(seed, sizes=(6, 4, 4, 4, 3), activation="tanh", bias=True, B=4, gain=1.3):
    rng = np.random.default_rng(seed)
    net = MLP(list(sizes), activation=activation, bias=bias)
    params = net.init_params(seed=seed, gain=gain)
    X = rng.standard_normal((B, sizes[0]))
    y = rng.integers(0, sizes[-1], B)
    return net, params, X, y


@pytest.mark.parametrize("bias", [True, False])
def test_einsum_blocks_equal_numba_kernels(bias):
    rng = np.random.default_rng(1)
    L, B, m, n = 3, 4, 5, 3
    Zt = with_ones(np, rng.standard_normal((L, B, n)), bias)
    W, R, bS1 = (rng.standard_normal(s) for s in [(L, m, n), (L, B, m), (L, B, m)])
    fast = second_derivative_blocks(np, Zt, W, R, use_numba=True)
    generic = second_derivative_blocks(np, Zt, W, R, use_numba=False)
    for a, b in zip(fast, generic):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-13)
    # C's compiled dense form (the dense stage's input) is that of its factors
    blk = HiddenLayer(None, None, None, None, Zt[0], bS1[0], R[0], W[0])
    C = np.empty((m * Zt.shape[2], B * n))
    kernels.cross_block(Zt[0], W[0], R[0], bS1[0], C)
    np.testing.assert_allclose(C, dense_C(blk), rtol=1e-13, atol=1e-13)
    # Layer 1 keeps A as its factors; expanded, they are the same A.
    np.testing.assert_allclose(dense_A(FirstLayer(None, GramA(Zt[0], R[0]))),
                               block_diagonal(np, fast[0][0]), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("kind,eps", [("hessian", 0.1), ("hessian", -0.05), ("ggn", 1e-3)])
def test_eigh_riccati_equals_lapack_riccati(kind, eps):
    net, params, X, y = _problem(2)
    curv = Curvature(net, params, X, y, kind=kind)
    gs = net.split(np.random.default_rng(3).standard_normal((net.n_params, 2)))
    lapack = riccati_factor(curv.blocks, eps, inertia=True)
    eigh = riccati_factor(curv.blocks, eps, inertia=True, _strategy="eigh")
    assert lapack.inertia == eigh.inertia
    assert sum(eigh.inertia) == net.n_params
    solve = lambda fac: net.join(riccati_solve(fac, gs))
    x1 = solve(riccati_factor(curv.blocks, eps))
    x2 = solve(riccati_factor(curv.blocks, eps, _strategy="eigh"))
    # Both are backward stable, so they may differ by O(cond * eps) relative.
    H = curv.hvp(np.eye(net.n_params)) + eps * np.eye(net.n_params)
    cond = np.linalg.cond(H)
    assert np.linalg.norm(x1 - x2) <= 100 * cond * np.finfo(float).eps * np.linalg.norm(x1)


def _cuda_available():
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


@pytest.mark.skipif(_cuda_available(), reason="CuPy with a CUDA device is present")
def test_cupy_backend_without_gpu_is_a_clear_error():
    net, params, X, y = _problem(0)
    with pytest.raises(RuntimeError, match="cupy"):
        Curvature(net, params, X, y, backend="cupy")


def test_unknown_backend():
    net, params, X, y = _problem(0)
    with pytest.raises(ValueError, match="unknown backend"):
        Curvature(net, params, X, y, backend="tpu")


gpu = pytest.mark.skipif(not _cuda_available(), reason="needs CuPy and a CUDA device")


def _rel(a, b):
    import cupy
    a = cupy.asnumpy(a)
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "softplus"])
@pytest.mark.parametrize("kind", ["hessian", "ggn"])
@pytest.mark.parametrize("bias", [True, False])
def test_gpu_matches_cpu_float64(activation, kind, bias):
    net, params, X, y = _problem(4, sizes=(7, 5, 5, 5, 5, 4), activation=activation,
                                 bias=bias, B=5)
    cpu = Curvature(net, params, X, y, kind=kind)
    gpu_curv = Curvature(net, params, X, y, kind=kind, backend="cupy")
    v = np.random.default_rng(5).standard_normal((net.n_params, 3))
    assert abs(gpu_curv.loss - cpu.loss) <= 1e-12 * abs(cpu.loss)
    assert _rel(gpu_curv.grad, cpu.grad) <= 1e-10
    assert _rel(gpu_curv.hvp(v), cpu.hvp(v)) <= 1e-10
    for eps in ([0.1, -0.05] if kind == "hessian" else [0.1, 1e-3]):
        assert _rel(gpu_curv.solve(v, eps), cpu.solve(v, eps)) <= 1e-10
        assert gpu_curv.inertia(eps) == cpu.inertia(eps)
    assert _rel(gpu_curv.inverse(0.1).matvec(v[:, 0]), cpu.solve(v[:, 0], 0.1)) <= 1e-10


@pytest.mark.gpu
@gpu
def test_gpu_float32_error_is_reported():
    net, params, X, y = _problem(6, sizes=(7, 5, 5, 5, 4), B=5)
    net32 = MLP(list(net.sizes), activation=net.activation, bias=net.bias, dtype=np.float32)
    cpu = Curvature(net, params, X, y)
    g32 = Curvature(net32, params, X, y, backend="cupy")
    x64 = cpu.solve(cpu.grad, 0.1)
    err = _rel(g32.solve(g32.grad, 0.1), x64)
    print(f"GPU float32 solve relative error vs CPU float64: {err:.2e}")
    assert err <= 1e-3
