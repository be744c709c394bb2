"""Stage-wise (Riccati) solve of ``(H + eps I) x = g`` and the inertia of ``H + eps I``.

docs/math.md section 4, "Stage-wise (Riccati) elimination": the augmented system is the
optimality condition of a linear-quadratic control problem with state y (the batch's
activations) and control ``x_l`` per layer. Backward, with ``P_L = 0``::

    Qxx = A_l + eps I + Dx_l^T P_l Dx_l
    Qxy = C_l + Dx_l^T P_l Dz_l ,        Qyy = S_l + Dz_l^T P_l Dz_l
    K_l = -Qxx^{-1} Qxy ,                P_{l-1} = Qyy + Qxy^T K_l

then, per right-hand side, ``qx = -g_l + Dx_l^T p_l``, ``k_l = -Qxx^{-1} qx``,
``p_{l-1} = Dz_l^T p_l + Qxy^T k_l`` backward, and ``x_l = K_l y_{l-1} + k_l``,
``y_l = Dx_l x_l + Dz_l y_{l-1}`` forward (``y_0 = 0``).

The damping-dependent factorization (:func:`riccati_factor`) is separate from the
right-hand-side sweeps (:func:`riccati_solve`), so many right-hand sides share one
factorization. Per layer only a ``p x p`` block is factored, once, by a symmetric
factorization that also gives its inertia (:mod:`tallskinny_np.pivot`). On NumPy in
float64 the compiled stages of :mod:`tallskinny_np.stage` keep the factor and
``W = G^{-1} Qxy`` and apply ``K_l`` through them (a range stage of :mod:`tallskinny_np.wide`
its T's factor and ``W = G^{-1} Q^T Qxy``); the array-module stages keep the factor,
``Qxy`` and ``K_l`` (the range stages of :mod:`tallskinny_np.wide` ``K_l`` as an operator
through the factor of their T); memory O(L (p a + p^2)) either way. Stage 1 needs no gain
(``y_0 = 0``).

"Inertia (Sylvester)": ``n_neg(H + eps I) = sum_l n_neg(Qxx_l)``, likewise for zero and
positive eigenvalues, so the same backward sweep gives the inertia in O(L).

The stage protocol. Each layer's stage is one of three records, and the sweep dispatches on
its type:

- :class:`CompiledStage` (a hidden layer or a dense layer 1 on NumPy in float64,
  :func:`tallskinny_np.stage.factor_stage`): the factor of Qxx and ``W^T``; the
  substitutions are :func:`tallskinny_np.stage.backward` and
  :func:`tallskinny_np.stage.forward`, which apply the gain through W.
- :class:`RangeStage` (a hidden layer's range stage on NumPy in float64,
  :func:`tallskinny_np.wide.compiled_range_stage`): T's factor and the
  :class:`~tallskinny_np.wide.RangeRows`; the substitutions are
  :func:`tallskinny_np.wide.range_backward` and :func:`tallskinny_np.wide.range_forward`.
- :class:`GainStage` (every other stage: the array-module ones, the loss layer's, the
  array-module range stages): the factor of Qxx, ``Qxy`` applied as ``Qxy.T @ k`` and the
  gain ``K`` applied as ``K @ y``; the substitutions are the formulas above.

Every factor, whatever its kind, has ``solve(u)``, ``inertia`` (summed by the sweep) and
``rcond`` (checked by it). Which stage a layer takes is decided by flop counts
(:func:`stage_flops`, :func:`tallskinny_np.loss_stage.loss_stage_flops`).
"""
import functools
from typing import NamedTuple, Union

import numpy as np

from . import kernels, pivot, stage, tolerance
from .backend import array_module, sweep_threads
from .blocks import (FirstLayer, GramA, HiddenLayer, LossLayer, block_diagonal, dense_A,
                     dense_C, gram_blocks, layer_size)
