"""Analytic per-layer derivative blocks Dx, Dz, A, S, C (docs/math.md section 2).

Blocks are stored in compact form, without the structural zeros, with the parameters of a
layer laid out as ``(k, j)`` = (output unit, input unit or bias), see
:meth:`tallskinny_np.model.MLP.split`. For a layer with input Z (B x n), weights W
(m x n), ``Zt = [Z, 1]`` (q = n + 1 columns; ``Zt = Z`` without bias), ``S1 = sigma'(U)``,
``S2 = sigma''(U)``, backprop vector ``b`` (B x m) and ``R = b * S2``:

======  =================  ===========================================================
block   compact shape      meaning (dense block)
======  =================  ===========================================================
Dx      (B, m, q)          ``Dx[(s,i),(k,j)] = delta_ik Dx[s,i,j] = delta_ik S1[s,i] Zt[s,j]``
Dz      (B, m, n)          block-diagonal over samples, block s = ``diag(S1[s]) W``
A       (m, q, q)          block-diagonal over output units, ``sum_s R[s,k] zt_s zt_s^T``;
                           for layer 1 kept as its factors ``GramA(Zt, R)``
S       (B, n, n)          block-diagonal over samples, block s = ``W^T diag(R[s]) W``
C       (m, q, B, n)       dense ``p x a_{l-1}``:
                           ``R[t,k] W[k,m] Zt[t,j] + b[t,k] S1[t,k] delta_jm``
======  =================  ===========================================================

Hidden layers also keep their input ``Zt`` (B, q), whose rows span the range of the batch,
``bS1 = b * S1`` (B, m), the coefficients of C's ``delta_jm`` term, the part of Qxy
outside that range, and for the Hessian R and W, of which A and C are built: the range
stages form ``V^T A V`` and ``V^T C`` in a basis V of that range from these factors, in
``O(B m r (r + n))`` where the blocks would cost ``O(m q r (q + B n))``
(:mod:`tallskinny_np.wide`).

The loss layer (c classes, ``G = (pi - Y)/B``, ``Lambda_s = (diag(pi_s) - pi_s pi_s^T)/B``):
Dx (c, q) = ``G^T Zt`` (the 1 x p row), Dz (B, n) = ``G W`` (the 1 x Bn row), S (B, n, n),
C (c, q, B, n), and A as ``LossA(Dblk, pi, Zt)``: ``A = sum_s Lambda_s (x) zt_s zt_s^T`` is
block-diagonal over classes, ``Dblk[k] = sum_s pi[s,k] zt_s zt_s^T / B``, minus the rank-B
term ``sum_s u_s u_s^T`` with ``u_s = (pi_s (x) zt_s) / sqrt(B)`` (docs/math.md section 4,
"Wide end layers"). Neither end layer's A is ever stored densely: at ImageNet scale layer
1's would hold ``m q^2`` and the loss layer's ``(c q)^2`` numbers.

Each layer's blocks are a record of its kind: :class:`FirstLayer`, :class:`HiddenLayer`
or :class:`LossLayer`. Layer 1 has no Dz, S, C: its input is the data, ``(P y)_1 = 0``, so
they never enter H (docs/math.md section 3) and would cost O(B n_0) per parameter. For
``kind="ggn"`` the A, S, C of layers 1..L-1 are identically zero and stored as None, and
the loss layer's C drops its ``G delta`` term. The functions whose work differs by kind
(:func:`layer_size`, :func:`to_dense`, :func:`dense_A`,
:func:`tallskinny_np.products.A_mv`, :func:`tallskinny_np.congruences.congruences`)
dispatch on the record type.

Hidden layers 2..L-1 with equal shapes are computed together and stored as records of
stacked arrays with a leading layer axis; :attr:`Blocks.layers` holds per-layer records of
views into them.
"""
import itertools
from collections import namedtuple
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from . import kernels
from .activations import activation
from .backend import array_module
from .model import cross_entropy

