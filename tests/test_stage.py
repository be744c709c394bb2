"""The compiled hidden-layer Riccati stage and its substitutions against the dense
formulas of the stage-wise elimination, on the blocks of a small network."""
import gc
import sys
import threading
import weakref

import numba
import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from tallskinny_np import (MLP, Curvature, SingularPivotError, backend, certified, kernels,
                           pivot, stage)
from tallskinny_np.blocks import dense_A, to_dense
from tallskinny_np.riccati import SchurGain, riccati_factor, riccati_solve


def _layer(kind, bias, B=5, width=4):
    net = MLP([3, width, width, width, 3], activation="tanh", bias=bias)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((B, 3))
    y = rng.integers(0, 3, B)
    curv = Curvature(net, net.init_params(seed=1), X, y, kind=kind)
    blk = curv.blocks.layers[2]
    a = blk.Dx.shape[0] * blk.Dx.shape[1]
    M = rng.standard_normal((a, a))
    return blk, to_dense(blk), M @ M.T / a - 0.3 * np.eye(a)


def _stage_arrays(blk):
    """The stage's ``(with_C, C, Qxx)``: C from the layer's factors (storage alone for
    the GGN) and a zero Qxx, filled with NaN where the stage must not read them."""
    B, m, q = blk.Dx.shape
    C = np.full((m * q, B * blk.Dz.shape[2]), np.nan)
    if blk.R is not None:
        kernels.cross_block(blk.Zt, blk.W, blk.R, blk.bS1, C)
    return blk.R is not None, C, np.zeros((m * q, m * q), order="F")


def _factor_stage(blk, P, eps, split):
    """:func:`stage.factor_stage` on the layer's blocks, with a workspace of its own that
    holds NaN: the stage must not read what its buffers held."""
    scratch, P_bufs = stage.workspace([blk.Dx.shape + blk.Dz.shape[2:]])
    scratch.fill(np.nan)
    P_bufs[0].fill(np.nan)
    return stage.factor_stage(blk.Dx, blk.Dz, blk.A, blk.S, *_stage_arrays(blk),
                              np.asfortranarray(P), eps, False, split, scratch, P_bufs[0])


@pytest.mark.parametrize("split", [False, True], ids=["whole", "split"])
@pytest.mark.parametrize("kind", ["hessian", "ggn"])
@pytest.mark.parametrize("bias", [True, False])
def test_factor_stage_matches_dense(kind, bias, split):
    """The stage with its products whole (one thread) and split in two (two threads)."""
    blk, D, P = _layer(kind, bias)
    eps = 0.1
    Qxx = (0 if D.A is None else D.A) + eps * np.eye(D.Dx.shape[1]) + D.Dx.T @ P @ D.Dx
    Qxy = (0 if D.C is None else D.C) + D.Dx.T @ P @ D.Dz
    Qyy = (0 if D.S is None else D.S) + D.Dz.T @ P @ D.Dz
    fac, Wt, Pn = _factor_stage(blk, P, eps, split)
    K = -np.linalg.solve(Qxx, Qxy)
    P_ref = Qyy + Qxy.T @ K
    assert np.abs(Pn - P_ref).max() <= 1e-10 * np.abs(P_ref).max()
    assert np.array_equal(Pn, Pn.T)
    w = np.linalg.eigvalsh(Qxx)
    assert pivot.inertia(fac[1], fac[5], fac[8]) == (int((w < 0).sum()), 0, int((w > 0).sum()))
    assert fac[8] == pytest.approx(np.abs(Qxx).sum(0).max())


def test_factor_stage_refuses_a_small_workspace():
    blk, _, P = _layer("ggn", True)
    B, m, q = blk.Dx.shape
    a, a1 = B * m, B * blk.Dz.shape[2]
    for scratch, P_out in [(a * (m * q + a1) - 1, a1 * a1), (a * (m * q + a1), a1 * a1 - 1)]:
        with pytest.raises(ValueError, match="workspace too small"):
            stage.factor_stage(blk.Dx, blk.Dz, blk.A, blk.S, *_stage_arrays(blk),
                               np.asfortranarray(P), 0.1, False, False, np.empty(scratch),
                               np.empty(P_out))


