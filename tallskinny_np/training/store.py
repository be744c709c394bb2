"""A run's folder: ``metrics.csv`` (one row per step) and ``checkpoint.npz``, committed
together so that a run killed at any instruction (SIGKILL, power cut) resumes on the
identical trajectory with every metrics row.

The commit order. Rows are appended to ``metrics.csv`` and flushed to disk first; then a
new checkpoint, which records the length of ``metrics.csv`` in bytes at that moment, is
written under a temporary name and moved over ``checkpoint.npz`` (:func:`os.replace`
is atomic). The checkpoint is the commit point: whatever ``metrics.csv`` holds beyond the
length it records (rows of steps after it, a half-written line) is cut off on resume and
computed again, and rows before it are never rewritten. A kill before the replace leaves
the previous checkpoint and its rows; a kill after it leaves the new ones. The temporary
checkpoint has a fixed name and is overwritten by the next commit.

A checkpoint holds what is needed to continue (parameters, optimizer state, step,
training wall-clock, the loss of step 0 for the divergence rule) and what is needed to use
the network elsewhere (layer sizes, activation, the per-channel normalisation mean and
standard deviation, the class names): see :func:`read_checkpoint`.

Which folders ``tallskinny-train`` writes to: :func:`check_out` (only empty ones, its own
outputs, or with ``--overwrite``/``--resume``).
"""
import csv
import glob
import io
import json
import math
import os
import re
import zipfile

import numpy as np

from ..backend import to_numpy
from ..files import atomic_write, disk_full, partial_name
from .options import PROG

CHECKPOINT = "checkpoint.npz"
METRICS = "metrics.csv"
COLUMNS = ("step", "wall", "batch_loss", "batch_acc", "train_loss", "train_acc", "val_loss",
           "val_acc", "accepted", "rho", "damping", "radius", "trials", "cg_iterations",
           "negative", "flipped", "modification", "curvature", "krylov_iterations",
           "refactored")
INT_COLUMNS = ("step", "accepted", "trials", "cg_iterations", "negative", "flipped",
               "curvature", "krylov_iterations", "refactored")
REQUIRED = ("params", "step", "wall", "loss0", "config", "network", "mean", "std", "classes",
            "metrics_bytes", "metrics_rows")


class RunFileError(ValueError):
    """A checkpoint or metrics file that cannot be used; the message names the file."""


def csv_value(v):
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, float) and math.isnan(v):
        return ""
    return repr(float(v)) if isinstance(v, float) else v


def rows_text(rows, header=False):
    """CSV text of metric rows (dicts; missing columns empty)."""
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, COLUMNS, lineterminator="\n")
    if header:
        w.writeheader()
    w.writerows({k: csv_value(r.get(k, math.nan)) for k in COLUMNS} for r in rows)
    return buf.getvalue()


def parse_rows(text, path):
    """Metric rows (dicts of numbers, counts as ints) of CSV text with a header."""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if tuple(reader.fieldnames or ()) != COLUMNS:
        raise RunFileError(f"{path}: not a metrics file of this program (its header is "
                           f"{','.join(reader.fieldnames or []) or 'missing'})")
    rows = []
    try:
        for row in reader:
            rows.append({k: math.nan if v == "" else int(v) if k in INT_COLUMNS else float(v)
                         for k, v in row.items()})
    except (TypeError, ValueError):
        raise RunFileError(f"{path}: line {reader.line_num} is not a row of numbers") from None
    return rows


def start_metrics(directory):
    """A fresh ``metrics.csv`` holding the header only; no checkpoint."""
    for name in (CHECKPOINT, partial_name(CHECKPOINT)):
        if os.path.exists(os.path.join(directory, name)):
            os.remove(os.path.join(directory, name))
    atomic_write(os.path.join(directory, METRICS), lambda f: f.write(rows_text([], True)))


def resume_metrics(directory, ck):
    """The committed rows of a run whose checkpoint is ``ck``: ``metrics.csv`` is cut back
    to the length the checkpoint records (dropping rows written after it) and read."""
    path = os.path.join(directory, METRICS)
    if not os.path.exists(path):
        raise RunFileError(f"{path} is missing but {CHECKPOINT} beside it records "
                           f"{ck['metrics_rows']} rows; pass --overwrite to start over")
    size = os.path.getsize(path)
    if size < ck["metrics_bytes"]:
        raise RunFileError(f"{path} is shorter ({size} bytes) than {CHECKPOINT} records "
                           f"({ck['metrics_bytes']} bytes): rows were lost; pass --overwrite "
                           f"to start over")
    with open(path, "r+b") as f:
        f.truncate(ck["metrics_bytes"])
        text = f.read().decode("utf-8", errors="replace")
    rows = parse_rows(text, path)
    if len(rows) != ck["metrics_rows"] or [r["step"] for r in rows] != list(range(len(rows))):
        raise RunFileError(f"{path} does not hold the rows 0..{ck['metrics_rows'] - 1} that "
                           f"{CHECKPOINT} records; pass --overwrite to start over")
    return rows


