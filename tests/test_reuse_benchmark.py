"""``python -m benchmarks.reuse --quick`` trains with hf, ggn-reuse and ggn through the
training app and writes its table, CSV and figure: the script is known to work before the
long run."""
import csv
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_run_writes_the_table_and_figure(tmp_path):
    done = subprocess.run([sys.executable, "-m", "benchmarks.reuse", "--out", str(tmp_path),
                           "--quick"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "reuse.csv", newline="") as f:
        rows = {r["optimizer"]: r for r in csv.DictReader(f)}
    assert list(rows) == ["hf", "ggn-reuse", "ggn"]
    assert all(int(r["steps"]) == 20 and float(r["wall"]) > 0 for r in rows.values())
    # hf reaches its own final loss at its last evaluation
    assert rows["hf"]["steps_to_hf"] == "20" and rows["hf"]["factorizations"] == "0"
    assert int(rows["ggn"]["factorizations"]) >= 20 and rows["ggn"]["krylov_iterations"] == ""
    # the exact steps are the same with or without reuse (to round-off): the same loss
    reuse, ggn = (float(rows[n]["final_train_loss"]) for n in ("ggn-reuse", "ggn"))
    assert abs(reuse - ggn) <= 1e-6 * ggn
    assert int(rows["ggn-reuse"]["krylov_iterations"]) > 0
    assert 1 <= int(rows["ggn-reuse"]["factorizations"]) <= int(rows["ggn"]["factorizations"])
    report = (tmp_path / "reuse.md").read_text()
    assert "| ggn-reuse | 20 |" in report and ("MET" in report or "MISSED" in report)
    # the floor: the best case after a change of the damping takes Krylov iterations
    floor = report.split("Floor: ")[1]
    assert int(floor.split("solve takes ")[1].split(" Krylov")[0]) >= 2
    assert (tmp_path / "reuse.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob("*.partial"))