@pytest.mark.parametrize("r", [1, 2])
@pytest.mark.parametrize("kind", ["hessian", "ggn"])
def test_substitutions_match_dense(kind, r):
    """backward then forward give ``x = K y + k`` with ``k = -Qxx^{-1} qx``, and
    ``p_{l-1} = Dz^T p + Qxy^T k``, for one right-hand side (``gemv``) and for two."""
    blk, D, P = _layer(kind, True)
    eps = 0.1
    Qxx = (0 if D.A is None else D.A) + eps * np.eye(D.Dx.shape[1]) + D.Dx.T @ P @ D.Dx
    Qxy = (0 if D.C is None else D.C) + D.Dx.T @ P @ D.Dz
    fac, Wt, _ = _factor_stage(blk, P, eps, False)
    rng = np.random.default_rng(3)
    B, m, q = blk.Dx.shape
    n = blk.Dz.shape[2]
    g = rng.standard_normal((m, q, r))
    pv = rng.standard_normal((B, m, r))
    y_prev = rng.standard_normal((B, n, r))
    u, p_prev = stage.backward(fac, Wt, blk.Dx, blk.Dz, g, pv)
    qx = -g.reshape(m * q, r) + D.Dx.T @ pv.reshape(-1, r)
    k = -np.linalg.solve(Qxx, qx)
    ref = D.Dz.T @ pv.reshape(-1, r) + Qxy.T @ k
    assert np.abs(p_prev.reshape(-1, r) - ref).max() <= 1e-10 * np.abs(ref).max()
    x, y = stage.forward(fac, Wt, blk.Dx, blk.Dz, u, y_prev)
    x_ref = -np.linalg.solve(Qxx, Qxy) @ y_prev.reshape(-1, r) + k
    assert np.abs(x.reshape(-1, r) - x_ref).max() <= 1e-10 * np.abs(x_ref).max()
    y_ref = D.Dx @ x_ref + D.Dz @ y_prev.reshape(-1, r)
    assert np.abs(y.reshape(-1, r) - y_ref).max() <= 1e-10 * np.abs(y_ref).max()


@pytest.mark.parametrize("split", [False, True], ids=["whole", "split"])
@pytest.mark.parametrize("n", [1, 15, 16, 17, 40, 256])
def test_mirror_lower_makes_the_lower_triangle_symmetric(n, split):
    """Whole tiles, a partial last tile and a single element: the upper triangle becomes
    the transposed lower one, which is left alone."""
    X = np.asfortranarray(np.random.default_rng(n).standard_normal((n, n)))
    lower = np.tril(X)
    stage._mirror_lower(X, split)
    assert np.array_equal(X, lower + np.tril(lower, -1).T)


@pytest.mark.parametrize("kind,eps", [("hessian", 0.1), ("hessian", -0.05), ("ggn", 1e-3)])
def test_schur_loss_stage_matches_array_stage(kind, eps):
    """The dense loss stage on NumPy in float64 (``P_{L-1}`` by ``syrk``, the gain through
    W) against the array-module one (``strategy="lapack"``): the same gain, the same
    solution of the whole sweep and the same inertia."""
    net = MLP([3, 4, 4, 4, 3], activation="tanh", bias=True)
    rng = np.random.default_rng(4)
    curv = Curvature(net, net.init_params(seed=2), rng.standard_normal((5, 3)),
                     rng.integers(0, 3, 5), kind=kind)
    fast = riccati_factor(curv.blocks, eps, inertia=True)
    ref = riccati_factor(curv.blocks, eps, inertia=True, _strategy="lapack")
    assert isinstance(fast.stages[-1].K, SchurGain)
    y = rng.standard_normal((fast.stages[-1].Qxy.shape[1], 2))
    ky, ky_ref = fast.stages[-1].K @ y, ref.stages[-1].K @ y
    assert np.linalg.norm(ky - ky_ref) <= 1e-10 * np.linalg.norm(ky_ref)
    b = rng.standard_normal((net.n_params, 2))
    x = net.join(riccati_solve(fast, net.split(b)))
    x_ref = net.join(riccati_solve(ref, net.split(b)))
    assert np.linalg.norm(x - x_ref) <= 1e-10 * np.linalg.norm(x_ref)
    assert fast.inertia == ref.inertia


