"""The GPU check (benchmarks/gpu/run.sh and benchmarks/gpu/run.py) works before a GPU is
available: its tiny settings (``--quick``) run here without a GPU (``--cpu-only``) through
run.sh, and once more in GPU mode with a stand-in for CuPy that computes with NumPy, so that
the GPU branches of the script (device queries, memory pool, timings on both backends,
speed-ups, ``tallskinny-train --backend cupy``) run too."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from benchmarks.gpu import run as check

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("## Machine", "## GPU tests", "## Setup + certified solve",
            "## ImageNet-shaped exact step", "## Training throughput", "## Targets")

# A module named cupy whose arrays are NumPy's: the package then computes on the CPU
# exactly as without CuPy, while the script takes its GPU branches.
STAND_IN = '''
import numpy as _np
from types import SimpleNamespace as _Namespace

__version__ = "0+stand-in"


class ndarray:
    """Never instantiated: every array is NumPy's."""


def asnumpy(a):
    return _np.asarray(a)


def __getattr__(name):
    return getattr(_np, name)


class _Pool:
    def free_all_blocks(self):
        pass

    def total_bytes(self):
        return 3 * 2 ** 20

    def free_bytes(self):
        return 2 ** 20


def get_default_memory_pool():
    return _Pool()


class _Device:
    id = 0
    mem_info = (2 ** 30, 2 ** 31)

    def __init__(self, device=0):
        pass

    def synchronize(self):
        pass


cuda = _Namespace(Device=_Device, runtime=_Namespace(
    CUDARuntimeError=RuntimeError, getDeviceCount=lambda: 1,
    getDeviceProperties=lambda i: {"name": b"stand-in", "totalGlobalMem": 2 ** 31},
    runtimeGetVersion=lambda: 12040, driverGetVersion=lambda: 12080,
    memGetInfo=lambda: (2 ** 30, 2 ** 31)))
