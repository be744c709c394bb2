"""The scaling report: ``python -m benchmarks.report BENCH.json [--out DIR]``.

Reads the JSON that ``pytest benchmarks --benchmark-json=BENCH.json`` writes and puts into
DIR (default ``benchmarks/results``):

- ``report.md``: per configuration (width, batch) and series, the median time against L
  with backward error, achieved GFLOP/s and its fraction of the same-run dgemm rate
  (docs/math.md section 5), peak memory; fitted log-log slopes; the CPU targets below (and
  the GPU targets when GPU results are present) marked MET or MISSED with the measured
  numbers;
- ``time_vs_L.png``, ``memory_vs_L.png`` (and ``gpu_time_vs_L.png``): log-log plots, one
  panel per configuration, slopes fitted on L in [16, 512] in the legends;
- a speed section when ``benchmarks/test_speed.py`` ran: the Riccati factorization's
  useful-flop rate against the same-run single-thread dgemm at n = 256 (on one thread and
  on all of the compiled stages' threads, the latter also against dgemm on as many),
  setup + solve against another checkout, and the exact step of the memorisation problem
  against Adam (judged on the ratio measured in alternating blocks, where present).

Every time is the median of a benchmark's rounds; the dgemm rate is the best over the
matrix sizes (the minimum time of each). Memory is the tracemalloc peak of one call
(MB = 10^6 bytes).
"""
import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from tallskinny_np.files import atomic_write, atomic_write_text, describe_os_error

SLOPE_RANGE = (16, 512)           # depths over which slopes are fitted
GPU_SLOPE_RANGE = (16, 1024)
SLOPE_BOUNDS = (0.9, 1.1)
MEMORY_SLOPE_MAX = 1.1
RICCATI_OVER_LDU = 5.0            # where p and a are both >= 256
RICCATI_OVER_LDU_MIN_BLOCK = 256
DENSE_POINT = dict(L=64, width=8, batch=8)
OVER_DENSE = 100.0
DGEMM_FRACTION = 0.5              # riccati, once p >= 512
DGEMM_FRACTION_MIN_P = 512
SETUP_SOLVE_POINT = dict(L=64, width=16, batch=16)
SETUP_SOLVE_SECONDS = 0.1
SETUP_SOLVE_BYTES = 400e6
BACKWARD_ERROR_FACTOR = 10.0      # "within a small factor of dense LU's"
FACTOR_DGEMM_FRACTION = 0.4       # riccati_factor against dgemm at n = 256
FACTOR_DGEMM_N = 256
OVER_BASE = 5.0                   # setup + solve against the base checkout
EXACT_STEP_OVER_ADAM = 30.0
NEWTON_OVER_GGN_STEP = 1.1
GPU_SPEEDUP_POINT = dict(L=256, width=32, batch=32)
GPU_SPEEDUP = 20.0
GPU_MATMUL_FRACTION = 0.3         # riccati on the GPU, once p >= 1024
GPU_MATMUL_FRACTION_MIN_P = 1024

SERIES_ORDER = ("setup", "hvp", "riccati", "banded", "ldu", "dense", "splu", "minres")
MB = 1e6


# ---- reading ----------------------------------------------------------------------------

def load(path):
    """The JSON's benchmarks that the suites wrote (those with a ``suite`` in their
    extra_info), flattened: extra_info plus ``median`` and ``min`` (seconds) and
    ``rounds``; and the JSON itself."""
    data = json.loads(Path(path).read_text())
    records = []
    for bench in data.get("benchmarks", []):
        info = bench.get("extra_info", {})
        if "suite" in info:
            stats = bench["stats"]
            records.append(dict(info, median=stats["median"], min=stats["min"],
                                rounds=stats["rounds"], name=bench["name"]))
    return records, data


def select(records, **match):
    """The records whose fields equal ``match``."""
    return [r for r in records if all(r.get(k) == v for k, v in match.items())]


