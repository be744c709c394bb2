"""``python -m benchmarks.suite``: a quick run of one problem drives the training app end to
end and writes a table whose rows, parsed back, agree with the runs (the ratio is the exact
method's seconds over the best Adam's); the bounds of runs that miss the target; the deep
mode (slow); bad options get one line."""
import csv
import math
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import suite

ROOT = Path(__file__).resolve().parents[1]


def run_suite(*args):
    return subprocess.run([sys.executable, "-m", "benchmarks.suite", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_a_quick_problem_writes_a_table_that_agrees_with_its_runs(tmp_path):
    done = run_suite("--out", str(tmp_path), "--quick", "--only", "digits")
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "suite.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["setting"] for r in rows] == ["ggn-newton (defaults)", "adam lr 0.003",
                                            "adam lr 0.01", "adam lr 0.03"]
    exact, adam = rows[0], rows[1:]
    for r in rows:
        with open(tmp_path / "digits" / folder(r) / "summary-precision.csv", newline="") as f:
            app = next(csv.DictReader(f))
        assert r["steps"] == app["steps"] and float(r["seconds"]) == float(app["wall"])
        if r["reached"] == "1":
            assert float(r["best_loss"]) <= float(r["target"]) == 1.0
            assert r["seconds_to_target"] == r["seconds"]
    reached = [float(r["seconds_to_target"]) for r in adam if r["reached"] == "1"]
    assert exact["reached"] == "1" and reached
    best = min(reached)
    assert float(exact["ratio"]) == float(exact["seconds_to_target"]) / best
    assert [r["best"] for r in adam].count("1") == 1
    assert float(next(r for r in adam if r["best"] == "1")["seconds_to_target"]) == best
    report = (tmp_path / "suite.md").read_text()
    assert "`python -m benchmarks.suite --out" in report and "(--quick" in report
    row = next(line for line in report.splitlines() if line.startswith("| digits | depth"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2] == "1" and cells[3] == exact["steps_to_target"]
    assert float(cells[4]) == pytest.approx(float(exact["seconds_to_target"]), abs=0.005)
    assert float(cells[7]) == pytest.approx(best, abs=0.005)
    assert cells[8] == suite.ratio_text(float(exact["ratio"]), exact["ratio_bound"])
    assert (tmp_path / "suite.png").stat().st_size > 0
    assert not list(tmp_path.glob("*.partial"))


def folder(row):
    """The run's folder under its problem's, from its setting."""
    return row["setting"].split()[0] if "defaults" in row["setting"] else \
        "adam-lr" + row["setting"].split()[-1]


def record(reached, seconds, diverged=False):
    return {"reached": reached, "seconds_to_target": seconds if reached else None,
            "seconds": seconds, "diverged": diverged}


def test_a_run_that_misses_the_target_bounds_the_ratio():
    adam = [record(False, 4.0), record(False, 3.0), record(False, None, diverged=True)]
    assert suite.time_to_target(adam) == (3.0, ">")
    assert suite.time_to_target([record(False, None, diverged=True)]) == (None, "")
    exact = suite.time_to_target([record(True, 1.5)])
    assert suite.ratio(exact, suite.time_to_target(adam)) == (0.5, "<")
    assert suite.ratio((6.0, ">"), (2.0, "")) == (3.0, ">")
    assert suite.ratio((6.0, ">"), (2.0, ">")) == (None, "")
    assert suite.ratio(exact, (None, "")) == (None, "")
    assert suite.ratio_text(0.5, "<") == "<0.5" and suite.ratio_text(None, "") == "-"


def test_the_autoencoders_target_is_its_principal_floor():
    """Through a width-n middle the best affine reconstruction of the batch: no lower than
    the floor of a wider middle, and 0 once the width reaches the batch's rank."""
    problem = suite.PROBLEMS["autoencoder"]
    floor = suite.principal_floor(problem)
    assert 0 < suite.principal_floor(problem._replace(width=8)) < floor
    assert suite.principal_floor(problem._replace(width=32)) == pytest.approx(0, abs=1e-20)
    assert suite.target_of(problem, quick=False) == float(f"{1.01 * floor:.4g}")
    assert not math.isclose(floor, suite.principal_floor(problem._replace(scale="unit")))


@pytest.mark.slow
def test_the_deep_mode_runs_every_optimizer(tmp_path):
    done = run_suite("--deep", "--out", str(tmp_path), "--quick", "--only", "depth48-width6")
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "deep.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["optimizer"] for r in rows if r["best"] == "1"] == [
        "sgd", "adam", "newton", "ggn", "ggn-newton", "hf", "trust-region"]
    assert {r["steps"] for r in rows if r["optimizer"] == "adam"} == {"50"}
    assert {r["steps"] for r in rows if r["optimizer"] == "trust-region"} == {"2"}
    for name in ("sgd", "adam"):
        runs = [r for r in rows if r["optimizer"] == name and r["diverged"] == "0"]
        best = next(r for r in runs if r["best"] == "1")
        assert float(best["best_loss"]) == min(float(r["best_loss"]) for r in runs)
    assert "## Depth 48, width 6" in (tmp_path / "deep.md").read_text()
    assert (tmp_path / "deep.png").stat().st_size > 0


@pytest.mark.parametrize("args, words", [
    (["--only", "digits,nope"], "unknown problem(s) nope; choose from digits,"),
    (["--only", ","], "unknown problem(s) (none given)"),
    (["--deep", "--only", "digits"], "unknown problem(s) digits; choose from depth48"),
])
def test_bad_options_get_one_line(tmp_path, args, words):
    done = run_suite("--out", str(tmp_path), *args)
    assert done.returncode == 2
    assert done.stderr.startswith(f"python -m benchmarks.suite: error: {words}")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_an_out_that_is_a_file_gets_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    a_file = run_suite("--out", str(tmp_path / "file"), "--quick")
    assert a_file.returncode == 2 and "is a file, not a folder" in a_file.stderr
    assert a_file.stderr.count("\n") == 1
