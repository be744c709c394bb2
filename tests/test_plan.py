"""The memory and time plan of an exact step (:mod:`tallskinny_np.plan`): the stages it
names are those the sweep takes, its byte counts are those of the arrays the blocks and the
factorization hold, and what does not fit is refused before it is allocated, by
``Curvature`` and by ``tallskinny-train``."""
import numpy as np
import pytest

from tallskinny_np import MLP, Curvature, PlanMemoryError, curvature
from tallskinny_np.loss_stage import LossFactor
from tallskinny_np.pivot import PivotFactor
from tallskinny_np.plan import plan
from tallskinny_np.riccati import riccati_factor
from tallskinny_np.symmetric import LapackFactor
from tallskinny_np.training import preflight, train
from tallskinny_np.wide import RangeFactor

STAGE = {RangeFactor: "range", PivotFactor: "dense", LapackFactor: "dense",
         LossFactor: "loss"}


def _root(a):
    """The array that owns a view's memory (numba's arrays are their own owners)."""
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def _nbytes(obj, seen):
    """The bytes of the arrays inside nested tuples and records, each array once."""
    if isinstance(obj, np.ndarray):
        base = _root(obj)
        if id(base) in seen:
            return 0
        seen.add(id(base))
        return base.nbytes
    if isinstance(obj, (tuple, list)):
        return sum(_nbytes(x, seen) for x in obj)
    return 0


NETS = [([300] + [12] * 5 + [1000], 8), ([40] + [16] * 6 + [10], 24), ([20, 8, 8, 8, 50], 6)]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kind", ["hessian", "ggn"])
@pytest.mark.parametrize("sizes,B", NETS)
def test_plan_names_the_stages_and_bytes_of_the_sweep(sizes, B, kind, dtype):
    """Float64 on NumPy runs the compiled stages, float32 the array-module ones (CuPy's)."""
    rng = np.random.default_rng(0)
    net = MLP(sizes, dtype=dtype)
    curv = Curvature(net, net.init_params(seed=0), rng.standard_normal((B, sizes[0])),
                     rng.integers(0, sizes[-1], B), kind=kind)
    p = plan(net, B, kind)
    fac = riccati_factor(curv.blocks, 0.1)
    assert [ly.stage for ly in p.layers] == [STAGE[type(st.factor)] for st in fac.stages]
    seen = {id(_root(a)) for a in _arrays(curv.blocks.segments)}
    kept = sum(_nbytes(tuple(st), seen) for st in fac.stages)
    assert 0.85 * kept <= sum(ly.kept for ly in p.layers) <= 1.15 * kept + 2e4
    blocks = curv.blocks.nbytes
    assert blocks <= p.blocks <= 1.5 * blocks + 8 * 4 * B * sum(sizes) + 24 * net.n_params


def _arrays(obj):
    if isinstance(obj, np.ndarray):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [a for x in obj for a in _arrays(x)]
    return []


def test_plan_of_the_tall_skinny_setting():
    """Depth 40, width 128, batch 32 on 32x32x3 images and 1000 classes: every hidden layer
    in the range of the batch, the loss layer by its structure, about 12 GB and 6.3 TFLOP
    (docs/math.md section 4.8: 38 layers of ``(m r)^3 / 3 + 2 (m r)^3`` flops at
    ``m r = 4096``)."""
    net = MLP([3072] + [128] * 39 + [1000])
    p = plan(net, 32, "ggn")
    assert [ly.stage for ly in p.layers] == ["range"] * 39 + ["loss"]
    assert 10e9 < p.peak < 14e9 and 5.5e12 < p.flops < 7e12
    assert "exact step: about" in p.summary() and "TFLOP" in p.summary()