GramA = namedtuple("GramA", "Zt R")
GramA.__doc__ = "Layer 1's A: ``A[k] = Zt^T diag(R[:, k]) Zt``, Zt (B, q), R (B, m)."
LossA = namedtuple("LossA", "Dblk pi Zt")
LossA.__doc__ = ("The loss layer's A: ``blockdiag_k(Dblk[k]) - (1/B) sum_s "
                 "(pi_s (x) zt_s)(pi_s (x) zt_s)^T``, Dblk (c, q, q), pi (B, c), Zt (B, q).")


class FirstLayer(NamedTuple):
    """Layer 1's blocks: its input is the data, so it has no Dz, S, C."""
    Dx: object      # (B, m, q): Dx[s, i, j] = S1[s, i] Zt[s, j]
    A: object       # GramA(Zt (B, q), R (B, m)); None for kind="ggn"


class HiddenLayer(NamedTuple):
    """The blocks of a hidden layer 2..L-1."""
    Dx: object      # (B, m, q): Dx[s, i, j] = S1[s, i] Zt[s, j]
    Dz: object      # (B, m, n): block s = diag(S1[s]) W
    A: object       # (m, q, q): A[k] = sum_s R[s, k] zt_s zt_s^T; None for kind="ggn"
    S: object       # (B, n, n): S[s] = W^T diag(R[s]) W; None for kind="ggn"
    C: object       # (m, q, B, n): the dense p x a_{l-1} block; None for kind="ggn"
    Zt: object = None   # (B, q): the layer's input vectors zt_s (rows)
    bS1: object = None  # (B, m): b * S1, the coefficients of C's delta term; None for "ggn"
    R: object = None    # (B, m): b * S2, the coefficients in A and C; None for "ggn"
    W: object = None    # (m, n): the layer's weights; None for "ggn"


class LossLayer(NamedTuple):
    """The blocks of the cross-entropy loss layer L (c classes, ``a_L = 1``)."""
    Dx: object      # (c, q): the 1 x p row G^T Zt
    Dz: object      # (B, n): the 1 x Bn row G W
    A: object       # LossA(Dblk (c, q, q), pi (B, c), Zt (B, q))
    S: object       # (B, n, n): S[s] = W^T Lambda_s W
    C: object       # (c, q, B, n): the dense p x a_{L-1} block


class DenseBlocks(NamedTuple):
    """The dense matrices of one layer's blocks, any kind (:func:`to_dense`); None is a
    block the layer does not have or that is zero (``a_L = 1`` for the loss layer)."""
    Dx: object      # (a_l, p_l)
    Dz: object      # (a_l, a_{l-1}); None for layer 1
    A: object       # (p_l, p_l)
    S: object       # (a_{l-1}, a_{l-1})
    C: object       # (p_l, a_{l-1})


KINDS = ("hessian", "ggn")


@dataclass
class Linearization:
    """The forward and backward pass at a point (docs/math.md sections 1 and 2).

    ``Z[l]`` is the input of layer l+1 (``Z[0] = X``), ``S1[l]``, ``S2[l]`` the activation
    derivatives of hidden layer l+1, ``b[l]`` the backprop vector ``d loss / d z_{l+1}``
    (B x n_{l+1}) of hidden layer l+1, ``pi`` the softmax, ``G = (pi - Y)/B``.
    """
    loss: object
    Z: list
    S1: list
    S2: list
    b: list
    pi: object
    G: object


def with_ones(xp, Z, bias):
    """``Zt = [Z, 1]`` with bias, Z without."""
    if not bias:
        return Z
    return xp.concatenate([Z, xp.ones(Z.shape[:-1] + (1,), dtype=Z.dtype)], axis=-1)


