"""The deep-narrow comparison (``python -m benchmarks.suite --deep``): every optimizer of
the training app on tanh networks of depth 48 to 128 and width 4 to 6, where first-order
steps stall and exact ones need not.

Each configuration of :data:`CONFIGS` is the precision task of ``tallskinny-train`` on the
digits (one batch of 32 memorised towards a loss of 1e-8), run by
:func:`benchmarks.suite.run_app`, one process per run, back to back: SGD (momentum 0.9)
and Adam at each rate of :data:`benchmarks.suite.LEARNING_RATES` (the table shows the
rate with the lowest loss), and the exact and truncated second-order methods of
:data:`SECOND_ORDER` with the app's defaults, each up to its step cap (:data:`CAPS`). The
table gives the best batch loss reached, the steps and training seconds to each loss of
:data:`LEVELS` and the run's steps and seconds to its cap.

Writes ``DIR/deep.md``, ``DIR/deep.csv`` (one row per run) and ``DIR/deep.png`` (batch
loss against training time, one panel per configuration), atomically, and each run's app
outputs under ``DIR/<config>/<setting>/``.
"""
import csv
import math

from .suite import LEARNING_RATES, number, run_app

CONFIGS = {
    #           depth width
    "depth48-width6": (48, 6),
    "depth64-width4": (64, 4),
    "depth128-width4": (128, 4),
}
FIRST_ORDER = ("sgd", "adam")
SECOND_ORDER = ("newton", "ggn", "ggn-newton", "hf", "trust-region")
CAPS = {"first order": 20000, "second order": 1000, "trust-region": 50}
"""Step caps: trust-region's own, its steps (a More-Sorensen iteration of factorizations
each) taking 0.4 to 1.8 s at these sizes, 10 to 50 times the damped methods'."""
QUICK_CAPS = {"first order": 50, "second order": 5, "trust-region": 2}
LEVELS = (1.0, 0.1, 0.01, 1e-8)
BATCH = 32


def flags(config):
    depth, width = CONFIGS[config]
    return ["--depth", str(depth), "--width", str(width), "--activation", "tanh",
            "--batch", str(BATCH)]


def cap(caps, optimizer):
    """The step cap of ``optimizer``: its own, or its order's."""
    return caps.get(optimizer, caps["first order" if optimizer in FIRST_ORDER
                                   else "second order"])


def record(row, config, optimizer, lr):
    """The table's record of one run: best loss, steps and seconds to each level (None
    where not reached) and to the cap."""
    out = {"config": config, "optimizer": optimizer,
           "setting": f"lr {lr:g}" if lr else "defaults", "diverged": row["diverged"] is not None,
           "command": row["command"]}
    if out["diverged"]:
        return dict(out, best_loss=None, steps=None, seconds=None,
                    **{f"{k}_to_{t:g}": None for t in LEVELS for k in ("steps", "seconds")})
    out.update(best_loss=float(row["best_batch_loss"]), steps=int(row["steps"]),
               seconds=float(row["wall"]))
    for t in LEVELS:
        out[f"steps_to_{t:g}"] = number(row[f"steps_to_{t:g}"])
        out[f"seconds_to_{t:g}"] = number(row[f"wall_to_{t:g}"])
    return out


def best_of(runs):
    """The run of one optimizer shown in the table: the lowest loss reached."""
    return min(runs, key=lambda r: math.inf if r["diverged"] else r["best_loss"])


def run(out, names, quick, command, say):
    """Every optimizer on each configuration of ``names``; writes the report, CSV and
    figure. Returns 0."""
    from tallskinny_np.files import atomic_write, atomic_write_text
    caps = QUICK_CAPS if quick else CAPS
    records = []
    for config in names:
        for optimizer in FIRST_ORDER + SECOND_ORDER:
            first = optimizer in FIRST_ORDER
            for lr in LEARNING_RATES if first else (None,):
                folder = out / config / (f"{optimizer}-lr{lr:g}" if first else optimizer)
                row = run_app(folder, flags(config), optimizer, cap(caps, optimizer), 1e-8,
                              lr)
                records.append(dict(record(row, config, optimizer, lr), folder=folder))
                say(line(records[-1]))
    for config in names:
        for optimizer in FIRST_ORDER + SECOND_ORDER:
            best = best_of([r for r in records if (r["config"], r["optimizer"])
                            == (config, optimizer)])
            best["best"] = True
    text = report(records, command, caps, quick)
    atomic_write_text(out / "deep.md", text)
    atomic_write(out / "deep.csv", lambda f: write_csv(f, records))
    plot(records, out / "deep.png", quick)
    print(text, end="")
    return 0


