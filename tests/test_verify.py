"""The dense verifier: it passes on correct code, and it fails exactly the steps
that depend on a deliberately corrupted quantity."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import verify
from verify.__main__ import main
from tallskinny_np import MLP, Curvature
from tallskinny_np.curvature import METHODS

ROOT = Path(__file__).resolve().parents[1]


def build(sizes, activation="tanh", bias=True, batch=3, seed=0, dtype=np.float64):
    """A net, a point with nonzero biases (init_params zeroes them) and a batch."""
    net = MLP(sizes, activation=activation, bias=bias, dtype=dtype)
    rng = np.random.default_rng(seed)
    params = net.init_params(seed=seed, gain=1.3)
    if bias:
        for _, c in net.unpack(params):
            c[:] = rng.uniform(-0.5, 0.5, size=c.shape)
    X = rng.standard_normal((batch, sizes[0])).astype(dtype)
    y = rng.integers(0, sizes[-1], size=batch)
    return net, params, X, y


@pytest.mark.parametrize("kind", ["hessian", "ggn"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "softplus"])
def test_passes_on_random_networks(activation, bias, kind):
    seed = ["tanh", "sigmoid", "softplus"].index(activation) + 3 * bias
    rng = np.random.default_rng(seed)
    sizes = [int(n) for n in rng.integers(2, 5, size=int(rng.integers(3, 6)))]
    net, params, X, y = build(sizes, activation, bias, batch=int(rng.integers(1, 4)),
                              seed=seed)
    report = verify.check_all(net, params, X, y, kind=kind, damping=0.05)
    assert report.passed, str(report)
    steps = {s.step for s in report}
    assert steps == set(range(1, 12 if kind == "ggn" else 11))
    assert {f"9.solve[{m}]" for m in METHODS} <= {s.key for s in report}


def test_passes_in_float32():
    """float32 blocks against float64 references: the tolerances follow the dtype, and the
    errors seen are float32 rounding, far above float64's."""
    net, params, X, y = build([3, 4, 4, 3], dtype=np.float32)
    report = verify.check_all(net, params, X, y, damping=0.1)
    assert report.passed, str(report)
    H = next(s for s in report if s.key == "6.H")
    assert 1e-9 < H.rel_err <= verify.checks.ROUNDING_FACTOR * np.finfo(np.float32).eps


# The corruption tests: layer 3 (index 2) of a 5-layer net is a middle hidden layer, all
# of whose blocks Dx, Dz, A, S, C are stored as compact arrays (views, so in-place edits
# reach every product and solver). Steps 8.tridiagonal, 8.pivot_blocks, 8.LDU and 10
# compare structured quantities with dense ones assembled from the *same* blocks, so they
# pass whatever the blocks hold; every comparison with an independent reference that
# involves the corrupted block fails.
LAYER = 2
SOLVES = {f"9.solve[{m}]" for m in METHODS} | {"9.solve[structured]"}
DOWNSTREAM = {"6.H", "7.hvp", "8.K_solve"} | SOLVES


def bump(a, index):
    """Add the block's largest magnitude to one entry (a relative change of order 1)."""
    a[index] += np.max(np.abs(a))


def flip_dz(curv):
    curv.blocks.layers[LAYER].Dz[...] *= -1


def drop_bias(curv):
    # what a [Z, 1] built as [Z, 0] would give: the bias column of Dx, A and C vanishes
    blk = curv.blocks.layers[LAYER]
    n = blk.Dz.shape[-1]
    blk.Dx[..., n] = 0
    blk.A[:, n, :] = 0
    blk.A[:, :, n] = 0
    blk.Zt[:, n] = 0                 # C's bias rows: C is kept as its factors


