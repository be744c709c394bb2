"""Riccati stages of the wide end layers (docs/math.md section 4, "Wide end layers").

At ImageNet scale layer 1 (``3 r^2`` inputs) and the loss layer (up to 1000 classes) have far
more parameters than the tall-skinny middle, so their Qxx must not be formed, let alone
factored densely (O(p^3)). The stages return a :class:`RangeFactor` and a
:class:`WoodburyFactor`, with the ``solve``, ``inertia`` and ``rcond`` of the factors of
:mod:`tallskinny_np.symmetric`, so the Riccati sweep uses them like any other factor.

**Stage 1** (no gain: ``y_0 = 0``). ``Qxx_1 = A_1 + eps I + Dx_1^T P_1 Dx_1`` with
``A_1 = Phi diag(R) Phi^T`` and ``Dx_1^T = Phi diag(S1)`` for ``Phi = I_m (x) Zt^T``: apart from
``eps I`` it lives in ``range(Phi)``. With ``Zt = U diag(sv) V^T`` (thin SVD, rank r) and the
orthonormal ``Q = I_m (x) V``::

    Qxx_1 = Q T Q^T + eps (I - Q Q^T),   T = eps I + Q^T (A_1 + Dx_1^T P_1 Dx_1) Q

where ``T`` (``m r x m r``, ``r <= min(B, q)``) is built from ``Dx_1 V`` and ``Zt V`` by the
same formulas as the dense blocks. So ``Qxx_1^{-1} = Q T^{-1} Q^T + (I - Q Q^T)/eps`` and
``In(Qxx_1) = In(T) + m (q - r)`` eigenvalues equal to eps. Cost O(B q (B + m) + (m r)^3).

**Range of the batch** (hidden layers). The same holds at every hidden layer l: its A and
``Dx_l^T P_l Dx_l`` live in the range of ``I_m (x) V_l``, V_l an orthonormal basis of the
span of the layer's B input vectors (``r <= min(B, q)``), so ``Qxx_l`` is factored through
its ``m r``-square T by the same stage. Qxy needs nothing new: the sweep applies
``Qxx_l^{-1}`` to it (its part outside the range, from C's ``delta`` term, through the
``(I - Q Q^T)/eps`` term). When the batch is smaller than the fan-in this replaces the
``p^3/3`` factor and the ``p^2 a`` solve by ``(m r)^3/3`` and ``m r p a``.

**Loss stage** (``P_L = 0``). ``Qxx_L = A_L + eps I = D - U U^T`` with D block-diagonal over
classes (``Dblk[k] + eps I``, c blocks of ``q x q``) and U the rank-B factor of
:func:`tallskinny_np.blocks.loss_A_low_rank`. Woodbury gives
``Qxx_L^{-1} = D^{-1} + D^{-1} U Cap^{-1} U^T D^{-1}`` with ``Cap = I_B - U^T D^{-1} U``, and
Haynsworth's inertia additivity (both Schur complements of ``[[D, U], [U^T, I]]``) gives
``In(Qxx_L) = In(D) + In(Cap) - (0, 0, B)``. Cost O(c q^3 + c q B^2 + B^3). Woodbury loses
accuracy when D is ill-conditioned (the subtraction in Cap cancels), so the sweep takes this
stage only where it saves most of the flops
(:data:`tallskinny_np.riccati.WOODBURY_SAVING`).
"""
from typing import NamedTuple

import numpy as np

from .backend import array_module
from .blocks import FirstLayer, GramA, block_diagonal, loss_A_low_rank
from .congruences import dx_congruence
from .symmetric import sym_factor
from .tolerance import eigenvalue_signs, zero_tolerance


class RangeFactor(NamedTuple):
    """``Qxx = Q T Q^T + eps (I - Q Q^T)``, ``Q = I_m (x) V`` (module docstring, "Stage 1"
    and "Range of the batch"), with the ``inertia`` and ``rcond`` of Qxx."""
    V: object                 # (q, r): orthonormal basis of the batch's input vectors
    fT: object                # the factor of T (m r x m r), from sym_factor
    m: int
    eps: float
    inertia: tuple
    rcond: float

    def solve(self, u):
        """``Qxx^{-1} u = Q T^{-1} Q^T u + (I - Q Q^T) u / eps`` for u (m q, nr), by batched
        products (matmul), one per output unit."""
        xp = array_module(self.V)
        V, m = self.V, self.m
        q, r = V.shape
        nr = u.shape[-1]
        uq = u.reshape(m, q, nr)
        c = xp.tensordot(V, uq, axes=(0, 1)).transpose(1, 0, 2)   # Q^T u, (m, r, nr)
        x = V @ self.fT.solve(c.reshape(m * r, nr)).reshape(m, r, nr)
        if r < q:
            x = x + (uq - V @ c) / self.eps
        return x.reshape(m * q, nr)