def peak_rate(records, suite, series):
    """Best GFLOP/s of the machine-limit benchmarks (flops over the minimum time), with
    the matrix order that reached it; (None, None) if there are none."""
    best = max(((r["flops"] / r["min"] / 1e9, r["n"]) for r in select(records, suite=suite,
                                                                        series=series)),
               default=(None, None))
    return best


def gflops(record):
    """Achieved GFLOP/s (analytic flops over the median time), or None."""
    return None if record.get("flops") is None else record["flops"] / record["median"] / 1e9


def series_key(name):
    return (SERIES_ORDER.index(name) if name in SERIES_ORDER else len(SERIES_ORDER), name)


def configs(records):
    """The (width, batch) points present, sorted."""
    return sorted({(r["width"], r["batch"]) for r in records if "width" in r})


def by_series(records):
    """``{series: records sorted by L}``, in report order."""
    out = defaultdict(list)
    for r in records:
        out[r["series"]].append(r)
    return {s: sorted(out[s], key=lambda r: r["L"]) for s in sorted(out, key=series_key)}


def fit_slope(Ls, values, lo=SLOPE_RANGE[0], hi=SLOPE_RANGE[1]):
    """Least-squares slope of log(value) against log(L) over ``lo <= L <= hi``, and the
    (first, last) L used; (None, None) with fewer than two depths in range."""
    pts = [(L, v) for L, v in zip(Ls, values) if lo <= L <= hi and v is not None and v > 0]
    if len({L for L, _ in pts}) < 2:
        return None, None
    x, y = np.log([L for L, _ in pts]), np.log([v for _, v in pts])
    return float(np.polyfit(x, y, 1)[0]), (min(L for L, _ in pts), max(L for L, _ in pts))


# ---- formatting -------------------------------------------------------------------------

def fmt_time(seconds):
    if seconds >= 1:
        return f"{seconds:.3g} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds * 1e6:.3g} us"


def fmt(value, spec=".3g", none="-"):
    return none if value is None else format(value, spec)


def fmt_slope(slope, span):
    return "-" if slope is None else f"{slope:.2f} (L {span[0]}-{span[1]})"


def notes(record):
    """Per-benchmark remarks: minres iterations, splu fill."""
    if record["series"] == "minres":
        conv = "converged" if record.get("converged") else "NOT converged"
        return (f"{record['iterations']} iterations, {conv}, "
                f"||r||/||b|| = {record['relative_residual']:.1e}")
    if "factor_nnz" in record:
        return f"nnz(L+U) = {record['factor_nnz']:.3g} (SuperLU memory not in the peak)"
    return ""


def table(rows, header):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |"
              for row in rows]
    return "\n".join(lines)


def status(ok):
    return "MET" if ok else "MISSED"


# ---- plots ------------------------------------------------------------------------------