CORRUPTIONS = {
    "Dx entry": (lambda c: bump(c.blocks.layers[LAYER].Dx, (1, 2, 3)),
                 {"2.Dx", "4.grad_blocks", "5.tangents"} | DOWNSTREAM),
    # a diagonal entry keeps A symmetric: only the comparisons with references catch it
    # (the range stages of the structured solve form A in the basis from its factors, so
    # they do not see the stored block)
    "A diagonal entry": (lambda c: bump(c.blocks.layers[LAYER].A, (1, 2, 2)),
                         {"3.A"} | DOWNSTREAM - {"9.solve[structured]"}),
    "S diagonal entry": (lambda c: bump(c.blocks.layers[LAYER].S, (0, 1, 1)),
                         {"3.S"} | DOWNSTREAM),
    # b S1 enters only C's delta term (eq. (2.13)): C is kept as its factors
    "C's delta term": (lambda c: bump(c.blocks.layers[LAYER].bS1, (0, 1)),
                       {"3.C"} | DOWNSTREAM),
    "sign of a Dz block of M": (
        flip_dz, {"2.Dz", "4.grad_blocks", "5.M", "5.tangents"} | DOWNSTREAM),
    "bias term dropped": (
        drop_bias, {"2.Dx", "3.A", "3.C", "4.grad_blocks", "5.tangents"} | DOWNSTREAM),
    # the linearization feeds nothing after the constructor: only its own check fails
    "backprop vector b": (lambda c: bump(c.linearization.b[LAYER], (0, 1)), {"4.b"}),
    "activation Z": (lambda c: bump(c.linearization.Z[LAYER], (0, 1)), {"1.Z"}),
}


@pytest.fixture(scope="module")
def problem():
    return build([4, 4, 4, 4, 4, 3], batch=3, seed=7)


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_corruption_fails_exactly_the_dependent_steps(problem, name):
    corrupt, expected = CORRUPTIONS[name]
    net, params, X, y = problem
    curv = Curvature(net, params, X, y)
    corrupt(curv)
    report = verify.check_all(net, params, X, y, damping=0.1, curv=curv)
    assert set(report.failed) == expected, str(report)


def test_uncorrupted_problem_passes(problem):
    """The control for the corruption tests: the same problem, untouched, passes."""
    net, params, X, y = problem
    report = verify.check_all(net, params, X, y, damping=0.1)
    assert report.passed, str(report)


def test_ggn_corruption_fails_step_11(problem):
    """For the GGN, a hidden layer's A must be zero, and the loss layer's C must drop
    the ``G delta`` term: adding it back is caught by steps 3 and 11."""
    net, params, X, y = problem
    curv = Curvature(net, params, X, y, kind="ggn")
    hessian = Curvature(net, params, X, y, kind="hessian")
    curv.blocks.layers[-1] = curv.blocks.layers[-1]._replace(G=hessian.blocks.layers[-1].G)
    report = verify.check_all(net, params, X, y, kind="ggn", damping=0.1, curv=curv)
    assert set(report.failed) == {"3.C", "11.ggn"} | DOWNSTREAM, str(report)


def test_dense_hessian_methods_agree():
    net, params, X, y = build([3, 3, 3, 2], activation="softplus")
    H = verify.dense_hessian(net, params, X, y)
    error = lambda M: np.max(np.abs(M - H)) / np.max(np.abs(H))
    assert error(verify.dense_hessian(net, params, X, y, "formula")) < 1e-12
    assert error(verify.dense_hessian(net, params, X, y, "richardson")) < 1e-8
    G = verify.dense_ggn(net, params, X, y)
    assert np.max(np.abs(G - verify.dense_ggn(net, params, X, y, "formula"))) < 1e-12
    # H - G is the b-weighted second-order part: far from zero at a random point
    assert error(G) > 1e-3


def test_nan_fails_and_json_stays_valid(problem):
    """A NaN in a block is a FAIL of every check that sees it (never hidden by a finite
    layer compared after it), and the JSON report stays strict JSON."""
    net, params, X, y = problem
    curv = Curvature(net, params, X, y)
    curv.blocks.layers[LAYER].Dx[0, 0, 0] = np.nan
    report = verify.check_all(net, params, X, y, damping=0.1, curv=curv)
    assert {"2.Dx", "4.grad_blocks", "5.tangents", "6.H", "7.hvp"} <= set(report.failed)
    assert not any(k.startswith(("1.", "3.")) for k in report.failed)
    steps = {s["check"]: s for s in json.loads(report.to_json())["steps"]}
    assert steps["Dx"]["max_abs_err"] is None and steps["Dx"]["passed"] is False


