"""A normwise bound on the rounding of the O(L) product H x (docs/math.md section 7.1,
eqs. (7.3h)-(7.3l)): the error committed at each stage is propagated to the output
through the exact remaining chain of Jacobians, enclosed per sample in an ellipsoid
``{Q^{1/2} w : ||w|| <= 1}`` that the chain maps to an ellipsoid, so that its radius
grows like the products of the Jacobians themselves, not like those of their absolute
values (which the componentwise bound of :func:`tallskinny_np.products.hvp_rounding`
follows).
"""
import numpy as np

from .backend import array_module
from .blocks import LossLayer
from .products import (A_mv, C_mv, CT_mv, Dx_mv, Dz_mv, S_mv, _absolute, _backward_layer,
                       _loss_action_bound, _stage_depths, gamma, smallest_subnormal)

U64 = float(np.finfo(np.float64).eps / 2)
TINY = 1e-150
"""Every local radius (in units of u) is at least this: the ellipsoids' entries are its
squares, and what underflows in them (at most ``(2n + 8) 2^-1074`` an entry and step)
is below ``TINY^2``."""


def hvp_rounding_normwise(blocks, xs, u=None):
    """Per column, ``(p, e)`` with ``||fl(H x)||_2 <= p`` and ``||fl(H x) - H x||_2 <= e``
    for the product of :func:`tallskinny_np.products.hvp` computed by either of its
    evaluation orders in an arithmetic of unit roundoff u (by default that of the dtype of
    ``xs``), H that of the stored blocks (docs/math.md eqs. (7.3h)-(7.3l)).

    One product in the working precision gives the intermediates ``v'``; each stage's
    local rounding is at most ``gamma_k (|f|(|v'|) + |f|(|v - v'|)) + k eta`` (eq.
    (7.3h)), and the errors of the forward intermediates ``y_l`` and of the backward
    ``z_l`` are enclosed per sample in ellipsoids carried through the exact ``Dz_l`` and
    ``Dz_l^T`` (eqs. (7.3i), (7.3j)); the outputs' errors follow by norms (eq. (7.3k)).
    With u below that of the working precision (double words), the distance of ``v'``
    to the exact intermediates is that of a first sweep at the working precision's u.
    Cost: one product, one sweep over the blocks' absolute values and, per sample,
    layer and column, four ``n x n`` matrix products (twice that with u given below
    the working precision's). Returns two float64 arrays of shape ``(r,)``."""
    working = float(np.finfo(xs[0].dtype).eps) / 2
    u = working if u is None else u
    # a bound beyond float64's range overflows to inf (or nan, which certifies nothing)
    with np.errstate(over="ignore", invalid="ignore"):
        own = None if u >= working else _sweeps(blocks, xs, working, None)[2]
        p, e, _ = _sweeps(blocks, xs, u, own)
    return np.where(np.isnan(p), np.inf, p), np.where(np.isnan(e), np.inf, e)