def test_curvature_refuses_what_does_not_fit(monkeypatch):
    """With less memory available than the blocks or the factorization need, the
    constructor or the solve raises :class:`PlanMemoryError` with the plan's figures,
    before allocating."""
    rng = np.random.default_rng(1)
    net = MLP([30, 8, 8, 10])
    X, y = rng.standard_normal((4, 30)), rng.integers(0, 10, 4)
    monkeypatch.setattr(curvature, "CHECKED_BYTES", 0)
    monkeypatch.setattr(curvature, "available_bytes", lambda xp: 1000)
    with pytest.raises(PlanMemoryError, match="derivative blocks of this batch needs about"):
        Curvature(net, net.init_params(), X, y)
    p = plan(net, 4, "hessian")
    monkeypatch.setattr(curvature, "available_bytes", lambda xp: p.blocks + 1)
    curv = Curvature(net, net.init_params(), X, y)
    with pytest.raises(PlanMemoryError, match="Riccati factorization") as err:
        curv.solve(curv.grad, 0.1)
    assert err.value.need > err.value.available == p.blocks + 1
    assert "riccati" not in curv._factors


def test_train_refuses_before_step_zero_and_names_what_fits(monkeypatch, tmp_path, capsys):
    """``tallskinny-train`` prints the plan's line, and where the exact step cannot fit it
    exits 1 with one line naming the curvature batch that would, before any step."""
    net = MLP([64] + [8] * 3 + [10])
    need = lambda B: plan(net, B, "ggn").peak - preflight.BASE_BYTES
    monkeypatch.setattr(preflight, "available_bytes", lambda xp: (need(16) + need(17)) // 2)
    out = tmp_path / "run"
    status = train.main(["--depth", "4", "--width", "8", "--optimizer", "ggn", "--task",
                         "memorise", "--batch", "32", "--out", str(out)])
    captured = capsys.readouterr()
    assert status == 1
    assert "exact step: about" in captured.out
    assert captured.err.count("\n") == 1 and "--curvature-batch 16" in captured.err
    assert not (out / "memorise" / "ggn" / "metrics.csv").exists()


@pytest.mark.parametrize("cached", [True, False])
def test_train_says_when_it_compiles_the_kernels(monkeypatch, tmp_path, capsys, cached):
    """The first run, whose numba cache is cold, says that it compiles for a minute; a run
    that finds the kernels cached does not, and neither does a first-order run."""
    monkeypatch.setattr(train, "kernels_compiled", lambda: cached)
    run = ["--depth", "3", "--width", "4", "--batch", "8", "--task", "memorise", "--steps",
           "2", "--second-order-steps", "1"]
    assert train.main(run + ["--optimizer", "ggn", "--out", str(tmp_path / "a")]) == 0
    said = "compiling the solver's kernels once" in capsys.readouterr().out
    assert said is not cached
    assert train.main(run + ["--optimizer", "adam", "--out", str(tmp_path / "b")]) == 0
    assert "compiling" not in capsys.readouterr().out


def test_kernels_compiled_reads_numba_s_cache():
    """After a factorization in this process the compiled stage is in numba's disk cache
    (the tests run with caching on)."""
    rng = np.random.default_rng(0)
    net = MLP([4, 4, 4, 3])
    Curvature(net, net.init_params(), rng.standard_normal((5, 4)), [0, 1, 2, 0, 1]).solve(
        np.ones(net.n_params), 0.1)
    assert train.kernels_compiled()


def test_the_reuse_optimizers_plan_for_the_factorization_they_hold(monkeypatch, tmp_path,
                                                                    capsys):
    """``ggn-reuse`` factors a new curvature while it still holds the earlier one and its
    factors: its plan counts them, so memory that fits ``ggn``'s step is refused for it,
    before step 0, naming a batch that fits."""
    net = MLP([64] + [8] * 3 + [10])
    plain, held = plan(net, 32, "ggn"), plan(net, 32, "ggn", held=True)
    assert held.peak == plain.peak + plain.blocks + sum(ly.kept for ly in plain.layers)
    assert "held from an earlier step" in held.summary()
    monkeypatch.setattr(preflight, "available_bytes",
                        lambda xp: (plain.peak + held.peak) // 2 - preflight.BASE_BYTES)
    run = ["--depth", "4", "--width", "8", "--task", "memorise", "--batch", "32", "--steps",
           "2", "--second-order-steps", "1"]
    assert train.main(run + ["--optimizer", "ggn", "--out", str(tmp_path / "a")]) == 0
    capsys.readouterr()
    assert train.main(run + ["--optimizer", "ggn-reuse", "--out", str(tmp_path / "b")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--curvature-batch" in err
    assert not (tmp_path / "b" / "memorise" / "ggn-reuse" / "metrics.csv").exists()
