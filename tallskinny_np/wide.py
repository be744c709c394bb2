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
import numpy as np

from .backend import array_module
from .blocks import FirstLayer, GramA, block_diagonal, loss_A_low_rank
from .congruences import dx_congruence
from .symmetric import SymFactor, eigenvalue_signs, sym_factor, sym_solve


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


def range_stage(blocks, blk, P, eps, inertia=False, positive_definite=False, strategy=None):
    """Factor of ``Qxx`` in the range of the batch (module docstring, "Stage 1" and "Range
    of the batch"), for layer 1 or a hidden layer."""
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
    fT = sym_factor(T, inertia=inertia, positive_definite=positive_definite, strategy=strategy)
    n_perp = m * (q - r)
    rcond = fT.rcond
    if n_perp:                                             # eps = 0: Qxx_1 is singular
        rcond = min(rcond, abs(eps) / max(abs(eps), float(xp.abs(T).sum(axis=0).max()))
                    if eps else 0.0)
    counts = None
    if inertia:
        counts = tuple(a + b for a, b in zip(fT.inertia, _inertia_of_eps(n_perp, eps)))

    def solve(u):                      # batched products (matmul), one per output unit
        nr = u.shape[-1]
        uq = u.reshape(m, q, nr)
        c = xp.tensordot(V, uq, axes=(0, 1)).transpose(1, 0, 2)   # Q^T u, (m, r, nr)
        x = V @ sym_solve(fT, c.reshape(m * r, nr)).reshape(m, r, nr)
        if n_perp:
            x = x + (uq - V @ c) / eps
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