def _sweeps(blocks, xs, u, own):
    """:func:`hvp_rounding_normwise`'s sweeps at u: ``(p, e, radii)``, radii the
    per-layer radii of the ellipsoids of y's and z's errors (absolute), ``own`` those of
    the working precision's evaluation ``v'`` (None: u is its)."""
    xp = array_module(xs[0])
    dtype = xs[0].dtype
    eta = smallest_subnormal(dtype if u >= float(np.finfo(dtype).eps) / 2 else np.float64)
    layers = blocks.layers
    L = len(layers)
    x64 = [x.astype(np.float64) for x in xs]
    ax = [xp.abs(x) for x in x64]
    ry, rz = [None] * L, [None] * L       # radii in units of u: y_l's, z_l's

    def mine(radii, l):           # v''s distance to the exact v, in units of u
        return radii[l] if own is None else own[0 if radii is ry else 1][l] / u

    # the forward sweep: y' in the working precision, y's error ellipsoids through Dz_l
    ys, Q = [], None
    for l, blk in enumerate(layers[:-1]):
        a = _absolute(xp, blk)
        k = _stage_depths(blk)[0]
        y = Dx_mv(blk, xs[l])
        w = Dx_mv(a, ax[l])
        spread = 0.0
        if l > 0:
            y = y + Dz_mv(blk, ys[-1])
            w = w + Dz_mv(a, xp.abs(ys[-1]).astype(np.float64))
            spread = _frobenius(a.Dz)[:, None] * (ry[l - 1] + mine(ry, l - 1))
        rho = _local(w, spread, k, u, eta)
        Q = _ellipsoid(None if l == 0 else _cast(blk.Dz), Q, rho, w.shape[1])
        ys.append(y)
        ry[l] = _radius(Q)
    # the loss layer: its output and z_{L-1}
    loss = layers[-1]
    a = _absolute(xp, loss)
    _, k_out, k_z = _stage_depths(loss)
    ay = xp.abs(ys[-1]).astype(np.float64)
    C_t = _cross_norms(a, _loss_action_bound)[:, None]
    S_t = _frobenius(a.S)[:, None]
    out, out_e = [None] * L, [None] * L
    out[-1] = A_mv(loss, xs[-1]) + C_mv(loss, ys[-1])
    z = CT_mv(loss, xs[-1]) + S_mv(loss, ys[-1])
    propagated = (C_t * ry[-2]).sum(axis=0)
    spread = propagated + (C_t * mine(ry, L - 2)).sum(axis=0)
    w_out = A_mv(a, ax[-1], _loss_action_bound) + C_mv(a, ay, _loss_action_bound)
    out_e[-1] = propagated + _local_norm(w_out, spread, k_out, u, eta)
    w_z = CT_mv(a, ax[-1], _loss_action_bound) + S_mv(a, ay)
    ball = S_t * ry[-2]
    rho = ball + _local(w_z, ball + S_t * mine(ry, L - 2), k_z, u, eta)
    Q = _ellipsoid(None, None, rho, w_z.shape[1])
    # the hidden layers, backward: z's error ellipsoids through Dz_l^T
    for l in range(L - 2, -1, -1):
        blk = layers[l]
        a = _absolute(xp, blk)
        _, k_out, k_z = _stage_depths(blk)
        rz[l] = _radius(Q)
        y_prev = ys[l - 1] if l > 0 else None
        ay = None if y_prev is None else xp.abs(y_prev).astype(np.float64)
        out[l], z_next = _backward_layer(blk, xs[l], y_prev, z)
        w_out, w_z = _backward_layer(a, ax[l], ay, xp.abs(z).astype(np.float64))
        # ||Dx_{l,t}||_2 = max_i ||Dx[t, i, :]||, rounded up
        Dx_t = (xp.sqrt((a.Dx * a.Dx).sum(axis=2).max(axis=1))[:, None]
                * (1 + gamma(a.Dx.shape[2] + 2, U64)))
        propagated = (Dx_t * rz[l]).sum(axis=0)
        spread = propagated + (Dx_t * mine(rz, l)).sum(axis=0)
        if y_prev is not None and a.R is not None:
            C_t = _cross_norms(a)[:, None]
            propagated = propagated + (C_t * ry[l - 1]).sum(axis=0)
            spread = spread + (C_t * (ry[l - 1] + mine(ry, l - 1))).sum(axis=0)
        out_e[l] = propagated + _local_norm(w_out, spread, k_out, u, eta)
        if y_prev is None:
            break
        S_t = 0.0 if a.S is None else _frobenius(a.S)[:, None]
        ball = S_t * ry[l - 1]
        spread = (S_t * (ry[l - 1] + mine(ry, l - 1))
                  + _frobenius(a.Dz)[:, None] * (rz[l] + mine(rz, l)))
        rho = ball + _local(w_z, spread, k_z, u, eta)
        Q = _ellipsoid(_cast(blk.Dz).transpose(0, 2, 1), Q, rho, w_z.shape[1])
        z = z_next
    # the rounding of these sums (over B samples, L layers) and squares
    h = 1 + gamma(2 * (L + blocks.layers[0].Dx.shape[0]) + 16, U64)
    e = h * xp.sqrt(sum(v * v for v in out_e)) * u
    p = h * xp.sqrt(sum((o.astype(np.float64) ** 2).reshape(-1, o.shape[-1]).sum(axis=0)
                        for o in out)) + 2 * e
    absolute = lambda radii: [None if r is None else r * u for r in radii]
    return _to_numpy(p), _to_numpy(e), (absolute(ry), absolute(rz))


def _cast(a):
    return a.astype(np.float64, copy=False)


def _to_numpy(a):
    return np.asarray(a.get() if hasattr(a, "get") else a, dtype=np.float64)


def _frobenius(D):
    """Per sample ``||D_s||_F`` of a stack ``(B, m, n)`` (an upper bound on
    ``||D_s||_2`` and on ``|| |D_s| ||_2``), float64 ``(B,)``, rounded up."""
    xp = array_module(D)
    return xp.sqrt((D * D).sum(axis=(1, 2))) * (1 + gamma(D.shape[1] * D.shape[2] + 2, U64))


