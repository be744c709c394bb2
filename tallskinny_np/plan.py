"""A memory and time plan of an exact step before anything large is allocated (docs/math.md
section 5.1).

:func:`plan` gives, from the network, the batch, the curvature kind, the dtype and the
backend, per layer the Riccati stage that :func:`tallskinny_np.riccati.riccati_factor`
will take, the bytes that stage keeps for the substitutions, its transient peak and its
flops, and for the whole step (``Curvature(...)`` and one factorization with its certified
solve) the bytes of the derivative blocks, the peak and the flops. ``Curvature`` checks
the plan against the memory available and raises :class:`PlanMemoryError` with its
figures instead of failing minutes later; ``tallskinny-train`` prints its one-line
summary at the start and refuses what does not fit before step 0.

The counts follow the code: the compiled stages on NumPy in float64, the array-module
stages otherwise (CuPy, float32), which keep ``Qxy`` and the gain besides the factor. They
are estimates of what the arrays hold, with :data:`BASE_BYTES` for the process itself; on
the ImageNet-shaped settings of ``python -m benchmarks.imagenet`` the peak they give was 1%
to 9% above the measured peak resident memory (2% at depth 40, width 128, GGN; 9% at depth
20, width 32).
"""
import os
from typing import NamedTuple

import numpy as np

from .errors import PlanMemoryError
from .loss_stage import loss_stage_flops
from .riccati import loss_pays, range_pays, stage_flops

BASE_BYTES = 224 * 2 ** 20
"""What a process that imports the package holds before any large array: the interpreter,
NumPy, SciPy, numba and its compiled kernels loaded from numba's cache (measured: 214 MB of
resident memory after a few small solves)."""


class LayerPlan(NamedTuple):
    """One layer's stage (``"dense"``, ``"range"`` or ``"loss"``: by its structure,
    docs/math.md sections 4.6, 4.8, 4.9), the bytes it keeps for the substitutions, the
    bytes of its temporaries while it runs, and its flops."""
    layer: int
    stage: str
    kept: int
    transient: int
    flops: float


class Plan(NamedTuple):
    """The plan of one exact step: the layers' :class:`LayerPlan`, the bytes of the
    derivative blocks and forward pass, the peak (:data:`BASE_BYTES`, the blocks, every
    stage's kept bytes, the two P buffers of the sweep and the largest transient), and the
    flops of the setup, the factorization and a certified solve."""
    layers: list
    blocks: int
    peak: int
    flops: float
    batch: int
    dtype: str
    backend: str
    held: bool = False

    def summary(self):
        """``'exact step: about 11.8 GB, 6.2 TFLOP (...)'``."""
        rest = ("the rest kept by the factorization and by one held from an earlier step"
                if self.held else "the rest kept by the factorization")
        return (f"exact step: about {gigabytes(self.peak)}, {teraflops(self.flops)} "
                f"(batch {self.batch}, {self.dtype}, {self.backend}; "
                f"{gigabytes(self.blocks)} of derivative blocks, {rest})")


def gigabytes(n):
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.0f} MB"


def teraflops(f):
    return f"{f / 1e12:.1f} TFLOP" if f >= 1e11 else f"{f / 1e9:.2g} GFLOP"


