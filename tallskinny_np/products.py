"""Structured products with the derivative blocks: ``Dx x``, ``Dz y``, ``A x``, ``S y``,
``C y`` and their transposes, and from them H v (docs/math.md section 3). The gradient is
:func:`tallskinny_np.blocks.gradient`.

Vectors are per-layer lists in the layout of :meth:`tallskinny_np.model.MLP.split`, with a
trailing axis r of right-hand sides: ``x_l`` is ``(n_l, q_l, r)``, an activation vector
``y_l`` is ``(B, n_l, r)``. Every product uses the compact blocks of
:mod:`tallskinny_np.blocks`, so nothing of size (total params)^2 or (total activations)^2,
and no structural zero, is ever formed.

On NumPy in float64, for up to :data:`COMPILED_COLUMNS` vectors, the hidden layers' part
of :func:`hvp` runs compiled, a stack of layers of equal shapes (a segment of
:class:`tallskinny_np.blocks.Blocks`) per call (:func:`segment_forward`,
:func:`segment_backward`): at width 8 the array-module products are a dozen NumPy calls of
a few microseconds each per layer, for about as many microseconds of arithmetic. The two
round differently, so they agree to rounding.
"""
import numpy as np
from numba import njit

from .backend import array_module
from .blocks import FirstLayer, HiddenLayer, LossLayer, loss_hessian_action

COMPILED_COLUMNS = 2
"""The most vectors that :func:`hvp` multiplies by the compiled kernels: their loops won at
one and two, the array-module products' batched BLAS calls from four
(benchmarks/README.md, "Measurements behind the package's constants")."""


def Dx_mv(blk, x):
    """``Dx_l x_l`` for a hidden layer: ``y[s,i] = sum_j Dx[s,i,j] x[i,j]``."""
    return (blk.Dx.transpose(1, 0, 2) @ x).transpose(1, 0, 2)


def DxT_mv(blk, z):
    """``Dx_l^T z_l`` for a hidden layer: ``x[i,j] = sum_s Dx[s,i,j] z[s,i]``."""
    return blk.Dx.transpose(1, 2, 0) @ z.transpose(1, 0, 2)


def Dz_mv(blk, y):
    """``Dz_l y_{l-1}``, block-diagonal over samples."""
    return blk.Dz @ y


def DzT_mv(blk, z):
    """``Dz_l^T z_l``, block-diagonal over samples."""
    return blk.Dz.transpose(0, 2, 1) @ z


def A_mv(blk, x):
    """``A_l x_l``: block-diagonal over output units; for layer 1 through its factors
    (O(B m q)); for the loss layer as ``sum_s (Lambda_s v_s) zt_s^T`` with
    ``v_s = x zt_s`` (O(B c q)). Applying ``Lambda_s`` before the second ``zt_s`` keeps the
    product finite where ``Lambda_s`` vanishes and ``|zt_s|^2`` overflows."""
    match blk:
        case FirstLayer():
            v = blk.A.Zt @ x                                # v[k, s] = zt_s . x_k
            return blk.A.Zt.T @ (blk.A.R.T[:, :, None] * v)
        case HiddenLayer():
            return blk.A @ x
        case LossLayer():
            v = (blk.Zt @ x).transpose(1, 0, 2)             # v[s, k] = x_k . zt_s
            return blk.Zt.T @ loss_hessian_action(blk, v).transpose(1, 0, 2)


def S_mv(blk, y):
    """``S_l y_{l-1}``, block-diagonal over samples."""
    return blk.S @ y


def _cross_factors(blk):
    """C's factors (:func:`tallskinny_np.blocks.dense_C`) as the products use them: the
    function that maps ``v = W y`` ``(B, m, r)`` to ``F_t y_t`` (``R[t] * v_t`` for a
    hidden layer, ``Lambda_t v_t`` for the loss layer), and the delta term's coefficients
    g (None for the GGN's loss layer)."""
    match blk:
        case HiddenLayer():
            return (lambda Wy: blk.R[:, :, None] * Wy), blk.bS1
        case LossLayer():
            return (lambda Wy: loss_hessian_action(blk, Wy)), blk.G


