"""The benchmark report's command line: a missing, empty, foreign or non-JSON input and an
--out that is a file each get one line naming it and exit status 2, no traceback."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def report(*args):
    return subprocess.run([sys.executable, "-m", "benchmarks.report", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("content, words", [
    (None, "No such file or directory"),
    ("", "not JSON"),
    ("{not json", "not JSON"),
    ('{"benchmarks": [{"extra_info": {"suite": "cpu"}}]}', "not a pytest-benchmark JSON"),
    ("[1, 2]", "not a pytest-benchmark JSON"),
])
def test_bad_input_gets_one_line(tmp_path, content, words):
    path = tmp_path / "bench.json"
    if content is not None:
        path.write_text(content)
    proc = report(str(path), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and str(path) in proc.stderr and words in proc.stderr


def test_out_that_is_a_file_gets_one_line(tmp_path):
    (tmp_path / "bench.json").write_text('{"benchmarks": []}')
    (tmp_path / "file").write_text("x")
    proc = report(str(tmp_path / "bench.json"), "--out", str(tmp_path / "file"))
    assert proc.returncode == 2
    assert proc.stderr == (f"python -m benchmarks.report: error: --out {tmp_path / 'file'} "
                           f"is a file, not a folder\n")