from .congruences import add_sample_blocks, congruences
from .deprecation import renamed
from .errors import SingularPivotError, check_pivot
from .loss_stage import (LossCross, LossFactor, LossGain, loss_stage, loss_stage_flops,
                         loss_update)
from .modified import modified_pivot
from .products import DxT_mv, Dx_mv, DzT_mv, Dz_mv
from .symmetric import EighFactor, LapackFactor, sym_factor
from .wide import (RangeCross, RangeFactor, RangeGain, RangeRows, compiled_range_stage,
                   in_range, range_backward, range_forward, range_gain, range_stage)

MIN_SAVING = 1e6
"""A layer takes its structured stage only where that saves at least this many flops
(and a factor :data:`RANGE_SAVING` or :data:`LOSS_SAVING`): on tiny layers the saving
is nothing, and the unrefined solve through the range stage can lose accuracy (its
``(I - Q Q^T) u / eps`` term, measured on the test grid at damping 1e-3)."""
RANGE_SAVING = 2
LOSS_SAVING = 8
"""The structured loss stage must save more: on small layers the dense stage's
Bunch-Kaufman factor is the more accurate one (:mod:`tallskinny_np.loss_stage`)."""


Factor = Union[pivot.PivotFactor, LapackFactor, EighFactor, RangeFactor, LossFactor]
"""A factored pivot Qxx (module docstring, "The stage protocol")."""


class CompiledStage(NamedTuple):
    """A compiled stage (module docstring, "The stage protocol"): the gain
    ``K = -G^{-T} S W`` is applied through ``W = G^{-1} Qxy``."""
    factor: pivot.PivotFactor     # Qxx = G S G^T (p x p)
    Wt: np.ndarray | None         # W^T (a_{l-1} x p, F-order); None at layer 1 (y_0 = 0)


class RangeStage(NamedTuple):
    """A compiled range stage (module docstring, "The stage protocol")."""
    factor: RangeFactor           # Qxx = Q T Q^T + eps (I - Q Q^T)
    rows: RangeRows               # W^T of T's factor, Dx V and the part outside range(Q)


class GainStage(NamedTuple):
    """A stage that keeps ``Qxy`` and the gain ``K = -Qxx^{-1} Qxy`` (module docstring,
    "The stage protocol"); both None at layer 1 (``y_0 = 0``). Each is ``p x a_{l-1}``, as
    a NumPy or CuPy array or as an operator that applies it without forming it."""
    factor: Factor
    Qxy: Union[np.ndarray, RangeCross, LossCross, None]      # applied as Qxy.T @ k
    K: Union[np.ndarray, RangeGain, LossGain, "SchurGain", None]  # applied as K @ y


Stage = Union[CompiledStage, RangeStage, GainStage]


class Riccati(NamedTuple):
    """The factored sweep of :func:`riccati_factor`."""
    layers: list                  # the derivative blocks' layer records
    stages: list[Stage]           # one per layer
    inertia: tuple | None         # (n_neg, n_zero, n_pos) of H + eps I, if counted
    singular: int | None          # the 1-based layer of the first pivot singular to
    #                               working precision; None: every pivot is sound
    modification: list | None = None  # the modified sweep's blocks E_l (p_l x p_l)