def linearize(net, params, X, y):
    """Forward pass, loss and backprop ``b_{l-1} = b_l Dz_l`` (docs/math.md section 2)."""
    xp = array_module(params, X)
    act = activation(net.activation)
    layers = net.unpack(params)
    Z, S1, S2 = [X], [], []
    for W, c in layers[:-1]:
        U = Z[-1] @ W.T
        if c is not None:
            U = U + c
        out, s1, s2 = act(xp, U)
        Z.append(out)
        S1.append(s1)
        S2.append(s2)
    W, c = layers[-1]
    O = Z[-1] @ W.T
    if c is not None:
        O = O + c
    loss, pi = cross_entropy(O, y)
    B = X.shape[0]
    G = pi.copy()
    G[xp.arange(B), y] -= 1
    G /= B
    b = [None] * (net.n_layers - 1)
    b[-1] = G @ W
    for l in range(net.n_layers - 2, 0, -1):
        b[l - 1] = (b[l] * S1[l]) @ layers[l][0]
    return Linearization(loss, Z, S1, S2, b, pi, G)


def gradient(net, lin):
    """Per-layer gradient blocks ``(n_l, q_l)`` (the layout of
    :meth:`tallskinny_np.model.MLP.split`): ``g = Dx^T M^{-T} e_L``, i.e. ``g_l = Dx_l^T b_l``
    (docs/math.md section 2), which is ``(b_l * sigma'(U_l))^T Zt_l`` for a hidden layer and
    ``G^T Zt_L`` for the loss layer: plain backprop, without forming Dx."""
    xp = array_module(lin.G)
    deltas = [b * s1 for b, s1 in zip(lin.b, lin.S1)] + [lin.G]
    return [d.T @ with_ones(xp, Z, net.bias) for d, Z in zip(deltas, lin.Z)]


def second_derivative_blocks(xp, Zt, W, R, bS1, use_numba=None):
    """``(A, S, C)`` of a stack of hidden layers 2..L-1. By the numba kernels of
    :mod:`tallskinny_np.kernels` (loops that write each output once, faster than the
    einsums at these small widths), on other array modules (and with ``use_numba=False``,
    so the GPU path is tested on the CPU) by einsum."""
    if use_numba is None:
        use_numba = xp is np
    if use_numba:
        return (kernels.block_A(Zt, R),) + kernels.blocks_S_C(Zt, W, R, bS1)
    A = xp.einsum("lsk,lsi,lsj->lkij", R, Zt, Zt)
    S = xp.einsum("lki,lsk,lkj->lsij", W, R, W)
    C = xp.einsum("ltk,lkm,ltj->lkjtm", R, W, Zt)
    diag = xp.arange(W.shape[-1])
    C[:, :, diag, :, diag] += bS1.transpose(0, 2, 1)[None]
    return A, S, C


def hidden_blocks(xp, Z, W, S1, S2, b, bias, kind, first):
    """The records of a stack of layers 1..L-1 with equal shapes (leading layer axis):
    a :class:`FirstLayer` (layer 1 alone, ``first=True``) or a :class:`HiddenLayer`."""
    Zt = with_ones(xp, Z, bias)
    Dx = S1[..., :, None] * Zt[..., None, :]
    if first:
        return FirstLayer(Dx, None if kind == "ggn" else GramA(Zt, b * S2))
    Dz = S1[..., :, None] * W[:, None]
    if kind == "ggn":
        return HiddenLayer(Dx, Dz, None, None, None, Zt)
    bS1, R = b * S1, b * S2
    return HiddenLayer(Dx, Dz, *second_derivative_blocks(xp, Zt, W, R, bS1), Zt, bS1, R, W)


def softmax_hessians(xp, pi):
    """``Lambda_s = (diag(pi_s) - pi_s pi_s^T) / B`` ``(B, c, c)``: the Hessians of the
    mean cross-entropy in the logits of each sample, for the softmax outputs pi (B, c)."""
    B, c = pi.shape
    return (xp.einsum("sk,kl->skl", pi, xp.eye(c, dtype=pi.dtype))
            - pi[:, :, None] * pi[:, None, :]) / B


