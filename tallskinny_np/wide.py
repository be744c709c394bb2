"""Riccati stages of the wide end layers (docs/math.md section 4, "Wide end layers").

At ImageNet scale layer 1 (``3 r^2`` inputs) and the loss layer (up to 1000 classes) have far
more parameters than the tall-skinny middle, so their Qxx must not be formed, let alone
factored densely (O(p^3)). Both stages return a :class:`~tallskinny_np.symmetric.SymFactor`
whose ``data`` is a solve function, so the Riccati sweep uses them like any other factor.

**Stage 1** (no gain: ``y_0 = 0``). ``Qxx_1 = A_1 + eps I + Dx_1^T P_1 Dx_1`` with
``A_1 = Phi diag(R) Phi^T`` and ``Dx_1^T = Phi diag(S1)`` for ``Phi = I_m (x) Zt^T``: apart from
``eps I`` it lives in ``range(Phi)``. With ``Zt = U diag(sv) V^T`` (thin SVD, rank r) and the
orthonormal ``Q = I_m (x) V``::

    Qxx_1 = Q T Q^T + eps (I - Q Q^T),   T = eps I + Q^T (A_1 + Dx_1^T P_1 Dx_1) Q

where ``T`` (``m r x m r``, ``r <= min(B, q)``) is built from ``Dx_1 V`` and ``Zt V`` by the
same formulas as the dense blocks. So ``Qxx_1^{-1} = Q T^{-1} Q^T + (I - Q Q^T)/eps`` and
``In(Qxx_1) = In(T) + m (q - r)`` eigenvalues equal to eps. Cost O(B q (B + m) + (m r)^3).

**Loss stage** (``P_L = 0``). ``Qxx_L = A_L + eps I = D - U U^T`` with D block-diagonal over
classes (``Dblk[k] + eps I``, c blocks of ``q x q``) and U the rank-B factor of
:func:`tallskinny_np.blocks.loss_A_low_rank`. Woodbury gives
``Qxx_L^{-1} = D^{-1} + D^{-1} U Cap^{-1} U^T D^{-1}`` with ``Cap = I_B - U^T D^{-1} U``, and
Haynsworth's inertia additivity (both Schur complements of ``[[D, U], [U^T, I]]``) gives
``In(Qxx_L) = In(D) + In(Cap) - (0, 0, B)``. Cost O(c q^3 + c q B^2 + B^3). Woodbury loses
accuracy when D is ill-conditioned (the subtraction in Cap cancels), so this stage is used
only when the loss layer is wide; the first stage has no such cancellation.
"""
import numpy as np

from .backend import array_module
from .blocks import block_diagonal, loss_A_low_rank
from .congruences import dx_congruence
from .symmetric import SymFactor, eigenvalue_signs, sym_factor, sym_solve

WIDE = 1024
"""An end layer with more parameters than this gets the structured stage."""


def _inertia_of_eps(n, eps):
    """The inertia of ``eps I_n``."""
    return (n, 0, 0) if eps < 0 else (0, 0, n) if eps > 0 else (0, n, 0)


def first_stage(blocks, blk, P, eps, inertia=False, positive_definite=False, strategy=None):
    """Factor of ``Qxx_1`` in the range of the data (module docstring, "Stage 1")."""
    xp = array_module(blk.Dx)
    Zt = blocks.input
    _, sv, VT = xp.linalg.svd(Zt, full_matrices=False)
    tol = max(Zt.shape) * np.finfo(Zt.dtype).eps * float(sv[0]) if sv.size else 0.0
    r = int((sv > tol).sum())
    V = VT[:r].T                                           # (q, r)
    _, m, q = blk.Dx.shape
    T = dx_congruence(blk.Dx @ V, P)
    if blk.A is not None:
        E = Zt @ V
        T = T + block_diagonal(xp, xp.einsum("sk,si,sj->kij", blk.A.R, E, E))
    T[xp.arange(m * r), xp.arange(m * r)] += eps
    fT = sym_factor(T, inertia=inertia, positive_definite=positive_definite, strategy=strategy)
    n_perp = m * (q - r)
    rcond = fT.rcond
    if n_perp:
        rcond = min(rcond, abs(eps) / max(abs(eps), float(xp.abs(T).sum(axis=0).max())))
    counts = None
    if inertia:
        counts = tuple(a + b for a, b in zip(fT.inertia, _inertia_of_eps(n_perp, eps)))

    def solve(u):
        nr = u.shape[-1]
        uq = u.reshape(m, q, nr)
        c = xp.einsum("kjr,ja->kar", uq, V)                 # Q^T u
        x = xp.einsum("kar,ja->kjr", sym_solve(fT, c.reshape(m * r, nr)).reshape(m, r, nr), V)
        if n_perp:
            x = x + (uq - xp.einsum("kar,ja->kjr", c, V)) / eps
        return x.reshape(m * q, nr)

    return SymFactor("range", solve, counts, rcond)


def loss_stage(blk, eps, inertia=False, positive_definite=False, strategy=None):
    """Factor of ``Qxx_L = A_L + eps I`` by Woodbury (module docstring, "Loss stage")."""
    A = blk.A
    xp = array_module(A.Dblk)
    c, q, _ = A.Dblk.shape
    B = A.pi.shape[0]
    w, V = xp.linalg.eigh(A.Dblk + eps * xp.eye(q, dtype=A.Dblk.dtype))

    def D_solve(X):                                        # X (c, q, r)
        return V @ ((V.transpose(0, 2, 1) @ X) / w[:, :, None])

    U = loss_A_low_rank(A)                                 # (c, q, B)
    DinvU = D_solve(U)
    Cap = xp.eye(B, dtype=U.dtype) - xp.einsum("kjs,kjt->st", U, DinvU)
    fC = sym_factor(Cap, inertia=inertia, positive_definite=positive_definite,
                    strategy=strategy)
    absw = xp.abs(w)
    wmax = float(absw.max())
    rcond = min(float(absw.min()) / wmax if wmax > 0 else 0.0, fC.rcond)
    counts = None
    if inertia:
        In_D = eigenvalue_signs(w, q * np.finfo(w.dtype).eps * wmax)
        counts = tuple(a + b - d for a, b, d in zip(In_D, fC.inertia, (0, 0, B)))

    def solve(u):
        nr = u.shape[-1]
        X = D_solve(u.reshape(c, q, nr))
        corr = sym_solve(fC, xp.einsum("kjs,kjr->sr", U, X))
        return (X + xp.einsum("kjs,sr->kjr", DinvU, corr)).reshape(c * q, nr)

    return SymFactor("woodbury", solve, counts, rcond)
