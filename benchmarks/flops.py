"""Analytic operation counts and memory estimates of what the suites measure (docs/math.md
section 5, with the constants of the operations the code performs).

How we count: a multiply-add is 2 flops, a product with a structured block costs 2 flops
per stored nonzero of that block per column of the other factor (structural zeros are free:
Dx is Kronecker-structured, Dz and S are block-diagonal over samples, A over output units;
docs/math.md section 2), a dense LU of order N costs 2N^3/3, a Cholesky or LDL^T N^3/3, and
an LU solve with r right-hand sides 2 N^2 r. Elementwise work (activations, scaling,
additions of blocks) and data movement are not counted. GFLOP/s derived from these counts
is therefore *useful* work per second: an implementation that multiplies by dense zeros
does more arithmetic than it is credited with.

Each layer is described by a :class:`Layer`; the loss layer has one "activation" (the scalar
loss, ``a_L = 1``), so its Dx and Dz are dense rows and its A is dense.
"""
from collections import namedtuple

from tallskinny_np.loss_stage import loss_stage_flops
from tallskinny_np.riccati import loss_pays, range_pays, stage_flops

Layer = namedtuple("Layer", "p a a_in n_in m q B loss")
Layer.__doc__ = """Sizes of one layer: ``p`` parameters, ``a`` output activations (1 for the
loss layer), ``a_in`` input activations (0 for layer 1, whose input is the data and whose
Dz, S, C are never used), ``n_in`` inputs per sample, ``m`` outputs per sample, ``q``
columns of ``Zt`` (``n_in``, or ``n_in + 1`` with bias), ``B`` samples."""

FLOAT64 = 8


def layers(net, batch):
    """The :class:`Layer` sizes of ``net`` for a batch of ``batch`` samples."""
    out = []
    for l, (n, m) in enumerate(zip(net.sizes[:-1], net.sizes[1:])):
        loss = l == net.n_layers - 1
        q = n + int(net.bias)
        out.append(Layer(p=m * q, a=1 if loss else batch * m, a_in=0 if l == 0 else batch * n,
                         n_in=n, m=m, q=q, B=batch, loss=loss))
    return out


def nnz(ly):
    """Stored nonzeros of the layer's blocks ``(Dx, Dz, A, S, C)`` (docs/math.md section 2)."""
    first = ly.a_in == 0
    Dx = ly.p if ly.loss else ly.B * ly.p
    Dz = 0 if first else (ly.a_in if ly.loss else ly.a * ly.n_in)
    A = ly.p * ly.p if ly.loss else ly.m * ly.q * ly.q
    S = 0 if first else ly.B * ly.n_in * ly.n_in
    C = ly.p * ly.a_in
    return Dx, Dz, A, S, C


def blocks_bytes(lys):
    """Memory of the stored compact blocks (:class:`tallskinny_np.blocks.Blocks`)."""
    return FLOAT64 * sum(sum(nnz(ly)) for ly in lys)


def setup_flops(lys):
    """Forward pass, backprop and the blocks of docs/math.md section 2 (``Curvature(...)``).

    Every layer: ``Z W^T`` (2 B m n); every layer but the first: the backprop product
    through its W (2 B m n). Hidden layers: Dx (B m q products), A (2 B m q^2), and but
    for layer 1 Dz (B m n), S (2 B m n^2), C (two products per entry, 2 B m n q). Loss
    layer: Dx = G^T Zt (2 B m q), Dz = G W (2 B m n), A (2 B m^2 q^2), S (``W^T Lambda_s
    W``, 2 B (m^2 n + m n^2)), C (``Lambda_t W`` then times Zt, 2 B m^2 n + B m n q).
    """
    total = 0
    for ly in lys:
        B, m, n, q = ly.B, ly.m, ly.n_in, ly.q
        total += 2 * B * m * n + (2 * B * m * n if ly.a_in else 0)
        if ly.loss:
            total += (2 * B * m * q + 2 * B * m * n + 2 * B * m * m * q * q
                      + 2 * B * (m * m * n + m * n * n) + 2 * B * m * m * n + B * m * n * q)
        else:
            total += B * m * q + 2 * B * m * q * q
            if ly.a_in:
                total += B * m * n + 2 * B * m * n * n + 2 * B * m * n * q
    return total