def plot(records, path, value, ylabel, title, label_of, lo_hi=SLOPE_RANGE):
    """One log-log panel per (width, batch); a line per curve (``label_of(record)``) of
    ``value(record)`` against L, its fitted slope in the legend."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    cfgs = configs(records)
    fig, axes = plt.subplots(1, len(cfgs), figsize=(5 * len(cfgs), 4.2), squeeze=False)
    for ax, (w, B) in zip(axes[0], cfgs):
        curves = defaultdict(list)
        for r in select(records, width=w, batch=B):
            if value(r) is not None:
                curves[label_of(r)].append((r["L"], value(r)))
        for name in sorted(curves, key=series_key):
            Ls, vs = zip(*sorted(curves[name]))
            slope, _ = fit_slope(Ls, vs, *lo_hi)
            ax.loglog(Ls, vs, "o-", label=f"{name} (slope {fmt(slope, '.2f')})")
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({r["L"] for r in select(records, width=w, batch=B)}))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(f"{title}: width {w}, batch {B}")
        ax.set_xlabel("depth L")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110), mode="wb")
    plt.close(fig)


# ---- CPU section ------------------------------------------------------------------------

def cpu_tables(cpu, dgemm):
    out = []
    for w, B in configs(cpu):
        recs = select(cpu, width=w, batch=B)
        p, a = recs[0]["p"], recs[0]["a"]
        out.append(f"\n### width {w}, batch {B} (p = {p}, a = {a} per layer)\n")
        rows = []
        for series, rs in by_series(recs).items():
            for r in rs:
                g = gflops(r)
                rows.append([series, r["L"], fmt_time(r["median"]), r["rounds"],
                             fmt(r.get("backward_error"), ".1e"), fmt(g, ".3g"),
                             fmt(None if g is None or dgemm is None else 100 * g / dgemm,
                                 ".1f"),
                             fmt(None if r.get("peak_bytes") is None
                                 else r["peak_bytes"] / MB, ".3g"),
                             notes(r)])
        out.append(table(rows, ["series", "L", "median", "rounds", "backward error",
                                "GFLOP/s", "% dgemm", "peak MB", "notes"]))
    return out


def slopes(recs, lo_hi=SLOPE_RANGE):
    """``{(width, batch, series): (time slope, span, memory slope, span)}``."""
    out = {}
    for w, B in configs(recs):
        for series, rs in by_series(select(recs, width=w, batch=B)).items():
            Ls = [r["L"] for r in rs]
            t = fit_slope(Ls, [r["median"] for r in rs], *lo_hi)
            m = fit_slope(Ls, [r.get("peak_bytes") for r in rs], *lo_hi)
            out[w, B, series] = t + m
    return out


def slope_table(fits):
    rows = [[series, f"{w} x {B}", fmt_slope(*fit[:2]), fmt_slope(*fit[2:])]
            for (w, B, series), fit in fits.items()]
    return table(rows, ["series", "width x batch", "time slope", "memory slope"])


def one(records, **match):
    """The single record matching, or None."""
    found = select(records, **match)
    return found[0] if found else None


def cpu_targets(cpu, dgemm):
    """``[(target, status or "NOT MEASURED", measured numbers)]`` for the CPU targets."""
    out = []
    methods = sorted({r["series"] for r in cpu if r.get("role") == "method"}, key=series_key)
    fits = slopes(cpu)
    lo, hi = SLOPE_BOUNDS
    for (w, B, series), (t, tspan, m, mspan) in fits.items():
        if series not in methods:
            continue
        cfg = f"{series}, width {w} batch {B}"
        out.append((f"solve time slope in [{lo}, {hi}] (L {SLOPE_RANGE[0]}-{SLOPE_RANGE[1]}), "
                    f"{cfg}", None if t is None else status(lo <= t <= hi),
                    fmt_slope(t, tspan)))
        out.append((f"memory slope <= {MEMORY_SLOPE_MAX}, {cfg}",
                    None if m is None else status(m <= MEMORY_SLOPE_MAX), fmt_slope(m, mspan)))

    for w, B in configs(cpu):
        recs = select(cpu, width=w, batch=B)
        if min(recs[0]["p"], recs[0]["a"]) < RICCATI_OVER_LDU_MIN_BLOCK:
            continue
        ric = {r["L"]: r["median"] for r in select(recs, series="riccati")}
        ldu = {r["L"]: r["median"] for r in select(recs, series="ldu")}
        ratios = {L: ldu[L] / ric[L] for L in sorted(set(ric) & set(ldu))}
        worst = min(ratios, key=ratios.get, default=None)
        out.append((f"riccati >= {RICCATI_OVER_LDU:g}x faster than ldu, width {w} batch {B} "
                    f"(p = {recs[0]['p']}, a = {recs[0]['a']})",
                    None if worst is None else status(ratios[worst] >= RICCATI_OVER_LDU),
                    "; ".join(f"L {L}: {v:.1f}x" for L, v in ratios.items())))

    dense = one(cpu, series="dense", **DENSE_POINT)
    for method in methods:
        r = one(cpu, series=method, **DENSE_POINT)
        ok = None if dense is None or r is None else dense["median"] / r["median"]
        out.append((f"{method} >= {OVER_DENSE:g}x faster than dense at L {DENSE_POINT['L']}, "
                    f"width {DENSE_POINT['width']} batch {DENSE_POINT['batch']}",
                    None if ok is None else status(ok >= OVER_DENSE),
                    "-" if ok is None else f"{ok:.0f}x ({fmt_time(dense['median'])} / "
                                           f"{fmt_time(r['median'])})"))

    for w, B in configs(cpu):
        rs = select(cpu, series="riccati", width=w, batch=B)
        if not rs or rs[0]["p"] < DGEMM_FRACTION_MIN_P or dgemm is None:
            continue
        last = max(rs, key=lambda r: r["L"])
        frac = gflops(last) / dgemm
        out.append((f"riccati >= {DGEMM_FRACTION:.0%} of dgemm once p >= {DGEMM_FRACTION_MIN_P}, "
                    f"width {w} batch {B} (largest L measured)", status(frac >= DGEMM_FRACTION),
                    f"L {last['L']}: {gflops(last):.3g} GFLOP/s = {frac:.1%} of {dgemm:.3g}; "
                    "all L: " + ", ".join(f"{gflops(r) / dgemm:.0%}" for r in rs)))

    setup = one(cpu, series="setup", **SETUP_SOLVE_POINT)
    for method in methods:
        r = one(cpu, series=method, **SETUP_SOLVE_POINT)
        where = (f"L {SETUP_SOLVE_POINT['L']}, width {SETUP_SOLVE_POINT['width']} batch "
                 f"{SETUP_SOLVE_POINT['batch']}")
        if setup is None or r is None:
            out.append((f"setup + {method} solve < {SETUP_SOLVE_SECONDS} s and peak < "
                        f"{SETUP_SOLVE_BYTES / MB:.0f} MB, {where}", None, "-"))
            continue
        t = setup["median"] + r["median"]
        mem = setup["peak_bytes"] + r["peak_bytes"]
        out.append((f"setup + {method} solve < {SETUP_SOLVE_SECONDS} s, {where}",
                    status(t < SETUP_SOLVE_SECONDS),
                    f"{fmt_time(t)} ({fmt_time(setup['median'])} + {fmt_time(r['median'])})"))
        out.append((f"setup + {method} solve peak memory < {SETUP_SOLVE_BYTES / MB:.0f} MB, "
                    f"{where} (setup peak + solve peak, an upper bound)",
                    status(mem < SETUP_SOLVE_BYTES), f"{mem / MB:.3g} MB"))

    for w, B in configs(cpu):
        ref = [r["backward_error"] for r in select(cpu, series="dense", width=w, batch=B)]
        for series in methods + ["splu"]:
            errs = [r["backward_error"] for r in select(cpu, series=series, width=w, batch=B)]
            if not errs:
                continue
            text = f"backward error of {series} within {BACKWARD_ERROR_FACTOR:g}x dense LU's, " \
                   f"width {w} batch {B}"
            if not ref:
                out.append((text, None, f"max {max(errs):.1e}; no dense LU measured"))
                continue
            ratio = max(errs) / max(ref)
            out.append((text, status(ratio <= BACKWARD_ERROR_FACTOR),
                        f"max {max(errs):.1e} vs dense max {max(ref):.1e} ({ratio:.1f}x)"))
    return out


# ---- GPU section ------------------------------------------------------------------------

def speedups(gpu, cpu):
    """``{id(cupy record): numpy median / cupy median}`` at equal method, configuration and
    L; the numpy reference comes from the GPU suite, else from the CPU suite."""
    out = {}
    for r in select(gpu, backend="cupy"):
        key = dict(series=r["series"], width=r["width"], batch=r["batch"], L=r["L"],
                   backend="numpy")
        ref = one(gpu, **key) or one(cpu, **key)
        if ref is not None:
            out[id(r)] = ref["median"] / r["median"]
    return out


def gpu_tables(gpu, cpu, matmul, dgemm):
    up = speedups(gpu, cpu)
    out = []
    for w, B in configs(gpu):
        rows = []
        for r in sorted(select(gpu, width=w, batch=B),
                        key=lambda r: (series_key(r["series"]), r["backend"], r["L"])):
            g = gflops(r)
            limit = matmul if r["backend"] == "cupy" else dgemm
            rows.append([r["series"], r["backend"], r["L"], fmt_time(r["median"]),
                         fmt(r.get("backward_error"), ".1e"),
                         fmt(None if g is None else g / 1e3, ".3g"),
                         fmt(None if g is None or limit is None else 100 * g / limit, ".1f"),
                         fmt(up.get(id(r)), ".1f")])
        out.append(f"\n### GPU: width {w}, batch {B}\n")
        out.append(table(rows, ["method", "backend", "L", "median", "backward error",
                                "TFLOP/s", "% of same-device matmul", "speedup over numpy"]))
    return out


def gpu_targets(gpu, cpu, matmul):
    out = []
    up = speedups(gpu, cpu)
    r = one(gpu, series="riccati", backend="cupy", **GPU_SPEEDUP_POINT)
    s = None if r is None else up.get(id(r))
    out.append((f"GPU riccati >= {GPU_SPEEDUP:g}x faster than the CPU path at L "
                f"{GPU_SPEEDUP_POINT['L']}, width {GPU_SPEEDUP_POINT['width']} batch "
                f"{GPU_SPEEDUP_POINT['batch']}", None if s is None else status(s >= GPU_SPEEDUP),
                "-" if s is None else f"{s:.1f}x"))
    lo, hi = SLOPE_BOUNDS
    fits = slopes(select(gpu, backend="cupy"), GPU_SLOPE_RANGE)
    for (w, B, series), (t, tspan, _, _) in fits.items():
        out.append((f"GPU {series} time slope about 1 (in [{lo}, {hi}]), width {w} batch {B}",
                    None if t is None else status(lo <= t <= hi), fmt_slope(t, tspan)))
    for w, B in configs(gpu):
        rs = select(gpu, series="riccati", backend="cupy", width=w, batch=B)
        if not rs or rs[0]["p"] < GPU_MATMUL_FRACTION_MIN_P or matmul is None:
            continue
        last = max(rs, key=lambda r: r["L"])
        frac = gflops(last) / matmul
        out.append((f"GPU riccati >= {GPU_MATMUL_FRACTION:.0%} of the fp64 matmul rate once "
                    f"p >= {GPU_MATMUL_FRACTION_MIN_P}, width {w} batch {B} (largest L)",
                    status(frac >= GPU_MATMUL_FRACTION),
                    f"L {last['L']}: {gflops(last) / 1e3:.3g} TFLOP/s = {frac:.1%}"))
    return out


# ---- the report -------------------------------------------------------------------------

def target_table(targets):
    rows = [[text, state or "NOT MEASURED", numbers] for text, state, numbers in targets]
    return table(rows, ["target", "status", "measured"])


def _versus_base(r):
    """The measured cell of a versus-base record: the medians of all rounds, and the
    speedup judged, the median of the alternating pairs' ratios (with their range)."""
    text = (f"{fmt_time(r['median_here'])} here, {fmt_time(r['median_base'])} base: "
            f"{r['speedup']:.2f}x")
    pairs = r.get("pair_ratios")
    if pairs:
        text += (f" (median of {len(pairs)} alternating pairs, {min(pairs):.2f}x to "
                 f"{max(pairs):.2f}x)")
    return text


