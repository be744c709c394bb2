"""The softmax cross-entropy loss layer's Riccati stage by its structure (docs/math.md
section 4.9).

The loss layer is the sweep's first stage (``P_L = 0``), so ``Qxx_L = A_L + eps I``,
``Qxy_L = C_L`` and ``Qyy_L = S_L``. With c classes, ``q`` inputs per class and batch B, the
dense stage would factor a ``c q``-square matrix and keep the ``c q x B n`` gain: at 1000
classes and width 128 that is 129,000-square and 4.2 GB. Here neither is formed, nor any
``Lambda_s`` (``c x c``):

- ``A_L`` lives in the span of the batch's input rows: with V (``q x r``) an orthonormal
  basis of that span (:func:`tallskinny_np.wide.range_basis`) and ``w_s = V^T zt_s``,
  ``Qxx_L = Q T Q^T + eps (I - Q Q^T)`` with ``Q = I_c (x) V`` and
  ``T = D - U U^T``: D block-diagonal over classes, ``D_k = W_z^T diag(pi_k) W_z / B +
  eps I`` (``r x r``), and ``U[(k, .), s] = pi_sk w_s / sqrt(B)`` of rank B (eq. (4.22)).
  T is inverted by Woodbury through the ``B x B`` capacitance ``Cap = I - U^T D^{-1} U``
  (eq. (4.23)), and ``In(Qxx_L) = In(D) + In(Cap) - (0, 0, B) + In(eps I_{c (q - r)})``
  (eq. (4.24)).
- ``P_{L-1} = S_L - C_L^T Qxx_L^{-1} C_L`` comes from per-class sums that are Kronecker
  products in the samples and the input units (eq. (4.26)): ``c B^2 n^2`` flops for the
  part that is quadratic in the centred rows ``a_tk = W_k - W^T pi_t``, ``O(c B^2 n r)``
  for the rest.
- The gain ``K_L y = -Qxx_L^{-1} (C_L y)`` and ``Qxy_L^T k = C_L^T k`` are applied from C's
  factors (:func:`tallskinny_np.products.C_mv`, ``CT_mv``; eq. (2.13a)), ``O(c B (n + q))``
  per column.

All of it is array-module code (NumPy or CuPy); on NumPy in float64 the last rank-B update
of ``P_{L-1}`` goes through the compiled :func:`tallskinny_np.stage.schur_update`.
"""
import functools
from typing import NamedTuple

import numpy as np

from . import stage
from .backend import array_module
from .blocks import centred_rows, gram_blocks
from .products import C_mv, CT_mv
from .symmetric import sym_factor
from .tolerance import eigenvalue_signs, zero_tolerance
from .wide import outside_range, range_basis


class LossFactor(NamedTuple):
    """The factored ``Qxx_L = Q T Q^T + eps (I - Q Q^T)`` of :func:`loss_stage`, with
    ``T^{-1} = D^{-1} + D^{-1} U Cap^{-1} U^T D^{-1}`` (module docstring), its ``inertia``
    and ``rcond``; ``Hm[k, s] = D_k^{-1} w_s`` and the class weights ``Phi`` are the
    per-class pieces :func:`loss_update` uses."""
    V: object                 # (q, r): orthonormal basis of the batch's input rows
    Wz: object                # (B, r): the rows w_s = V^T zt_s
    Dinv: object              # (c, r, r): D_k^{-1}
    DinvU: object             # (c, r, B): D^{-1} U, class by class
    Hm: object                # (c, B, r)
    Phi: object               # (c, B, B): the class weights of eq. (4.26)
    fC: object                # the factor of Cap (B x B), from sym_factor
    eps: float
    inertia: tuple
    rcond: float

    def solve(self, u):
        """``Qxx_L^{-1} u`` for u ``(c q, nr)`` (eq. (4.24)): ``O(c (q r + r^2 + r B))``
        per column."""
        V = self.V
        c, r, B = self.DinvU.shape
        q, nr = V.shape[0], u.shape[-1]
        uq = u.reshape(c, q, nr)
        uR = V.T @ uq                                            # (c, r, nr)
        corr = self.fC.solve(self.DinvU.reshape(c * r, B).T @ uR.reshape(c * r, nr))
        x = V @ (self.Dinv @ uR + self.DinvU @ corr)
        if r < q:
            x += (uq - V @ uR) / self.eps
        return x.reshape(c * q, nr)


