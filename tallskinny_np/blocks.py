"""Analytic per-layer derivative blocks Dx, Dz, A, S and the factors of C (docs/math.md
section 2).

Blocks are stored in compact form, without the structural zeros, with the parameters of a
layer laid out as ``(k, j)`` = (output unit, input unit or bias), see
:meth:`tallskinny_np.model.MLP.split`. For a layer with input Z (B x n), weights W
(m x n), ``Zt = [Z, 1]`` (q = n + 1 columns; ``Zt = Z`` without bias), ``S1 = sigma'(U)``,
``S2 = sigma''(U)``, backprop vector ``b`` (B x m) and ``R = b * S2``:

======  =================  ===========================================================
block   compact shape      meaning (dense block)
======  =================  ===========================================================
Dx      (B, m, q)          ``Dx[(s,i),(k,j)] = delta_ik Dx[s,i,j] = delta_ik S1[s,i] Zt[s,j]``
Dz      (B, m, n)          block-diagonal over samples, block s = ``diag(S1[s]) W``,
                           plus ``I`` in a residual layer (eq. (2.5a))
A       (m, q, q)          block-diagonal over output units, ``sum_s R[s,k] zt_s zt_s^T``;
                           for layer 1 kept as its factors ``GramA(Zt, R)``
S       (B, n, n)          block-diagonal over samples, block s = ``W^T diag(R[s]) W``
C       factors            the dense ``p x a_{l-1}`` block
                           ``R[t,k] W[k,m] Zt[t,j] + b[t,k] S1[t,k] delta_jm`` (eq. (2.13)),
                           kept as ``(R, W, Zt, bS1)``
======  =================  ===========================================================

C is never stored densely: at width 128, batch 32 it would hold 541 MB a layer. Its
products (:func:`tallskinny_np.products.C_mv`, ``CT_mv``), the range stages of
:mod:`tallskinny_np.wide` and the compiled dense stage read it through its factors; only
:func:`dense_C` forms it, for one layer at a time (the dense stages, verification).

The loss layer (c classes or outputs, ``G = d loss / d O``; for the cross-entropy
``G = (pi - Y)/B`` and ``Lambda_s = (diag(pi_s) - pi_s pi_s^T)/B``, for the MSE
``G = 2 (O - T) / (B c)`` and ``Lambda_s = 2 I / (B c)``; docs/math.md sections 2.4, 2.6)
keeps Dx (c, q) = ``G^T Zt`` (the 1 x p row), Dz (B, n) = ``G W`` (the 1 x Bn row),
S (B, n, n) and the factors of its A and C: ``pi`` (None for the MSE), ``Zt``, ``W`` and
``G`` (the coefficients of C's ``delta`` term; None for the GGN). Neither ``Lambda_s`` nor
A (``(c q)^2`` numbers) nor C (``c q B n``) is ever formed: at ImageNet scale they would take
gigabytes (:mod:`tallskinny_np.loss_stage` works with the factors).

Each layer's blocks are a record of its kind: :class:`FirstLayer`, :class:`HiddenLayer`
or :class:`LossLayer`. Layer 1 has no Dz, S, C: its input is the data, ``(P y)_1 = 0``, so
they never enter H (docs/math.md section 3) and would cost O(B n_0) per parameter. For
``kind="ggn"`` the A, S, C of layers 1..L-1 are identically zero and their factors stored
as None, and the loss layer's C drops its ``G delta`` term. The functions whose work
differs by kind (:func:`layer_size`, :func:`to_dense`, :func:`dense_A`, :func:`dense_C`,
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

from . import kernels, losses
from .activations import evaluate
from .backend import array_module

GramA = namedtuple("GramA", "Zt R")
GramA.__doc__ = "Layer 1's A: ``A[k] = Zt^T diag(R[:, k]) Zt``, Zt (B, q), R (B, m)."


class FirstLayer(NamedTuple):
    """Layer 1's blocks: its input is the data, so it has no Dz, S, C."""
    Dx: object      # (B, m, q): Dx[s, i, j] = S1[s, i] Zt[s, j]
    A: object       # GramA(Zt (B, q), R (B, m)); None for kind="ggn"