@renamed(eps="damping")
@sweep_threads()
def riccati_factor(blocks, damping, inertia=False, modify=None, *, _strategy=None,
                   _structured=None):
    """The backward Riccati sweep for ``H + eps I``, ``eps = damping`` (which may be
    negative: a shift).

    Without ``inertia`` (to solve), a Qxx that is singular to working precision raises
    :class:`SingularPivotError` naming its layer. With ``inertia=True`` each Qxx's inertia
    is counted and summed and the sweep goes on past near-zero pivots (counted as zero
    eigenvalues); past such a pivot :func:`riccati_solve` refuses the factors unless told
    ``past_singular``.

    On NumPy in float64 the hidden layers (and a dense layer 1) run the compiled stages of
    :mod:`tallskinny_np.stage`, and the other stages form their pivots and updates of P by
    its compiled kernels (:func:`_schur_stage`, :func:`tallskinny_np.loss_stage.loss_update`);
    otherwise (CuPy, float32) the array-module stages. The structured stages
    (:mod:`tallskinny_np.wide`, :mod:`tallskinny_np.loss_stage`) are taken by flop count
    (:func:`_use_structured`: the range of the batch at layer 1 and at the hidden layers
    where the batch is smaller than the layer's fan-in, the loss layer by its structure,
    each where it saves enough). The tests reach the other paths through two private
    keywords: ``_strategy`` (``"lapack"`` or ``"eigh"``, the array-module stages with that
    factorization of :func:`tallskinny_np.symmetric.sym_factor`) and ``_structured``
    (True: the structured stages always, False: never).

    ``modify=delta`` (> 0) runs the modified sweep of docs/math.md section 8.3: each pivot
    ``Qxx_l``, as soon as it is formed, is replaced by the positive definite
    ``V max(|Lambda|, delta I) V^T`` (:func:`tallskinny_np.modified.modified_pivot`) and the
    sweep goes on with it, so that the factors are those of ``H + eps I + blockdiag(E_l)``
    (eq. (8.10)), with the blocks ``E_l`` in ``modification``. It runs the dense
    array-module stages, which form each pivot whole.

    Parameters
    ----------
    blocks : tallskinny_np.blocks.Blocks
        The derivative blocks (``Curvature.blocks``).
    damping : float
        eps of ``H + eps I`` (the keyword ``eps`` is deprecated).
    inertia : bool
        Count the inertia and go on past singular pivots instead of raising.
    modify : float or None
        delta of the modified sweep.

    Returns
    -------
    Riccati
        The stages, for :func:`riccati_solve`, and with ``inertia=True`` the summed counts
        ``(n_neg, n_zero, n_pos)`` (docs/math.md eq. (4.18)) and the first singular layer.

    Raises
    ------
    SingularPivotError
        Without ``inertia``, a pivot singular to working precision (naming the layer).

    Examples
    --------
    >>> import numpy as np
    >>> from tallskinny_np import MLP, Curvature
    >>> from tallskinny_np.riccati import riccati_factor, riccati_solve
    >>> net = MLP([3, 4, 4, 2])
    >>> rng = np.random.default_rng(0)
    >>> curv = Curvature(net, net.init_params(), rng.standard_normal((5, 3)), [0, 1, 0, 1, 1])
    >>> fac = riccati_factor(curv.blocks, 0.1, inertia=True)
    >>> b = rng.standard_normal((net.n_params, 1))
    >>> x = net.join(riccati_solve(fac, net.split(b)))
    >>> bool(np.allclose(curv @ x + 0.1 * x, b)), sum(fac.inertia) == net.n_params
    (True, True)
    """
    eps, strategy, structured = damping, _strategy, _structured
    layers = blocks.layers
    xp = array_module(layers[0].Dx)
    compiled = (xp is np and layers[0].Dx.dtype == np.float64 and strategy is None
                and modify is None)
    modification = None if modify is None else [None] * len(layers)
    if modify is not None:
        structured = False
    pd = blocks.kind == "ggn" and eps > 0
    stages = [None] * len(layers)
    counts = [0, 0, 0]
    singular = None
    if compiled:
        scratch, P_bufs = stage.workspace([blk.Dx.shape + blk.Dz.shape[2:] for blk in layers
                                           if isinstance(blk, HiddenLayer)])
    P = None                                   # P_L = 0
    above = False                              # the pivot of the layer above: definite
    for l in range(len(layers) - 1, -1, -1):
        blk = layers[l]
        by_structure = _use_structured(blk, structured)
        # Cholesky is tried first (and kept only where it proves the pivot definite) for
        # the GGN, for the loss layer's A_L + eps I (A_L is semi-definite), and where the
        # pivot above was definite: damped Hessian pivots often are, layer after layer,
        # and Cholesky is the cheaper factorization
        pd_l = pd or (eps > 0 if isinstance(blk, LossLayer) else above)
        buffers = (scratch, P_bufs[l % 2]) if compiled else None    # P_{l-1}'s in turn
        match blk:
            case HiddenLayer() if compiled and by_structure:
                f, rows, P = compiled_range_stage(blocks, blk, P, eps, pd_l, *buffers)
                st = RangeStage(f, rows)
            case FirstLayer() | HiddenLayer() if by_structure:
                in_basis = in_range(blocks, blk)
                f = range_stage(in_basis, P, eps, pd_l, strategy)
                if l == 0:
                    st, P = GainStage(f, None, None), None
                else:
                    K, Qxy, P = range_gain(in_basis, f, blk, P)
                    st = GainStage(f, Qxy, K)
            case LossLayer() if by_structure:
                f = loss_stage(blk, eps, pd_l, strategy)
                st, P = GainStage(f, LossCross(blk), LossGain(f, blk)), None
                if l > 0:
                    P = loss_update(f, blk, compiled)
            case HiddenLayer() | FirstLayer() if compiled:
                st, P = _compiled_stage(blk, P, eps, pd_l, *buffers)
            case _:
                DxPDx, DxPDz, DzPDz = congruences(blk, P)
                p = layer_size(blk)[0]
                Qxx = _sum(dense_A(blk), DxPDx)
                Qxx[xp.arange(p), xp.arange(p)] += eps
                if modify is not None:             # docs/math.md eq. (8.9)
                    Qxx, modification[l] = modified_pivot(Qxx, modify)
                f = sym_factor(Qxx, positive_definite=pd_l or modify is not None,
                               strategy=strategy)
                if compiled and l > 0:             # the loss layer: f is a PivotFactor
                    st, P = _schur_stage(blk, f, (DxPDz, DzPDz))
                else:
                    st, P = _array_stage(xp, blk, f, P, (DxPDz, DzPDz), l)
        f = st.factor
        above = f.inertia[0] == 0 and f.inertia[1] == 0
        if not inertia:
            check_pivot(f.rcond, blk.Dx.dtype, l + 1, "Riccati pivot block Qxx")
        else:
            counts = [c + n for c, n in zip(counts, f.inertia)]
            if singular is None and tolerance.singular(f.rcond, blk.Dx.dtype):
                singular = l + 1
        stages[l] = st
    return Riccati(layers, stages, tuple(counts) if inertia else None, singular, modification)


