"""``python -m benchmarks.defaults``: a quick run writes one row per problem, seed and rule
(the default rule among them), the summary's time ratios are the rows' seconds over the
default rule's on the same problem and seed, and a bad problem name gets one line."""
import csv
import subprocess
import sys
from pathlib import Path

from benchmarks import defaults

ROOT = Path(__file__).resolve().parents[1]


def test_a_quick_run_writes_every_rule_and_the_summary_agrees(tmp_path):
    done = subprocess.run([sys.executable, "-m", "benchmarks.defaults", "--out",
                           str(tmp_path), "--quick", "--seeds", "0,1"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "defaults.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["seed"], r["rule"]) for r in rows] == [
        (str(seed), rule) for seed in (0, 1) for rule in defaults.RULES]
    assert all(int(r["steps"]) <= 3 for r in rows)
    report = (tmp_path / "report.md").read_text()
    assert "--quick --seeds 0,1" in report and f"| {defaults.DEFAULT_RULE} | " in report
    rows = [dict(r, seconds=float(r["seconds"]), reached=r["reached"] == "True",
                 steps=int(r["steps"])) for r in rows]
    ratios = {}
    for line in defaults.summary(rows)[2:]:
        rule, ratio = line.split(" | ")[0][2:], float(line.split(" | ")[-1][:-2])
        own = sorted(r["seconds"] / next(d["seconds"] for d in rows if d["seed"] == r["seed"]
                                         and d["rule"] == defaults.DEFAULT_RULE)
                     for r in rows if r["rule"] == rule)
        assert abs(ratio - (own[0] + own[1]) / 2) <= 0.005 + 1e-9
        ratios[rule] = ratio
    assert list(ratios) == list(defaults.RULES) and ratios[defaults.DEFAULT_RULE] == 1.0

def test_an_unknown_problem_gets_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "benchmarks.defaults", "--out",
                           str(tmp_path), "--only", "nope"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "unknown problem 'nope'" in done.stderr
    assert "Traceback" not in done.stderr