def loss_stage(blk, eps, positive_definite=False, strategy=None):
    """The :class:`LossFactor` of ``Qxx_L = A_L + eps I`` for the loss layer's record
    ``blk`` (module docstring; docs/math.md eqs. (4.22)-(4.24)). ``positive_definite``
    and ``strategy`` go to the factorization of the capacitance
    (:func:`tallskinny_np.symmetric.sym_factor`)."""
    xp = array_module(blk.pi)
    pi, B = blk.pi, blk.pi.shape[0]
    V = range_basis(blk.Zt)
    Wz = blk.Zt @ V
    c, r = pi.shape[1], V.shape[1]
    Dk = gram_blocks(pi / B, Wz)                                 # (c, r, r)
    idx = xp.arange(r)
    Dk[:, idx, idx] += eps
    w, E = xp.linalg.eigh(Dk)
    Dinv = (E / w[:, None, :]) @ E.transpose(0, 2, 1)
    Hm = Wz @ Dinv                                               # (c, B, r)
    DinvU = Hm.transpose(0, 2, 1) * (pi.T[:, None, :] / B ** 0.5)
    Phi = class_weights(pi, Wz, Hm, eps)
    Cap = B * Phi.sum(axis=0)                                    # eq. (4.23a)
    fC = sym_factor(Cap, positive_definite=positive_definite, strategy=strategy)
    absw = xp.abs(w)
    wmax = float(absw.max())
    eps_mach = np.finfo(w.dtype).eps
    # T (x) = eps x for x = 1_c (x) v: Lambda_s 1 = 0, so |eps| / ||T|| bounds rcond too
    rcond = min(float(absw.min()) / wmax if wmax > 0 else 0.0, fC.rcond,
                abs(eps) / max(abs(eps), wmax) if wmax > 0 else 0.0)
    In_D = eigenvalue_signs(w, zero_tolerance(r, wmax, eps_mach))
    n_perp = c * (V.shape[0] - r)
    In_perp = (n_perp, 0, 0) if eps < 0 else (0, 0, n_perp) if eps > 0 else (0, n_perp, 0)
    counts = tuple(a + b - d + e for a, b, d, e in zip(In_D, fC.inertia, (0, 0, B), In_perp))
    return LossFactor(V, Wz, Dinv, DinvU, Hm, Phi, fC, float(eps), counts, rcond)


def class_weights(pi, Wz, Hm, eps):
    """``Phi_k = diag(pi_k) / B - diag(pi_k) H_k diag(pi_k) / B^2`` ``(c, B, B)`` of
    eq. (4.26), ``H_k = W_z D_k^{-1} W_z^T`` from ``Hm[k] = W_z D_k^{-1}``; for ``eps != 0`` as ``(eps / B) diag(pi_k)^{1/2} N_k^{-1}
    diag(pi_k)^{1/2}`` with ``N_k = diag(pi_k)^{1/2} W_z W_z^T diag(pi_k)^{1/2} / B +
    eps I_B`` (eq. (4.23a)): the difference cancels to ``O(eps)`` where the batch fits the
    logits (``r = B``, small eps), the product does not."""
    xp = array_module(pi)
    B = pi.shape[0]
    idx = xp.arange(B)
    if eps == 0:
        Phi = -(pi.T[:, :, None] * pi.T[:, None, :]) * (Hm @ Wz.T) / B ** 2
        Phi[:, idx, idx] += pi.T / B
        return Phi
    sq = xp.sqrt(pi.T)                                           # (c, B)
    N = sq[:, :, None] * (Wz @ Wz.T)[None] * sq[:, None, :] / B
    N[:, idx, idx] += eps
    return (eps / B) * sq[:, :, None] * xp.linalg.inv(N) * sq[:, None, :]


