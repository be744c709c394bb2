"""The lock that makes a process the one writer of an output folder.

:func:`locked` holds an exclusive lock on the folder's ``.lock`` file (``flock``, released
by the kernel when the process ends, however it ends) and refuses a second writer, so that
the atomic writes of :mod:`tallskinny_np.files` can use one temporary name per file.
"""
import contextlib
import fcntl
import os
import shlex
import sys
import time

from ..files import disk_full

LOCK = ".lock"


@contextlib.contextmanager
def locked(folder, what):
    """Hold the exclusive lock of ``folder`` (``what``, e.g. ``'--out'``, names it in the
    message) for the block, with this process's id and command written in the lock file;
    a ValueError naming the holder if another process holds it."""
    path = os.path.join(folder, LOCK)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"{what} {folder} is in use by {lock_holder(fd)}; "
                             f"wait for it to end or choose another folder") from None
        command = shlex.join([os.path.basename(sys.argv[0] or "python"), *sys.argv[1:]])
        holder = f"process {os.getpid()} ({command})\n".encode()
        try:
            os.ftruncate(fd, 0)
            os.write(fd, holder)
        except OSError as e:
            raise disk_full(e, path, len(holder)) from None
        yield
    finally:
        os.close(fd)


def lock_holder(fd):
    """What the lock file ``fd`` says of its holder. The holder writes it just after taking
    the lock, so an empty file is read again for up to a second."""
    for _ in range(50):
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 4096).decode(errors="replace").strip()
        if text:
            return text
        time.sleep(0.02)
    return "another process"
