"""Structured products with the derivative blocks: gradient and H v (DESIGN.md section 3).

Vectors are per-layer lists in the layout of :func:`tallskinny_np.model.to_layers`, with a
trailing axis r of right-hand sides: ``x_l`` is ``(m, q, r)``, an activation vector
``y_l`` is ``(B, n_l, r)``. Every product uses the compact blocks of
:mod:`tallskinny_np.blocks`, so nothing of size (total params)^2 or (total activations)^2,
and no structural zero, is ever formed.
"""
from .backend import array_module
from .blocks import GramA, LossA


def Dx_mv(blk, x):
    """``Dx_l x_l`` for a hidden layer: ``y[s,i] = sum_j Dx[s,i,j] x[i,j]``."""
    return array_module(x).einsum("sij,ijr->sir", blk.Dx, x)


def DxT_mv(blk, z):
    """``Dx_l^T z_l`` for a hidden layer: ``x[i,j] = sum_s Dx[s,i,j] z[s,i]``."""
    return array_module(z).einsum("sij,sir->ijr", blk.Dx, z)


def Dz_mv(blk, y):
    """``Dz_l y_{l-1}``, block-diagonal over samples."""
    return array_module(y).einsum("sij,sjr->sir", blk.Dz, y)


def DzT_mv(blk, z):
    """``Dz_l^T z_l``, block-diagonal over samples."""
    return array_module(z).einsum("sij,sir->sjr", blk.Dz, z)


def A_mv(blk, x):
    """``A_l x_l``: block-diagonal over output units; for layer 1 through its factors
    (O(B m q)); for the loss layer as ``sum_s (Lambda_s v_s) zt_s^T`` with
    ``v_s = x zt_s`` (O(B c q)). Applying ``Lambda_s`` before the second ``zt_s`` keeps the
    product finite where ``Lambda_s`` vanishes and ``|zt_s|^2`` overflows: the stored
    ``Dblk`` minus the rank-B term is then inf - inf."""
    xp = array_module(x)
    A = blk.A
    if isinstance(A, GramA):
        return xp.einsum("sj,skr->kjr", A.Zt, A.R[:, :, None] * xp.einsum("sj,kjr->skr", A.Zt, x))
    if isinstance(A, LossA):
        B = A.pi.shape[0]
        v = xp.einsum("sj,kjr->skr", A.Zt, x)
        pi = A.pi[:, :, None]
        Lv = pi * (v - (pi * v).sum(axis=1, keepdims=True)) / B
        return xp.einsum("sj,skr->kjr", A.Zt, Lv)
    return xp.einsum("kij,kjr->kir", A, x)


def S_mv(blk, y):
    """``S_l y_{l-1}``, block-diagonal over samples."""
    return array_module(y).einsum("sij,sjr->sir", blk.S, y)


def C_mv(blk, y):
    """``C_l y_{l-1}``: (p x a_{l-1}) times (a_{l-1} x r)."""
    return array_module(y).einsum("kjsm,smr->kjr", blk.C, y)


def CT_mv(blk, x):
    """``C_l^T x_l``."""
    return array_module(x).einsum("kjsm,kjr->smr", blk.C, x)


def hvp(blocks, xs):
    """``H x`` in O(L) (DESIGN.md section 3, Pearlmutter's algorithm as matrices).

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


def congruences(blk, P):
    """``(Dx^T P Dx, Dx^T P Dz, Dz^T P Dz)`` of a hidden layer for a dense symmetric P
    (``a_l x a_l``), as dense ``p x p``, ``p x a_{l-1}``, ``a_{l-1} x a_{l-1}`` matrices
    (the last two None for layer 1, whose Dz is None). These are the terms of Qxx, Qxy and
    Qyy in the Riccati recursion (DESIGN.md section 4).

    Dx is nonzero only where the output unit of its row equals that of its column, and Dz
    only on sample-diagonal blocks, so each product is a batch of small matrix products:
    ``2 B^2 m^2 q + 2 B m^2 q^2`` flops for ``Dx^T P Dx`` instead of ``2 a p^2``.
    """
    B, m, q = blk.Dx.shape
    P4 = P.reshape(B, m, B, m)
    DxT = blk.Dx.transpose(1, 2, 0)                                   # (i, alpha, s)
    # (P Dx)[(s,i),(j,beta)] = sum_t P[s,i,t,j] Dx[t,j,beta], batched over j
    PDx = P4.transpose(3, 0, 1, 2).reshape(m, B * m, B) @ blk.Dx.transpose(1, 0, 2)
    PDx = PDx.reshape(m, B, m, q).transpose(2, 1, 0, 3).reshape(m, B, m * q)
    DxPDx = (DxT @ PDx).reshape(m * q, m * q)
    if blk.Dz is None:
        return DxPDx, None, None
    n = blk.Dz.shape[2]
    # (P Dz)[(s,i),(t,n')] = sum_j P[s,i,t,j] Dz[t,j,n'], batched over t
    PDz = (P4.transpose(2, 0, 1, 3).reshape(B, B * m, m) @ blk.Dz).reshape(B, B, m, n)
    DxPDz = (DxT @ PDz.transpose(2, 1, 0, 3).reshape(m, B, B * n)).reshape(m * q, B * n)
    DzPDz = (blk.Dz.transpose(0, 2, 1) @ PDz.transpose(1, 2, 0, 3).reshape(B, m, B * n))
    return DxPDx, DxPDz, DzPDz.reshape(B * n, B * n)