def hvp_flops(lys, r=1):
    """``H v`` for r vectors (docs/math.md section 3.4,
    :func:`tallskinny_np.products.hvp`): the forward pass ``Dx x + Dz y`` and the backward
    pass ``Dx^T z``, ``Dz^T z`` through the hidden layers, and ``A x``, ``C y``, ``C^T x``,
    ``S y`` in every layer."""
    total = 0
    for ly in lys:
        Dx, Dz, A, S, C = nnz(ly)
        total += 2 * A + 4 * C + 2 * S + (0 if ly.loss else 4 * (Dx + Dz))
    return total * r


def ldu_sizes(lys):
    """Pivot-block orders ``N_l = p_l + 2 a_l`` of ``K' = Pi K Pi^T`` (docs/math.md
    section 4.2)."""
    return [ly.p + 2 * ly.a for ly in lys]


def ldu_flops(lys, r=1):
    """:mod:`tallskinny_np.ldu` as written: per layer the dense Schur update
    ``Lo_l Sigma_{l-1}^{-1} Up_{l-1}`` (2 N_l N_{l-1} N_l), the LU of ``Sigma_l``
    (2 N_l^3 / 3), ``F_l = Sigma_l^{-1} Up_l`` (2 N_l^2 N_{l+1}); the substitutions cost
    ``2 r (N_l^2 + N_l N_{l-1} + N_l N_{l+1})``. Time O(L (p + 2a)^3), docs/math.md
    section 5."""
    N = ldu_sizes(lys)
    total = 0
    for l, n in enumerate(N):
        prev = N[l - 1] if l > 0 else 0
        nxt = N[l + 1] if l + 1 < len(N) else 0
        total += 2 * n * prev * n + 2 * n ** 3 // 3 + 2 * n * n * nxt
        total += 2 * r * (n * n + n * prev + n * nxt)
    return total


def ldu_bytes(lys):
    """Memory of :func:`tallskinny_np.ldu.ldu_factor`: the dense blocks of every layer, and
    per layer the LU of ``Sigma_l``, ``Lo_l`` and ``F_l``. O(L (p + 2a)^2)."""
    N = ldu_sizes(lys)
    total = 0
    for l, (ly, n) in enumerate(zip(lys, N)):
        prev = N[l - 1] if l > 0 else 0
        nxt = N[l + 1] if l + 1 < len(N) else 0
        dense = ly.a * ly.p + ly.a * ly.a_in + ly.p * ly.p + ly.a_in ** 2 + ly.p * ly.a_in
        total += n * n + n * prev + n * nxt + dense
    return FLOAT64 * total


def riccati_factor_flops(lys):
    """:func:`tallskinny_np.riccati.riccati_factor` on NumPy in float64, the stages it
    picks by :func:`tallskinny_np.riccati.stage_flops` (docs/math.md section 4.6), layer L
    down to 1, with ``P_l`` (a_l x a_l) dense and ``P_L = 0``; symmetric results count one
    triangle. A compiled dense stage::

        Dx^T P, Qxx = .. + (Dx^T P) Dx   2 a nnz(Dx), nnz(Dx) p
        Qxy^T = C^T + Dz^T (Dx^T P)^T    2 m p a_in
        Dz^T P, Qyy = S + (Dz^T P) Dz    a nnz(Dz), nnz(Dz) a_in (Dz^T P's block lower
                                         triangle, which Qyy's lower triangle reads)
        Qxx = G S G^T                    p^3 / 3 (Cholesky or Bunch-Kaufman)
        W = G^{-1} Qxy                   p^2 a_in (one triangular solve)
        P_{l-1} = Qyy - W^T S W          p a_in^2 (one triangle)

    (layer 1 has only the first line and the factor); a range stage (batch below the
    fan-in) the range count of :func:`tallskinny_np.riccati.stage_flops` (the basis, T,
    its factor, ``Y = Q^T Qxy`` from ``Dx V``, ``W = G^{-1} Y`` and ``W^T S W``, one
    triangle) plus the shared ``Dz`` terms. The loss layer
    (``P_L = 0``, no congruences) runs the array-module stage as written: LU
    ``2 p^3 / 3``, ``K = -Qxx^{-1} Qxy`` ``2 p^2 a_in`` and ``Qxy^T K`` ``2 a_in^2 p``, or
    the Hessian's structured loss stage where :func:`tallskinny_np.riccati.riccati_factor`
    picks it.
    """
    total = 0
    for ly in lys:
        Dx, Dz, _, _, _ = nnz(ly)
        p, a, a_in = ly.p, ly.a, ly.a_in
        if ly.loss:
            if loss_pays(ly.m, ly.q, ly.B, ly.n_in, True):
                total += loss_stage_flops(ly.m, ly.q, ly.B, ly.n_in, True)[1]
            else:
                total += 2 * p ** 3 // 3 + 2 * p * p * a_in + 2 * a_in * a_in * p
            continue
        shared = (a * Dz + Dz * a_in) if a_in else 0
        if range_pays(ly.B, ly.m, ly.q, a_in):
            total += stage_flops(ly.B, ly.m, ly.q, a_in)[1] + shared
        else:
            total += (2 * a * Dx + Dx * p + p ** 3 // 3 + p * p * a_in + p * a_in * a_in
                      + 2 * ly.m * p * a_in + shared)
    return total