def C_mv(blk, y):
    """``C_l y_{l-1}`` ``(m, q, r)`` for y ``(B, n, r)`` from C's factors (eqs. (2.13),
    (2.17)): ``sum_t (F_t W y_t) zt_t^T`` plus the delta term ``g^T y`` in the weight
    columns, ``O(B m (n + q))`` per column instead of the dense ``m q B n``."""
    coef, g = _cross_factors(blk)
    F = coef(blk.W @ y)                                     # (B, m, r)
    Cy = (F.transpose(1, 2, 0) @ blk.Zt).transpose(0, 2, 1)  # (m, q, r)
    if g is not None:
        B, n, r = y.shape
        Cy[:, :n] += (g.T @ y.reshape(B, n * r)).reshape(-1, n, r)
    return Cy


def CT_mv(blk, x):
    """``C_l^T x_l`` ``(B, n, r)`` for x ``(m, q, r)`` from C's factors (:func:`C_mv`'s
    transpose): ``W^T F_t (x zt_t)`` plus ``x[:, :n]^T g_t``."""
    coef, g = _cross_factors(blk)
    xz = (blk.Zt @ x).transpose(1, 0, 2)                    # (B, m, r): x_k . zt_t
    out = blk.W.T @ coef(xz)                                # (B, n, r)
    if g is not None:
        m, n, r = x.shape[0], blk.W.shape[1], x.shape[-1]
        out += (g @ x[:, :n].reshape(m, n * r)).reshape(-1, n, r)
    return out


def hvp(blocks, xs, *, _compiled=None):
    """``H x`` in O(L) (docs/math.md section 3, Pearlmutter's algorithm as matrices).

    Forward ``y = M^{-1} Dx x`` (``y_l = Dx_l x_l + Dz_l y_{l-1}``); backward
    ``z = M^{-T} P^T (C^T x + S P y)`` (``z_L = 0``,
    ``z_{l-1} = C_l^T x_l + S_l y_{l-1} + Dz_l^T z_l``); then
    ``H x = A x + C P y + Dx^T z``.

    On NumPy in float64 the hidden layers of up to :data:`COMPILED_COLUMNS` vectors run by
    the compiled segment kernels (module docstring), the others by the array-module
    products (as on CuPy and in float32). The tests choose through the private keyword
    ``_compiled`` (True: the kernels, False: the array-module products).
    """
    layers = blocks.layers
    compiled = _compiled
    if compiled is None:
        compiled = (array_module(xs[0]) is np and xs[0].dtype == np.float64
                    and xs[0].shape[-1] <= COMPILED_COLUMNS)
    hidden = blocks.segments[:-1]
    ys = [None] * (len(layers) - 1)
    stacked = {}                 # a compiled segment's first layer: its (X, Y, y_{l-1})
    for indices, seg in hidden:
        if compiled and isinstance(seg, HiddenLayer):
            # C-order for the kernels' gemm: np.stack keeps F-ordered blocks F-ordered
            X = np.ascontiguousarray(np.stack([xs[l] for l in indices]))
            y = np.ascontiguousarray(ys[indices[0] - 1])
            Y = segment_forward(seg.Dx, seg.Dz, X, y)
            stacked[indices[0]] = X, Y, y
            ys[indices[0]:indices[-1] + 1] = list(Y)
            continue
        for l in indices:
            y = Dx_mv(layers[l], xs[l])
            ys[l] = y if l == 0 else y + Dz_mv(layers[l], ys[l - 1])
    loss, x = layers[-1], xs[-1]
    out = [None] * len(layers)
    out[-1] = A_mv(loss, x) + C_mv(loss, ys[-1])
    z = CT_mv(loss, x) + S_mv(loss, ys[-1])
    for indices, seg in reversed(hidden):
        if indices[0] in stacked:
            HX, z = segment_backward(seg.Dx, seg.Dz, seg.A, seg.S, seg.Zt, seg.R, seg.W,
                                     seg.bS1, *stacked[indices[0]], np.ascontiguousarray(z))
            out[indices[0]:indices[-1] + 1] = list(HX)
            continue
        for l in reversed(indices):
            out[l], z = _backward_layer(layers[l], xs[l], ys[l - 1] if l > 0 else None, z)
    return out


def _backward_layer(blk, x, y_prev, z):
    """Layer l's ``(H x)_l`` (eq. (3.7)) and ``z_{l-1}`` (eq. (3.6); None for layer 1)
    from ``z_l``, by the array-module products."""
    Hx = DxT_mv(blk, z)
    if blk.A is not None:
        Hx = Hx + A_mv(blk, x)
    if y_prev is None:
        return Hx, None
    z_prev = DzT_mv(blk, z)
    if blk.R is not None:
        Hx = Hx + C_mv(blk, y_prev)
        z_prev = z_prev + CT_mv(blk, x) + S_mv(blk, y_prev)
    return Hx, z_prev


