"""``python -m benchmarks.versus``: its smoke run against this checkout itself writes a
report whose ratios are those of its own measurements, and bad options get one line."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def versus(*args):
    return subprocess.run([sys.executable, "-m", "benchmarks.versus", *args], cwd=ROOT,
                          capture_output=True, text=True)


def test_a_quick_run_against_this_checkout(tmp_path):
    done = versus("--base", str(ROOT), "--out", str(tmp_path), "--quick")
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "versus.json").read_text())
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                          capture_output=True, text=True).stdout.strip()
    assert result["base"] == f"{ROOT} ({head or 'not a git checkout'})"
    rows = result["rows"]
    assert {"digits (4, 4) gradient", "digits (4, 4) hessian certified solve",
            "digits (4, 4) ggn inertia"} <= set(rows)
    for r in rows.values():
        assert r["here"] > 0 and r["base"] > 0
        assert r["ratio"] == r["ratios"][0] == r["here"] / r["base"]
    report = (tmp_path / "report.md").read_text()
    assert "(--quick: not a measurement)" in report
    assert f"| digits (4, 4) gradient | {rows['digits (4, 4) gradient']['here'] * 1e3:.2f} ms" \
        in report
    assert not list(tmp_path.glob("*.partial"))


def test_bad_options_get_one_line(tmp_path):
    not_a_checkout = versus("--base", str(tmp_path), "--out", str(tmp_path / "o"))
    assert not_a_checkout.returncode == 2
    assert "is not a checkout of this project" in not_a_checkout.stderr
    assert "Traceback" not in not_a_checkout.stderr
    (tmp_path / "file").write_text("")
    a_file = versus("--base", str(ROOT), "--out", str(tmp_path / "file"), "--quick")
    assert a_file.returncode == 2 and "is a file, not a folder" in a_file.stderr
    assert versus("--base", str(ROOT), "--out", str(tmp_path), "--pairs", "0").returncode == 2