def riccati_flops(lys, r=1):
    """:mod:`tallskinny_np.riccati`: :func:`riccati_factor_flops` and per right-hand side
    ``2 (nnz(Dx) + nnz(Dz)) + p^2 + 2 p a_in`` backward (``qx``, ``u = S G^{-1} qx``,
    ``p_{l-1} = Dz^T p_l - W^T u``) and ``2 p a_in + p^2 + 2 (nnz(Dx) + nnz(Dz))``
    forward (``x_l = -G^{-T} (S W y + u)``, ``y_l``). The CuPy path's eigendecomposition
    does more work than this credits."""
    total = riccati_factor_flops(lys)
    for ly in lys:
        Dx, Dz, _, _, _ = nnz(ly)
        total += r * (4 * (Dx + Dz) + 2 * ly.p * ly.p + 4 * ly.p * ly.a_in)
    return total


def riccati_bytes(lys):
    """What :func:`tallskinny_np.riccati.riccati_factor` keeps for the forward sweep: per
    layer the factor of Qxx (p x p) and ``W`` (p x a_in); plus one ``P_l`` with its
    congruence intermediates. O(L (p a + p^2)), docs/math.md section 5."""
    return FLOAT64 * (sum(ly.p * ly.p + ly.p * ly.a_in for ly in lys)
                      + 4 * max(max(ly.a, ly.p) ** 2 for ly in lys))


def banded_flops(lys, kl, ku, r=1):
    """LU with partial pivoting of K' (order n = sum of ``N_l``) as a band matrix with kl
    sub- and ku super-diagonals (LAPACK gbtrf: the upper band grows to kl + ku), then the
    solve (gbtrs). :mod:`tallskinny_np.banded`."""
    n = sum(ldu_sizes(lys))
    return 2 * n * kl * (kl + ku) + 2 * r * n * (2 * kl + ku)


def band_bytes(lys, kl, ku):
    """LAPACK band storage of the LU factors of K': ``2 kl + ku + 1`` rows of length n."""
    return FLOAT64 * sum(ldu_sizes(lys)) * (2 * kl + ku + 1)


def banded_bytes(lys, kl, ku):
    """Memory of :func:`tallskinny_np.banded.banded_factor`: the band storage, plus the
    dense blocks and the dense pivot rows ``(D_l, Lo_l, Up_l)`` of every layer, which it
    holds all at once while filling the band (the sizes of :func:`ldu_bytes`)."""
    return band_bytes(lys, kl, ku) + ldu_bytes(lys)


def dense_flops(lys, r=1):
    """The dense baseline: H column by column with ``H v`` (N products), LU (2N^3/3) and the
    solve (2 N^2 r). O((L p)^3), docs/math.md section 5."""
    N = sum(ly.p for ly in lys)
    return hvp_flops(lys, N) + 2 * N ** 3 // 3 + 2 * N * N * r


def dense_bytes(lys):
    """H (shifted in place) and LAPACK's LU copy inside ``numpy.linalg.solve``."""
    N = sum(ly.p for ly in lys)
    return 2 * FLOAT64 * N * N
