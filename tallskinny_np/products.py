"""Structured products with the derivative blocks: ``Dx x``, ``Dz y``, ``A x``, ``S y``,
``C y`` and their transposes, and from them H v (docs/math.md section 3). The gradient is
:func:`tallskinny_np.blocks.gradient`.

Vectors are per-layer lists in the layout of :meth:`tallskinny_np.model.MLP.split`, with a
trailing axis r of right-hand sides: ``x_l`` is ``(n_l, q_l, r)``, an activation vector
``y_l`` is ``(B, n_l, r)``. Every product uses the compact blocks of
:mod:`tallskinny_np.blocks`, so nothing of size (total params)^2 or (total activations)^2,
and no structural zero, is ever formed.
"""
from .blocks import FirstLayer, HiddenLayer, LossLayer


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
    product finite where ``Lambda_s`` vanishes and ``|zt_s|^2`` overflows: the stored
    ``Dblk`` minus the rank-B term is then inf - inf."""
    A = blk.A
    match blk:
        case FirstLayer():
            v = A.Zt @ x                                    # v[k, s] = zt_s . x_k
            return A.Zt.T @ (A.R.T[:, :, None] * v)
        case HiddenLayer():
            return A @ x
        case LossLayer():
            B = A.pi.shape[0]
            v = A.Zt @ x                                    # v[k, s] = zt_s . x_k
            pi = A.pi.T[:, :, None]
            Lv = pi * (v - (pi * v).sum(axis=0, keepdims=True)) / B
            return A.Zt.T @ Lv


def S_mv(blk, y):
    """``S_l y_{l-1}``, block-diagonal over samples."""
    return blk.S @ y


def C_mv(blk, y):
    """``C_l y_{l-1}``: (p x a_{l-1}) times (a_{l-1} x r)."""
    p, r = blk.C.shape[0] * blk.C.shape[1], y.shape[-1]
    return (blk.C.reshape(p, -1) @ y.reshape(-1, r)).reshape(blk.C.shape[:2] + (r,))


def CT_mv(blk, x):
    """``C_l^T x_l``."""
    p, r = blk.C.shape[0] * blk.C.shape[1], x.shape[-1]
    return (blk.C.reshape(p, -1).T @ x.reshape(p, r)).reshape(blk.C.shape[2:] + (r,))


def hvp(blocks, xs):
    """``H x`` in O(L) (docs/math.md section 3, Pearlmutter's algorithm as matrices).

    Forward ``y = M^{-1} Dx x`` (``y_l = Dx_l x_l + Dz_l y_{l-1}``); backward
    ``z = M^{-T} P^T (C^T x + S P y)`` (``z_L = 0``,
    ``z_{l-1} = C_l^T x_l + S_l y_{l-1} + Dz_l^T z_l``); then
    ``H x = A x + C P y + Dx^T z``.
    """
    layers = blocks.layers
    ys = []
    for blk, x in zip(layers[:-1], xs):
        y = Dx_mv(blk, x)
        if ys:
            y = y + Dz_mv(blk, ys[-1])
        ys.append(y)
    loss, x = layers[-1], xs[-1]
    out = [None] * len(layers)
    out[-1] = A_mv(loss, x) + C_mv(loss, ys[-1])
    z = CT_mv(loss, x) + S_mv(loss, ys[-1])
    for l in range(len(layers) - 2, -1, -1):
        blk, x = layers[l], xs[l]
        Hx = DxT_mv(blk, z)
        if blk.A is not None:
            Hx = Hx + A_mv(blk, x)
        if l > 0:
            z_prev = DzT_mv(blk, z)
            if blk.C is not None:
                Hx = Hx + C_mv(blk, ys[l - 1])
                z_prev = z_prev + CT_mv(blk, x) + S_mv(blk, ys[l - 1])
            z = z_prev
        out[l] = Hx
    return out
