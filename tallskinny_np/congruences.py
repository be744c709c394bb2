"""The congruences of the Riccati recursion: ``Dx^T P Dx``, ``Dx^T P Dz`` and ``Dz^T P Dz``,
the terms that ``P_l`` adds to Qxx, Qxy and Qyy (docs/math.md section 4, "Stage-wise
(Riccati) elimination").

Dx is nonzero only where the output unit of its row equals that of its column, and Dz only
on sample-diagonal blocks, so each product is a batch of small matrix products:
``2 B^2 m^2 q + 2 B m^2 q^2`` flops for ``Dx^T P Dx`` instead of ``2 a p^2``.
"""
from .backend import array_module
from .blocks import FirstLayer, HiddenLayer, LossLayer


def congruences(blk, P):
    """``(Dx^T P Dx, Dx^T P Dz, Dz^T P Dz)`` of a layer for the dense symmetric ``P_l``
    (``a_l x a_l``), as dense ``p x p``, ``p x a_{l-1}``, ``a_{l-1} x a_{l-1}`` matrices;
    None stands for a zero term: all three for the loss layer (``P_L = 0``), the last two
    for layer 1 (no Dz)."""
    match blk:
        case LossLayer():
            return None, None, None
        case FirstLayer():
            return dx_congruence(blk.Dx, P), None, None
        case HiddenLayer():
            return (dx_congruence(blk.Dx, P),) + dz_congruences(blk.Dx, blk.Dz, P)


def dx_congruence(Dx, P):
    """``Dx^T P Dx`` (``p x p``) for a compact Dx ``(B, m, q)`` and P ``(B m, B m)``."""
    B, m, q = Dx.shape
    P4 = P.reshape(B, m, B, m)
    # (P Dx)[(s,i),(j,beta)] = sum_t P[s,i,t,j] Dx[t,j,beta], batched over j
    PDx = P4.transpose(3, 0, 1, 2).reshape(m, B * m, B) @ Dx.transpose(1, 0, 2)
    PDx = PDx.reshape(m, B, m, q).transpose(2, 1, 0, 3).reshape(m, B, m * q)
    return (Dx.transpose(1, 2, 0) @ PDx).reshape(m * q, m * q)


def dz_congruences(Dx, Dz, P):
    """``(Dx^T P Dz, Dz^T P Dz)`` (``p x B n``, ``B n x B n``) for compact Dx ``(B, m, q)``,
    Dz ``(B, m, n)`` and P ``(B m, B m)``."""
    B, m, q = Dx.shape
    n = Dz.shape[2]
    P4 = P.reshape(B, m, B, m)
    # (P Dz)[(s,i),(t,n')] = sum_j P[s,i,t,j] Dz[t,j,n'], batched over t
    PDz = (P4.transpose(2, 0, 1, 3).reshape(B, B * m, m) @ Dz).reshape(B, B, m, n)
    DxPDz = (Dx.transpose(1, 2, 0) @ PDz.transpose(2, 1, 0, 3).reshape(m, B, B * n))
    DzPDz = Dz.transpose(0, 2, 1) @ PDz.transpose(1, 2, 0, 3).reshape(B, m, B * n)
    return DxPDz.reshape(m * q, B * n), DzPDz.reshape(B * n, B * n)


def add_sample_blocks(Qyy, S):
    """``Qyy += blockdiag_s(S[s])`` in place for the C-order ``Qyy`` (``B n x B n``) and S
    ``(B, n, n)``: S's blocks on the samples' diagonal blocks (``Qyy = S + Dz^T P Dz``)."""
    xp = array_module(Qyy)
    B, n = S.shape[:2]
    idx = xp.arange(B)
    Qyy.reshape(B, n, B, n)[idx, :, idx, :] += S