def speed_targets(records):
    """The targets of ``benchmarks/test_speed.py`` (empty when it did not run)."""
    speed = select(records, suite="speed")
    out = []
    gemm = one(records, suite="cpu", series="dgemm", n=FACTOR_DGEMM_N)
    for r in select(speed, series="factor-rate"):
        threads = r.get("threads", 1)
        text = (f"riccati_factor useful GFLOP/s >= {FACTOR_DGEMM_FRACTION:.0%} of dgemm at "
                f"n = {FACTOR_DGEMM_N}, L = {r['L']}, (width, batch) = ({r['width']}, "
                f"{r['batch']}), {threads} thread{'s' if threads > 1 else ''}")
        if gemm is None:
            out.append((text, None, "no same-run dgemm at n = 256"))
            continue
        rate, peak = gflops(r), gflops(gemm)
        measured = (f"{r['flops'] / 1e9:.3g} GFLOP in {fmt_time(r['median'])}: "
                    f"{rate:.3g} GFLOP/s = {rate / peak:.0%} of {peak:.3g}")
        both = one(records, suite="cpu", series="dgemm-threads", threads=threads)
        if threads > 1 and both is not None:
            peak_t = gflops(both)
            measured += f" ({rate / peak_t:.0%} of {peak_t:.3g} on {threads} threads)"
        out.append((text, status(rate >= FACTOR_DGEMM_FRACTION * peak), measured))
    for r in select(speed, series="versus-base"):
        out.append((f"setup + solve >= {OVER_BASE:g}x faster than the base checkout, L = "
                    f"{r['L']}, (width, batch) = ({r['width']}, {r['batch']})",
                    status(r["speedup"] >= OVER_BASE),
                    _versus_base(r)))
    adam = one(speed, series="exact-step", step="adam")
    for kind in ("ggn", "hessian"):
        r = one(speed, series="exact-step", step=kind)
        if r is None or adam is None:
            continue
        ratio = r["median"] / adam["median"]
        measured = (f"{fmt_time(r['median'])} against {fmt_time(adam['median'])}: "
                    f"{ratio:.1f}x")
        if "paired_ratio" in r:        # alternating blocks: the ratio judged
            ratio = r["paired_ratio"]
            measured = (f"{ratio:.1f}x in {r['paired_blocks']} alternating blocks "
                        f"({fmt_time(r['paired_step'])} against "
                        f"{fmt_time(r['paired_base'])}); timed apart, " + measured)
        if r.get("threads", 1) > 1:
            measured += f" (the step on {r['threads']} threads)"
        out.append((f"exact {kind} step of the memorisation problem <= "
                    f"{EXACT_STEP_OVER_ADAM:g} Adam steps",
                    status(ratio <= EXACT_STEP_OVER_ADAM), measured))
    r = one(speed, series="newton-step")
    if r is not None:
        out.append((f"damped Newton step with the Hessian <= {NEWTON_OVER_GGN_STEP:g} "
                    f"times the one with the GGN, memorisation problem at the switch",
                    status(r["paired_ratio"] <= NEWTON_OVER_GGN_STEP),
                    f"{r['paired_ratio']:.2f}x in {r['paired_blocks']} alternating blocks "
                    f"({fmt_time(r['paired_step'])} against {fmt_time(r['paired_base'])})"))
    return out