def _cross_norms(a, action=None):
    """Per sample t, ``||C_{l,t}||_F`` rounded up, from C's factors on absolute values
    (eqs. (2.13), (2.17)): ``C_{l,t} = F_t W (x) zt_t + g_t (x) [I 0]``, so its norm is
    at most ``|| |F_t| |W| ||_F ||zt_t|| + sqrt(n) ||g_t||`` (``F_t = diag(R[t])`` for a
    hidden layer, the bound on ``|Lambda_t|`` for the loss layer); ``(B,)``."""
    xp = array_module(a.W)
    B, n = a.Zt.shape[0], a.W.shape[1]
    if isinstance(a, LossLayer):
        FW = action(a, xp.broadcast_to(a.W, (B,) + a.W.shape))       # (B, c, n)
        g = a.G
    else:
        FW = a.R[:, :, None] * a.W[None]                              # (B, m, n)
        g = a.bS1
    norm = xp.sqrt((FW * FW).sum(axis=(1, 2))) * xp.sqrt((a.Zt * a.Zt).sum(axis=1))
    if g is not None:
        norm = norm + np.sqrt(n) * xp.sqrt((g * g).sum(axis=1))
    return norm * (1 + gamma(FW.shape[1] * n + a.Zt.shape[1] + 8, U64))


def _local(w, spread, k, u, eta):
    """Per sample and column, the radius of a ball holding one stage's local rounding, in
    units of u (eq. (7.3h)): ``(gamma_k / u) ||w_s|| + gamma_k spread + k eta sqrt(m) / u``
    for ``w = |f|(|v'|)`` ``(B, m, r)`` and ``spread >= || |f|(|v - v'|) || / u``, rounded
    up (w's own sums and this combination in float64), and at least ``TINY``."""
    xp = array_module(w)
    m = w.shape[1]
    norms = xp.sqrt((w * w).sum(axis=1))
    h = 1 + gamma(k + m + 8, U64)
    return (h * ((gamma(k, u) / u) * norms + gamma(k, u) * spread + k * eta * np.sqrt(m) / u)
            + TINY)


def _local_norm(w, spread, k, u, eta):
    """:func:`_local` for a layer's whole output ``w`` (any shape with the columns last):
    ``(r,)``."""
    return _local(w.reshape(1, -1, w.shape[-1]), spread, k, u, eta)[0]


def _ellipsoid(D, Q, rho, m):
    """``Q'`` ``(B, r, m, m)``, positive semi-definite, with ``Ell(Q') ⊇ D_s Ell(Q_s) +
    ball(rho_s)`` for every sample s and column, ``Ell(Q) = {Q^{1/2} w : ||w|| <= 1}``
    (eqs. (7.3i), (7.3j)); D None: the ball alone. With ``M = fl(D Q D^T)``
    symmetrized, ``||M - D Q D^T||_2 <= t = gamma_{2n+2} || |D| d ||^2`` (``d =
    diag(Q)^{1/2}``: Q is positive semi-definite, so ``|Q| <= d d^T``), and with
    ``s = tr(M + t I)^{1/2}``, ``c = m^{1/2} rho`` the trace-optimal sum ``Q' = (1 + c / s)
    (M + t I) + (1 + s / c) rho^2 I``; the rounding of forming Q' goes on its diagonal."""
    xp = array_module(rho)
    eye = xp.eye(m)
    if D is None:
        return (rho * rho * (1 + 4 * U64))[:, :, None, None] * eye
    n = D.shape[-1]
    Db = D[:, None]                                            # (B, 1, m, n)
    M = Db @ Q @ Db.transpose(0, 1, 3, 2)
    M = (M + M.transpose(0, 1, 3, 2)) / 2
    d = xp.sqrt(xp.diagonal(Q, axis1=2, axis2=3))
    Dd = (xp.abs(Db) @ d[..., None])[..., 0]                   # (B, r, m)
    t = gamma(2 * n + 2, U64) * (Dd * Dd).sum(axis=-1) * (1 + gamma(n + m + 4, U64))
    s = xp.sqrt(xp.trace(M, axis1=2, axis2=3) + m * t)
    c = np.sqrt(m) * rho
    with np.errstate(divide="ignore", invalid="ignore"):
        to_M = xp.where(s > 0, 1 + c / s, 1.0) * (1 + 8 * U64)
        to_ball = xp.where(c > 0, 1 + s / c, 0.0) * (1 + 8 * U64)
    scaled = to_M[..., None, None] * M
    frob = xp.sqrt((scaled * scaled).sum(axis=(2, 3)))
    tau = (to_M * t + to_ball * rho * rho + 2 * U64 * frob) * (1 + 8 * U64)
    diag = xp.diagonal(scaled, axis1=2, axis2=3)
    return scaled + (tau[..., None] + 4 * U64 * xp.abs(diag))[..., None] * eye


def _radius(Q):
    """``max ||v||`` over ``Ell(Q)``, ``lambda_max(Q)^{1/2}``, from above: by the smaller
    of ``tr Q`` and Q's largest absolute row sum; ``(B, r)``, in Q's units."""
    xp = array_module(Q)
    m = Q.shape[-1]
    top = xp.minimum(xp.trace(Q, axis1=2, axis2=3), xp.abs(Q).sum(axis=3).max(axis=2))
    return xp.sqrt(top * (1 + gamma(m + 4, U64))) * (1 + 2 * U64)
