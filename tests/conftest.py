"""Shared test helpers: a seeded grid of random networks and references that are
independent of the structured code.

The references are built only from the public surface (``net.loss``, ``net.logits``,
``Curvature.grad``, ``Curvature.hvp``) and NumPy; nothing here calls
``tallskinny_np.blocks``, ``products`` or ``ldu``.

Networks are drawn so that their curvature is far from trivial: weights
with gain 1 to 1.5 (``W ~ N(0, gain^2 / fan_in)``), nonzero biases, and inputs of unit
scale. On the grid below ``||H||`` ranges from 0.2 to 37, H has eigenvalues down to -14
(and exact zeros: it is singular), and ``H + eps I`` with eps down to 1e-3 reaches
condition numbers of 1e6 (test_solve.py asserts at least 1e4 for both kinds).
"""
import functools
import os
import subprocess
from dataclasses import dataclass

# The suite's matrices are tiny (at most a few hundred rows): a threaded BLAS only spins on
# them, and on a shared 2-core machine that made the suite 30x slower. Set before NumPy is
# first imported (pytest loads this file before any test module); an explicit setting wins.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tallskinny_np import MLP, Curvature  # noqa: E402

ACTIVATIONS = ("tanh", "sigmoid", "softplus")
KINDS = ("hessian", "ggn")
MAX_DEPTH = 8

# Dampings of the grid: tiny (1e-3, ill-conditioned), moderate, large, and for the Hessian
# a negative shift (H - 0.05 I, as in shift-invert and spectrum slicing).
DAMPINGS = {"hessian": (1e-3, 0.1, 1.0, -0.05), "ggn": (1e-3, 0.1, 1.0)}

U64 = np.finfo(np.float64).eps / 2  # unit roundoff of float64
U32 = np.finfo(np.float32).eps / 2  # unit roundoff of float32

# Rounding of the O(L) product H v, in units of u and relative to ||H|| ||v||. Its entries
# are formed from terms that can be far larger than ||H|| (the softmax's null direction:
# logit shifts common to all classes are large in the logits' Jacobian and cancel in the
# softmax Hessian), so two evaluations of the same product that differ only in the order
# of rounding (H v against the dense H from hvp columns times v, hvp of a matrix against
# its columns, H against H^T) disagree by up to 3.8e3 u on the grid (test_solve.py).
OPERATOR_ROUNDING = 4e3


@dataclass(frozen=True)
class Case:
    """One random configuration: the network, its point and its batch."""
    sizes: tuple
    activation: str
    bias: bool
    batch: int
    gain: float
    seed: int

    @property
    def depth(self):
        """L, the number of affine layers (the loss layer included)."""
        return len(self.sizes) - 1

    def __str__(self):
        return (f"sizes={list(self.sizes)} {self.activation} bias={self.bias} "
                f"B={self.batch} gain={self.gain:.3f} seed={self.seed}")

    def build(self, dtype=np.float64):
        """``(net, params, X, y)``: the MLP, a point with nonzero biases, a batch."""
        net = MLP(self.sizes, activation=self.activation, bias=self.bias, dtype=dtype)
        rng = np.random.default_rng(self.seed)
        params = net.init_params(seed=self.seed, gain=self.gain)
        if self.bias:
            # init_params zeroes the biases; nonzero ones exercise the bias columns of
            # every block and move tanh/sigmoid off their symmetric point.
            for _, c in net.unpack(params):
                c[:] = rng.uniform(-0.5, 0.5, size=c.shape)
        X = rng.standard_normal((self.batch, self.sizes[0]))
        y = rng.integers(0, self.sizes[-1], size=self.batch)
        return net, params, X.astype(dtype), y


