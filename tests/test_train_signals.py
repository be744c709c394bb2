"""SIGINT and SIGTERM at random moments of an exact-step run (start-up, the compiled warm-up,
inside the compiled Riccati stages of a step, a commit): each ends the run with one line
naming the signal and the ``--resume`` command, exit status 130 or 143 and no traceback,
and the resumed runs end with the uninterrupted run's metrics, row for row. The default
run sends 4 signals; ``-m slow`` sends 10."""
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN = ["--depth", "4", "--width", "4", "--batch", "16", "--optimizer", "ggn", "--task",
       "train", "--steps", "1200", "--second-order-steps", "1200", "--eval-every", "5"]


def command(out, *extra):
    return [sys.executable, "-m", "tallskinny_np.training.train", *RUN, "--out", str(out),
            *extra]


def environment():
    return dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONPATH=str(ROOT),
                PYTHONUNBUFFERED="1")


def rows(out):
    with open(out / "train" / "ggn" / "metrics.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k != "wall"} for r in csv.DictReader(f)]


def lines(path):
    return path.read_bytes().count(b"\n") if path.exists() else 0


def interrupt_at_random_moments(tmp_path, count):
    whole = subprocess.run(command(tmp_path / "whole"), env=environment(), cwd=tmp_path,
                           capture_output=True, text=True, timeout=300)
    assert whole.returncode == 0, whole.stderr
    rng = np.random.default_rng(0)
    out = tmp_path / "cut"
    metrics = out / "train" / "ggn" / "metrics.csv"
    during_steps = 0
    for k in range(count):
        signum = (signal.SIGINT, signal.SIGTERM)[k % 2]
        log = tmp_path / f"stdout{k}"
        start = lines(metrics)
        with open(log, "wb") as stdout:
            proc = subprocess.Popen(command(out, "--resume"), env=environment(), cwd=tmp_path,
                                    stdout=stdout, stderr=subprocess.PIPE, text=True)
            deadline = time.monotonic() + 120
            if k % 4 < 2:
                # Start-up: after the data are read, in the warm-up or the first steps.
                while (proc.poll() is None and b"network:" not in log.read_bytes()
                       and time.monotonic() < deadline):
                    time.sleep(0.002)
                time.sleep(rng.uniform(0, 0.3))
            else:
                # Training: after 1 to 40 more committed rows, a few ms into a step.
                target = start + int(rng.integers(1, 41))
                while (proc.poll() is None and lines(metrics) < target
                       and time.monotonic() < deadline):
                    time.sleep(0.002)
                time.sleep(rng.uniform(0, 0.005))
            assert proc.poll() is None, "the run ended before the signal"
            proc.send_signal(signum)
            _, err = proc.communicate(timeout=60)
        during_steps += lines(metrics) > start
        assert proc.returncode == 128 + signum, err
        assert "Traceback" not in err and len(err.splitlines()) == 1, err
        assert err.startswith(f"tallskinny-train: error: interrupted by "
                              f"{signal.Signals(signum).name}")
        if lines(metrics):
            assert err.rstrip().endswith("--resume"), err
    assert during_steps >= sum(k % 4 >= 2 for k in range(count))   # the training moments
    last = subprocess.run(command(out, "--resume"), env=environment(), cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert last.returncode == 0, last.stderr
    assert rows(out) == rows(tmp_path / "whole")
    assert len(rows(out)) == 1201
    assert not [p for p in out.rglob("*.partial")]


def test_sigint_and_sigterm_stop_an_exact_run_cleanly(tmp_path):
    interrupt_at_random_moments(tmp_path, 4)


@pytest.mark.slow
def test_sigint_and_sigterm_at_ten_random_moments(tmp_path):
    interrupt_at_random_moments(tmp_path, 10)


def test_a_signal_while_the_modules_load_gets_one_line(tmp_path):
    """The package loads NumPy, SciPy and numba only on first use, so the handlers of the
    start-up are in place before they load; a signal then gets one line, no traceback."""
    light = subprocess.run(
        [sys.executable, "-c", "import sys, tallskinny_np.training.signals; "
                               "print(sorted({'numpy', 'scipy', 'numba'} & set(sys.modules)))"],
        env=environment(), capture_output=True, text=True, timeout=60)
    assert light.stdout == "[]\n", light.stderr
    script = ("from tallskinny_np.training import signals\n"
              "signals.quiet_start('tallskinny-train')\n"
              "print('loading', flush=True)\n"
              "import time\n"
              "while True:\n"
              "    import tallskinny_np.training.train\n"
              "    time.sleep(0.01)\n")
    for signum in (signal.SIGINT, signal.SIGTERM):
        proc = subprocess.Popen([sys.executable, "-c", script], env=environment(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout.readline() == "loading\n"
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 128 + signum
        assert err == (f"tallskinny-train: error: interrupted by "
                       f"{signal.Signals(signum).name} during start-up\n")