@pytest.mark.parametrize("kind,eps", [("hessian", 0.1), ("hessian", -0.05), ("ggn", 1e-3)])
def test_sweep_on_two_threads_agrees_with_one(kind, eps, monkeypatch):
    """``SWEEP_THREADS = 2`` (each compiled stage on two threads, its largest products
    split in two) gives one thread's solution to rounding (both are backward stable: they
    differ by up to cond(H + eps I) times the unit roundoff) and the exact inertia, at a
    size where the split blocks are uneven (a' = 3 * 11 = 33 rows)."""
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba runs one thread on this machine")
    net = MLP([5] + [11] * 4 + [3], activation="tanh", bias=True)
    rng = np.random.default_rng(4)
    X, y = rng.standard_normal((3, 5)), rng.integers(0, 3, 3)
    curv = Curvature(net, net.init_params(seed=2), X, y, kind=kind)
    gs = net.split(rng.standard_normal((net.n_params, 2)))
    M = curv.hvp(np.eye(net.n_params)) + eps * np.eye(net.n_params)
    w = np.linalg.eigvalsh(M)
    cond = np.abs(w).max() / np.abs(w).min()
    results = {}
    for n in (1, 2):
        monkeypatch.setattr(backend, "SWEEP_THREADS", n)
        fac = riccati_factor(curv.blocks, eps, _structured=False)
        results[n] = (net.join(riccati_solve(fac, gs)),
                      riccati_factor(curv.blocks, eps, inertia=True, _structured=False).inertia)
    (x1, in1), (x2, in2) = results[1], results[2]
    assert np.linalg.norm(x2 - x1) <= 100 * cond * np.finfo(float).eps * np.linalg.norm(x1)
    assert in1 == in2 == (int((w < 0).sum()), 0, int((w > 0).sum()))


def test_workspace_is_kept_per_thread_up_to_its_limit(monkeypatch):
    """A thread gets its last workspace back while it is large enough, a new one when a
    stage needs more, and one of its own in another thread, freed when that thread ends;
    one over :data:`stage.RETAIN_BYTES` is not kept."""
    monkeypatch.setattr(stage, "_retained", threading.local())     # none kept yet
    small, large = [(4, 3, 5, 3)], [(8, 3, 5, 3)]
    first = stage.workspace(large)
    assert stage.workspace(small) is first
    grown = stage.workspace([(16, 3, 5, 3)])
    assert grown is not first and stage.workspace(large) is grown
    other = []

    def in_thread():
        kept = stage.workspace(small)
        other.append((kept is grown, weakref.ref(kept[0])))

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join()
    gc.collect()
    assert other[0][0] is False and other[0][1]() is None      # its own, freed with it
    monkeypatch.setattr(stage, "RETAIN_BYTES", 0)
    huge = stage.workspace([(32, 3, 5, 3)])
    assert stage.workspace([(32, 3, 5, 3)]) is not huge


