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


def lines(path):
    """The lines written to a file so far (0 before it exists)."""
    return path.read_bytes().count(b"\n") if path.exists() else 0


def test_sigkill_at_random_moments_loses_no_row(tmp_path):
    whole = subprocess.run(command(tmp_path / "whole"), env=environment(), cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)
    assert whole.returncode == 0, whole.stderr
    assert "\r" not in whole.stderr + whole.stdout
    rng = np.random.default_rng(0)
    out, kills, during_training = tmp_path / "killed", 0, 0
    metrics = out / "train" / "adam" / "metrics.csv"
    for _ in range(KILLS):
        # Kill after a random amount of progress (1 to 40 more rows, at most 400 of the
        # 600 steps in all), not after a time: the machine's load must not decide whether
        # the run is still alive. A random few milliseconds more lands the kill anywhere
        # in a step or in the save that follows it.
        start = lines(metrics)
        target = start + int(rng.integers(1, 41))
        proc = subprocess.Popen(command(out, "--resume"), env=environment(), cwd=tmp_path,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while proc.poll() is None and lines(metrics) < target and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(rng.uniform(0, 0.02))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
            during_training += lines(metrics) > start
        proc.wait()
    assert kills == KILLS and during_training >= KILLS // 2
    last = subprocess.run(command(out, "--resume"), env=environment(), cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert last.returncode == 0, last.stderr
    assert rows(out) == rows(tmp_path / "whole")
    assert len(rows(out)) == 601
    leftovers = [p for p in out.rglob("*") if p.is_file() and p.suffix == ".partial"]
    assert not leftovers
