"""Two processes started together on one ``--out`` (fresh runs, or ``--resume``), or on one
image cache: one proceeds, the other is refused with one line naming the first one's
process id, and nothing is duplicated or lost. The runs last several seconds, so that the
second process reaches the lock while the first holds it even on a loaded machine. The
default run repeats each race once (the cache's twice), ``-m slow`` ten times."""
import csv
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN = ["--depth", "3", "--width", "4", "--batch", "16", "--optimizer", "adam", "--task",
       "train", "--eval-every", "2"]


def environment():
    return dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONPATH=str(ROOT))


def race(commands, cwd):
    """Start the commands together; their ``(pid, returncode, stderr)``."""
    procs = [subprocess.Popen(c, env=environment(), cwd=cwd, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for c in commands]
    return [(p.pid, p.wait(timeout=300), p.stderr.read()) for p in procs]


def one_refused(results, what, code=2):
    """Exactly one process succeeded and the other was refused (exit status ``code``),
    naming it."""
    ok = [r for r in results if r[1] == 0]
    refused = [r for r in results if r[1] != 0]
    assert len(ok) == 1 and len(refused) == 1, results
    pid, status, err = refused[0]
    assert status == code and len(err.splitlines()) == 1, err
    assert f"{what} is in use by process {ok[0][0]} (" in err, err


def steps(out):
    with open(out / "train" / "adam" / "metrics.csv", newline="") as f:
        return [int(r["step"]) for r in csv.DictReader(f)]


def train(out, *extra):
    return [sys.executable, "-m", "tallskinny_np.training.train", *RUN, "--out", str(out),
            *extra]


def runs_race(tmp_path, count):
    for k in range(count):
        out = tmp_path / f"fresh{k}"
        one_refused(race([train(out, "--steps", "800")] * 2, tmp_path), f"--out {out}")
        assert steps(out) == list(range(801))
        one_refused(race([train(out, "--steps", "1600", "--resume")] * 2, tmp_path),
                    f"--out {out}")
        assert steps(out) == list(range(1601))
        assert not list(out.rglob("*.partial"))


BUILD = textwrap.dedent("""
    import json, os, sys, time
    import numpy as np
    from tallskinny_np.training import folders
    from tallskinny_np.files import atomic_save, atomic_write_text

    def build(paths, labels, resolution, directory, workers, progress, skip_unreadable):
        # Decoding stand-in (no torchvision needed): slow enough for the race.
        time.sleep(1.5)
        atomic_save(os.path.join(directory, "images.npy"),
                    np.full((len(paths), resolution, resolution, 3), os.getpid() % 251,
                            np.uint8))
        atomic_save(os.path.join(directory, "labels.npy"), labels)
        atomic_write_text(os.path.join(directory, "meta.json"), json.dumps({"skipped": 0}))

    folders.build_cache = build
    try:
        images, labels, _ = folders.cached_images(["a.png", "b.png"], np.array([0, 1]), 2,
                                                  sys.argv[1], 0, False)
    except ValueError as e:
        sys.exit(f"error: {e}")
    assert images.shape == (2, 2, 2, 3) and labels.tolist() == [0, 1]
""")


def cache_race(tmp_path, count):
    for k in range(count):
        cache = tmp_path / f"cache{k}"
        results = race([[sys.executable, "-c", BUILD, str(cache)]] * 2, tmp_path)
        (folder,) = cache.iterdir()
        one_refused(results, f"the image cache {folder}", code=1)   # sys.exit(message)
        winner = next(pid for pid, status, _ in results if status == 0)
        with open(folder / "images.npy", "rb") as f:
            assert f.read()[-1] == winner % 251        # written by the winner alone
        assert sorted(os.listdir(folder)) == [".lock", "images.npy", "labels.npy",
                                              "meta.json"]


def test_two_writers_of_one_out_or_cache(tmp_path):
    runs_race(tmp_path, 1)
    cache_race(tmp_path, 2)


@pytest.mark.slow
def test_two_writers_of_one_out_or_cache_ten_times(tmp_path):
    runs_race(tmp_path, 10)
    cache_race(tmp_path, 10)
