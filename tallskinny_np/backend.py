"""The array module (numpy or cupy) that a computation runs on.

Every numerical routine in the package is written against an array module ``xp`` so that
the same code path runs on the CPU with NumPy (and is tested there) and on an NVIDIA GPU
with CuPy.
"""
import contextlib
import ctypes
import itertools
import threading

import numba
import numpy as np

try:  # cupy is an optional extra: importing the package must work without it
    import cupy as _cupy
except Exception:  # pragma: no cover - depends on the machine
    _cupy = None


def array_module(*arrays):
    """``cupy`` if any argument is a CuPy array, else ``numpy``."""
    if _cupy is not None:
        for a in arrays:
            if isinstance(a, _cupy.ndarray):
                return _cupy
    return np


def to_numpy(a):
    """A NumPy copy of a NumPy or CuPy array (scalars pass through)."""
    if _cupy is not None and isinstance(a, _cupy.ndarray):
        return _cupy.asnumpy(a)
    return a


def backend_module(backend):
    """The array module named by ``backend`` ("numpy" or "cupy"), with a clear error when
    CuPy or a CUDA device is missing."""
    if backend == "numpy":
        return np
    if backend != "cupy":
        raise ValueError(f"unknown backend {backend!r}; choose 'numpy' or 'cupy'")
    if _cupy is None:
        raise RuntimeError("backend='cupy' needs CuPy: pip install 'tallskinny-np[gpu]'")
    try:
        n = _cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # pragma: no cover - depends on the machine
        raise RuntimeError(f"backend='cupy' needs a CUDA device; CUDA says: {e}") from None
    if n < 1:  # pragma: no cover - depends on the machine
        raise RuntimeError("backend='cupy' needs a CUDA device; none is visible")
    return _cupy


SWEEP_BLAS_THREADS = 1
"""BLAS threads inside the solver sweeps (None: leave BLAS's own setting). The sweeps make
many calls on blocks of a few hundred rows, where OpenBLAS's threading costs more than it
gives, although one large dgemm runs faster on more threads (benchmarks/README.md)."""

SWEEP_THREADS = 1
"""Threads of the compiled Riccati stages (:mod:`tallskinny_np.stage`, numba's own, each
calling single-threaded BLAS; at most numba's ``NUMBA_NUM_THREADS``). With 2 a stage forms
its pivot beside the rest and splits its largest products in two. That pays only on idle
cores: the threads meet at every stage, and one that another process has preempted holds
the other up: with another process keeping one core busy, two threads took three times
as long as one (benchmarks/README.md, "Measurements behind the package's
constants"). One thread is the default; set 2 on cores of your own."""

_local = threading.local()                 # in_sweep: this thread runs a sweep
_blas_lock = threading.Lock()
_blas = {"libraries": None, "restore": None, "sweeps": 0}   # shared by all threads


@contextlib.contextmanager
def sweep_threads():
    """Run the enclosed solver sweep with :data:`SWEEP_BLAS_THREADS` BLAS threads and
    :data:`SWEEP_THREADS` threads of the compiled stages. Nested uses cost nothing: only
    the outermost one sets the limits (tens of microseconds, as much as a substitution of
    a small net). Sweeps may run in several threads at once: numba's thread count is a
    setting of each thread, and BLAS's, which is the process's, is limited from the first
    sweep that starts until the last one ends, whichever threads they run in
    (:func:`_blas_libraries`)."""
    if getattr(_local, "in_sweep", False):
        yield
        return
    numba_threads = numba.get_num_threads()
    numba.set_num_threads(max(1, min(SWEEP_THREADS, numba.config.NUMBA_NUM_THREADS)))
    _local.in_sweep = True
    _limit_blas()
    try:
        yield
    finally:
        _release_blas()
        _local.in_sweep = False
        numba.set_num_threads(numba_threads)


def _limit_blas():
    """Count a sweep in; the first of the sweeps running at once limits BLAS's threads."""
    with _blas_lock:
        if _blas["sweeps"] == 0 and SWEEP_BLAS_THREADS is not None:
            if _blas["libraries"] is None:
                _blas["libraries"] = _blas_libraries()
            _blas["restore"] = [(set_threads, get_threads())
                                for get_threads, set_threads in _blas["libraries"]]
            for _, set_threads in _blas["libraries"]:
                set_threads(SWEEP_BLAS_THREADS)
        _blas["sweeps"] += 1


def _release_blas():
    """Count a sweep out; the last one restores BLAS's threads."""
    with _blas_lock:
        _blas["sweeps"] -= 1
        if _blas["sweeps"] == 0 and _blas["restore"] is not None:
            for set_threads, n in _blas["restore"]:
                if n is not None:
                    set_threads(n)
            _blas["restore"] = None


def _blas_libraries():
    """``(get, set)`` of the number of threads of each BLAS library in the process (NumPy's
    and SciPy's wheels bring an OpenBLAS each; the compiled stages call SciPy's), found by
    threadpoolctl.

    An OpenBLAS on a thread pool of its own (not OpenMP's, whose limits are the calling
    thread's) is set through its own functions, not threadpoolctl's: from threadpoolctl
    3.8 on, only one thread, the first to set its limit, may change such a pool, and the
    calls of any other thread do nothing, without a word, while that thread lives. A sweep
    whose thread was not that one (the main thread's, say, after its first sweep or while
    it holds a ``threadpool_limits``) would run on all of BLAS's threads, whose products
    round differently from one thread's, and a sweep's last one in such a thread would not
    restore the limit."""
    from threadpoolctl import ThreadpoolController
    libraries = []
    for lib in ThreadpoolController().select(user_api="blas").lib_controllers:
        own = None
        if lib.internal_api == "openblas" and getattr(lib, "threading_layer", None) != "openmp":
            own = _openblas_threads(lib)
        libraries.append(own or (lib.get_num_threads, lib.set_num_threads))
    return libraries


def _openblas_threads(lib):
    """``(get, set)`` of an OpenBLAS's ``openblas_get_num_threads`` and
    ``openblas_set_num_threads``, under any of the prefixes and suffixes of the builds that
    threadpoolctl knows (``scipy_``, ``64_``); None if it has none of them."""
    try:
        dynlib = getattr(lib, "dynlib", None) or ctypes.CDLL(lib.filepath)
    except OSError:                          # pragma: no cover - depends on the machine
        return None
    for prefix, suffix in itertools.product(("", "scipy_"), ("", "64_", "_64")):
        try:   # indexing makes new function objects: threadpoolctl's cached ones stay as set
            get = dynlib[f"{prefix}openblas_get_num_threads{suffix}"]
            set_ = dynlib[f"{prefix}openblas_set_num_threads{suffix}"]
        except AttributeError:
            continue
        get.argtypes, get.restype = [], ctypes.c_int
        set_.argtypes, set_.restype = [ctypes.c_int], None
        return get, set_
    return None
