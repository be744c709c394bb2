"""The compiled hidden-layer products of ``H v`` against the array-module ones.

On NumPy in float64 :func:`tallskinny_np.products.hvp` runs each stack of equal hidden
layers through two compiled kernels; CuPy and float32 run the array-module products, which
the other suites check against finite differences and the dense verifier. The two sum in
different orders, so they agree to the rounding of the product (``OPERATOR_ROUNDING`` u
relative to ``||H|| ||V||``, conftest.py); a wrong term (a missing transpose of A, S or C,
a layer skipped at a segment's edge) is an O(1) difference.
"""
import numpy as np
import pytest

from conftest import GRID, KINDS, OPERATOR_ROUNDING, U64, dense_curvature
from tallskinny_np import MLP, Curvature
from tallskinny_np.products import COMPILED_COLUMNS, hvp


def _both(curv, V):
    xs = curv.net.split(V)
    return [curv.net.join(hvp(curv.blocks, xs, _compiled=c)) for c in (True, False)]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", GRID[::3], ids=str)
def test_compiled_hvp_matches_array_module(case, kind):
    net, params, X, y = case.build()
    curv = Curvature(net, params, X, y, kind=kind)
    V = np.random.default_rng(case.seed).standard_normal((net.n_params, 3))
    compiled, array = _both(curv, V)
    scale = np.linalg.norm(dense_curvature(case, kind), 2) * np.linalg.norm(V)
    assert np.linalg.norm(compiled - array) <= OPERATOR_ROUNDING * U64 * scale


@pytest.mark.parametrize("kind", KINDS)
def test_compiled_hvp_across_segments(kind):
    """Widths that change make several stacks, one of a single layer whose input width
    differs from its output's; the compiled products hand y and z across each edge. An
    asymmetric A (as a corrupted block may be) is applied as stored, ``A x``, not
    ``A^T x``. V is F-ordered, as the banded solve returns it: its layer blocks are then
    strided, and the kernels' ``gemm`` must get them in C order."""
    net = MLP([5, 4, 4, 4, 6, 6, 3, 3, 3, 4], activation="softplus", bias=True)
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((7, 5)), rng.integers(0, 4, 7)
    curv = Curvature(net, net.init_params(seed=2, gain=1.5), X, y, kind=kind)
    assert len(curv.blocks.segments) == 7
    if kind == "hessian":
        curv.blocks.layers[4].A[1, 0, 2] += 1.0
    V = np.asfortranarray(rng.standard_normal((net.n_params, 2)))   # as a solve returns
    compiled, array = _both(curv, V)
    H = curv.hvp(np.eye(net.n_params))
    assert np.linalg.norm(compiled - H @ V) <= 1e-13 * np.linalg.norm(H @ V)
    assert np.linalg.norm(compiled - array) <= 1e-13 * np.linalg.norm(array)


def test_float32_takes_the_array_module_products():
    net = MLP([3, 4, 4, 4, 2], dtype=np.float32)
    rng = np.random.default_rng(0)
    curv = Curvature(net, net.init_params(), rng.standard_normal((5, 3)), [0, 1, 0, 1, 1])
    v = rng.standard_normal((net.n_params, 1)).astype(np.float32)
    xs = net.split(v)
    assert np.array_equal(net.join(hvp(curv.blocks, xs)),
                          net.join(hvp(curv.blocks, xs, _compiled=False)))


def test_default_path_by_number_of_vectors():
    """The compiled kernels take up to COMPILED_COLUMNS vectors, the array-module products
    more (bit for bit the explicit choice either way)."""
    net = MLP([3, 5, 5, 5, 2], activation="tanh", bias=True)
    rng = np.random.default_rng(4)
    curv = Curvature(net, net.init_params(seed=3), rng.standard_normal((6, 3)),
                     rng.integers(0, 2, 6))
    for r in (1, COMPILED_COLUMNS, COMPILED_COLUMNS + 1):
        xs = net.split(rng.standard_normal((net.n_params, r)))
        chosen = net.join(hvp(curv.blocks, xs, _compiled=r <= COMPILED_COLUMNS))
        assert np.array_equal(net.join(hvp(curv.blocks, xs)), chosen)
