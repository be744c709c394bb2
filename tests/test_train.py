"""The training script: outputs, identical trajectories
after ``--resume``, the curvature sub-batch, the common initialisation and data order of
``--compare``, and the messages for bad input. Tiny networks and a few steps only."""
import csv
import os

import numpy as np
import pytest
from PIL import Image

from tallskinny_np.training import train
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
    assert "steps to 100%" in printed and "steps to Adam's final train loss" in printed
    assert "trust-region" in (out / "summary.txt").read_text()


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("name", ["adam", "ggn", "trust-region"])
def test_resume_continues_the_identical_trajectory(tmp_path, monkeypatch, name):
    """A run interrupted in step 7 (after its checkpoint at step 6) and resumed, and a run
    resumed with a larger budget, reproduce the uninterrupted run's metrics exactly."""
    args = TINY + ["--optimizer", name, "--task", "train", "--curvature-batch", "8"]
    full = ["--steps", "12", "--second-order-steps", "9"]
    assert main(args + full + ["--out", str(tmp_path / "whole")]) == 0
    update = train.update
    calls = []

    def interrupted(*a):
        calls.append(1)
        if len(calls) == 8:
            raise Interrupt
        return update(*a)
    monkeypatch.setattr(train, "update", interrupted)
    with pytest.raises(Interrupt):
        main(args + full + ["--out", str(tmp_path / "cut")])
    monkeypatch.setattr(train, "update", update)
    assert main(args + full + ["--resume", "--out", str(tmp_path / "cut")]) == 0
    assert main(args + ["--steps", "6", "--second-order-steps", "4",
                        "--out", str(tmp_path / "grown")]) == 0
    assert main(args + full + ["--resume", "--out", str(tmp_path / "grown")]) == 0
    keys = ("step", "batch_loss", "batch_acc", "train_loss", "val_loss", "val_acc", "rho",
            "damping", "radius")
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
    assert main(args + ["--resume", "--lr", "0.5"]) == 1
    assert "belongs to another run" in capsys.readouterr().err


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


def test_image_data_sources_run(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        os.makedirs(tmp_path / "tree" / c)
        for k in range(10):
            Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).save(
                tmp_path / "tree" / c / f"{k}.png")
    (tmp_path / "tree" / "dog" / "bad.png").write_bytes(b"garbage")
    run = TINY + ["--optimizer", "trust-region", "--task", "train", "--steps", "10",
                  "--second-order-steps", "2", "--batch", "8", "--resolution", "3",
                  "--cache-dir", str(tmp_path / "cache")]
    assert main(run + ["--data", "imagefolder", str(tmp_path / "tree"),
                       "--out", str(tmp_path / "a")]) == 0
    assert "skipped 1 unreadable image files" in capsys.readouterr().out
    os.makedirs(tmp_path / "npz")
    np.savez(tmp_path / "npz" / "train_data_batch_1.npz",
             data=rng.integers(0, 256, (30, 3 * 9), dtype=np.uint8),
             labels=rng.integers(1, 4, 30))
    assert main(run + ["--data", "imagenet-npz", str(tmp_path / "npz"),
                       "--out", str(tmp_path / "b")]) == 0
    assert main(run + ["--data", "synthetic", "--classes", "3", "--synthetic-size", "60",
                       "--out", str(tmp_path / "c")]) == 0
    assert "network: MLP([27, 4, 4, 3]" in capsys.readouterr().out


@pytest.mark.parametrize("data, message", [
    (["imagefolder", "/nonexistent/tallskinny"], "does not exist"),
    (["imagenet-npz", "/nonexistent/tallskinny"], "does not exist"),
    (["imagefolder"], "needs a path"),
])
def test_bad_data_paths_get_a_message(tmp_path, capsys, data, message):
    assert main(["--data", *data, "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def test_empty_data_directory_gets_a_message(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["--data", "imagefolder", str(tmp_path / "empty"), "--out",
                 str(tmp_path / "o")]) == 2
    assert "holds no class directories" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")
def test_divergence_and_out_of_memory_get_messages(tmp_path, capsys, monkeypatch):
    run = TINY + ["--task", "train", "--steps", "20", "--second-order-steps", "20"]
    # float32 overflows: lr 1e38 makes the next loss infinite, lr 1e39 (inf in float32)
    # the parameters themselves.
    for lr, message in (("1e38", "batch loss is not finite at step 1"),
                        ("1e39", "parameters became non-finite")):
        assert main(run + ["--optimizer", "sgd", "--dtype", "float32", "--lr", lr,
                           "--out", str(tmp_path / lr)]) == 1
        err = capsys.readouterr().err
        assert message in err and "lower --lr" in err
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