def header(data, source, dgemm, dgemm_n, matmul, matmul_n):
    mi = data.get("machine_info", {})
    extra = mi.get("tallskinny", {})
    load = lambda v: "-" if not v else ", ".join(f"{x:.2f}" for x in v)
    threads = {k: v for k, v in extra.get("blas_threads", {}).items() if v}
    lines = [
        "# tallskinny-np scaling report", "",
        f"- source: `{Path(source).name}` ({data.get('datetime', '?')})",
        f"- machine: {mi.get('cpu', {}).get('brand_raw', mi.get('processor', '?'))}, "
        f"{extra.get('cpu_count', '?')} CPUs, python {mi.get('python_version', '?')}",
        f"- load average (1, 5, 15 min) at start: {load(extra.get('loadavg_start'))}; "
        f"at end: {load(extra.get('loadavg_end'))}",
        f"- BLAS thread variables: {threads or 'unset (library default)'}",
        "- same-run dgemm: " + ("not measured (benchmarks/test_machine.py was not run)"
                                if dgemm is None else
                                f"{dgemm:.3g} GFLOP/s (best, n = {dgemm_n})"),
    ]
    if matmul is not None:
        lines.append(f"- same-run GPU fp64 matmul: {matmul / 1e3:.3g} TFLOP/s "
                     f"(best, n = {matmul_n})")
    lines += ["", "Times are medians of the rounds; GFLOP/s are analytic flop counts "
              "(benchmarks/flops.py: useful work, structural zeros not counted) over the "
              "median; memory is the tracemalloc peak of one call (MB = 10^6 bytes). "
              "Timings on a loaded machine are noisy: compare ratios within one run only."]
    return lines


