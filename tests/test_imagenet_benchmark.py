"""``python -m benchmarks.imagenet --quick`` runs every part of the ImageNet-shape benchmark
on tiny settings and writes its report: the script is known to work before the long run."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_run_writes_every_section(tmp_path):
    done = subprocess.run([sys.executable, "-m", "benchmarks.imagenet", "--out", str(tmp_path),
                           "--quick", "--base", str(ROOT)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = (tmp_path / "report.md").read_text()
    for heading in ("classes against 10", "The tall-skinny setting", "Against another checkout",
                    "The original training script's settings"):
        assert heading in report
    result = json.loads((tmp_path / "imagenet.json").read_text())
    assert result["dgemm_flops"] > 1e8
    for kind in ("ggn", "hessian"):
        r = result["classes_ratio"][kind]
        assert all(t > 0 for t in r["seconds"]) and r["peak_bytes"][0] > 1e7
        assert result["tall_skinny"][kind]["hidden_flops"] > 0
    assert 0.2 < result["versus_base"]["time_ratio"] < 5     # the same checkout twice
    assert [row["name"] for row in result["seeds"]] == ["baseline", "Hessian setting",
                                                        "tall-skinny setting"]
    assert result["seeds"][0]["seconds"] > 0                 # the Adam step, measured
    # the tall-skinny setting's step is the one measured above, not an estimate
    assert result["seeds"][2]["step_seconds"] == result["tall_skinny"]["ggn"]["seconds"]
    assert "(measured)" in report.splitlines()[-3]
    assert not list(tmp_path.glob("*.partial"))