@njit(cache=True, error_model="numpy")
def segment_forward(Dx, Dz, X, y):
    """``y_l = Dx_l x_l + Dz_l y_{l-1}`` (docs/math.md eq. (3.2)) through a stack of hidden
    layers of equal shapes: Dx ``(Ls, B, m, q)``, Dz ``(Ls, B, m, n)``, X ``(Ls, m, q, r)``
    and the first layer's ``y_{l-1}`` ``(B, n, r)``; returns Y ``(Ls, B, m, r)``."""
    Ls, B, m, q = Dx.shape
    n, r = Dz.shape[3], X.shape[3]
    Y = np.zeros((Ls, B, m, r))
    for l in range(Ls):
        yp = y if l == 0 else Y[l - 1]
        for s in range(B):
            for i in range(m):
                for c in range(r):
                    acc = 0.0
                    for j in range(q):
                        acc += Dx[l, s, i, j] * X[l, i, j, c]
                    for k in range(n):
                        acc += Dz[l, s, i, k] * yp[s, k, c]
                    Y[l, s, i, c] = acc
    return Y


@njit(cache=True, error_model="numpy")
def segment_backward(Dx, Dz, A, S, Zt, R, W, bS1, X, Y, y, z):
    """Eqs. (3.6) and (3.7) down a stack of hidden layers of equal shapes, from ``z`` of
    its last layer ``(B, m, r)``: returns ``(HX, z)``, HX ``(Ls, m, q, r)`` the layers'
    ``(H x)_l`` and z ``(B, n, r)`` the one below the stack. X and Y are those of
    :func:`segment_forward` and y the first layer's ``y_{l-1}``; A ``(Ls, m, q, q)``,
    S ``(Ls, B, n, n)`` and C's factors Zt ``(Ls, B, q)``, R ``(Ls, B, m)``, W
    ``(Ls, m, n)``, bS1 ``(Ls, B, m)`` are None for the GGN. C's products come from its
    factors (eq. (2.13)), ``O(B m (n + q))`` per column and layer."""
    Ls, B, m, q = Dx.shape
    n, r = Dz.shape[3], X.shape[3]
    HX = np.zeros((Ls, m, q, r))
    wy = np.empty(r)
    xz = np.empty(r)
    for l in range(Ls - 1, -1, -1):
        yp = y if l == 0 else Y[l - 1]
        zn = np.zeros((B, n, r))
        for s in range(B):                     # Dx^T z and Dz^T z
            for i in range(m):
                for c in range(r):
                    zc = z[s, i, c]
                    for j in range(q):
                        HX[l, i, j, c] += Dx[l, s, i, j] * zc
                    for k in range(n):
                        zn[s, k, c] += Dz[l, s, i, k] * zc
        if A is not None:
            _add_block_products(A[l], X[l], HX[l])
        if S is not None:
            _add_block_products(S[l], yp, zn)
        if R is not None:                      # C y and C^T x, sample by sample, unit by unit
            for t in range(B):
                for k in range(m):
                    for c in range(r):
                        acc_y, acc_x = 0.0, 0.0
                        for i in range(n):
                            acc_y += W[l, k, i] * yp[t, i, c]
                        for j in range(q):
                            acc_x += X[l, k, j, c] * Zt[l, t, j]
                        wy[c], xz[c] = R[l, t, k] * acc_y, R[l, t, k] * acc_x
                    g = bS1[l, t, k]
                    for j in range(q):
                        ztj = Zt[l, t, j]
                        for c in range(r):
                            HX[l, k, j, c] += wy[c] * ztj
                    for i in range(n):
                        wki = W[l, k, i]
                        for c in range(r):
                            HX[l, k, i, c] += g * yp[t, i, c]
                            zn[t, i, c] += wki * xz[c] + g * X[l, k, i, c]
        z = zn
    return HX, z


@njit(cache=True, error_model="numpy", inline="always")
def _add_block_products(M, x, out):
    """``out[b] += M[b] x[b]`` for the square blocks M ``(nb, k, k)`` and x, out
    ``(nb, k, r)``: A's blocks (one per output unit) and S's (one per sample)."""
    nb, k, r = x.shape
    for b in range(nb):
        for j in range(k):
            for c in range(r):
                acc = 0.0
                for i in range(k):
                    acc += M[b, j, i] * x[b, i, c]
                out[b, j, c] += acc