def random_cases(count, seed):
    """``count`` seeded random configurations.

    Case i has activation ``ACTIVATIONS[i % 3]``, bias ``(i // 3) % 2 == 0`` and depth
    ``2 + i % 7`` (2..8 layers), so every 42 consecutive cases hold every combination of
    activation, bias and depth exactly once. Hidden widths are drawn from 1..6, the input
    size from 1..8 and the class count from 2..7 independently of them, the batch from
    1..5 and the gain uniformly from [1, 1.5].
    """
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(count):
        depth = 2 + i % (MAX_DEPTH - 1)
        hidden = rng.integers(1, 7, size=depth - 1)
        sizes = (int(rng.integers(1, 9)), *map(int, hidden), int(rng.integers(2, 8)))
        cases.append(Case(sizes=sizes, activation=ACTIVATIONS[i % 3],
                          bias=(i // 3) % 2 == 0, batch=int(rng.integers(1, 6)),
                          gain=float(rng.uniform(1.0, 1.5)),
                          seed=int(rng.integers(2**31))))
    return cases


# The grid shared by the test files: 84 cases, each (activation, bias, depth) twice.
GRID = random_cases(84, seed=20260106)


@functools.lru_cache(maxsize=None)
def dense_curvature(case, kind):
    """The dense H (or GGN) of ``case`` in float64, built column by column from
    ``Curvature.hvp(e_i)``; read-only, cached for the session."""
    net, params, X, y = case.build()
    curv = Curvature(net, params, X, y, kind=kind)
    H = np.column_stack([curv.hvp(e) for e in np.eye(net.n_params)])
    H.flags.writeable = False
    return H


@functools.lru_cache(maxsize=None)
def dense_spectrum(case, kind):
    """The eigenvalues (ascending) of the symmetric part of :func:`dense_curvature`;
    those of ``H + eps I`` are these plus eps."""
    H = dense_curvature(case, kind)
    return np.linalg.eigvalsh((H + H.T) / 2)


def condition_number(case, kind, damping):
    """The 2-norm condition number of ``H + damping I``, from :func:`dense_spectrum`."""
    shifted = np.abs(dense_spectrum(case, kind) + damping)
    return float(shifted.max() / shifted.min())


def central_difference(f, x, direction, h):
    """Derivative of f at x along ``direction`` by the fourth-order central stencil
    ``(f(x - 2h d) - 8 f(x - h d) + 8 f(x + h d) - f(x + 2h d)) / (12 h)``.

    Error model: truncation ``h^4 |f^(5)| / 30`` plus rounding ``~ 1.5 u |f| / h`` (u the
    unit roundoff); with h = 1e-3 both are around 1e-13 times the size of f and its
    derivatives, far below the tolerances asserted with it.
    """
    return (f(x - 2 * h * direction) - 8 * f(x - h * direction)
            + 8 * f(x + h * direction) - f(x + 2 * h * direction)) / (12 * h)


def jacobian_fd(f, x, h):
    """The Jacobian ``(m, n)`` of a vector function f at x, column j by
    :func:`central_difference` along ``e_j``."""
    return np.column_stack([central_difference(f, x, e, h) for e in np.eye(x.size)])


def normwise(r, M, x, b):
    """``||r|| / (||M|| ||x|| + ||b||)`` (2-norms), the largest over the columns of matrix
    arguments: a residual r of ``M x = b`` relative to the scale of the system."""
    R, X, Bm = (np.reshape(a, (len(a), -1)) for a in (r, x, b))
    scale = np.linalg.norm(M, 2) * np.linalg.norm(X, axis=0) + np.linalg.norm(Bm, axis=0)
    return float(np.max(np.linalg.norm(R, axis=0) / scale))


def backward_error(M, x, b):
    """Normwise backward error ``||M x - b|| / (||M|| ||x|| + ||b||)`` of a solution x of
    ``M x = b``: the smallest relative perturbation of M and b that makes x exact (Rigal
    and Gaches). A backward-stable solver keeps it at a modest multiple of u."""
    return normwise(M @ x - b, M, x, b)


def relative_error(x, ref):
    """``||x - ref|| / ||ref||`` in the 2-norm; the largest over the columns of a matrix."""
    X = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    R = np.asarray(ref, dtype=np.float64).reshape(len(ref), -1)
    return float(np.max(np.linalg.norm(X - R, axis=0) / np.linalg.norm(R, axis=0)))


def symmetric_matrix(kind, p, seed):
    """A seeded symmetric ``p x p`` matrix: ``"pd"`` (positive definite), ``"indefinite"``
    or ``"zero-diagonal"`` (indefinite, forcing 2x2 pivots on Bunch-Kaufman)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((p, p))
    if kind == "pd":
        return X @ X.T + p * np.eye(p)
    Q = X + X.T
    if kind == "zero-diagonal":
        Q[np.arange(p), np.arange(p)] = 0.0
    return Q


@pytest.fixture
def small_disk(tmp_path):
    """A 64 KiB tmpfs at tmp_path / "disk"; skipped where mounting is not allowed."""
    disk = tmp_path / "disk"
    disk.mkdir()
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs",
                                  str(disk)], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"cannot mount a tmpfs here ({e})")
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True, timeout=30)