def _use_structured(blk, structured):
    """Whether layer 1, a hidden layer or the loss layer takes its structured stage
    (:func:`riccati_factor`); the structured loss stage is the softmax's."""
    if isinstance(blk, LossLayer) and blk.loss != "cross_entropy":
        return False
    if structured is not None:
        return structured
    if isinstance(blk, LossLayer):
        return loss_pays(*blk.Dx.shape, *blk.Dz.shape, blk.G is not None)
    B, m, q = blk.Dx.shape
    return range_pays(B, m, q, 0 if isinstance(blk, FirstLayer) else B * blk.Dz.shape[2])


@functools.lru_cache
def range_pays(B, m, q, a_in):
    """Whether the range stage saves :data:`RANGE_SAVING` times and :data:`MIN_SAVING`
    flops over the dense one (:func:`stage_flops`)."""
    dense, ranged = stage_flops(B, m, q, a_in)
    return dense >= RANGE_SAVING * ranged and dense - ranged >= MIN_SAVING


def loss_pays(c, q, B, n, hessian):
    """Whether the structured loss stage saves :data:`LOSS_SAVING` times and
    :data:`MIN_SAVING` flops over the dense one
    (:func:`tallskinny_np.loss_stage.loss_stage_flops`)."""
    dense, structured = loss_stage_flops(c, q, B, n, hessian)
    return dense >= LOSS_SAVING * structured and dense - structured >= MIN_SAVING