def loss_blocks(xp, Z, W, pi, G, bias, kind):
    """The :class:`LossLayer` record of the cross-entropy loss layer (docs/math.md
    section 2, loss layer table)."""
    Zt = with_ones(xp, Z, bias)
    B = pi.shape[0]
    Lam = softmax_hessians(xp, pi)
    Dx = G.T @ Zt
    Dz = G @ W
    with np.errstate(over="ignore", invalid="ignore"):
        # |zt_s|^2 may overflow where the softmax saturates: Dblk is then inf, which
        # dense_A and the products do not use (dense_A's comment)
        A = LossA(gram_blocks(pi, Zt) / B, pi, Zt)
    # batched matmuls and a broadcast product: einsum sums three operands by a plain loop
    LamW = Lam @ W                                   # (B, c, n)
    S = W.T @ LamW
    C = LamW.transpose(1, 0, 2)[:, None] * Zt.T[None, :, :, None]
    if kind == "hessian":
        n = Z.shape[-1]
        diag = xp.arange(n)
        C[:, diag, :, diag] += G.T[None]
    return LossLayer(Dx, Dz, A, S, C)


class Blocks:
    """All derivative blocks of a network at a point, as stacked arrays.

    ``segments`` is a list of ``(layer_indices, record of stacked arrays)``; ``layers[l]``
    (0-based, layer l+1 of the paper) is the layer's :class:`FirstLayer`,
    :class:`HiddenLayer` or :class:`LossLayer` record of views; ``input`` is layer 1's
    ``Zt = [X, 1]``.
    """

    def __init__(self, net, params, lin, kind):
        if kind not in KINDS:
            raise ValueError(f"unknown curvature kind {kind!r}; choose one of {KINDS}")
        xp = array_module(params)
        self.kind = kind
        self.batch = lin.Z[0].shape[0]
        L = net.n_layers
        Ws = [W for W, _ in net.unpack(params)]
        self.segments = []

        def add(indices, first):
            st = lambda arrs: xp.stack([arrs[i] for i in indices])
            blk = hidden_blocks(xp, st(lin.Z), st(Ws), st(lin.S1), st(lin.S2), st(lin.b),
                                net.bias, kind, first)
            self.segments.append((list(indices), blk))

        add([0], first=True)
        shape = lambda l: (net.sizes[l], net.sizes[l + 1])
        for _, run in itertools.groupby(range(1, L - 1), key=shape):
            add(list(run), first=False)
        loss = loss_blocks(xp, lin.Z[-1], Ws[-1], lin.pi, lin.G, net.bias, kind)
        self.segments.append(([L - 1], _map(lambda a: a[None], loss)))
        self.layers = [None] * L
        for indices, blk in self.segments:
            for i, l in enumerate(indices):
                self.layers[l] = _map(lambda a: a[i], blk)
        self.input = with_ones(xp, lin.Z[0], net.bias)

    @property
    def nbytes(self):
        """Memory held by the stored blocks."""
        arrays = []
        _map(arrays.append, [blk for _, blk in self.segments])
        return sum(a.nbytes for a in arrays if a is not None)


def _map(fn, a):
    """fn applied to every array inside nested named tuples or lists (None stays None)."""
    if a is None:
        return None
    if isinstance(a, list):
        return [_map(fn, x) for x in a]
    if isinstance(a, tuple):
        return type(a)(*(_map(fn, x) for x in a))
    return fn(a)


def layer_size(blk):
    """``(p_l, a_l)``: the layer's parameter and output-activation counts (``a_L = 1``)."""
    match blk:
        case FirstLayer() | HiddenLayer():
            B, m, q = blk.Dx.shape
            return m * q, B * m
        case LossLayer():
            return blk.Dx.size, 1