class WoodburyFactor(NamedTuple):
    """``Qxx_L = D - U U^T`` (module docstring, "Loss stage"): D's blocks ``Dblk[k] + eps I
    = V[k] diag(w[k]) V[k]^T``, U, ``D^{-1} U`` and the factor of
    ``Cap = I_B - U^T D^{-1} U``, with the ``inertia`` and ``rcond`` of Qxx_L."""
    w: object                 # (c, q)
    V: object                 # (c, q, q)
    U: object                 # (c, q, B)
    DinvU: object             # (c, q, B)
    fC: object                # the factor of Cap (B x B), from sym_factor
    inertia: tuple
    rcond: float

    def solve(self, u):
        """``Qxx_L^{-1} u = D^{-1} u + D^{-1} U Cap^{-1} U^T D^{-1} u`` for u (c q, nr)."""
        xp = array_module(self.U)
        c, q, _ = self.U.shape
        nr = u.shape[-1]
        X = _block_solve(self.w, self.V, u.reshape(c, q, nr))
        corr = self.fC.solve(xp.einsum("kjs,kjr->sr", self.U, X))
        return (X + xp.einsum("kjs,sr->kjr", self.DinvU, corr)).reshape(c * q, nr)


def _block_solve(w, V, X):
    """``D^{-1} X`` for ``D = blockdiag_k(V[k] diag(w[k]) V[k]^T)`` and X (c, q, r)."""
    return V @ ((V.transpose(0, 2, 1) @ X) / w[:, :, None])


def _inertia_of_eps(n, eps):
    """The inertia of ``eps I_n``."""
    return (n, 0, 0) if eps < 0 else (0, 0, n) if eps > 0 else (0, n, 0)


def range_basis(blocks, blk):
    """V (``q x r``): an orthonormal basis of the span of the layer's input vectors
    ``zt_s`` in which Dx's rows and A's blocks live (module docstring, "Range of the
    batch"); layer 1 from its data, a hidden layer from the rows of Dx and of A's blocks
    (``Dx[s, i, :] = S1[s, i] zt_s``, ``A[k] = Zt^T diag(R[:, k]) Zt``)."""
    xp = array_module(blk.Dx)
    if isinstance(blk, FirstLayer):
        rows = blocks.input
    else:
        q = blk.Dx.shape[2]
        rows = blk.Dx.reshape(-1, q)
        if blk.A is not None:
            rows = xp.concatenate([rows, blk.A.reshape(-1, q)])
    _, sv, VT = xp.linalg.svd(rows, full_matrices=False)
    tol = max(rows.shape) * np.finfo(rows.dtype).eps * float(sv[0]) if sv.size else 0.0
    return VT[:int((sv > tol).sum())].T


def range_stage(blocks, blk, P, eps, positive_definite=False, strategy=None):
    """The :class:`RangeFactor` of ``Qxx`` (module docstring, "Stage 1" and "Range of the
    batch"), for layer 1 or a hidden layer."""
    xp = array_module(blk.Dx)
    V = range_basis(blocks, blk)
    _, m, q = blk.Dx.shape
    r = V.shape[1]
    T = dx_congruence(blk.Dx @ V, P)
    if isinstance(blk.A, GramA):
        E = blk.A.Zt @ V
        T = T + block_diagonal(xp, xp.einsum("sk,si,sj->kij", blk.A.R, E, E))
    elif blk.A is not None:
        T = T + block_diagonal(xp, V.T @ blk.A @ V)
    T[xp.arange(m * r), xp.arange(m * r)] += eps
    fT = sym_factor(T, positive_definite=positive_definite, strategy=strategy)
    n_perp = m * (q - r)
    rcond = fT.rcond
    if n_perp:                                             # eps = 0: Qxx_1 is singular
        rcond = min(rcond, abs(eps) / max(abs(eps), float(xp.abs(T).sum(axis=0).max()))
                    if eps else 0.0)
    counts = tuple(a + b for a, b in zip(fT.inertia, _inertia_of_eps(n_perp, eps)))
    return RangeFactor(V, fT, m, eps, counts, rcond)


def loss_stage(blk, eps, positive_definite=False, strategy=None):
    """The :class:`WoodburyFactor` of ``Qxx_L = A_L + eps I`` (module docstring, "Loss
    stage")."""
    A = blk.A
    xp = array_module(A.Dblk)
    q = A.Dblk.shape[1]
    B = A.pi.shape[0]
    w, V = xp.linalg.eigh(A.Dblk + eps * xp.eye(q, dtype=A.Dblk.dtype))
    U = loss_A_low_rank(A)                                 # (c, q, B)
    DinvU = _block_solve(w, V, U)
    Cap = xp.eye(B, dtype=U.dtype) - xp.einsum("kjs,kjt->st", U, DinvU)
    fC = sym_factor(Cap, positive_definite=positive_definite, strategy=strategy)
    absw = xp.abs(w)
    wmax = float(absw.max())
    rcond = min(float(absw.min()) / wmax if wmax > 0 else 0.0, fC.rcond)
    In_D = eigenvalue_signs(w, zero_tolerance(q, wmax, np.finfo(w.dtype).eps))
    counts = tuple(a + b - d for a, b, d in zip(In_D, fC.inertia, (0, 0, B)))
    return WoodburyFactor(w, V, U, DinvU, fC, counts, rcond)
