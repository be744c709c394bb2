"""A run killed with SIGKILL at random moments and resumed each time ends with the same
metrics as the uninterrupted run, row for row (training wall-clock aside), no temporary
file left behind, and no carriage return in its piped output."""
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RUN = ["--depth", "3", "--width", "4", "--batch", "16", "--optimizer", "adam", "--task",
       "train", "--steps", "600", "--eval-every", "2"]
KILLS = 10


def command(out, *extra):
    return [sys.executable, "-m", "tallskinny_np.training.train", *RUN, "--out", str(out),
            *extra]


def environment():
    return dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONPATH=str(ROOT))


def rows(out):
    with open(out / "train" / "adam" / "metrics.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k != "wall"} for r in csv.DictReader(f)]


def test_sigkill_at_random_moments_loses_no_row(tmp_path):
    whole = subprocess.run(command(tmp_path / "whole"), env=environment(), cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)
    assert whole.returncode == 0, whole.stderr
    assert "\r" not in whole.stderr + whole.stdout
    rng = np.random.default_rng(0)
    out, kills, during_training = tmp_path / "killed", 0, 0
    metrics = out / "train" / "adam" / "metrics.csv"
    for _ in range(KILLS):
        proc = subprocess.Popen(command(out, "--resume"), env=environment(), cwd=tmp_path,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Start-up takes under a second, the 600 steps a few seconds in all.
        time.sleep(rng.uniform(0.7, 1.5))
        if proc.poll() is None:
            during_training += metrics.exists()
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills == KILLS and during_training >= KILLS // 2
    last = subprocess.run(command(out, "--resume"), env=environment(), cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert last.returncode == 0, last.stderr
    assert rows(out) == rows(tmp_path / "whole")
    assert len(rows(out)) == 601
    leftovers = [p for p in out.rglob("*") if p.is_file() and p.suffix == ".partial"]
    assert not leftovers
