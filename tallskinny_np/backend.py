"""The array module (numpy or cupy) that a computation runs on.

Every numerical routine in the package is written against an array module ``xp`` so that
the same code path runs on the CPU with NumPy (and is tested there) and on an NVIDIA GPU
with CuPy.
"""
import contextlib

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

_controller = None


@contextlib.contextmanager
def sweep_threads():
    """Run the enclosed solver sweep with :data:`SWEEP_BLAS_THREADS` BLAS threads."""
    global _controller
    if SWEEP_BLAS_THREADS is None:
        yield
        return
    if _controller is None:
        from threadpoolctl import ThreadpoolController
        _controller = ThreadpoolController()
    with _controller.limit(limits=SWEEP_BLAS_THREADS, user_api="blas"):
        yield