def loss_update(f, blk, compiled):
    """``P_{L-1} = S_L - C_L^T Qxx_L^{-1} C_L`` (``B n x B n``, C-order, exactly
    symmetric) of the structured loss stage f (docs/math.md eq. (4.26)), never forming C_L
    or its gain. ``compiled`` (NumPy in float64) subtracts the capacitance's rank-B term
    by :func:`tallskinny_np.stage.schur_update` on one triangle."""
    xp = array_module(blk.pi)
    pi, G = blk.pi, blk.G
    B, c = pi.shape
    n, r = blk.W.shape[1], f.V.shape[1]
    a = centred_rows(pi, blk.W).transpose(1, 0, 2)               # (c, B, n): a[k, t]
    # the part quadratic in the centred rows, S_L included, on the blocks t' >= t
    Phi = f.Phi
    P = xp.zeros((B, n, B, n), dtype=pi.dtype)
    for t in range(B):
        scaled = (Phi[:, t, t:, None] * a[:, t:]).reshape(c, -1)
        P[t, :, t:] = (a[:, t].T @ scaled).reshape(n, B - t, n)
    # R[s, (t, m)] = (U^T D^{-1} Y)[s, (t, m)], Y = Q^T C_L; its first term is
    # -sqrt(B) sum_k Phi_k[s, t] a_tk[m], as sum_k pi_tk a_tk = 0 (eq. (4.26a))
    R = -B ** 0.5 * (Phi.transpose(2, 1, 0) @ a.transpose(1, 0, 2)).transpose(1, 0, 2)
    if G is not None:                                            # the delta term of C_L
        Vn = f.V[:n]
        Z = xp.empty((B, B, n * r), dtype=pi.dtype)
        for t in range(B):                       # Z[t, t'] = sum_k pi_tk G_t'k a_kt h_kt^T / B
            ah = (a[:, t, :, None] * f.Hm[:, t, None, :]).reshape(c, n * r)
            Z[t] = (G * (pi[t] / B)) @ ah
        X22 = ((G[:, None, :] * G[None]).reshape(B * B, c) @ f.Dinv.reshape(c, r * r))
        Z = Z.reshape(B, B, n, r) + 0.5 * (Vn @ X22.reshape(B, B, r, r))
        ZV = Z @ Vn.T                                            # (t, t', m, m')
        P -= ZV.transpose(0, 2, 1, 3) + ZV.transpose(1, 3, 0, 2)
        R += ((pi[:, None, :] * G[None]) @ f.Hm.transpose(1, 0, 2)) @ Vn.T / B ** 0.5
    P = P.reshape(B * n, B * n)
    outside_range(G, f.V, f.eps, P)                              # C_L outside range(Q)
    R = R.reshape(B, B * n)
    if compiled:
        # P's upper triangle, read as the F-order P^T's lower one, gets - R^T Cap^{-1} R
        # and is mirrored
        stage.schur_update(f.fC.arrays, R.T, P.T, stage.two_threads())
        return P
    P = xp.triu(P) + xp.triu(P, 1).T
    P -= R.T @ f.fC.solve(R)
    return 0.5 * (P + P.T)


class LossGain(NamedTuple):
    """The loss stage's gain ``K_L = -Qxx_L^{-1} C_L``, applied as ``K @ y`` (y of shape
    ``(B n, nr)``) from C's factors and the factor f, never formed."""
    factor: LossFactor
    blk: object

    def __matmul__(self, y):
        B, n = self.blk.Dz.shape
        Cy = C_mv(self.blk, y.reshape(B, n, -1))
        return -self.factor.solve(Cy.reshape(-1, y.shape[-1]))


class LossCross(NamedTuple):
    """``Qxy_L = C_L`` as an operator whose ``.T @ k`` is ``C_L^T k`` (k ``(c q, nr)``),
    from C's factors: what the backward substitution needs of it."""
    blk: object

    @property
    def T(self):
        return _Transposed(self.blk)


class _Transposed(NamedTuple):
    blk: object

    def __matmul__(self, k):
        c, q = self.blk.Dx.shape
        return CT_mv(self.blk, k.reshape(c, q, -1)).reshape(-1, k.shape[-1])


@functools.lru_cache
def loss_stage_flops(c, q, B, n, hessian):
    """``(dense, structured)``: the flops of the loss layer's dense stage (the ``c q``
    factor, ``W = G^{-1} C`` and the update of P) and of :func:`loss_stage` with
    :func:`loss_update` (docs/math.md section 4.9), for c classes, q inputs per class,
    batch B and n inputs per sample."""
    p, a, r = c * q, B * n, min(B, q)
    dense = p ** 3 / 3 + p * p * a + p * a * a
    structured = (6 * B * q * r + 2 * c * B * r * r + 12 * c * r ** 3 + 2 * c * B * r * r
                  + 3 * c * B * B * r + B ** 3 / 3 + 2 * c * B * n
                  + c * B * B * n * n + 2 * B * B * c * n + B * B * B * n * n)
    if hessian:
        structured += (2 * B * B * c * n * r + 2 * B * B * c * r * r + 2 * B * B * n * r * r
                       + 2 * B * B * n * n * r + 2 * B * B * c * r + 2 * B * B * r * n
                       + (B * n) ** 2 * (2 if r < q else 1))
    return dense, structured
