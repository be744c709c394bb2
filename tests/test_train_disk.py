"""A full disk under ``--out`` (a small tmpfs, where the test can mount one): the run
ends with one line naming the file and the bytes it needed, a non-zero exit status, its
last checkpoint intact, and no process of its own left behind."""
import os
import subprocess
import sys
import time
from pathlib import Path

from tallskinny_np.training.store import read_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def group(pgid):
    """The live processes of process group ``pgid`` (Linux /proc): a run started in a
    session of its own, and whatever it started, orphans included."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid and fields[0] != "Z":
                    found.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return found


def test_a_full_disk_gets_one_line_and_leaves_the_checkpoint_intact(small_disk):
    out = small_disk / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tallskinny_np.training.train", "--depth", "3", "--width",
         "4", "--batch", "16", "--optimizer", "adam", "--task", "train", "--steps", "5000",
         "--eval-every", "2", "--out", str(out)],
        env=dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONPATH=str(ROOT)),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"tallskinny-train: error: {out}")
    assert "no space left on the device: " in err and " bytes needed, " in err, err
    ck = read_checkpoint(str(out / "train" / "adam" / "checkpoint.npz"))
    assert ck["step"] > 0
    assert not list(out.rglob("*.partial"))
    deadline = time.monotonic() + 5
    while group(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not group(proc.pid)