def line(r):
    """A progress line for one run."""
    head = f"{r['config']}: {r['optimizer']} {r['setting']}"
    if r["diverged"]:
        return f"{head} diverged"
    return (f"{head}: best loss {r['best_loss']:.3g}, {r['steps']} steps, "
            f"{r['seconds']:.2f} s")


def cell(r, t):
    steps, seconds = r[f"steps_to_{t:g}"], r[f"seconds_to_{t:g}"]
    return "-" if steps is None else f"{steps:.0f} / {seconds:.1f}"


def report(records, command, caps, quick):
    """deep.md's text: per configuration the best of each optimizer, then every run."""
    levels = " | ".join(f"to {t:g}" for t in LEVELS)
    head = (f"| optimizer | setting | best loss | {levels} | steps | seconds |",
            "|---|---|---|" + "---|" * len(LEVELS) + "---|---|")
    lines = ["# Deep narrow networks: every optimizer" + (" (--quick: not a measurement)"
                                                          if quick else ""), "",
             f"`{command}`", "",
             f"Precision task of `tallskinny-train` on the digits: tanh, batch {BATCH}, one "
             f"fixed batch memorised towards a loss of 1e-8, each run its own process with one "
             f"BLAS thread. Step caps: SGD (momentum 0.9) and Adam {caps['first order']} "
             f"steps at each learning rate of {', '.join(f'{lr:g}' for lr in LEARNING_RATES)} "
             f"(shown: the rate with the lowest loss), trust-region {caps['trust-region']} "
             f"steps and the other second-order methods {caps['second order']} steps, all "
             f"with the app's defaults. 'to L': steps / training "
             f"seconds to a batch loss of L ('-': not reached); steps and seconds: the whole "
             f"run, to its cap or to 1e-8."]
    for config in dict.fromkeys(r["config"] for r in records):
        depth, width = CONFIGS[config]
        lines += ["", f"## Depth {depth}, width {width}", "", *head]
        lines += [row_text(r) for r in records if r["config"] == config and r.get("best")]
    lines += ["", "## Every run", "", "| config " + head[0], "|---" + head[1]]
    lines += [f"| {r['config']} " + row_text(r) for r in records]
    return "\n".join(lines) + "\n"


def row_text(r):
    if r["diverged"]:
        return (f"| {r['optimizer']} | {r['setting']} | diverged | "
                + " | ".join("-" for _ in LEVELS) + " | - | - |")
    return (f"| {r['optimizer']} | {r['setting']} | {r['best_loss']:.3g} | "
            + " | ".join(cell(r, t) for t in LEVELS) + f" | {r['steps']} | "
            f"{r['seconds']:.1f} |")


def write_csv(f, records):
    fields = ["config", "optimizer", "setting", "diverged", "best", "best_loss", "steps",
              "seconds"] + [f"{k}_to_{t:g}" for t in LEVELS for k in ("steps", "seconds")] \
        + ["command"]
    w = csv.DictWriter(f, fields, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in records:
        w.writerow({k: "" if r.get(k) is None else int(r.get(k, False))
                    if k in ("diverged", "best") else r[k] for k in fields})


def loss_curve(folder, optimizer):
    """``(seconds, losses)`` of a run's metrics.csv, from its first timed step."""
    with open(folder / "precision" / optimizer / "metrics.csv", newline="") as f:
        rows = [(float(r["wall"]), float(r["batch_loss"])) for r in csv.DictReader(f)]
    return tuple(zip(*[p for p in rows if p[0] > 0])) or ((), ())


def plot(records, path, quick):
    """Batch loss against training seconds (log-log), one panel per configuration, one
    line per optimizer (first order: its rate with the lowest loss)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter
    from tallskinny_np.files import atomic_write
    configs = list(dict.fromkeys(r["config"] for r in records))
    fig, axes = plt.subplots(1, len(configs), figsize=(5 * len(configs), 4.5),
                             layout="constrained", squeeze=False)
    for ax, config in zip(axes[0], configs):
        for i, r in enumerate(r for r in records if r["config"] == config and r.get("best")):
            if r["diverged"]:
                continue
            label = r["optimizer"] + (f" ({r['setting']})" if r["setting"] != "defaults"
                                      else "")
            ax.plot(*loss_curve(r["folder"], r["optimizer"]), color=f"C{i}", label=label)
        depth, width = CONFIGS[config]
        ax.set(xscale="log", yscale="log", title=f"depth {depth}, width {width}",
               xlabel="training wall-clock [s], log scale",
               ylabel="batch cross-entropy loss [nats]")
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Deep narrow tanh networks, digits, batch {BATCH}: memorisation"
                 + (" (--quick)" if quick else ""))
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120), mode="wb")
    plt.close(fig)
