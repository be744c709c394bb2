"""The benchmark report generator (benchmarks/report.py): slope fits, target evaluation,
markdown and plots on synthetic pytest-benchmark JSON, and one real run of the smallest
benchmark configurations through the report."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import report

ROOT = Path(__file__).resolve().parents[1]
DEPTHS = (4, 8, 16, 32, 64, 128, 256, 512)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def bench(name, median, **extra):
    """One benchmark entry as pytest-benchmark writes it (the fields the report reads)."""
    return dict(name=name, group=None, extra_info=extra,
                stats=dict(median=median, min=0.9 * median, rounds=3))


def synthetic(gpu=False):
    """A run with a dgemm rate of 100 GFLOP/s and, at (width, batch) = (8, 8) and
    (16, 16), setup, riccati (time and memory proportional to L, 10 GFLOP/s), ldu (8x
    riccati's time), dense up to L = 64 (time ~ L^3, backward error 1e-16) and minres;
    with ``gpu``, riccati on CuPy at width 32, batch 32 (10 TFLOP/s against a 50 TFLOP/s
    matmul) and the numpy path 25x slower."""
    n = 1024
    benchmarks = [bench("dgemm", 2 * n ** 3 / 100e9 / 0.9, suite="cpu", series="dgemm", n=n,
                        flops=2 * n ** 3)]
    for w, B in ((8, 8), (16, 16)):
        cfg = dict(suite="cpu", backend="numpy", width=w, batch=B, p=w * w, a=w * B)
        for L in DEPTHS:
            t = 1e-4 * L
            benchmarks += [
                bench("setup", 0.2 * t, series="setup", role="setup", L=L, flops=None,
                      peak_bytes=1e5 * L, **cfg),
                bench("riccati", t, series="riccati", role="method", L=L, flops=1e10 * t,
                      peak_bytes=1e5 * L, backward_error=2e-16, **cfg),
                bench("ldu", 8 * t, series="ldu", role="method", L=L, flops=None,
                      peak_bytes=1e6 * L, backward_error=5e-15, **cfg),
                bench("minres", 3 * t, series="minres", role="baseline", L=L, flops=None,
                      peak_bytes=None, backward_error=1e-10, iterations=100,
                      converged=True, relative_residual=1e-9, **cfg),
            ]
            if L <= 64:
                benchmarks.append(bench("dense", 1e-5 * L ** 3, series="dense",
                                        role="baseline", L=L, flops=None,
                                        peak_bytes=1e3 * L ** 2, backward_error=1e-16,
                                        **cfg))
    if gpu:
        benchmarks.append(bench("matmul", 2 * n ** 3 / 50e12 / 0.9, suite="gpu",
                                series="matmul", backend="cupy", n=n, flops=2 * n ** 3))
        for L in (16, 64, 256, 1024):
            cfg = dict(suite="gpu", series="riccati", role="method", width=32, batch=32,
                       p=1024, a=1024, L=L, peak_bytes=None, backward_error=1e-15)
            benchmarks += [bench("gpu riccati", 1e-4 * L, backend="cupy", flops=1e13 * 1e-4 * L,
                                 **cfg),
                           bench("cpu riccati", 25e-4 * L, backend="numpy", flops=None, **cfg)]
    return dict(machine_info={"cpu": {"brand_raw": "test cpu"},
                              "tallskinny": {"loadavg_start": [0.5, 0.4, 0.3],
                                             "loadavg_end": [0.6, 0.4, 0.3], "cpu_count": 2,
                                             "blas_threads": {}}},
                datetime="2026-01-01T00:00:00", benchmarks=benchmarks)


def write(tmp_path, data):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(data))
    return path


def target_row(markdown, *words):
    """The single markdown table row of the targets that contains all ``words``."""
    rows = [line for line in markdown.splitlines()
            if line.startswith("|") and all(w in line for w in words)]
    assert len(rows) == 1, rows
    return rows[0]


def test_fit_slope():
    Ls = [4, 8, 16, 32, 64, 128, 256, 512, 1024]
    slope, span = report.fit_slope(Ls, [3.0 * L for L in Ls])
    assert slope == pytest.approx(1.0)
    assert span == (16, 512)
    assert report.fit_slope(Ls, [L ** 3 for L in Ls])[0] == pytest.approx(3.0)
    assert report.fit_slope([4, 8, 16], [1, 2, 3]) == (None, None)
    assert report.fit_slope(Ls, [None] * len(Ls)) == (None, None)


def test_report_from_synthetic_json(tmp_path):
    out = tmp_path / "results"
    path = report.write_report(write(tmp_path, synthetic()), out)
    md = path.read_text()
    for png in ("time_vs_L.png", "memory_vs_L.png"):
        assert (out / png).read_bytes().startswith(PNG_SIGNATURE)
        assert f"![{png}]({png})" in md
    assert not (out / "gpu_time_vs_L.png").exists()

    assert "same-run dgemm: 100 GFLOP/s (best, n = 1024)" in md
    assert "at start: 0.50, 0.40, 0.30" in md
    # per-configuration tables: median, backward error, GFLOP/s and its share of dgemm
    assert "| riccati | 64 | 6.4 ms | 3 | 2.0e-16 | 10 | 10.0 | 6.4 |  |" in md
    assert "| minres | 16 | 4.8 ms | 3 | 1.0e-10 | - | - | - | 100 iterations" in md

    assert "| MET | 1.00 (L 16-512) |" in target_row(md, "solve time slope", "riccati",
                                                       "width 8 batch 8")
    assert "| MET | 1.00 (L 16-512) |" in target_row(md, "memory slope", "ldu",
                                                       "width 16 batch 16")
    # riccati vs ldu only where p and a are >= 256: (16, 16), not (8, 8)
    assert "| MET | L 4: 8.0x;" in target_row(md, "faster than ldu", "width 16 batch 16")
    assert "faster than ldu, width 8 batch 8" not in md
    assert "| MET | 410x (2.62 s / 6.4 ms) |" in target_row(md, "riccati >= 100x faster")
    assert "| MISSED | 51x (" in target_row(md, "ldu >= 100x faster than dense")
    assert "| MET | 7.68 ms (1.28 ms + 6.4 ms) |" in target_row(md, "setup + riccati solve <")
    assert "| MET | 12.8 MB |" in target_row(md, "setup + riccati solve peak memory")
    assert "| MET | max 2.0e-16" in target_row(md, "backward error of riccati", "width 8 ")
    assert "| MISSED | max 5.0e-15" in target_row(md, "backward error of ldu", "width 8 ")
    assert "Not measured: no GPU results" in md


def test_report_gpu_section(tmp_path):
    data = synthetic(gpu=True)
    md = report.write_report(write(tmp_path, data), tmp_path).read_text()
    assert (tmp_path / "gpu_time_vs_L.png").read_bytes().startswith(PNG_SIGNATURE)
    assert "same-run GPU fp64 matmul: 50 TFLOP/s" in md
    assert "| MET | 25.0x |" in target_row(md, "GPU riccati >= 20x faster")
    assert "| MET | 1.00 (L 16-1024) |" in target_row(md, "GPU riccati time slope")
    assert "| MISSED | L 1024: 10 TFLOP/s = 20.0% |" in target_row(md, "fp64 matmul rate")
    assert "| riccati | cupy | 256 | 25.6 ms | 1.0e-15 | 10 | 20.0 | 25.0 |" in md


def test_report_of_a_real_quick_run(tmp_path):
    """The smallest configuration of the CPU suites, through pytest-benchmark and the
    report: the fields the suites write are the ones the report reads."""
    bench_json = tmp_path / "bench.json"
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "benchmarks/test_curvature.py",
         "benchmarks/test_solvers.py", "--bench-quick", "--bench-max-depth", "4", "-q",
         "-p", "no:cacheprovider", f"--benchmark-json={bench_json}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    md = report.write_report(bench_json, tmp_path / "out").read_text()
    for series in ("setup", "hvp", "riccati", "ldu", "dense", "splu", "minres"):
        assert f"| {series} | 4 |" in md, series
    assert "same-run dgemm: not measured" in md
    row = target_row(md, "backward error of riccati", "width 8 batch 8")
    assert "| MET | max " in row or "| MISSED | max " in row


def test_speed_targets_are_judged_against_the_same_run():
    """The speed section: the factorization's rate against dgemm at n = 256 (40%), setup
    + solve against the base checkout (5x), the exact step against Adam (30x); each side of
    each threshold is marked as such."""
    n = 256
    gemm = 2 * n ** 3 / 50e9                       # 50 GFLOP/s
    records = [dict(suite="cpu", series="dgemm", n=n, flops=2 * n ** 3, median=gemm,
                    min=gemm),
               dict(suite="speed", series="factor-rate", L=64, width=16, batch=16,
                    flops=1e9, median=1e9 / 21e9),                    # 42%
               dict(suite="speed", series="factor-rate", L=64, width=32, batch=8,
                    flops=1e9, median=1e9 / 19e9),                    # 38%
               dict(suite="speed", series="versus-base", L=64, width=16, batch=16,
                    median_here=0.1, median_base=0.6, speedup=6.0),
               dict(suite="speed", series="versus-base", L=64, width=8, batch=16,
                    median_here=0.1, median_base=0.2, speedup=2.0),
               dict(suite="speed", series="exact-step", step="adam", median=1e-3),
               dict(suite="speed", series="exact-step", step="ggn", median=29e-3),
               dict(suite="speed", series="exact-step", step="hessian", median=31e-3)]
    states = [state for _, state, _ in report.speed_targets(records)]
    assert states == ["MET", "MISSED", "MET", "MISSED", "MET", "MISSED"]


def test_versus_base_is_judged_on_its_pairs():
    """With alternating pairs the speedup judged is their median ratio (recorded as
    ``speedup``), shown with the pairs' range beside the medians of all rounds."""
    records = [dict(suite="speed", series="versus-base", L=64, width=16, batch=16,
                    median_here=0.1, median_base=0.45, speedup=5.2,
                    pair_ratios=[5.2, 3.0, 5.5, 5.1, 6.0])]
    (text, state, measured), = report.speed_targets(records)
    assert state == "MET"
    assert measured == ("100 ms here, 450 ms base: 5.20x (median of 5 alternating pairs, "
                        "3.00x to 6.00x)")


def test_threaded_factor_rate_names_its_threads_and_their_dgemm():
    """A factorization on two threads is judged against the single-thread dgemm, as the
    target says, and its rate is also given against dgemm on two threads."""
    n = 256
    one_thread, two = 2 * n ** 3 / 50e9, 2 * n ** 3 / 90e9
    records = [dict(suite="cpu", series="dgemm", n=n, flops=2 * n ** 3, median=one_thread,
                    min=one_thread),
               dict(suite="cpu", series="dgemm-threads", n=n, flops=2 * n ** 3, median=two,
                    min=two, threads=2),
               dict(suite="speed", series="factor-rate", L=64, width=16, batch=16,
                    flops=1e9, median=1e9 / 30e9, threads=2)]
    (text, state, measured), = report.speed_targets(records)
    assert state == "MET" and "2 threads" in text
    assert "= 60% of 50" in measured and "(33% of 90 on 2 threads)" in measured


def test_exact_step_is_judged_on_its_paired_ratio():
    """Where the exact step was also timed in alternating blocks with Adam, that ratio is
    judged (a load that slowed only the separately timed Adam does not pass the target)
    and the separately timed one is still shown."""
    records = [dict(suite="speed", series="exact-step", step="adam", median=1e-3),
               dict(suite="speed", series="exact-step", step="ggn", median=29e-3,
                    paired_ratio=31.0, paired_step=9.3e-3, paired_base=0.3e-3,
                    paired_blocks=15)]
    (text, state, measured), = report.speed_targets(records)
    assert state == "MISSED" and "ggn" in text
    assert measured.startswith("31.0x in 15 alternating blocks") and "29.0x" in measured


@pytest.mark.parametrize("ratio, state", [(1.05, "MET"), (1.2, "MISSED")])
def test_newton_step_is_judged_against_the_gauss_newton_step(ratio, state):
    records = [dict(suite="speed", series="newton-step", paired_ratio=ratio,
                    paired_step=ratio * 1e-2, paired_base=1e-2, paired_blocks=9)]
    (text, got, measured), = report.speed_targets(records)
    assert got == state and "Hessian <= 1.1 times" in text
    assert measured.startswith(f"{ratio:.2f}x in 9 alternating blocks")