def append_rows(directory, rows):
    """Append rows to ``metrics.csv`` and flush them to disk; its new length in bytes."""
    path = os.path.join(directory, METRICS)
    data = rows_text(rows).encode()
    try:
        with open(path, "ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            return f.tell()
    except OSError as e:      # a half-written row lies beyond what the checkpoint records
        raise disk_full(e, path, len(data)) from None


def commit(directory, rows, n_rows, state):
    """Append ``rows`` to ``metrics.csv``, then replace the checkpoint by ``state`` (a dict
    of the :data:`REQUIRED` entries but the metrics ones, plus ``opt`` the optimizer state)
    recording the new length and the row count ``n_rows``. See the module docstring."""
    size = append_rows(directory, rows)
    opt = {f"opt.{k}": to_numpy(v) for k, v in state["opt"].items()}
    arrays = {k: v for k, v in state.items() if k != "opt"}
    arrays.update(params=to_numpy(arrays["params"]), config=json.dumps(arrays["config"]),
                  network=json.dumps(arrays["network"]), classes=json.dumps(arrays["classes"]),
                  metrics_bytes=size, metrics_rows=n_rows)
    atomic_write(os.path.join(directory, CHECKPOINT),
                 lambda f: np.savez(f, **arrays, **opt), mode="wb")


def read_checkpoint(path):
    """The checkpoint at ``path`` as a dict: ``params`` (float array), ``opt`` (optimizer
    state), ``step``, ``wall``, ``loss0``, ``metrics_bytes``, ``metrics_rows``, ``config``
    (what determines the trajectory), ``network`` (``sizes``, ``activation``, ``dtype``,
    and ``loss``, ``residual``, ``targets`` where recorded),
    ``mean`` and ``std`` (per channel, of the training pixels 0..255), ``classes`` (names),
    ``cwd`` (the folder the run started in, against which relative data paths resolve;
    None in checkpoints written before it was recorded).
    A :class:`RunFileError` naming the file for anything damaged, truncated or foreign."""
    try:
        # np.load reads each array's bytes without reaching the CRC check at the end of its
        # member; testzip reads every member through it, so a flipped bit is caught.
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
        if bad is not None:
            raise RunFileError(f"{path}: damaged checkpoint (bad CRC-32 of {bad})")
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in REQUIRED if k not in f.files]
            if missing:
                raise RunFileError(f"{path}: not a checkpoint of this program (no "
                                   f"{', '.join(missing)})")
            ck = {k: f[k] for k in f.files}
    except RunFileError:
        raise
    except FileNotFoundError:
        raise RunFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise RunFileError(f"{path}: is a folder, not a checkpoint file") from None
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as e:
        reason = "empty file" if os.path.exists(path) and os.path.getsize(path) == 0 else e
        raise RunFileError(f"{path}: damaged or not a checkpoint ({reason})") from None
    try:
        out = {"params": ck["params"], "mean": ck["mean"], "std": ck["std"],
               "opt": {k[4:]: v.item() if v.ndim == 0 else v
                       for k, v in ck.items() if k.startswith("opt.")}}
        out.update({k: int(ck[k]) for k in ("step", "metrics_bytes", "metrics_rows")})
        out.update({k: float(ck[k]) for k in ("wall", "loss0")})
        out.update({k: json.loads(str(ck[k])) for k in ("config", "network", "classes")})
        out["cwd"] = str(ck["cwd"]) if "cwd" in ck else None
    except (TypeError, ValueError) as e:
        raise RunFileError(f"{path}: damaged checkpoint ({e})") from None
    if out["params"].ndim != 1 or not np.all(np.isfinite(out["params"])):
        raise RunFileError(f"{path}: damaged checkpoint (its parameters are not a finite "
                           f"vector)")
    return out


# The files this program writes under --out (relative, with '/'): an --out holding others
# needs --overwrite. ".partial" is a file being written (tallskinny_np.files).
OWN_FILE = re.compile(
    r"(\.lock|config\.json|summary\.txt|summary-(memorise|train|precision)\.csv"
    r"|(memorise|train|precision)\.png"
    r"|((memorise|train|precision)/[^/]+|sweep/(memorise|train|precision)/[^/]+)"
    r"/(metrics\.csv|checkpoint\.npz))(\.partial)?")


def existing_runs(out):
    """Run folders under ``out`` holding metrics or a checkpoint."""
    found = {os.path.dirname(p) for name in (METRICS, CHECKPOINT)
             for p in glob.glob(os.path.join(glob.escape(out), "**", name), recursive=True)}
    return sorted(found)


def foreign_files(out):
    """Files under ``out`` that are not this program's outputs (see the module docstring),
    sorted. The names of the top-level outputs (``summary.txt``, ``train.png`` ...) count
    as its own only beside a ``config.json`` that this program wrote."""
    try:
        with open(os.path.join(out, "config.json")) as f:
            ours = {"data", "out", "optimizers"} <= set(json.load(f))
    except (OSError, ValueError, TypeError):
        ours = False
    found = []
    for folder, _, files in os.walk(out):
        for name in files:
            rel = os.path.relpath(os.path.join(folder, name), out).replace(os.sep, "/")
            if not (OWN_FILE.fullmatch(rel) and (ours or "/" in rel or rel == ".lock")):
                found.append(os.path.join(out, rel))
    return sorted(found)


def check_out(args):
    """Refuse an ``--out`` holding other files than this program's, or holding runs, unless
    ``--overwrite`` (or ``--resume`` for runs) says what to do with them."""
    foreign = foreign_files(args.out)
    if foreign and not args.overwrite:
        raise ValueError(f"--out {args.out} holds {len(foreign)} file(s) that are not "
                         f"outputs of {PROG} (first: {foreign[0]}); choose an empty or new "
                         f"folder, or pass --overwrite to write beside them")
    runs = existing_runs(args.out)
    if runs and not (args.resume or args.overwrite):
        raise ValueError(f"{args.out} already holds {len(runs)} run(s) (first: {runs[0]}); "
                         f"pass --resume to continue them or --overwrite to replace them")