def plan(net, batch, kind="hessian", dtype=None, backend="numpy", held=False):
    """The :class:`Plan` of ``Curvature(net, params, X[:batch], y[:batch], kind)`` and one
    factorization with its certified solve (module docstring); with ``held``, while a
    curvature of an earlier step and its factorization are held as well (the reuse
    optimizers, :class:`tallskinny_np.optim.PreconditionedNewton`, factor the new one
    before they let the old one go).

    Parameters
    ----------
    net : MLP
    batch : int
        B, the curvature's batch.
    kind : {"hessian", "ggn"}
    dtype : numpy dtype, optional
        Default: the net's.
    backend : {"numpy", "cupy"}
    held : bool, optional
        Count a second set of blocks and factors in the peak (default False).

    Returns
    -------
    Plan

    Examples
    --------
    >>> from tallskinny_np import MLP
    >>> from tallskinny_np.plan import plan
    >>> p = plan(MLP([3072] + [128] * 39 + [1000]), 32, "ggn")
    >>> [ly.stage for ly in p.layers][:2], p.layers[-1].stage
    (['range', 'range'], 'loss')
    >>> 10e9 < p.peak < 14e9
    True
    """
    dtype = np.dtype(net.dtype if dtype is None else dtype)
    size = dtype.itemsize
    compiled = backend == "numpy" and dtype == np.float64
    hessian = kind == "hessian"
    B, L = batch, net.n_layers
    layers, blocks = [], _forward_bytes(net, B, size)
    setup = 0.0
    for l, (n, m) in enumerate(zip(net.sizes[:-1], net.sizes[1:])):
        q = n + int(net.bias)
        a_in = 0 if l == 0 else B * n
        setup += 4 * B * m * q
        if l == L - 1:
            blocks += size * (m * q + B * n + B * n * n + 2 * B * m + B * q + m * n)
            setup += 2 * B * m * n * n
            layers.append(_loss_plan(l, m, q, B, n, hessian, compiled, size,
                                     net.loss_name == "cross_entropy"))
            continue
        blocks += size * (B * m * q + (B * m * n + B * q if l else 0))
        if hessian:
            blocks += size * ((m * q * q + B * n * n + 3 * B * m + m * n) if l
                              else B * q + B * m)
            setup += 2 * B * m * q * q + (2 * B * m * n * n if l else 0)
        layers.append(_hidden_plan(l, B, m, q, a_in, compiled, size))
    P = size * max((B * n) ** 2 for n in net.sizes[1:-1])
    kept = sum(ly.kept for ly in layers)
    peak = BASE_BYTES + blocks + kept + 2 * P + max(ly.transient for ly in layers)
    if held:
        peak += blocks + kept
    # a certified solve: a substitution (2 flops per number the stages keep) and a product
    # (2 per number of the blocks), twice with one refinement step
    solve = 2 * (2 * kept + 2 * blocks) / size
    flops = setup + sum(ly.flops for ly in layers) + solve
    return Plan(layers, blocks, peak, flops, B, dtype.name, backend, held)


def _forward_bytes(net, B, size):
    """The forward pass and backprop (Z, S1, S2, b per layer), params and gradient."""
    return size * (sum(4 * B * n for n in net.sizes) + 3 * net.n_params)


def _hidden_plan(l, B, m, q, a_in, compiled, size):
    """A hidden layer's (or layer 1's) stage: the range of the batch where
    :func:`tallskinny_np.riccati.range_pays`, else the dense stage."""
    p, r = m * q, min(B, q)
    dense, ranged = stage_flops(B, m, q, a_in)
    if range_pays(B, m, q, a_in):
        k = m * r
        kept = k * k + q * r                               # T's factor, V
        if a_in:                                           # W, Dx V, Pp
            kept += k * a_in + B * k + q * a_in // B
        transient = k * a_in + B * m * (k + a_in) + m * r * r
        if not compiled:                                   # V^T C, Dx V^T P Dz, T^{-1} Y
            transient += 2 * k * a_in
        return LayerPlan(l + 1, "range", size * kept, size * transient, ranged)
    kept = p * p + p * a_in                                # the factor and W
    transient = p * a_in + B * m * (p + a_in)              # C, the workspace
    if not compiled:                                       # Qxy and K
        kept += p * a_in
    return LayerPlan(l + 1, "dense", size * kept, size * transient, dense)


def _loss_plan(l, c, q, B, n, hessian, compiled, size, softmax):
    """The loss layer's stage: for the cross-entropy (``softmax``) by its structure where
    :func:`tallskinny_np.riccati.loss_pays`, else dense."""
    p, a_in, r = c * q, B * n, min(B, q)
    dense, structured = loss_stage_flops(c, q, B, n, hessian)
    if softmax and loss_pays(c, q, B, n, hessian):
        kept = c * (r * r + 2 * B * r + B * B) + B * B + q * r + B * r
        transient = (2 * c * B * n + 3 * B * B * n * n + B * B * n * r
                     + 2 * c * B * B + c * n * r)
        return LayerPlan(l + 1, "loss", size * kept, size * transient, structured)
    kept = p * p + 2 * p * a_in                            # the factor, Qxy and W or K
    transient = p * a_in + p * p
    return LayerPlan(l + 1, "dense", size * kept, size * transient, dense)


def available_bytes(xp=np):
    """The memory a computation can still take: on CuPy the device's free memory plus what
    CuPy's pool holds unused, on the CPU the kernel's ``MemAvailable`` (Linux), else None
    (unknown: nothing is refused)."""
    if xp is not np:
        free, _ = xp.cuda.runtime.memGetInfo()
        pool = xp.get_default_memory_pool()
        return int(free + pool.free_bytes())
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits(need, available, p, what):
    """Raise :class:`PlanMemoryError` when ``need`` bytes of the plan ``p`` exceed the
    ``available`` ones (None: unknown, nothing is refused). ``what`` names the
    computation."""
    if available is not None and need > available:
        raise PlanMemoryError(p, need, available, what)