def stage_flops(B, m, q, a_in):
    """``(dense, range)``: the flops of a layer's compiled dense stage and of its compiled
    range stage (docs/math.md section 4.8) for batch B, m outputs, q inputs per output and
    ``a_in`` input activations (0 for layer 1): the factor, the gain (W), the update of P
    and the congruences with Dx and A; the terms the stages share (``Dz^T P`` and
    ``Dz^T P Dz``) are left out. T is ``m r`` square, ``r = min(B, q)``. The dense stage's
    Qxy costs ``2 a_in m p`` (from ``Dx^T P``). The range stage: the basis (SVD of Zt,
    ``4 B q r``), ``Dx V`` and ``T`` (the congruence in the basis,
    ``2 B m q r + 2 B^2 m^2 r + 2 B m^2 r^2``), A in the basis (from ``Zt V``:
    ``2 B q r + 2 B m r^2``), the factor ``(m r)^3 / 3``, and for a hidden layer
    ``Y = Q^T Qxy`` (``V^T C`` from C's factors, ``3 m r a_in``, and ``2 a_in m^2 r`` from
    ``Dx V``), ``W = G^{-1} Y`` (``(m r)^2 a_in``), ``W^T S W`` (``m r a_in^2``, one
    triangle) and the Gram matrix of ``b S1`` (``B^2 m``)
    (:func:`tallskinny_np.wide.compiled_range_stage`)."""
    p, r = m * q, min(B, q)
    dense = (p ** 3 / 3 + p * p * a_in + p * a_in ** 2 + 2 * a_in * m * p
             + 2 * B ** 2 * m ** 2 * q + B * m ** 2 * q ** 2)
    ranged = (6 * B * q * r + 2 * B * m * q * r + 2 * B ** 2 * m ** 2 * r
              + 2 * B * m ** 2 * r ** 2 + 2 * B * m * r ** 2 + (m * r) ** 3 / 3)
    if a_in:
        ranged += (3 * m * r * a_in + 2 * a_in * m * m * r + (m * r) ** 2 * a_in
                   + m * r * a_in ** 2 + B * B * m)
    return dense, ranged


def _array_stage(xp, blk, f, P, congruence_terms, l):
    """The array-module stage from the factor f of Qxx: ``(Stage, P_{l-1})``.
    ``congruence_terms`` are ``(Dx^T P Dz, Dz^T P Dz)`` (None for zero ones)."""
    if l == 0:
        # a compiled factor is substituted by the compiled kernels, with no gain to apply
        if isinstance(f, pivot.PivotFactor):
            return CompiledStage(f, None), None
        return GainStage(f, None, None), None
    Qxy, Qyy = _qxy_qyy(xp, blk, congruence_terms)
    K = -f.solve(Qxy)
    P = Qyy + Qxy.T @ K
    P = 0.5 * (P + P.T)                        # keep P exactly symmetric against drift
    return GainStage(f, Qxy, K), P


def _schur_stage(blk, f, congruence_terms):
    """The dense stage from the compiled factor ``f`` of ``Qxx = G S G^T`` on NumPy in
    float64 (the loss layer's): ``(Stage, P_{l-1})`` with ``P_{l-1} = Qyy - W^T S W``,
    ``W = G^{-1} Qxy``, by :func:`tallskinny_np.stage.schur_update` (one triangular solve,
    two ``syrk`` on one triangle) and the gain applied through W (:class:`SchurGain`),
    where :func:`_array_stage` solves for ``K`` (two triangular solves) and forms
    ``Qxy^T K`` whole."""
    Qxy, Qyy = _qxy_qyy(np, blk, congruence_terms)
    Wt = Qxy.copy().T                 # Qxy's C-order copy is Qxy^T in F-order
    stage.schur_update(f.arrays, Wt, Qyy.T, stage.two_threads())   # Qyy: C-order, symmetric
    return GainStage(f, Qxy, SchurGain(f, Wt)), Qyy