def test_sweeps_in_two_threads_do_not_share_buffers():
    """Two threads factoring at once, each switching to the other between stages (the
    compiled stages hold the interpreter lock, the loop over the layers does not), get the
    results of the same sweeps run one after the other, bit for bit (each thread's sweep
    on one thread of its own), and leave BLAS with the threads it had."""
    nets = [MLP([5] + [7] * 6 + [3], activation="tanh", bias=True),
            MLP([4] + [6] * 5 + [3], activation="tanh", bias=False)]
    rng = np.random.default_rng(5)
    curvs = [Curvature(net, net.init_params(seed=3), rng.standard_normal((6, net.sizes[0])),
                       rng.integers(0, 3, 6), kind="hessian") for net in nets]
    rhs = [net.split(rng.standard_normal((net.n_params, 1))) for net in nets]

    def solution(i):
        return curvs[i].net.join(riccati_solve(riccati_factor(curvs[i].blocks, 0.1), rhs[i]))

    expected = [solution(0), solution(1)]
    got = [[], []]

    def run(i):
        for _ in range(20):
            got[i].append(solution(i))

    def blas_threads():
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        with threadpool_limits(limits=2, user_api="blas"):
            before = blas_threads()
            threads = [threading.Thread(target=run, args=(i,)) for i in (0, 1)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert blas_threads() == before
    finally:
        sys.setswitchinterval(old)
    for i in (0, 1):
        assert len(got[i]) == 20
        assert all(np.array_equal(x, expected[i]) for x in got[i])


@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize("structured", [None, True, False])
def test_counting_factorization_past_a_singular_pivot_refuses_to_solve(structured):
    """At damping 0 the loss layer's pivot is singular (the softmax is blind to a common
    shift of its logits): the sweep made with ``inertia=True`` counts on, names that layer,
    and its substitution raises instead of dividing by zero."""
    net = MLP([6] + [4] * 3 + [3], activation="tanh", bias=True)
    rng = np.random.default_rng(6)
    curv = Curvature(net, net.init_params(seed=4), rng.standard_normal((3, 6)),
                     rng.integers(0, 3, 3), kind="hessian")
    fac = riccati_factor(curv.blocks, 0.0, inertia=True, _structured=structured)
    assert fac.singular == len(net.sizes) - 1 and sum(fac.inertia) == net.n_params
    with pytest.raises(SingularPivotError, match=f"layer {fac.singular} .*inertia=True"):
        riccati_solve(fac, net.split(curv.grad[:, None]))


def test_certified_solve_falls_back_on_the_sweep_past_a_singular_pivot(monkeypatch):
    """At the shift ``-lambda_max(A_L)`` the loss layer's pivot ``A_L + shift I`` is
    singular to rounding while ``H + shift I`` is well conditioned, so the Riccati sweep
    refuses a pivot: the loss layer's own, or that of the layer below it, which it feeds.
    Which one is caught first depends on rounding: the loss layer's rcond estimate is of
    the order of eps, the threshold (2.5e-17 with NumPy 2.4's and SciPy 1.17's OpenBLAS,
    which name layer 3; at least eps with the earlier ones, which named layer 2).
    With the banded LU refused too (as where it does not certify), the solve's last resort,
    the counting sweep past that pivot, must solve: its rough x is refined by GMRES to a
    certified one, where its substitution once raised the refusal meant for users who
    solve with a counting factorization."""
    net = MLP([3, 4, 4, 3], activation="tanh", bias=True)
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((5, 3)), rng.integers(0, 3, 5)
    curv = Curvature(net, net.init_params(seed=1, gain=2.0), X, y)
    shift = -np.linalg.eigvalsh(dense_A(curv.blocks.layers[-1]))[-1]
    H = curv.hvp(np.eye(net.n_params)) + shift * np.eye(net.n_params)
    assert np.linalg.cond(H) < 1e3
    with pytest.raises(SingularPivotError) as refused:
        riccati_factor(curv.blocks, shift)
    assert refused.value.layer in (len(net.sizes) - 2, len(net.sizes) - 1)

    def refuse(blocks, shift):
        raise SingularPivotError(None, 0.0, "banded system", "refused by the test")

    banded = certified.SOLVERS[certified.BANDED]
    monkeypatch.setitem(certified.SOLVERS, certified.BANDED, (refuse, banded[1]))
    b = rng.standard_normal(net.n_params)
    x, info = curv.solve(b, shift, return_info=True)
    assert info.path == (("factor", "gmres"),) and info.backward_error[0] <= info.bound
    assert np.linalg.norm(x - np.linalg.solve(H, b)) <= 1e-12 * np.linalg.norm(x)
