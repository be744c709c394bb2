"""What ``tallskinny-train`` reports after a comparison: one summary per optimizer, a table
that fits 100 columns, a few plain sentences comparing with Adam, and a figure of loss and
accuracy against step and training wall-clock."""
import math
import textwrap

from ..files import atomic_write
from .optimizers import FIRST_ORDER

WIDTH = 100


def first(rows, predicate):
    """The first row satisfying predicate, or None."""
    return next((r for r in rows if predicate(r)), None)


def column(rows, key):
    return [r[key] for r in rows if key in r and not math.isnan(r[key])]


def targets(task, target_loss):
    """The loss thresholds of the time-to-target table, and the loss they apply to: the
    batch loss's decades from 1 down to ``target_loss`` (precision), 1, 0.3 and 0.1
    (memorise, which stops at 100% accuracy), or the full training split's loss 1, 0.5
    and 0.25 (train, at the evaluations)."""
    if task == "train":
        return "train_loss", (1.0, 0.5, 0.25)
    if task == "memorise":
        return "batch_loss", (1.0, 0.3, 0.1)
    top = math.floor(math.log10(target_loss))
    return "batch_loss", tuple(10.0 ** e for e in range(0, top - 1, -1) if 10.0 ** e
                               > target_loss) + (target_loss,)


def summarize(task, runs, batches, thresholds):
    """One summary dict per optimizer (``runs`` maps name -> (setting, rows), ``batches``
    name -> its gradient batch), with the step and time of the first row at or below each
    threshold of ``thresholds`` (``(key, values)`` from :func:`targets`)."""
    key, values = thresholds
    out = []
    for name, (label, rows) in runs.items():
        steps, wall = rows[-1]["step"], rows[-1]["wall"]
        s = {"optimizer": name, "setting": label, "steps": steps, "wall": wall,
             "batch": batches[name],
             "images_per_s": steps * batches[name] / wall if wall > 0 else None,
             "best_batch_loss": min(column(rows, "batch_loss")),
             "final_batch_loss": rows[-1]["batch_loss"]}
        if task == "memorise":
            hit = first(rows, lambda r: r["batch_acc"] == 1.0)
            s.update(steps_to_100=hit and hit["step"], wall_to_100=hit and hit["wall"])
        elif task == "train":
            ev = [r for r in rows if not math.isnan(r.get("train_loss", math.nan))]
            s.update(final_train_loss=ev[-1]["train_loss"], final_val_loss=ev[-1]["val_loss"],
                     final_val_acc=ev[-1]["val_acc"],
                     best_val_acc=max(r["val_acc"] for r in ev))
        for t in values:
            hit = first(rows, lambda r: r.get(key, math.inf) <= t)
            s[f"steps_to_{t:g}"] = hit and hit["step"]
            s[f"wall_to_{t:g}"] = hit and hit["wall"]
        out.append(s)
    return out


def fmt(v, spec):
    if v is None or (isinstance(v, float) and math.isnan(v)):    # nan: an autoencoder's accuracy
        return "-"
    return str(int(v)) if spec == "d" else format(v, spec)


COLUMNS = {
    "precision": [("optimizer", "optimizer", "s"), ("setting", "setting", "s"),
                  ("best batch loss", "best_batch_loss", ".2e"), ("steps", "steps", "d"),
                  ("time [s]", "wall", ".2f")],
    "memorise": [("optimizer", "optimizer", "s"), ("setting", "setting", "s"),
                 ("steps to 100%", "steps_to_100", "d"), ("time to 100% [s]", "wall_to_100", ".2f"),
                 ("best batch loss", "best_batch_loss", ".2e"), ("steps", "steps", "d"),
                 ("time [s]", "wall", ".2f")],
    "train": [("optimizer", "optimizer", "s"), ("setting", "setting", "s"),
              ("steps", "steps", "d"), ("time [s]", "wall", ".2f"),
              ("train loss", "final_train_loss", ".4f"), ("val loss", "final_val_loss", ".4f"),
              ("val acc", "final_val_acc", ".4f"), ("best val acc", "best_val_acc", ".4f")],
}
NOTES = {
    "precision": "The fixed batch memorised until its loss reaches the target. Times count "
                 "the training steps only.",
    "memorise": "100%: every image of the fixed batch classified correctly. Times count the "
                "training steps only.",
    "train": "Losses and accuracies of the whole splits at the last step; best val acc over "
             "the evaluations. Times count the training steps only.",
}


def table(task, summary, header):
    """The summary as text: a header, one row per optimizer and a note, within
    :data:`WIDTH` columns."""
    cols = COLUMNS[task]
    cells = [[title for title, _, _ in cols]]
    cells += [[fmt(s.get(key), spec) for _, key, spec in cols] for s in summary]
    widths = [max(len(r[i]) for r in cells) for i in range(len(cols))]
    lines = [" ".join(c.rjust(w) if k > 1 else c.ljust(w)
                      for k, (c, w) in enumerate(zip(r, widths))).rstrip() for r in cells]
    return "\n".join([textwrap.fill(header, WIDTH)] + lines
                     + [textwrap.fill(NOTES[task], WIDTH)])