def render(records, data, source, figures):
    cpu, gpu = select(records, suite="cpu"), select(records, suite="gpu")
    dgemm, dgemm_n = peak_rate(records, "cpu", "dgemm")
    matmul, matmul_n = peak_rate(records, "gpu", "matmul")
    cpu_runs = [r for r in cpu if "L" in r]
    gpu_runs = [r for r in gpu if "L" in r]
    lines = header(data, source, dgemm, dgemm_n, matmul, matmul_n)
    speed = speed_targets(records)
    if speed:
        lines += ["", "## Speed (benchmarks/test_speed.py)", "",
                  "Setup + solve is compared with the checkout given as `--bench-base` "
                  "(benchmarks/README.md).", "", target_table(speed)]
    if not (cpu_runs or gpu_runs):             # a run of the speed suite alone
        return "\n".join(lines) + "\n"
    lines += ["", "## Targets (CPU)", "", target_table(cpu_targets(cpu_runs, dgemm))]
    lines += ["", "## Targets (GPU)", ""]
    lines += ([target_table(gpu_targets(gpu_runs, cpu_runs, matmul))] if gpu_runs else
              ["Not measured: no GPU results in this JSON (run `benchmarks/test_gpu.py` on "
               "a machine with CUDA and CuPy)."])
    lines += ["", "## Fitted slopes", "",
              f"Least squares of log(median time) and log(peak memory) on log(L), "
              f"L in [{SLOPE_RANGE[0]}, {SLOPE_RANGE[1]}].", "", slope_table(slopes(cpu_runs))]
    lines += ["", "## Plots", ""] + [f"![{f}]({f})" for f in figures]
    lines += ["", "## Measurements (CPU)"] + cpu_tables(cpu_runs, dgemm)
    if gpu_runs:
        lines += ["", "## Measurements (GPU)"] + gpu_tables(gpu_runs, cpu_runs, matmul, dgemm)
    return "\n".join(lines) + "\n"