'''


def read(out):
    return json.loads((out / "report.json").read_text()), (out / "report.md").read_text()


@pytest.fixture(scope="module")
def cpu_only(tmp_path_factory):
    """run.sh --cpu-only --quick: ``(completed process, report.json data, report.md)``."""
    out = tmp_path_factory.mktemp("gpu-check") / "report"
    done = subprocess.run(["bash", "benchmarks/gpu/run.sh", "--out", str(out), "--cpu-only",
                           "--quick"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHON=sys.executable))
    assert done.returncode == 0, done.stdout + done.stderr
    return done, *read(out)


def test_cpu_only_run_names_each_section_and_says_where_the_report_is(cpu_only):
    done, data, md = cpu_only
    assert "report.md" in done.stdout.splitlines()[-1]
    positions = [md.index(heading) for heading in SECTIONS]
    assert positions == sorted(positions)
    assert data["finished"] and data["environment"]["gpu"] == "no GPU: --cpu-only"
    assert "- GPU: no GPU: --cpu-only" in md


def test_cpu_only_gpu_rows_are_skipped_with_their_reason(cpu_only):
    _, data, md = cpu_only
    gpu = [r for r in data["rows"] if r["backend"] == "cupy"]
    cpu = [r for r in data["rows"] if r["backend"] == "numpy"]
    assert {r["section"] for r in gpu} == {"solve", "step"} and len(gpu) == len(cpu)
    assert all(r["status"] == "skipped" and r["reason"] == "no GPU: --cpu-only" for r in gpu)
    assert md.count("| cupy |") == len(gpu)
    assert all(line.endswith("| skipped: no GPU: --cpu-only |")
               for line in md.splitlines() if "| cupy |" in line)


def test_cpu_only_cpu_figures_are_finite_and_certified(cpu_only):
    _, data, _ = cpu_only
    cpu = [r for r in data["rows"] if r["backend"] == "numpy"]
    assert {(r["section"], r["dtype"]) for r in cpu} == {
        ("solve", "float64"), ("solve", "float32"), ("step", "float64")}
    for r in cpu:
        assert r["status"] == "ok", r
        assert 1 <= r["repeats"] <= r["max_repeats"] == len(r["all_seconds"])
        assert all(math.isfinite(s) and s > 0 for s in r["all_seconds"])
        assert min(r["all_seconds"]) <= r["seconds"] <= max(r["all_seconds"])
        assert 0 <= r["backward_error"] <= r["bound"]
        if r["dtype"] == "float64":
            assert r["backward_error"] < 1e-10
    assert data["ratios"] == []


def test_cpu_only_runs_the_gpu_tests_and_the_training(cpu_only):
    _, data, md = cpu_only
    assert data["tests"]["status"] == "passed"
    assert [(r["optimizer"], r["backend"]) for r in data["training"]] == [
        ("adam", "numpy"), ("ggn", "numpy")]
    for r in data["training"]:
        assert r["status"] == "ok" and r["steps_done"] == r["steps"]
        assert math.isfinite(r["images_per_second"]) and r["images_per_second"] > 0
    assert md.count("**NOT MEASURED**, --quick runs other settings") == 2


def test_gpu_branches_with_a_stand_in_cupy(tmp_path):
    (tmp_path / "stand-in" / "cupy").mkdir(parents=True)
    (tmp_path / "stand-in" / "cupy" / "__init__.py").write_text(STAND_IN)
    path = os.pathsep.join(filter(None, [str(tmp_path / "stand-in"),
                                         os.environ.get("PYTHONPATH")]))
    out = tmp_path / "report"
    done = subprocess.run([sys.executable, "-m", "benchmarks.gpu.run", "--out", str(out),
                           "--quick", "--skip-tests", "--repeats", "2"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=path))
    assert done.returncode == 0, done.stdout + done.stderr
    data, md = read(out)
    env = data["environment"]
    assert (env["gpu"], env["cuda_runtime"], env["cuda_driver"]) == ("stand-in", "12.4", "12.8")
    assert "- GPU: stand-in, 2.00 GiB; CuPy 0+stand-in, CUDA runtime 12.4, driver 12.8" in md
    assert data["tests"] is None and "Not run (--skip-tests)." in md
    gpu = [r for r in data["rows"] if r["backend"] == "cupy"]
    assert gpu and all(r["status"] == "ok" for r in data["rows"])
    assert all(r["gpu_pool_peak_bytes"] == 3 * 2 ** 20 and r["gpu_used_bytes"] == 2 ** 30
               for r in gpu)
    assert len(data["ratios"]) == len(gpu)
    for q in data["ratios"]:
        assert q["speedup"] == pytest.approx(q["cpu_seconds"] / q["gpu_seconds"])
    assert [(r["optimizer"], r["backend"], r["status"]) for r in data["training"]] == [
        ("adam", "cupy", "ok"), ("ggn", "cupy", "ok")]
    assert all(r["gpu_pool_peak"] == "0.00 GiB" for r in data["training"])


def row(section, backend, depth, width, batch, status="ok", kind="hessian", **figures):
    return dict(section=section, backend=backend, depth=depth, width=width, batch=batch,
                kind=kind, dtype="float64", status=status, **figures)


@pytest.mark.parametrize("cpu_seconds,verdict", [(25.0, "MET"), (15.0, "MISSED")])
def test_targets_judge_the_measured_rows(cpu_seconds, verdict):
    rows = [row("solve", "cupy", 256, 32, 32, seconds=1.0),
            row("solve", "numpy", 256, 32, 32, seconds=cpu_seconds),
            row("step", "cupy", 40, 128, 32, kind="ggn", seconds=30.0,
                gpu_pool_peak_bytes=40 * 2 ** 30),
            row("step", "cupy", 40, 128, 32, status="failed",
                reason="OutOfMemoryError: out of memory")]
    run = SimpleNamespace(rows=rows, args=SimpleNamespace(quick=False), environment=dict(
        gpu="H100", gpu_memory_bytes=80 * 2 ** 30))
    speed, large = check.targets(run)
    assert speed["verdict"] == verdict and speed["figures"].startswith(f"{cpu_seconds:.1f}x")
    assert large["verdict"] == "MET"
    assert large["figures"] == ("ggn: 30 s, peak GPU memory (CuPy pool) 40.00 GiB on H100 "
                                "(80.00 GiB)")
    run.rows = rows[:1] + rows[3:]
    speed, large = check.targets(run)
    assert speed["verdict"] == "NOT MEASURED" and speed["figures"] == "not run yet"
    assert large["verdict"] == "MISSED" and "OutOfMemoryError" in large["figures"]


def test_a_row_out_of_time_is_stopped_and_one_without_time_skipped(tmp_path):
    run = check.Run(check.parse_args(["--out", str(tmp_path), "--cpu-only", "--quick"]))
    spec = next(s for s in run.row_specs() if s["backend"] == "numpy")
    out = run.in_worker(dict(spec, max_repeats=1), limit=0.01)
    assert out == dict(status="stopped", reason="after 0 s, the time left for it")
    run.section_deadline = 0.0
    row = run.measure(spec)
    assert (row["status"], row["reason"]) == ("skipped", "the run's time budget ran out")
    assert read(tmp_path)[0]["rows"] == [row]