def targets_table(task, summary, thresholds):
    """Steps and seconds to each loss threshold, one row per optimizer ('-': not
    reached), within :data:`WIDTH` columns: thresholds from the middle of the range are
    left to the CSV summary until the table fits."""
    key, values = thresholds
    what = "full training split" if key == "train_loss" else "batch"

    def cell(s, t):
        steps, wall = s[f"steps_to_{t:g}"], s[f"wall_to_{t:g}"]
        if steps is None:
            return "-"
        return f"{steps}/{wall:.2f}" if wall < 10 else f"{steps}/{wall:.0f}"

    shown = list(values)
    while True:
        cells = [["optimizer"] + [f"loss {t:g}" for t in shown]]
        cells += [[s["optimizer"]] + [cell(s, t) for t in shown] for s in summary]
        widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
        if sum(widths) + len(widths) - 1 <= WIDTH or len(shown) <= 2:
            break
        del shown[len(shown) // 2]
    lines = [" ".join(c.ljust(w) if k == 0 else c.rjust(w)
                      for k, (c, w) in enumerate(zip(r, widths))).rstrip() for r in cells]
    return "\n".join([f"{task}: steps/seconds to each {what} loss"] + lines)


def comparisons(task, summary, runs):
    """Sentences comparing each second-order run with Adam on the training loss (train
    task, when Adam ran): the step at which it reached Adam's final training loss, and
    the step at which Adam reached its final training loss."""
    by = {s["optimizer"]: s for s in summary}
    if task != "train" or "adam" not in by:
        return []
    adam, adam_rows, lines = by["adam"], runs["adam"][1], []
    for name, s in by.items():
        if name in FIRST_ORDER:
            continue
        hit = first(runs[name][1], lambda r: r.get("train_loss", math.inf)
                    <= adam["final_train_loss"])
        if hit:
            text = (f"{name} reached Adam's final training loss ({adam['final_train_loss']:.4f}, "
                    f"after {adam['steps']} steps, {adam['steps'] * adam['batch']} images and "
                    f"{adam['wall']:.2f} s) at step {hit['step']}, after "
                    f"{hit['step'] * s['batch']} images and {hit['wall']:.2f} s.")
        else:
            text = (f"{name} did not reach Adam's final training loss "
                    f"({adam['final_train_loss']:.4f}) in its {s['steps']} steps.")
        hit = first(adam_rows, lambda r: r.get("train_loss", math.inf) <= s["final_train_loss"])
        if hit:
            text += (f" Adam reached {name}'s final training loss ({s['final_train_loss']:.4f}) "
                     f"at step {hit['step']}.")
        lines.append(textwrap.fill(text, WIDTH, break_on_hyphens=False))
    return lines


def plot(task, runs, path, title, loss="cross_entropy"):
    """Loss and accuracy against step (left) and training wall-clock (right, log scale
    from the first measured time: a step-0 point at 0 s has no place on it), one colour
    per optimizer, one legend for the figure; ``loss`` names the loss on the axis."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FormatStrFormatter
    fig, axes = plt.subplots(2, 2, figsize=(11, 8), layout="constrained")
    what = "mean squared error" if loss == "mse" else "cross-entropy loss [nats]"
    if task != "train":
        series = [("batch_loss", "-"), ("batch_acc", "-")]
        ylabels = (f"batch {what}", "batch accuracy [%]")
    else:
        series = [("train_loss", "-"), ("val_loss", "--"), ("train_acc", "-"),
                  ("val_acc", "--")]
        ylabels = (what, "accuracy [%]")
    handles = []
    for i, (name, (label, rows)) in enumerate(runs.items()):
        colour = f"C{i}"
        handles.append(Line2D([], [], color=colour, label=f"{name} ({label})"))
        for key, style in series:
            pts = [(r["step"], r["wall"], r[key]) for r in rows
                   if not math.isnan(r.get(key, math.nan))]
            if not pts:
                continue
            step, wall, value = zip(*pts)
            row = 0 if key.endswith("loss") else 1
            scale = 1 if row == 0 else 100
            axes[row, 0].plot(step, [v * scale for v in value], color=colour, linestyle=style)
            timed = [(w, v * scale) for w, v in zip(wall, value) if w > 0]
            if timed:
                axes[row, 1].plot(*zip(*timed), color=colour, linestyle=style)
    if task == "train":
        handles += [Line2D([], [], color="k", linestyle="-", label="training split"),
                    Line2D([], [], color="k", linestyle="--", label="validation split")]
    for row, ylabel in enumerate(ylabels):
        for col, xlabel in enumerate(("step", "training wall-clock [s], log scale")):
            ax = axes[row, col]
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
            if row == 0:
                ax.set_yscale("log")
                if task != "precision":     # decades of loss: matplotlib's 10^k labels
                    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
                    ax.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
            if col == 1:
                ax.set_xscale("log")
    fig.suptitle(title)
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 4))
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120), mode="wb")
    plt.close(fig)
