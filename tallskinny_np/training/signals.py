"""SIGINT and SIGTERM as a clean stop of the command-line programs.

Python runs a signal handler between bytecodes of the main thread, and an exception raised
there surfaces wherever that happens to be. Inside a numba-compiled function's return that
is a ``SystemError`` ("returned a result with an exception set"), and inside a commit it
could leave the run half-saved. So :func:`handling` installs handlers that only record the
signal while the code runs :func:`deferred` (training steps, the compiled warm-up,
commits), and raise :class:`Interrupted` at once elsewhere (start-up: reading data,
building a cache). The deferred code asks :func:`pending` at its safe points (between
steps), saves what it has and calls :func:`raise_pending`; the end of a deferred block
raises a signal still recorded. Before all that, while the program loads its modules
(NumPy, SciPy, numba: about half a second), :func:`quiet_start` ends it with one line.
"""
import contextlib
import signal
import sys
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_state = {"depth": 0, "pending": None}


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived; ``signum`` says which. A BaseException, like
    KeyboardInterrupt, so that no ``except Exception`` swallows it."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def name(self):
        return signal.Signals(self.signum).name

    @property
    def status(self):
        """The shell's exit status of a process ended by this signal: 128 + its number."""
        return 128 + self.signum


def quiet_start(prog):
    """Until :func:`handling` takes over, SIGINT and SIGTERM end the program ``prog`` with
    one line and the signal's exit status, not a traceback: for the start-up, while the
    modules load (nothing is written then)."""
    def stop(signum, frame):
        print(f"{prog}: error: interrupted by {signal.Signals(signum).name} during start-up",
              file=sys.stderr)
        sys.exit(128 + signum)
    for s in SIGNALS:
        signal.signal(s, stop)


def _handler(signum, frame):
    if _state["depth"]:
        _state["pending"] = _state["pending"] or signum
    else:
        raise Interrupted(signum)


@contextlib.contextmanager
def handling():
    """Within the block SIGINT and SIGTERM raise :class:`Interrupted` (at once, or at the
    end of a :func:`deferred` block); the previous handlers come back after it. Only the
    main thread can set handlers: elsewhere the block runs with the signals as they are."""
    main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, _handler) for s in SIGNALS} if main else {}
    _state.update(depth=0, pending=None)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        _state.update(depth=0, pending=None)


@contextlib.contextmanager
def deferred():
    """Within the block a signal is only recorded; it is raised when the outermost deferred
    block ends normally."""
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1
    if not _state["depth"]:
        raise_pending()


def pending():
    """Whether a signal has been recorded and not raised yet."""
    return _state["pending"] is not None


def raise_pending():
    """Raise :class:`Interrupted` for the recorded signal, if any (and forget it)."""
    signum, _state["pending"] = _state["pending"], None
    if signum is not None:
        raise Interrupted(signum)