def test_refuses_large_networks():
    net, params, X, y = build([8, 40, 40, 40, 3])
    assert net.n_params > verify.MAX_PARAMS
    with pytest.raises(ValueError, match="too large for the dense verifier"):
        verify.check_all(net, params, X, y)
    with pytest.raises(ValueError, match="too large for the dense verifier"):
        verify.dense_hessian(net, params, X, y)


def test_report_table_and_json(problem):
    net, params, X, y = problem
    report = verify.check_all(net, params, X, y, kind="ggn", damping=0.1)
    table = str(report).splitlines()
    assert len(table) == len(report) + 4  # config, header, rule, rows, verdict
    assert all(("PASS" in row) for row in table[3:-1])
    data = json.loads(report.to_json())
    assert data["passed"] is True
    assert [(s["step"], s["check"]) for s in data["steps"]] == [(s.step, s.check)
                                                                   for s in report]


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "verify", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_cli_good_run_writes_json(tmp_path):
    out = tmp_path / "report.json"
    proc = run_cli("--layers", "4", "--width", "3", "--batch", "2", "--activation",
                   "sigmoid", "--no-bias", "--kind", "ggn", "--damping", "0.1",
                   "--seed", "1", "--json", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "all checks passed" in proc.stdout
    data = json.loads(out.read_text())
    assert data["passed"] is True and data["config"]["kind"] == "ggn"
    assert len(data["steps"]) == len(proc.stdout.splitlines()) - 4


def test_cli_refuses_too_large():
    proc = run_cli("--layers", "4", "--width", "40")
    assert proc.returncode == 2
    assert "too large for the dense verifier" in proc.stderr
    assert proc.stdout == ""


def test_cli_json_of_a_float32_run_is_written_whole(tmp_path):
    out = tmp_path / "report.json"
    out.write_text('{"old": true}\n')
    proc = run_cli("--dtype", "float32", "--json", str(out))
    assert proc.returncode in (0, 1), proc.stderr
    assert proc.stderr == ""
    data = json.loads(out.read_text())
    assert "dtype=float32" in data["config"]["net"] and data["steps"]
    assert not list(tmp_path.glob("*.partial"))


def test_cli_json_to_a_missing_folder_or_a_folder_gets_one_line(tmp_path):
    proc = run_cli("--json", str(tmp_path / "missing" / "report.json"))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (f"python -m verify: error: --json {tmp_path}/missing/report.json: "
                           f"the folder {tmp_path}/missing does not exist\n")
    proc = run_cli("--json", str(tmp_path))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "Is a directory" in proc.stderr


def test_cli_help_is_plain_text():
    proc = run_cli("--help")
    assert proc.returncode == 0
    for markup in ("``", ":func:", ":class:", ":mod:"):
        assert markup not in proc.stdout
    assert "default 5)" in proc.stdout and "(default tanh)" in proc.stdout


def test_the_installed_script_calls_itself_tallskinny_verify(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["/usr/local/bin/tallskinny-verify"])
    with pytest.raises(SystemExit):
        main(["--help"])
    assert capsys.readouterr().out.startswith("usage: tallskinny-verify ")
    assert main(["--json", str(tmp_path / "missing" / "report.json")]) == 2
    assert capsys.readouterr().err.startswith("tallskinny-verify: error: --json ")
    monkeypatch.setattr(sys, "argv", ["verify/__main__.py"])
    with pytest.raises(SystemExit):
        main(["--help"])
    assert capsys.readouterr().out.startswith("usage: python -m verify ")


def test_the_autograd_check_names_torch_when_it_is_missing(monkeypatch, capsys):
    """``python -m verify.autograd`` without torch: one line naming it, exit status 2."""
    monkeypatch.setitem(sys.modules, "torch", None)      # ``import torch`` fails
    from verify import autograd
    assert autograd.main([]) == 2
    assert "needs torch" in capsys.readouterr().err