def gram_blocks(R, Zt):
    """``G[k] = Zt^T diag(R[:, k]) Zt`` (``(m, q, q)``) for R (B, m) and Zt (B, q): layer 1's
    A (:class:`GramA`) and the loss layer's class blocks, as one batched matmul (einsum sums
    three operands by a plain loop, 10-20 times slower at these sizes)."""
    return (R.T[:, :, None] * Zt[None]).transpose(0, 2, 1) @ Zt


def block_diagonal(xp, blocks):
    """The dense block-diagonal matrix of a stack of equal blocks (k, r, c)."""
    k, r, c = blocks.shape
    out = xp.zeros((k, r, k, c), dtype=blocks.dtype)
    idx = xp.arange(k)
    out[idx, :, idx, :] = blocks
    return out.reshape(k * r, k * c)


def to_dense(blk):
    """The :class:`DenseBlocks` of one layer's record: Dx (a_l x p_l), Dz (a_l x a_{l-1}),
    A (p_l x p_l), S (a_{l-1} x a_{l-1}), C (p_l x a_{l-1}), with ``a_L = 1`` for the loss
    layer and None where the record has None or no such block. For verification and the
    paper's LDU; O(p^2 + a^2)."""
    xp = array_module(blk.Dx)
    match blk:
        case FirstLayer():
            return DenseBlocks(_dense_Dx(xp, blk.Dx), None, dense_A(blk), None, None)
        case HiddenLayer():
            Dx, Dz = _dense_Dx(xp, blk.Dx), block_diagonal(xp, blk.Dz)
            if blk.S is None:                   # kind="ggn": A, S, C are zero
                return DenseBlocks(Dx, Dz, None, None, None)
            return DenseBlocks(Dx, Dz, dense_A(blk), block_diagonal(xp, blk.S),
                               blk.C.reshape(Dx.shape[1], -1))
        case LossLayer():
            return DenseBlocks(blk.Dx.reshape(1, -1), blk.Dz.reshape(1, -1), dense_A(blk),
                               block_diagonal(xp, blk.S), blk.C.reshape(blk.Dx.size, -1))


def _dense_Dx(xp, Dx):
    """The dense ``(B m) x (m q)`` matrix of a compact Kronecker-structured Dx (B, m, q)."""
    B, m, q = Dx.shape
    out = xp.zeros((B, m, m, q), dtype=Dx.dtype)
    idx = xp.arange(m)
    out[:, idx, idx, :] = Dx
    return out.reshape(B * m, m * q)


def dense_A(blk):
    """The dense ``p x p`` matrix of a layer's A, or None where it is zero (kind="ggn")."""
    A = blk.A
    if A is None:
        return None
    match blk:
        case FirstLayer():
            xp = array_module(A.Zt)
            return block_diagonal(xp, gram_blocks(A.R, A.Zt))
        case HiddenLayer():
            return block_diagonal(array_module(A), A)
        case LossLayer():
            # sum_s Lambda_s (x) zt_s zt_s^T with Lambda_s applied before either zt_s: the
            # difference blockdiag(Dblk) - U U^T is inf - inf where |zt_s|^2 overflows
            # although Lambda_s zt_s zt_s^T does not (a saturated softmax: Lambda_s = 0).
            xp = array_module(A.Zt)
            B, (c, q) = A.pi.shape[0], A.Dblk.shape[:2]
            Lam = softmax_hessians(xp, A.pi)
            LamZ = Lam[:, :, None, :] * A.Zt[:, None, :, None]          # (B, c, q, c)
            # sum over s of LamZ[s, k, i, l] Zt[s, j], one matmul: einsum does not use BLAS
            return (LamZ.reshape(B, -1).T @ A.Zt).reshape(c * q, c * q)


def loss_A_low_rank(A):
    """The rank-B factor ``U[k, j, s] = pi[s,k] zt_s[j] / sqrt(B)`` of a ``LossA``."""
    B = A.pi.shape[0]
    return A.pi.T[:, None, :] * A.Zt.T[None, :, :] / B ** 0.5