def write_report(bench_json, out):
    """Read ``bench_json``, write ``report.md`` and the PNGs into ``out``; return the
    report's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records, data = load(bench_json)
    cpu = [r for r in select(records, suite="cpu") if "L" in r]
    gpu = [r for r in select(records, suite="gpu") if "L" in r]
    figures = []
    if cpu:
        plot(cpu, out / "time_vs_L.png", lambda r: r["median"], "median time [s]",
             "time", lambda r: r["series"])
        plot(cpu, out / "memory_vs_L.png",
             lambda r: None if r.get("peak_bytes") is None else r["peak_bytes"] / MB,
             "peak memory [MB]", "memory", lambda r: r["series"])
        figures += ["time_vs_L.png", "memory_vs_L.png"]
    if gpu:
        plot(gpu, out / "gpu_time_vs_L.png", lambda r: r["median"], "median time [s]",
             "GPU suite time", lambda r: f"{r['series']} ({r['backend']})", GPU_SLOPE_RANGE)
        figures.append("gpu_time_vs_L.png")
    path = out / "report.md"
    atomic_write_text(path, render(records, data, bench_json, figures))
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("bench_json", help="the file written by pytest --benchmark-json")
    parser.add_argument("--out", default="benchmarks/results",
                        help="output folder (default benchmarks/results)")
    args = parser.parse_args(argv)
    if Path(args.out).exists() and not Path(args.out).is_dir():
        return fail(f"--out {args.out} is a file, not a folder")
    try:
        print(write_report(args.bench_json, args.out))
    except OSError as e:
        return fail(describe_os_error(e))
    except json.JSONDecodeError as e:
        return fail(f"{args.bench_json}: not JSON ({e})")
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        return fail(f"{args.bench_json}: not a pytest-benchmark JSON file "
                    f"({type(e).__name__}: {e})")
    return 0


def fail(message):
    print(f"python -m benchmarks.report: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
