"""The training script: outputs, identical trajectories after ``--resume``, the curvature
sub-batch, the common initialisation and data order of ``--compare``, the divergence rule,
and the one-line messages for bad input. Tiny networks and a few steps only. Killing runs:
test_train_kill.py."""
import csv
import json
import os
import zipfile

import numpy as np
import pytest

from tallskinny_np.training import options, train
from tallskinny_np.training.files import locked
from tallskinny_np.training.train import main

TINY = ["--depth", "3", "--width", "4", "--batch", "16", "--eval-every", "2"]


def metrics(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_compare_writes_metrics_checkpoints_figures_and_table(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(TINY + ["--compare", "sgd,adam,newton,ggn,trust-region", "--steps", "6",
                        "--second-order-steps", "3", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    for task in ("memorise", "train"):
        assert (out / f"{task}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        first_losses = set()
        for name in ("sgd", "adam", "newton", "ggn", "trust-region"):
            rows = metrics(out / task / name / "metrics.csv")
            assert (out / task / name / "checkpoint.npz").exists()
            steps = 6 if name in ("sgd", "adam") else 3
            assert [int(r["step"]) for r in rows] == list(range(len(rows)))
            assert len(rows) == steps + 1 or float(rows[-1]["batch_acc"]) == 1.0
            first_losses.add(rows[0]["batch_loss"])
            if task == "train":
                assert rows[0]["val_acc"] != "" and rows[-1]["val_acc"] != ""
            if name not in ("sgd", "adam"):
                assert rows[0]["accepted"] in ("0", "1")
        assert len(first_losses) == 1      # same initialisation and first batch for all
    assert "steps to 100%" in printed and "Adam's final training loss" in printed
    summary = (out / "summary.txt").read_text()
    assert "trust-region" in summary
    assert max(len(line) for line in summary.splitlines()) <= 100
    for internal in ("target (", "TUNED_LR", "<= 150", "1/5"):
        assert internal not in summary


class Interrupt(Exception):
    pass


def interrupt_and_resume(args, out, monkeypatch):
    """Run ``args`` into ``out``, interrupted in step 7 (after its checkpoint at step 6),
    then resume it to the end."""
    update = train.update
    calls = []

    def interrupted(*a):
        calls.append(1)
        if len(calls) == 8:
            raise Interrupt
        return update(*a)
    monkeypatch.setattr(train, "update", interrupted)
    with pytest.raises(Interrupt):
        main(args + ["--out", str(out)])
    monkeypatch.setattr(train, "update", update)
    assert main(args + ["--resume", "--out", str(out)]) == 0


AUTOENCODER = ["--loss", "mse", "--targets", "inputs", "--activation", "relu", "--residual"]
REGRESSION = ["--loss", "mse", "--activation", "gelu", "--residual"]


@pytest.mark.parametrize("name, extra", [
    ("adam", []), ("ggn", []), ("trust-region", []), ("hf", []),
    ("ggn", ["--curvature-every", "4"]), ("ggn", AUTOENCODER), ("newton", REGRESSION)],
    ids=["adam", "ggn", "trust-region", "hf", "ggn-reused-curvature", "ggn-autoencoder",
         "newton-regression"])
def test_resume_continues_the_identical_trajectory(tmp_path, monkeypatch, name, extra):
    """A run interrupted in step 7 (after its checkpoint at step 6) and resumed, and a run
    resumed with a larger budget, reproduce the uninterrupted run's metrics exactly (with
    a reused curvature: rebuilt after the resume where the interrupted run built it)."""
    args = TINY + ["--optimizer", name, "--task", "train", "--curvature-batch", "8"] + extra
    full = ["--steps", "12", "--second-order-steps", "9"]
    assert main(args + full + ["--out", str(tmp_path / "whole")]) == 0
    interrupt_and_resume(args + full, tmp_path / "cut", monkeypatch)
    assert main(args + ["--steps", "6", "--second-order-steps", "4",
                        "--out", str(tmp_path / "grown")]) == 0
    assert main(args + full + ["--resume", "--out", str(tmp_path / "grown")]) == 0
    keys = ("step", "batch_loss", "batch_acc", "train_loss", "val_loss", "val_acc", "rho",
            "damping", "radius", "cg_iterations", "curvature")
    whole = [[r[k] for k in keys] for r in metrics(tmp_path / "whole" / "train" / name /
                                                   "metrics.csv")]
    assert len(whole) == (13 if name == "adam" else 10)
    for other in ("cut", "grown"):
        rows = metrics(tmp_path / other / "train" / name / "metrics.csv")
        assert [[r[k] for k in keys] for r in rows] == whole, other


def test_resume_refuses_another_run(tmp_path, capsys):
    args = TINY + ["--optimizer", "adam", "--task", "train", "--steps", "2",
                   "--out", str(tmp_path)]
    assert main(args) == 0
    assert main(args + ["--resume", "--lr", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "belongs to another run (lr 0.001 there, 0.5 now)" in err
    assert len(err.splitlines()) == 1


def test_an_existing_run_needs_resume_or_overwrite(tmp_path, capsys):
    args = TINY + ["--optimizer", "adam", "--task", "train", "--out", str(tmp_path)]
    assert main(args + ["--steps", "8"]) == 0
    before = metrics(tmp_path / "train" / "adam" / "metrics.csv")
    assert main(args + ["--steps", "3"]) == 2
    assert "already holds 1 run(s)" in capsys.readouterr().err
    assert metrics(tmp_path / "train" / "adam" / "metrics.csv") == before
    assert main(args + ["--steps", "3", "--overwrite"]) == 0
    assert len(metrics(tmp_path / "train" / "adam" / "metrics.csv")) == 4


def test_an_out_holding_other_files_needs_overwrite(tmp_path, capsys):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "thesis.tex").write_text("mine")
    (tmp_path / "config.json").write_text("my own config")
    args = TINY + ["--optimizer", "adam", "--task", "train", "--steps", "2",
                   "--out", str(tmp_path)]
    for extra in ([], ["--resume"]):
        assert main(args + extra) == 2
        err = capsys.readouterr().err
        assert err == (f"tallskinny-train: error: --out {tmp_path} holds 2 file(s) that are "
                       f"not outputs of tallskinny-train (first: {tmp_path / 'config.json'}); "
                       f"choose an empty or new folder, or pass --overwrite to write beside "
                       f"them\n")
        assert (tmp_path / "config.json").read_text() == "my own config"
        assert not (tmp_path / "train").exists()
    assert main(args + ["--overwrite"]) == 0
    assert (tmp_path / "notes" / "thesis.tex").read_text() == "mine"
    # Its own outputs, a sweep's included, are no reason to refuse.
    again = TINY + ["--compare", "adam", "--lr-sweep", "0.01", "--task", "train",
                    "--steps", "2", "--out", str(tmp_path / "own")]
    assert main(again) == 0
    assert (tmp_path / "own" / "sweep" / "train" / "adam-lr0.01" / "metrics.csv").exists()
    assert main(again + ["--resume"]) == 0


def test_resume_refuses_rows_whose_checkpoint_is_missing(tmp_path, capsys):
    args = TINY + ["--optimizer", "adam", "--task", "train", "--steps", "4",
                   "--out", str(tmp_path)]
    assert main(args) == 0
    run = tmp_path / "train" / "adam"
    before = (run / "metrics.csv").read_bytes()
    (run / "checkpoint.npz").unlink()
    assert main(args + ["--resume"]) == 2
    assert capsys.readouterr().err == (
        f"tallskinny-train: error: {run / 'metrics.csv'} holds 5 row(s) but the "
        f"checkpoint.npz they were committed with is missing; pass --overwrite to start "
        f"this run over\n")
    assert (run / "metrics.csv").read_bytes() == before
    # A header alone (a run stopped before its first commit) resumes from step 0.
    (run / "metrics.csv").write_bytes(before.splitlines(keepends=True)[0])
    assert main(args + ["--resume"]) == 0
    assert len(metrics(run / "metrics.csv")) == 5


def test_a_second_writer_of_an_out_is_refused_naming_the_first(tmp_path, capsys):
    args = TINY + ["--optimizer", "adam", "--task", "train", "--steps", "2",
                   "--out", str(tmp_path)]
    with locked(str(tmp_path), "--out"):
        assert main(args) == 2
        err = capsys.readouterr().err
    assert err.startswith(f"tallskinny-train: error: --out {tmp_path} is in use by process "
                          f"{os.getpid()} (")
    assert err.endswith("); wait for it to end or choose another folder\n")
    assert not (tmp_path / "train").exists()
    assert main(args) == 0                       # the lock went with its holder


def test_curvature_uses_the_sub_batch(tmp_path, monkeypatch):
    seen = []
    real = train.Curvature

    def recording(net, params, X, y, kind):
        seen.append((X.shape[0], kind))
        return real(net, params, X, y, kind=kind)
    monkeypatch.setattr(train, "Curvature", recording)
    assert main(TINY + ["--optimizer", "ggn", "--task", "train", "--steps", "10",
                        "--second-order-steps", "2", "--curvature-batch", "5",
                        "--out", str(tmp_path)]) == 0
    assert seen == [(2, "ggn"), (5, "ggn"), (5, "ggn")]    # warm-up, then 2 steps
    with pytest.raises(SystemExit):
        main(TINY + ["--curvature-batch", "17"])


def test_second_order_batch_is_the_train_task_gradient_batch_of_second_order(tmp_path,
                                                                             monkeypatch,
                                                                             capsys):
    seen = []
    real = train.loss_and_gradient

    def recording(net, params, X, y):
        seen.append(X.shape[0])
        return real(net, params, X, y)
    monkeypatch.setattr(train, "loss_and_gradient", recording)
    assert main(TINY + ["--compare", "adam,ggn", "--task", "both", "--steps", "3",
                        "--second-order-steps", "2", "--second-order-batch", "24",
                        "--out", str(tmp_path)]) == 0
    # memorise keeps one batch of 16 for both; train: adam 16, ggn 24 (3 + 1, 2 + 1 rows)
    assert seen[-7:] == [16] * 4 + [24] * 3
    with open(tmp_path / "summary-train.csv", newline="") as f:
        assert {r["optimizer"]: r["batch"] for r in csv.DictReader(f)} == {"adam": "16",
                                                                           "ggn": "24"}
    assert "second-order batch 24" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(TINY + ["--second-order-batch", "8", "--curvature-batch", "12"])
    assert main(TINY + ["--second-order-batch", "5000", "--out", str(tmp_path / "b")]) == 2
    assert "--second-order-batch 5000 is larger" in capsys.readouterr().err


def test_backtrack_reaches_every_damped_optimizer():
    args = train.parse_args(["--backtrack", "0"])
    for name in ("newton", "ggn", "ggn-newton", "modified-newton", "hf", "hf-hessian",
                 "saddle-free"):
        assert train.make_optimizer(name, args, "train").backtrack == 0
    assert train.make_optimizer("ggn", train.parse_args([]), "train").backtrack == 3
    with pytest.raises(SystemExit):
        train.parse_args(["--backtrack", "-1"])


def test_curvature_is_rebuilt_every_n_steps(tmp_path, monkeypatch):
    built = []
    real = train.Curvature

    def recording(net, params, X, y, kind):
        built.append(params.copy())
        return real(net, params, X, y, kind=kind)
    monkeypatch.setattr(train, "Curvature", recording)
    assert main(TINY + ["--optimizer", "newton", "--task", "train", "--steps", "10",
                        "--second-order-steps", "7", "--curvature-every", "3",
                        "--out", str(tmp_path)]) == 0
    rows = metrics(tmp_path / "train" / "newton" / "metrics.csv")
    assert [r["curvature"] for r in rows[:-1]] == ["1", "0", "0"] * 2 + ["1"]
    assert len(built) == 1 + 3                   # warm-up, then steps 0, 3 and 6


def test_ggn_newton_switches_once_at_the_switch_loss(tmp_path, monkeypatch):
    kinds = []
    real = train.Curvature

    def recording(net, params, X, y, kind):
        kinds.append(kind)
        return real(net, params, X, y, kind=kind)
    monkeypatch.setattr(train, "Curvature", recording)
    assert main(TINY + ["--optimizer", "ggn-newton", "--task", "precision", "--switch-loss",
                        "1.0", "--target-loss", "1e-3", "--second-order-steps", "30",
                        "--out", str(tmp_path)]) == 0
    rows = metrics(tmp_path / "precision" / "ggn-newton" / "metrics.csv")
    losses = [float(r["batch_loss"]) for r in rows[:-1]]
    steps = kinds[2:]                                  # after the warm-up of both kinds
    assert len(steps) == len(losses)
    switch = next(i for i, loss in enumerate(losses) if loss <= 1.0)
    assert 0 < switch and steps == ["ggn"] * switch + ["hessian"] * (len(steps) - switch)


def test_precision_task_stops_at_the_target_loss(tmp_path, capsys):
    args = TINY + ["--task", "precision", "--target-loss", "0.05", "--compare",
                   "adam,ggn,saddle-free", "--steps", "400", "--second-order-steps", "60",
                   "--out", str(tmp_path)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "precision: steps/seconds to each batch loss" in printed
    for name in ("adam", "ggn", "saddle-free"):
        rows = metrics(tmp_path / "precision" / name / "metrics.csv")
        losses = [float(r["batch_loss"]) for r in rows]
        assert losses[-1] <= 0.05 < min(losses[:-1])     # stops at the first row below
    assert (tmp_path / "precision.png").exists()
    summary = metrics(tmp_path / "summary-precision.csv")
    assert [r["optimizer"] for r in summary] == ["adam", "ggn", "saddle-free"]
    assert all(r["steps_to_0.05"] != "" for r in summary)


def test_npz_and_synthetic_sources_run(tmp_path, capsys):
    rng = np.random.default_rng(0)
    run = TINY + ["--optimizer", "trust-region", "--task", "train", "--steps", "10",
                  "--second-order-steps", "2", "--batch", "8", "--resolution", "3"]
    os.makedirs(tmp_path / "npz")
    np.savez(tmp_path / "npz" / "train_data_batch_1.npz",
             data=rng.integers(0, 256, (30, 3 * 9), dtype=np.uint8),
             labels=rng.integers(1, 4, 30))
    assert main(run + ["--data", "imagenet-npz", str(tmp_path / "npz"),
                       "--out", str(tmp_path / "b")]) == 0
    assert main(run + ["--data", "synthetic", "--classes", "3", "--synthetic-size", "60",
                       "--out", str(tmp_path / "c")]) == 0
    assert "network: depth 3, width 4, tanh, 147 parameters" in capsys.readouterr().out


@pytest.mark.parametrize("data, message", [
    (["imagefolder", "/nonexistent/tallskinny"], "does not exist"),
    (["imagenet-npz", "/nonexistent/tallskinny"], "does not exist"),
    (["imagefolder"], "needs a path"),
])
def test_bad_data_paths_get_a_message(tmp_path, capsys, data, message):
    assert main(["--data", *data, "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def test_bad_batch_files_get_one_line(tmp_path, capsys):
    from test_datasets import bad_batch_files
    for k, (path, words) in enumerate(bad_batch_files(tmp_path)):
        assert main(["--data", "imagenet-npz", str(path), "--out", str(tmp_path / f"o{k}")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(path) in err and words in err, err


def damage(path, how):
    data = bytearray(path.read_bytes())
    if how == "empty":
        data = b""
    elif how == "truncated":
        data = data[:len(data) // 2]
    elif how == "bit-flipped":                    # inside the parameters' bytes
        data[1000] ^= 0x10
    elif how == "foreign":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("x.npy", b"")
        return
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["empty", "truncated", "bit-flipped", "foreign", "folder"])
def test_damaged_checkpoint_gets_one_line(tmp_path, capsys, how):
    args = TINY + ["--optimizer", "adam", "--task", "train", "--steps", "4",
                   "--out", str(tmp_path)]
    assert main(args) == 0
    ck = tmp_path / "train" / "adam" / "checkpoint.npz"
    if how == "folder":
        ck.unlink()
        ck.mkdir()
    else:
        damage(ck, how)
    capsys.readouterr()
    assert main(args + ["--resume"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tallskinny-train: error: {ck}") and err.count("\n") == 1, err
    assert main(["evaluate", str(ck)]) == 2
    err = capsys.readouterr().err
    assert f"error: {ck}" in err and err.count("\n") == 1


def test_damaged_metrics_get_one_line(tmp_path, capsys):
    args = TINY + ["--optimizer", "adam", "--task", "train", "--steps", "4",
                   "--out", str(tmp_path)]
    assert main(args) == 0
    path = tmp_path / "train" / "adam" / "metrics.csv"
    text = path.read_text()
    path.write_text(text[:40])
    assert main(args + ["--resume"]) == 2
    assert "rows were lost" in capsys.readouterr().err
    path.write_text("a,b\n" + text)
    assert main(args + ["--resume"]) == 2
    assert "not a metrics file" in capsys.readouterr().err


def test_out_that_is_a_file_or_under_one_gets_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    for out, words in ((tmp_path / "file", "is a file, not a folder"),
                       (tmp_path / "file" / "sub", "cannot be created: Not a directory")):
        assert main(TINY + ["--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err == f"tallskinny-train: error: --out {out} {words}\n"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into read-only folders")
def test_unwritable_out_gets_one_line(tmp_path, capsys):
    (tmp_path / "ro").mkdir(mode=0o500)
    assert main(TINY + ["--out", str(tmp_path / "ro")]) == 2
    assert "is not writable" in capsys.readouterr().err


def test_evaluate_reports_the_checkpoint_on_a_split(tmp_path, capsys):
    assert main(TINY + ["--optimizer", "adam", "--task", "train", "--steps", "6",
                        "--out", str(tmp_path)]) == 0
    last = metrics(tmp_path / "train" / "adam" / "metrics.csv")[-1]
    with np.load(tmp_path / "train" / "adam" / "checkpoint.npz") as ck:
        assert ck["classes"].item() == '["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]'
        assert ck["mean"].shape == ck["std"].shape == (1,)
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "train" / "adam")]) == 0
    out = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines())
    assert float(out["loss"]) == pytest.approx(float(last["val_loss"]), abs=1e-4)
    assert float(out["top-1"]) == pytest.approx(float(last["val_acc"]), abs=1e-4)
    assert float(out["top-1"]) <= float(out["top-5"]) <= 1
    assert "val split, 359 images" in out["data"]
    assert main(["evaluate", str(tmp_path / "nothing")]) == 2


def test_autoencoder_and_regression_run_and_evaluate(tmp_path, capsys):
    """``--targets inputs``: the outputs are the 64 inputs, the loss their mean squared
    error, no accuracy; ``--loss mse`` on the labels: one-hot targets, an accuracy. The
    checkpoint records activation, loss, residual layers and targets, and evaluate
    reproduces the last validation loss from it."""
    for extra, outputs in ((AUTOENCODER, 64), (REGRESSION, 10)):
        out = tmp_path / extra[-2]
        assert main(TINY + extra + ["--optimizer", "ggn", "--task", "train", "--steps", "4",
                                    "--second-order-steps", "4", "--out", str(out)]) == 0
        rows = metrics(out / "train" / "ggn" / "metrics.csv")
        assert float(rows[-1]["val_loss"]) < float(rows[0]["val_loss"])
        with np.load(out / "train" / "ggn" / "checkpoint.npz") as ck:
            network = json.loads(ck["network"].item())
        assert network["sizes"] == [64, 4, 4, outputs]
        assert (network["activation"], network["loss"], network["residual"]) == (
            extra[extra.index("--activation") + 1], "mse", True)
        capsys.readouterr()
        assert main(["evaluate", str(out / "train" / "ggn")]) == 0
        report = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines())
        assert float(report["loss"]) == pytest.approx(float(rows[-1]["val_loss"]), abs=1e-4)
        if outputs == 64:
            assert rows[-1]["val_acc"] == "" and "top-1" not in report     # no accuracy
        else:
            assert 0 <= float(rows[-1]["val_acc"]) <= 1
            assert float(report["top-1"]) == pytest.approx(float(rows[-1]["val_acc"]),
                                                           abs=1e-4)


def test_autoencoder_needs_the_squared_error(capsys):
    with pytest.raises(SystemExit):
        main(TINY + ["--targets", "inputs"])
    assert "--targets inputs (an autoencoder) needs --loss mse" in capsys.readouterr().err


def rewrite_checkpoint(path, **fields):
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    arrays.update(fields)
    np.savez(path, **arrays)


def test_evaluate_checks_the_checkpoint_against_itself_and_the_data(tmp_path, capsys):
    assert main(TINY + ["--optimizer", "adam", "--task", "train", "--steps", "2",
                        "--out", str(tmp_path)]) == 0
    path = tmp_path / "train" / "adam" / "checkpoint.npz"
    original = path.read_bytes()
    network = '{{"sizes": {}, "activation": "{}", "dtype": "float64"}}'.format
    for fields, words in [
            (dict(network=network([64, 5, 4, 10], "tanh")), "its layer sizes [64, 5, 4, 10] "
             "take 399 parameters, but its 'params' field holds 330"),
            (dict(network=network([64, 4, 4, 10], "swish")), "its 'network' field does not "
             "describe a network of this program"),
            (dict(mean=np.zeros(3), std=np.ones(3)), "its normalisation ('mean' and 'std', "
             "3 channels) does not fit its 64 inputs"),
            (dict(std=np.ones((1, 1))), "its 'std' field ((1, 1)) is not a finite vector"),
            (dict(std=np.zeros(1)), "does not fit its 64 inputs with std > 0"),
            (dict(mean=np.zeros(2), std=np.ones(2)), "the data's images have 1 colour "
             "channels; the normalisation of"),
            (dict(classes='["a", "b"]'), "its 'classes' field names 2 classes, its network "
             "has 10 outputs")]:
        path.write_bytes(original)
        rewrite_checkpoint(path, **fields)
        capsys.readouterr()
        assert main(["evaluate", str(path)]) == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1, err
        assert words in err and str(path) in err, err


def test_evaluate_finds_relative_data_paths_from_where_the_run_started(tmp_path, capsys,
                                                                       monkeypatch):
    rng = np.random.default_rng(0)
    (tmp_path / "work" / "npz").mkdir(parents=True)
    np.savez(tmp_path / "work" / "npz" / "train_data_batch_1.npz",
             data=rng.integers(0, 256, (30, 3 * 9), dtype=np.uint8),
             labels=rng.integers(1, 4, 30))
    monkeypatch.chdir(tmp_path / "work")
    assert main(TINY + ["--optimizer", "adam", "--task", "train", "--steps", "2",
                        "--batch", "8", "--data", "imagenet-npz", "npz",
                        "--out", "run"]) == 0
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "work" / "run" / "train" / "adam")]) == 0
    out = capsys.readouterr().out
    assert f"imagenet-npz {tmp_path / 'work' / 'npz'}: val split, 6 images" in out


def test_epochs_are_epochs_for_every_optimizer(tmp_path):
    """The digits' training split holds 1438 images: e epochs are e * (1438 // 16) steps at
    batch 16 and e * (1438 // 64) at a second-order batch of 64, for every optimizer;
    --second-order-steps still sets the second-order budget."""
    args = TINY + ["--compare", "adam,ggn", "--task", "train", "--epochs", "0.05"]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    for name in ("adam", "ggn"):
        rows = metrics(tmp_path / "a" / "train" / name / "metrics.csv")
        assert int(rows[-1]["step"]) == int(0.05 * (1438 // 16)) == 4, name
    assert main(args + ["--second-order-batch", "64", "--out", str(tmp_path / "b")]) == 0
    rows = metrics(tmp_path / "b" / "train" / "ggn" / "metrics.csv")
    assert int(rows[-1]["step"]) == max(1, int(0.05 * (1438 // 64))) == 1
    assert main(args + ["--second-order-steps", "2", "--out", str(tmp_path / "c")]) == 0
    assert int(metrics(tmp_path / "c" / "train" / "ggn" / "metrics.csv")[-1]["step"]) == 2


def test_piped_output_gets_progress_lines(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(options, "PROGRESS_EVERY", 0.0)   # a line after every step
    args = TINY + ["--optimizer", "adam", "--task", "train", "--steps", "3"]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    for step in (1, 2, 3):
        assert f"train adam: step {step} of 3, batch loss " in out
    assert main(args + ["--quiet", "--out", str(tmp_path / "b")]) == 0
    assert "step 1 of 3" not in capsys.readouterr().out


def test_every_option_has_help_and_the_help_shows_defaults(capsys):
    parser_actions = []
    real = options.argparse.ArgumentParser.parse_args

    def keep(self, argv):
        parser_actions.extend(self._actions)
        return real(self, argv)
    options.argparse.ArgumentParser.parse_args = keep
    try:
        train.parse_args([])
    finally:
        options.argparse.ArgumentParser.parse_args = real
    assert all(a.help for a in parser_actions)
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for shown in ("units per hidden layer (default: 8)",
                  "(default: 32)", "(default: tallskinny-train-out)", "(default: float64)",
                  "(default: numpy)", "10 times its batch loss at step 0"):
        assert shown in " ".join(text.split()) or shown in text, shown


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")
def test_divergence_and_out_of_memory_get_messages(tmp_path, capsys, monkeypatch):
    run = TINY + ["--task", "train", "--steps", "20", "--second-order-steps", "20"]
    # tanh keeps the loss finite however large the weights (lr 1e6, 1e300): the rule
    # on the loss's growth stops these; float32 overflow (1e38: an infinite loss, 1e39:
    # infinite parameters) too. The checkpoint keeps the parameters of step 0.
    initial = {}
    for lr, dtype, message in (("1e6", "float64", "more than 10 times that of step 0"),
                               ("1e300", "float64", "more than 10 times that of step 0"),
                               ("1e38", "float32", "at step 1 is not finite"),
                               ("1e39", "float32", "parameters became non-finite")):
        assert main(run + ["--optimizer", "sgd", "--dtype", dtype, "--lr", lr,
                           "--out", str(tmp_path / lr)]) == 1
        err = capsys.readouterr().err
        assert message in err and "lower --lr" in err and "checkpoint.npz keeps step 0" in err
        assert len(err.splitlines()) == 1
        with np.load(tmp_path / lr / "train" / "sgd" / "checkpoint.npz") as ck:
            assert int(ck["step"]) == 0
            params = ck["params"].astype(np.float64)
        np.testing.assert_array_equal(params, initial.setdefault(dtype, params))
        rows = metrics(tmp_path / lr / "train" / "sgd" / "metrics.csv")
        assert [int(r["step"]) for r in rows] == [0, 1][:len(rows)]
    # Every trial loss non-finite: rejected with growing damping, then the run aborts.
    monkeypatch.setattr(train, "batch_loss", lambda *a: float("nan"))
    assert main(run + ["--optimizer", "ggn", "--out", str(tmp_path / "b")]) == 1
    assert "consecutive trial steps gave a non-finite loss" in capsys.readouterr().err
    real = train.Curvature

    def out_of_memory(net, params, X, y, kind):
        if len(y) > 2:                   # the warm-up's two samples still fit
            raise MemoryError("cudaErrorMemoryAllocation")
        return real(net, params, X, y, kind=kind)
    monkeypatch.setattr(train, "Curvature", out_of_memory)
    assert main(run + ["--optimizer", "trust-region", "--curvature-batch", "8",
                       "--out", str(tmp_path / "c")]) == 1
    err = capsys.readouterr().err
    assert "out of memory" in err and "--curvature-batch" in err and "batch of 8" in err


def test_unit_scale_trains_evaluates_and_resumes_only_itself(tmp_path, capsys):
    """``--scale unit``: the checkpoint's normalisation is 0 and 16 (the digits onto
    [0, 1]), evaluate reproduces the last validation loss with it, the trajectory differs
    from the standardised one, and a checkpoint resumes only with the same scaling; one
    written before the option existed resumes as ``standard``."""
    args = TINY + ["--optimizer", "adam", "--task", "train", "--steps", "4"]
    unit, standard = tmp_path / "unit", tmp_path / "standard"
    assert main(args + ["--scale", "unit", "--out", str(unit)]) == 0
    assert main(args + ["--out", str(standard)]) == 0
    run = unit / "train" / "adam"
    with np.load(run / "checkpoint.npz") as ck:
        assert (ck["mean"].tolist(), ck["std"].tolist()) == ([0.0], [16.0])
        assert json.loads(ck["config"].item())["scale"] == "unit"
    rows = metrics(run / "metrics.csv")
    assert rows[0]["batch_loss"] != metrics(standard / "train" / "adam" /
                                            "metrics.csv")[0]["batch_loss"]
    capsys.readouterr()
    assert main(["evaluate", str(run)]) == 0
    report = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines())
    assert float(report["loss"]) == pytest.approx(float(rows[-1]["val_loss"]), abs=1e-4)
    assert main(args + ["--resume", "--out", str(unit)]) == 2
    assert "scale 'unit' there, 'standard' now" in capsys.readouterr().err
    path = standard / "train" / "adam" / "checkpoint.npz"
    with np.load(path) as ck:
        config = json.loads(ck["config"].item())
    del config["scale"]
    rewrite_checkpoint(path, config=json.dumps(config))
    assert main(args + ["--steps", "6", "--resume", "--out", str(standard)]) == 0
    assert len(metrics(standard / "train" / "adam" / "metrics.csv")) == 7