class SchurGain(NamedTuple):
    """The gain ``K = -Qxx^{-1} Qxy = -G^{-T} S W`` of :func:`_schur_stage`, applied as
    ``K @ y`` from ``Wt = W^T`` (``a' x p``, F-order) without forming K."""
    factor: pivot.PivotFactor
    Wt: object

    def __matmul__(self, y):
        Lf, kind, perm, cs, sn, lam, order, n_pos = self.factor.arrays[:8]
        rows = np.asfortranarray(y.T @ self.Wt)        # (W y)^T, r x p
        rows[:, n_pos:] *= -1.0                       # S
        pivot.half_solve_transposed(kind, Lf, perm, cs, sn, lam, order, rows)
        return -rows.T


def _qxy_qyy(xp, blk, congruence_terms):
    """``Qxy = C + Dx^T P Dz`` and ``Qyy = S + Dz^T P Dz`` from the congruence terms
    ``(Dx^T P Dz, Dz^T P Dz)`` (None for zero ones), as fresh arrays."""
    DxPDz, DzPDz = congruence_terms
    Qxy = _sum(dense_C(blk), DxPDz)
    if blk.S is None or DzPDz is None:
        return Qxy, _sum(None if blk.S is None else block_diagonal(xp, blk.S), DzPDz)
    add_sample_blocks(DzPDz, blk.S)                        # in place: a fresh array
    return Qxy, DzPDz


def _compiled_stage(blk, P, eps, pd, scratch, P_out):
    """The compiled stage of a hidden layer or a dense layer 1: ``(Stage, P_{l-1})``, with
    the buffers of :func:`tallskinny_np.stage.workspace` (``P_{l-1}`` in ``P_out``)."""
    P = stage.fortran_symmetric(P)
    if isinstance(blk, FirstLayer):
        A = blk.A
        if isinstance(A, GramA):
            A = gram_blocks(A.R, A.Zt)
        f = pivot.PivotFactor.of(stage.first_stage(blk.Dx, A, P, eps, pd))
        return CompiledStage(f, None), None
    B, m, q = blk.Dx.shape
    C = np.empty((m * q, B * blk.Dz.shape[2]))
    if blk.R is not None:
        kernels.cross_block(blk.Zt, blk.W, blk.R, blk.bS1, C)
    arrays, Wt, P = stage.factor_stage(blk.Dx, blk.Dz, blk.A, blk.S, blk.R is not None, C,
                                       np.zeros((m * q, m * q), order="F"), P, eps, pd,
                                       stage.two_threads(), scratch, P_out)
    return CompiledStage(pivot.PivotFactor.of(arrays), Wt), P


def _sum(*terms):
    """The sum of the terms that are not None (None stands for a zero block), as a fresh
    array; the last term, a fresh array itself, is summed into in place."""
    present = [t for t in terms if t is not None]
    out = present[-1] if present[-1] is terms[-1] else present[-1].copy()
    for t in present[:-1]:
        out += t
    return out


