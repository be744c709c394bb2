"""Atomic output files and one-line messages about files, for the command-line programs,
the verifier and the benchmarks (the standard library and NumPy only).

A file is written under a temporary name in its own folder and moved over the final name
with :func:`os.replace`, so a reader (or a process killed half-way) sees either the old
file or the new one, never a truncated one. The temporary name is fixed (``<name>.partial``)
rather than per process, so a leftover from a killed writer is overwritten by the next
write instead of piling up. That is safe where each folder has one writer at a time
(``tallskinny-train`` makes sure of it with :func:`tallskinny_np.training.files.locked`).
"""
import errno
import io
import json
import os
import shutil

import numpy as np


def partial_name(path):
    """The temporary name under which ``path`` is written."""
    return f"{path}.partial"


def atomic_write(path, write, mode="w", size=None):
    """Call ``write(f)`` on a temporary file, flush it to disk, then move it to ``path``.
    On any error the temporary file is removed and ``path`` is left as it was; a full
    disk is an OSError that says how many bytes the file needed (:func:`disk_full`).
    ``size`` is the file's size if known; otherwise the content is made in memory first,
    to know it."""
    tmp = partial_name(path)
    content = None
    if size is None:
        buf = io.BytesIO() if "b" in mode else io.StringIO(newline="")
        write(buf)
        content = buf.getvalue()
        size = len(content.encode() if isinstance(content, str) else content)
    try:
        with open(tmp, mode, **({"newline": ""} if "b" not in mode else {})) as f:
            if content is None:
                write(f)
            else:
                f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, OSError):
            raise disk_full(e, path, size) from None
        raise


def atomic_write_text(path, text):
    """Write ``text`` to ``path`` atomically."""
    atomic_write(path, lambda f: f.write(text))


def atomic_save(path, array):
    """``np.save`` to ``path`` atomically (streamed: the array may be large)."""
    atomic_write(path, lambda f: np.save(f, array), mode="wb", size=npy_size(array))


def npy_size(array):
    """The size in bytes of ``array``'s ``.npy`` file (its header is at most 4096 bytes
    and usually 128)."""
    return int(np.asarray(array).nbytes) + 128


def disk_full(error, path, needed):
    """``error`` itself, unless it is ENOSPC (or EDQUOT): then an OSError naming ``path``,
    the bytes it needed and the bytes free, for a one-line message."""
    if error.errno not in (errno.ENOSPC, errno.EDQUOT):
        return error
    return OSError(error.errno, f"no space left on the device: {needed:,} bytes needed, "
                                f"{free_bytes(path):,} free", path)


def free_bytes(path):
    """The bytes free on the file system holding ``path`` (or its folder)."""
    folder = path if os.path.isdir(path) else os.path.dirname(path) or "."
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return 0


def json_value(value):
    """``json.dumps``'s ``default``: NumPy scalars and arrays as Python numbers and lists
    (a float32 is not a Python float, and json refuses it); a non-finite NumPy scalar
    as null, which strict JSON can hold."""
    if isinstance(value, np.generic):
        return value.item() if not np.issubdtype(value.dtype, np.floating) \
            or np.isfinite(value) else None
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def json_text(obj, **kwargs):
    """JSON text of ``obj`` with NumPy numbers converted (see :func:`json_value`)."""
    return json.dumps(obj, default=json_value, **kwargs)


def describe_os_error(error):
    """``'PATH: reason'`` for an OSError, the way a person reads it."""
    name = error.filename if error.filename is not None else ""
    reason = error.strerror or str(error)
    return f"{name}: {reason}" if name else reason


def output_folder(path, option="--out"):
    """Create the output folder ``path`` (and its parents); a ValueError naming the option
    if it is a file, lies under a file or cannot be written."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{option} {path} is a file, not a folder")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise ValueError(f"{option} {path} cannot be created: {e.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {path} is not writable")
    return path
