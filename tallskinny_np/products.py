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
round differently, so they agree to rounding. :func:`hvp_rounding` bounds the rounding
of either, componentwise (docs/math.md section 7.1).
"""
import numpy as np
from numba import njit

from .backend import array_module
from .blocks import FirstLayer, HiddenLayer, LossLayer, loss_hessian_action
from .losses import top_classes

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


def A_mv(blk, x, action=loss_hessian_action):
    """``A_l x_l``: block-diagonal over output units; for layer 1 through its factors
    (O(B m q)); for the loss layer as ``sum_s (Lambda_s v_s) zt_s^T`` with
    ``v_s = x zt_s`` (O(B c q)), ``action(blk, v)`` applying the ``Lambda_s`` (their
    absolute-value bound in :func:`hvp_rounding`). Applying ``Lambda_s`` before the second
    ``zt_s`` keeps the product finite where ``Lambda_s`` vanishes and ``|zt_s|^2``
    overflows."""
    match blk:
        case FirstLayer():
            v = blk.A.Zt @ x                                # v[k, s] = zt_s . x_k
            return blk.A.Zt.T @ (blk.A.R.T[:, :, None] * v)
        case HiddenLayer():
            return blk.A @ x
        case LossLayer():
            v = (blk.Zt @ x).transpose(1, 0, 2)             # v[s, k] = x_k . zt_s
            return blk.Zt.T @ action(blk, v).transpose(1, 0, 2)


def S_mv(blk, y):
    """``S_l y_{l-1}``, block-diagonal over samples."""
    return blk.S @ y


def _cross_factors(blk, action):
    """C's factors (:func:`tallskinny_np.blocks.dense_C`) as the products use them: the
    function that maps ``v = W y`` ``(B, m, r)`` to ``F_t y_t`` (``R[t] * v_t`` for a
    hidden layer, ``action(blk, v)``, the ``Lambda_t v_t``, for the loss layer), and the
    delta term's coefficients g (None for the GGN's loss layer)."""
    match blk:
        case HiddenLayer():
            return (lambda Wy: blk.R[:, :, None] * Wy), blk.bS1
        case LossLayer():
            return (lambda Wy: action(blk, Wy)), blk.G


def C_mv(blk, y, action=loss_hessian_action):
    """``C_l y_{l-1}`` ``(m, q, r)`` for y ``(B, n, r)`` from C's factors (eqs. (2.13),
    (2.17)): ``sum_t (F_t W y_t) zt_t^T`` plus the delta term ``g^T y`` in the weight
    columns, ``O(B m (n + q))`` per column instead of the dense ``m q B n``; ``action`` as
    in :func:`A_mv`."""
    coef, g = _cross_factors(blk, action)
    F = coef(blk.W @ y)                                     # (B, m, r)
    Cy = (F.transpose(1, 2, 0) @ blk.Zt).transpose(0, 2, 1)  # (m, q, r)
    if g is not None:
        B, n, r = y.shape
        Cy[:, :n] += (g.T @ y.reshape(B, n * r)).reshape(-1, n, r)
    return Cy


def CT_mv(blk, x, action=loss_hessian_action):
    """``C_l^T x_l`` ``(B, n, r)`` for x ``(m, q, r)`` from C's factors (:func:`C_mv`'s
    transpose): ``W^T F_t (x zt_t)`` plus ``x[:, :n]^T g_t``; ``action`` as in
    :func:`A_mv`."""
    coef, g = _cross_factors(blk, action)
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


def hvp_rounding(blocks, xs, u=None):
    """Componentwise bounds ``(P, E)`` on the product of :func:`hvp` as computed, by either
    of its evaluation orders, in an arithmetic of unit roundoff u (by default that of the
    dtype of ``xs``): ``|fl(H x)| <= P`` and ``|fl(H x) - H x| <= E``, H that of the
    stored blocks (docs/math.md section 7.1, eqs. (7.3b), (7.3c)).

    The same sweeps as :func:`hvp`, on the absolute values of the blocks (a layer at a
    time, in float64) and of the vectors, with every subtraction an addition, carry two
    vectors for each of the product's intermediates: a bound W on its computed modulus
    and a bound E on its error. A stage whose sums have at most k roundings in a row
    (:func:`_stage_depths`) maps ``(W, E)`` of its inputs to
    ``((1 + g) |f| W, g |f| W + (1 + g) |f| E)`` with ``g = gamma_k`` (:func:`_stage`).
    A product that underflows errs by up to half the smallest subnormal number eta,
    absolutely: each stage adds ``k eta`` to both (eq. (7.3c)), eta that of the dtype of
    ``xs`` or, with u given, of float64 (the double words' and long double's is at most
    that). Returns per-layer lists in the layout of ``xs``, float64; the cost of one
    product on two columns per column of ``xs``."""
    xp = array_module(xs[0])
    eta = smallest_subnormal(xs[0].dtype if u is None else np.float64)
    u = float(np.finfo(xs[0].dtype).eps) / 2 if u is None else u
    layers = blocks.layers
    # (W, E) as one array: the first r columns W, the last r E; the inputs are exact
    exact = [xp.concatenate([xp.abs(x), xp.zeros_like(x)], axis=-1).astype(np.float64)
             for x in xs]
    ys = []
    for l, blk in enumerate(layers[:-1]):
        a = _absolute(xp, blk)
        y = Dx_mv(a, exact[l])
        ys.append(_stage(y if l == 0 else y + Dz_mv(a, ys[-1]), _stage_depths(blk)[0], u, eta))
    loss = _absolute(xp, layers[-1])
    depth_out, depth_z = _stage_depths(layers[-1])[1:]
    out = [None] * len(layers)
    out[-1] = _stage(A_mv(loss, exact[-1], _loss_action_bound)
                     + C_mv(loss, ys[-1], _loss_action_bound), depth_out, u, eta)
    z = _stage(CT_mv(loss, exact[-1], _loss_action_bound) + S_mv(loss, ys[-1]), depth_z, u,
               eta)
    for l in range(len(layers) - 2, -1, -1):
        _, depth_out, depth_z = _stage_depths(layers[l])
        # |blocks| again rather than kept from the forward sweep: one layer's copy at a time
        Hx, z = _backward_layer(_absolute(xp, layers[l]), exact[l],
                                ys[l - 1] if l > 0 else None, z)
        out[l] = _stage(Hx, depth_out, u, eta)
        z = None if z is None else _stage(z, depth_z, u, eta)
    r = xs[0].shape[-1]
    return [o[..., :r] for o in out], [o[..., r:] for o in out]


def _absolute(xp, record):
    """A layer's record (nested records included) with every array replaced by its
    absolute values in float64 (the loss layer's name of its loss kept)."""
    return type(record)(*(a if a is None or isinstance(a, str)
                          else _absolute(xp, a) if isinstance(a, tuple)
                          else xp.abs(a).astype(np.float64, copy=False) for a in record))


def _stage(F, k, u, eta):
    """``(W, E)`` of a stage's output from ``F = |f| (W, E)`` of its inputs (the two
    halves of the last axis), for sums with at most k roundings in a row: eq. (7.3c)'s
    ``((1 + g) F_W + k eta, g F_W + (1 + g) F_E + k eta)`` with ``g = gamma_k`` and eta
    the smallest subnormal number (each product that underflows errs by at most half
    of it), times ``1 + gamma_{k+8}`` at float64's u for the bound's own rounding: F's
    sums of non-negative terms (k), this combination (3) and its constants (5); plus
    ``(k + 8)`` times float64's eta for the bound's own underflow."""
    xp = array_module(F)
    g, h = gamma(k, u), gamma(k + 8, np.finfo(F.dtype).eps / 2)
    floor = k * eta + (k + 8) * smallest_subnormal(np.float64)
    r = F.shape[-1] // 2
    W, E = F[..., :r], F[..., r:]
    return (1 + h) * xp.concatenate([(1 + g) * W, g * W + (1 + g) * E], axis=-1) + floor


def smallest_subnormal(dtype):
    """The smallest positive subnormal number of dtype: twice the most by which a product
    that underflows can err (docs/math.md eq. (7.3c))."""
    return float(np.finfo(dtype).smallest_subnormal)


def gamma(k, u):
    """Higham's ``gamma_k = k u / (1 - k u)``: ``prod (1 + d_i)^{+-1} = 1 + t`` with
    ``|t| <= gamma_k`` for k roundings ``|d_i| <= u`` (docs/math.md eq. (7.3b))."""
    if not k * u < 1:
        return np.inf
    return k * u / (1 - k * u)


def _stage_depths(blk):
    """The most roundings in a row in a sum of :func:`hvp`'s stages at one layer, by
    either evaluation order (the compiled kernels accumulate into one sum; the
    array-module products round each product, then add): ``(forward y_l, (H x)_l,
    z_{l-1})``, the first None for the loss layer (docs/math.md eq. (7.3c))."""
    match blk:
        case FirstLayer() | HiddenLayer():
            B, m, q = blk.Dx.shape
            n = blk.Dz.shape[2] if isinstance(blk, HiddenLayer) else 0
            # y: q + n products summed; (H x)_l: Dx^T z over B samples, A x, then C y's
            # two terms per sample (n + 2 deep each); z_{l-1}: Dz^T z over m units, S y,
            # then C^T x's two terms per unit (q + 3 deep)
            return q + n, 3 * B + q + n + 3, 2 * m + n + q + 4
        case LossLayer():
            (c, q), n, B = blk.Dx.shape, blk.W.shape[1], blk.Zt.shape[0]
            # Lambda_t v: for the cross-entropy the deflation's subtraction, a sum over c
            # classes, then a subtraction, a product, a division; for the MSE 2 v (exact),
            # then a division by the integer B c, itself rounded where the arithmetic does
            # not hold it (above 2^24 in float32)
            k = 2 if blk.loss == "mse" else c + 4
            # (H x)_L: Zt x or W y (q + n), Lambda_t, the sum over B samples, the delta
            # term's addition and A x + C y; z_{L-1}: Zt x (q), Lambda_t, W^T's sum over c,
            # G x's and S y's additions (S y: n deep)
            return None, q + n + B + 2 + k, q + n + c + 2 + k


def _loss_action_bound(blk, v):
    """:func:`~tallskinny_np.blocks.loss_hessian_action` on absolute values, an upper
    bound on the modulus of each of its intermediates for v >= 0, and on ``|Lambda_s e_s|``
    for an input error ``|e_s| <= v_s`` (docs/math.md eq. (7.3c)): for the cross-entropy
    its subtractions additions, ``pi_s .* (Wd_s + pi_s . Wd_s) / B`` with ``Wd_sj = v_sj +
    v_st`` for j other than the top class t and ``Wd_st = 0`` (``Lambda_s e_s =
    Lambda_s (e_s - e_st 1)`` too); for the MSE the action itself, ``2 v_s / (B c)``, since
    ``Lambda_s = 2 I / (B c)`` has no negative entry."""
    if blk.loss == "mse":
        return loss_hessian_action(blk, v)
    xp = array_module(blk.pi)
    B = blk.pi.shape[0]
    rows, top = xp.arange(B), top_classes(blk.pi)
    Wd = v + v[rows, top][:, None]
    Wd[rows, top] = 0
    p = blk.pi[:, :, None]
    return p * (Wd + (p * Wd).sum(axis=1, keepdims=True)) / B


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
                    for c in range(r):         # the inner loops contiguous for one column
                        for j in range(q):
                            HX[l, k, j, c] += wy[c] * Zt[l, t, j]
                        for i in range(n):
                            HX[l, k, i, c] += g * yp[t, i, c]
                            zn[t, i, c] += W[l, k, i] * xz[c] + g * X[l, k, i, c]
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