class HiddenLayer(NamedTuple):
    """The blocks of a hidden layer 2..L-1, with C as its factors (eq. (2.13))."""
    Dx: object      # (B, m, q): Dx[s, i, j] = S1[s, i] Zt[s, j]
    Dz: object      # (B, m, n): block s = diag(S1[s]) W
    A: object       # (m, q, q): A[k] = sum_s R[s, k] zt_s zt_s^T; None for kind="ggn"
    S: object       # (B, n, n): S[s] = W^T diag(R[s]) W; None for kind="ggn"
    Zt: object      # (B, q): the layer's input vectors zt_s (rows)
    bS1: object = None  # (B, m): b * S1, the coefficients of C's delta term; None for "ggn"
    R: object = None    # (B, m): b * S2, the coefficients in A and C; None for "ggn"
    W: object = None    # (m, n): the layer's weights; None for "ggn"


class LossLayer(NamedTuple):
    """The blocks of the loss layer L (c classes or outputs, ``a_L = 1``), with A and C
    as their factors (eqs. (2.15), (2.17)); ``loss`` names the loss, whose ``Lambda_s``
    :func:`loss_hessian_action` applies."""
    Dx: object      # (c, q): the 1 x p row G^T Zt
    Dz: object      # (B, n): the 1 x Bn row G W
    S: object       # (B, n, n): S[s] = W^T Lambda_s W
    pi: object      # (B, c): the softmax of the logits; None for loss="mse"
    Zt: object      # (B, q): the layer's input vectors zt_s (rows)
    W: object       # (c, n): the loss layer's weights
    G: object = None    # (B, c): d loss / d O, the coefficients of C's delta term; None: GGN
    loss: str = "cross_entropy"     # a name of tallskinny_np.losses.LOSSES


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
    (B x n_{l+1}) of hidden layer l+1, ``O`` the logits, ``pi`` their softmax (None for
    the MSE), ``G = d loss / d O`` (eqs. (2.6), (2.6a)).
    """
    loss: object
    Z: list
    S1: list
    S2: list
    b: list
    pi: object
    G: object
    O: object


def with_ones(xp, Z, bias):
    """``Zt = [Z, 1]`` with bias, Z without."""
    if not bias:
        return Z
    return xp.concatenate([Z, xp.ones(Z.shape[:-1] + (1,), dtype=Z.dtype)], axis=-1)


def linearize(net, params, X, y):
    """Forward pass, loss and backprop ``b_{l-1} = b_l Dz_l`` (docs/math.md section 2,
    eqs. (1.1), (1.1a), (2.8), (2.8a)): a residual layer adds its input to its output and
    its backprop vector to the one below."""
    layers = net.unpack(params)
    Z, S1, S2 = [X], [], []
    for (W, c), act, skip in zip(layers[:-1], net.activations, net.residual_layers):
        U = Z[-1] @ W.T
        if c is not None:
            U = U + c
        out, s1, s2 = evaluate(act, U)
        Z.append(Z[-1] + out if skip else out)
        S1.append(s1)
        S2.append(s2)
    W, c = layers[-1]
    O = Z[-1] @ W.T
    if c is not None:
        O = O + c
    loss, G, pi = losses.value_and_gradient(net.loss_name, O, y)
    b = [None] * (net.n_layers - 1)
    b[-1] = G @ W
    for l in range(net.n_layers - 2, 0, -1):
        b[l - 1] = (b[l] * S1[l]) @ layers[l][0]
        if net.residual_layers[l]:
            b[l - 1] += b[l]
    return Linearization(loss, Z, S1, S2, b, pi, G, O)


def gradient(net, lin):
    """Per-layer gradient blocks ``(n_l, q_l)`` (the layout of
    :meth:`tallskinny_np.model.MLP.split`): ``g = Dx^T M^{-T} e_L``, i.e. ``g_l = Dx_l^T b_l``
    (docs/math.md section 2), which is ``(b_l * sigma'(U_l))^T Zt_l`` for a hidden layer and
    ``G^T Zt_L`` for the loss layer: plain backprop, without forming Dx."""
    xp = array_module(lin.G)
    deltas = [b * s1 for b, s1 in zip(lin.b, lin.S1)] + [lin.G]
    return [d.T @ with_ones(xp, Z, net.bias) for d, Z in zip(deltas, lin.Z)]


def second_derivative_blocks(xp, Zt, W, R, use_numba=None):
    """``(A, S)`` of a stack of hidden layers 2..L-1 (eqs. (2.11), (2.12)). By the numba
    kernels of :mod:`tallskinny_np.kernels` (loops that write each output once, faster
    than the einsums at these small widths), on other array modules (and with
    ``use_numba=False``, so the GPU path is tested on the CPU) and in long double (the
    wide evaluation of :mod:`tallskinny_np.evaluation`, which numba cannot type) by
    einsum."""
    if use_numba is None:
        use_numba = xp is np and Zt.dtype.itemsize <= 8
    if use_numba:
        return kernels.block_A(Zt, R), kernels.block_S(W, R)
    A = xp.einsum("lsk,lsi,lsj->lkij", R, Zt, Zt)
    S = xp.einsum("lki,lsk,lkj->lsij", W, R, W)
    return A, S


def hidden_blocks(xp, Z, W, S1, S2, b, bias, kind, first, residual=False):
    """The records of a stack of layers 1..L-1 with equal shapes (leading layer axis):
    a :class:`FirstLayer` (layer 1 alone, ``first=True``) or a :class:`HiddenLayer`.
    A residual layer's Dz gains the identity (eq. (2.5a)); its A, S, C are those of its
    activation term, the identity term being linear."""
    Zt = with_ones(xp, Z, bias)
    Dx = S1[..., :, None] * Zt[..., None, :]
    if first:
        return FirstLayer(Dx, None if kind == "ggn" else GramA(Zt, b * S2))
    Dz = S1[..., :, None] * W[:, None]
    if residual:
        n = Dz.shape[-1]
        Dz[..., xp.arange(n), xp.arange(n)] += 1
    if kind == "ggn":
        return HiddenLayer(Dx, Dz, None, None, Zt)
    R = b * S2
    return HiddenLayer(Dx, Dz, *second_derivative_blocks(xp, Zt, W, R), Zt, b * S1, R, W)


def loss_hessian_action(blk, v):
    """``Lambda_s v_s`` for every sample s of the loss layer's record, for v ``(B, c, r)``,
    without forming ``Lambda_s`` (eqs. (2.14), (2.14a))."""
    return losses.hessian_action(blk.loss, blk.pi, v)


def loss_blocks(xp, Z, W, pi, G, bias, kind, loss="cross_entropy"):
    """The :class:`LossLayer` record of the loss layer (docs/math.md sections 2.4, 2.6):
    Dx, Dz, S and the factors of A and C. For the cross-entropy
    ``S_s = W^T Lambda_s W = sum_k pi_sk a_sk a_sk^T / B`` with the centred rows
    ``a_sk = W_k - W^T pi_s`` (eq. (2.16), a batched matmul: ``B c n^2`` flops, no
    ``c x c`` matrix); for the MSE ``S_s = 2 W^T W / (B c)`` (eq. (2.16a))."""
    Zt = with_ones(xp, Z, bias)
    B, c = G.shape
    if loss == "mse":
        n = W.shape[1]
        S = xp.broadcast_to((W.T @ W) * (2 / (B * c)), (B, n, n)).copy()
    else:
        Ac = centred_rows(pi, W)                          # (B, c, n)
        S = (Ac * (pi[:, :, None] / B)).transpose(0, 2, 1) @ Ac
    return LossLayer(G.T @ Zt, G @ W, S, pi, Zt, W, G if kind == "hessian" else None, loss)


def centred_rows(pi, W):
    """``a[s, k] = W_k - W^T pi_s`` ``(B, c, n)``: the rows of W centred on their softmax
    mean, so that ``Lambda_s W = pi_s * a_s / B`` (eq. (2.14)). Not deflated as
    :func:`tallskinny_np.losses.hessian_action` is: where the softmax saturates the top
    class's row loses its small exact value, but enters ``S_s`` only as ``pi_st a_st
    a_st^T``, of second order in the other classes' pi (docs/math.md section 2.4)."""
    return W[None] - (pi @ W)[:, None, :]


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
            # a segment's layers share their shape, and with it whether they add their input
            blk = hidden_blocks(xp, st(lin.Z), st(Ws), st(lin.S1), st(lin.S2), st(lin.b),
                                net.bias, kind, first, net.residual_layers[indices[0]])
            self.segments.append((list(indices), blk))

        add([0], first=True)
        shape = lambda l: (net.sizes[l], net.sizes[l + 1])
        for _, run in itertools.groupby(range(1, L - 1), key=shape):
            add(list(run), first=False)
        loss = loss_blocks(xp, lin.Z[-1], Ws[-1], lin.pi, lin.G, net.bias, kind, net.loss_name)
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
    """fn applied to every array inside nested named tuples or lists (None and the loss's
    name stay as they are)."""
    if a is None or isinstance(a, str):
        return a
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
            return DenseBlocks(Dx, Dz, dense_A(blk), block_diagonal(xp, blk.S), dense_C(blk))
        case LossLayer():
            return DenseBlocks(blk.Dx.reshape(1, -1), blk.Dz.reshape(1, -1), dense_A(blk),
                               block_diagonal(xp, blk.S), dense_C(blk))


def _dense_Dx(xp, Dx):
    """The dense ``(B m) x (m q)`` matrix of a compact Kronecker-structured Dx (B, m, q)."""
    B, m, q = Dx.shape
    out = xp.zeros((B, m, m, q), dtype=Dx.dtype)
    idx = xp.arange(m)
    out[:, idx, idx, :] = Dx
    return out.reshape(B * m, m * q)


def dense_A(blk):
    """The dense ``p x p`` matrix of a layer's A, or None where it is zero (kind="ggn");
    the loss layer's ``A_L`` (eq. (2.15)), from ``pi`` and ``Zt``, is the same for both
    kinds."""
    if not isinstance(blk, LossLayer) and blk.A is None:
        return None
    match blk:
        case FirstLayer():
            xp = array_module(blk.A.Zt)
            return block_diagonal(xp, gram_blocks(blk.A.R, blk.A.Zt))
        case HiddenLayer():
            return block_diagonal(array_module(blk.A), blk.A)
        case LossLayer():
            # sum_s Lambda_s (x) zt_s zt_s^T with Lambda_s applied before either zt_s: the
            # difference of the class-diagonal and rank-B parts is inf - inf where
            # |zt_s|^2 overflows although Lambda_s zt_s zt_s^T does not (a saturated
            # softmax: Lambda_s = 0).
            xp = array_module(blk.Zt)
            (B, q), c = blk.Zt.shape, blk.W.shape[0]
            eye = xp.eye(c, dtype=blk.Zt.dtype)
            Lam = loss_hessian_action(blk, xp.broadcast_to(eye, (B, c, c)))
            LamZ = Lam[:, :, None, :] * blk.Zt[:, None, :, None]         # (B, c, q, c)
            # sum over s of LamZ[s, k, i, l] Zt[s, j], one matmul: einsum does not use BLAS
            return (LamZ.reshape(B, -1).T @ blk.Zt).reshape(c * q, c * q)


def dense_C(blk):
    """The dense ``p x a_{l-1}`` matrix of a hidden or loss layer's C from its factors
    (eqs. (2.13), (2.17)), or None where it is zero (a hidden layer of the GGN):
    ``C[(k,j),(t,i)] = F[t,k,i] Zt[t,j] + g[t,k] delta_ji`` with ``F[t] = diag(R[t]) W``
    and ``g = b S1`` for a hidden layer, ``F[t] = Lambda_t W`` and ``g = G`` (Hessian
    only) for the loss layer. For one layer at a time: it is what the blocks never
    store."""
    match blk:
        case HiddenLayer():
            if blk.R is None:
                return None
            F, g = blk.R[:, :, None] * blk.W[None], blk.bS1
        case LossLayer():
            F = loss_hessian_action(blk, array_module(blk.W).broadcast_to(
                blk.W, (blk.Zt.shape[0],) + blk.W.shape))
            g = blk.G
    B, m, n = F.shape
    q = blk.Zt.shape[1]
    C = F.transpose(1, 0, 2)[:, None] * blk.Zt.T[None, :, :, None]      # (m, q, B, n)
    if g is not None:
        xp = array_module(F)
        diag = xp.arange(n)
        C[:, diag, :, diag] += g.T[None]
    return C.reshape(m * q, B * n)
