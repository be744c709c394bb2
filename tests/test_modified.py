"""The modified sweep (docs/math.md section 8.3): its solve equals the dense solve with
``F = H + eps I + blockdiag(E_l)``, built by eliminating the dense matrix's layer blocks from
the last to the first with each pivot modified as it is met; ``||E||`` is reported
exactly, ``E = 0`` where ``H + (eps - floor) I`` is positive definite, and the modified
Newton step is a descent step of the H-model."""
import numpy as np
import pytest

from tallskinny_np import Curvature
from tallskinny_np.modified import modified_pivot
from tallskinny_np.optim import ModifiedNewton, model_decrease

from test_optim import tiny_net


def dense_modified_sweep(net, H, eps, floor):
    """The modified sweep on the dense ``H + eps I``: the layers' parameter blocks
    eliminated from the last to the first (the order of the Riccati sweep), each pivot
    replaced by ``V max(|Lambda|, floor) V^T`` before it is used. Returns
    ``F = H + eps I + blockdiag(E_l)`` and ``max_l ||E_l||_2``."""
    sizes = [p.size for p in net.split(np.zeros(net.n_params))]
    ends = np.cumsum(sizes)
    starts = ends - sizes
    S = H + eps * np.eye(len(H))
    E = np.zeros_like(H)
    for a, b in zip(starts[::-1], ends[::-1]):
        lam, V = np.linalg.eigh(S[a:b, a:b])
        M = (V * np.maximum(np.abs(lam), floor)) @ V.T
        E[a:b, a:b] = M - S[a:b, a:b]
        S[:a, :a] -= S[:a, a:b] @ np.linalg.solve(M, S[a:b, :a])
    norms = [np.linalg.norm(E[a:b, a:b], 2) for a, b in zip(starts, ends)]
    return H + eps * np.eye(len(H)) + E, max(norms)


@pytest.mark.parametrize("seed, eps, floor", [(0, 1e-2, 1e-3), (1, 0.3, 1e-2), (3, 2.0, 1e-4)])
def test_modified_newton_solves_with_the_dense_modified_matrix(seed, eps, floor):
    net, params, X, y = tiny_net(seed)
    curv = Curvature(net, params, X, y)
    H = curv @ np.eye(net.n_params)
    F, e_norm = dense_modified_sweep(net, H, eps, floor)
    assert np.linalg.eigvalsh(F)[0] > 0
    x_dense = np.linalg.solve(F, curv.grad)
    x, reported = curv.modified_solve(curv.grad, eps, floor)
    assert np.linalg.norm(x - x_dense) <= 1e-10 * np.linalg.norm(x_dense)
    assert reported == pytest.approx(e_norm, rel=1e-10)
    if np.linalg.eigvalsh(H)[0] + eps - floor > 0:        # room: E = 0, the Newton step
        assert reported == 0
        assert np.linalg.norm(x - np.linalg.solve(H + eps * np.eye(len(H)), curv.grad)) \
            <= 1e-10 * np.linalg.norm(x)
    else:
        assert reported > 0
    opt = ModifiedNewton(damping=eps, floor=floor, trials=1)
    new, info = opt.step(params, curv.loss, curv.grad, curv, lambda p: float(net.loss(p, X, y)))
    assert info["modification"] == reported
    assert model_decrease(curv, curv.grad, -x) > 0


def test_modified_pivot_flips_and_floors_the_eigenvalues():
    rng = np.random.default_rng(5)
    Q = np.linalg.qr(rng.standard_normal((6, 6)))[0]
    lam = np.array([-3.0, -1e-12, 2e-4, 0.5, 1.0, 4.0])
    M, E = modified_pivot((Q * lam) @ Q.T, 1e-3)
    expected = np.array([3.0, 1e-3, 1e-3, 0.5, 1.0, 4.0])
    assert np.allclose(M, (Q * expected) @ Q.T, rtol=0, atol=1e-14)
    assert np.allclose(E, (Q * (expected - lam)) @ Q.T, rtol=0, atol=1e-14)
    assert np.linalg.eigvalsh(E)[0] >= -1e-15
    _, E = modified_pivot(np.diag([0.5, 1.0, 4.0]), 1e-3)     # no eigenvalue below the floor
    assert np.all(E == 0)