@sweep_threads()
def riccati_solve(fac, gs, past_singular=False):
    """Solve with the factored sweep: the backward pass for ``k_l`` and ``p_{l-1}``, then
    the forward pass ``x_l = K_l y_{l-1} + k_l`` (docs/math.md section 4.6).

    Parameters
    ----------
    fac : Riccati
        From :func:`riccati_factor`.
    gs : list of arrays ``(n_l, q_l, r)``
        Per-layer right-hand sides, the layout of :meth:`tallskinny_np.model.MLP.split`.
    past_singular : bool
        Solve even with a counting factorization made past pivots singular to working
        precision: the last resort of :meth:`tallskinny_np.Curvature.solve`, whose
        certificate judges the result (a pivot that is only nearly singular gives finite
        x that refinement and GMRES may make accurate; an exactly zero one, inf or nan).

    Returns
    -------
    list of arrays ``(n_l, q_l, r)``
        The x blocks, in the same layout (example: :func:`riccati_factor`).

    Raises
    ------
    SingularPivotError
        ``fac`` was made with ``inertia=True`` past a pivot singular to working precision
        (and ``past_singular`` is False): it counts, but its substitution would divide by
        that pivot's (near) zeros.
    """
    if fac.singular is not None and not past_singular:
        l = fac.singular
        raise SingularPivotError(
            l, float(np.nan_to_num(fac.stages[l - 1].factor.rcond)), "Riccati pivot block Qxx",
            "this factorization was made with inertia=True to count eigenvalues and cannot "
            "solve; factor H + damping I at a damping that is not on an eigenvalue")
    layers = fac.layers
    L = len(layers)
    k = [None] * L
    pv = None                                  # p_L = 0
    for l in range(L - 1, -1, -1):
        k[l], pv = _backward(fac.stages[l], layers[l], gs[l], pv, l)
    xs = []
    y = None
    for l in range(L):
        x, y = _forward(fac.stages[l], layers[l], k[l], y, gs[l].shape, l, l < L - 1)
        xs.append(x)
    return xs


def _backward(st, blk, g, pv, l):
    """The backward substitution of one stage: ``(k_l, p_{l-1})`` from the right-hand
    side ``g`` ``(n_l, q_l, r)`` and ``p_l`` (None for ``p_L = 0``)."""
    match st:
        case RangeStage():
            return range_backward(st.factor, st.rows, blk, np.ascontiguousarray(g),
                                  None if pv is None else np.ascontiguousarray(pv))
        case CompiledStage():
            return stage.backward(st.factor.arrays, _rows(st, blk), blk.Dx,
                                  blk.Dz if l > 0 else None, np.ascontiguousarray(g),
                                  None if pv is None else np.ascontiguousarray(pv))
    r = g.shape[-1]
    qx = -g
    if pv is not None:
        qx = qx + DxT_mv(blk, pv)
    if isinstance(st.factor, RangeFactor):                   # Qxx acts on (p_l, r)
        k = -st.factor.solve(qx.reshape(-1, r), outside=-g.reshape(-1, r))
    else:
        k = -st.factor.solve(qx.reshape(-1, r))
    if l == 0:
        return k, pv
    pl = (st.Qxy.T @ k).reshape(blk.Dz.shape[0], -1, r)
    return k, (pl if pv is None else pl + DzT_mv(blk, pv))


def _forward(st, blk, k, y, shape, l, more):
    """The forward substitution of stage l: ``(x_l, y_l)`` from ``k_l`` and ``y_{l-1}``
    (None for ``y_0 = 0``); x in the right-hand side's ``shape``, and ``y_l`` only where
    ``more`` layers follow."""
    match st:
        case RangeStage():
            return range_forward(st.factor, st.rows, blk, k, y)
        case CompiledStage():
            return stage.forward(st.factor.arrays, _rows(st, blk), blk.Dx,
                                 blk.Dz if l > 0 else None, k, y)
    r = shape[-1]
    x = (k if y is None else k + st.K @ y.reshape(-1, r)).reshape(shape)
    if not more:
        return x, y
    xr = st.factor.in_range(x) if isinstance(st.factor, RangeFactor) else x
    return x, (Dx_mv(blk, xr) if y is None else Dx_mv(blk, xr) + Dz_mv(blk, y))


def _rows(st, blk):
    """The compiled stage's Wt; layer 1 has none (an empty one keeps the kernels' types)."""
    if st.Wt is not None:
        return st.Wt
    return np.empty((layer_size(blk)[0], 0)).T
