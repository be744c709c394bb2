"""The certified solve with ``H + damping I`` (docs/math.md sections 4 and 7): a
factorization's substitutions, fixed-precision refinement and GMRES-based iterative
refinement, each column certified by a bound on its normwise backward error against the
exact O(L) product, with the banded LU and the sweep past singular pivots as fallbacks; the
modified sweep's solve (section 8.3).

The functions take a :class:`~tallskinny_np.Curvature`, whose derivative blocks, cached
factorizations and norm bounds they use; :meth:`Curvature.solve
<tallskinny_np.Curvature.solve>` and its siblings call them.
"""
import functools
import numbers
import warnings
from typing import NamedTuple

import numpy as np

from .backend import array_module, sweep_threads, to_numpy
from .banded import banded_factor, banded_solve
from .certify import (DoubleWord, accurate_residual, backward_error_bound, backward_errors,
                      backward_errors_of_h, column_norms, product_rounding, residual_bound,
                      residual_rounding, residual_rounding_normwise)
from .errors import (SingularPivotError, UncertifiedSolveError, UncertifiedSolveWarning,
                     finite_real)
from .evaluation import evaluation_gap
from .krylov import gmres, random_start
from .ldu import ldu_factor, ldu_solve
from .norms import norm_lower_bound, probe_norm
from .products import hvp_rounding
from .riccati import riccati_factor, riccati_solve
from .running_error import hvp_rounding_normwise

METHODS = ("riccati", "ldu", "banded")

REFINE_TARGET = 10     # refinement stops at a backward error of 10 eps
GMRES_OUTER = 5        # GMRES-IR: corrections at most (each from one GMRES run)
GMRES_RESTART = 30     # GMRES steps per correction
GMRES_RTOL = 1e-10     # the inner GMRES's relative residual target
STEP_BOUND = float(np.sqrt(np.finfo(np.float64).eps))
"""sqrt(eps): the backward error above which an optimizer's step is refined
(:func:`step_solve`); float32's certified bound lies above it."""


class SolveInfo(NamedTuple):
    """What :func:`solve` certified, per right-hand side (column)."""
    backward_error: np.ndarray   # (k,): bounds on the normwise backward errors against the
    #                              exact H: the residual's and the product's rounding
    path: tuple                  # k tuples of step names: "factor", "refine", "gmres", "banded"
    bound: float                 # the certified bound u max(n_params, 1000)
    proved: np.ndarray           # (k,) bool: backward_error proved (docs/math.md eq. (7.3f)),
    #                              not the model of the product's rounding (eq. (7.3g))
    evaluation: np.ndarray = None  # (k,): the part of backward_error that is the measured
    #                              rounding of the network's evaluation (eq. (7.3m)); NaN
    #                              where not measured

BANDED = "banded, pivots unchecked"
UNCHECKED = "riccati, pivots unchecked"
"""The solve's fallbacks: the banded LU without its conditioning test (the augmented K'
can be far worse conditioned than ``H + damping I``) and, last, when a factorization met a
pivot that is singular to working precision, the Riccati sweep that goes on past such
pivots (as for the inertia): each still solves or preconditions GMRES, and the
certificate judges the result."""

# method -> (factor(blocks, damping), solve(factor, MLP.split rhs) -> MLP.split x)
SOLVERS = {
    "riccati": (riccati_factor, riccati_solve),
    "ldu": (ldu_factor, ldu_solve),
    "banded": (banded_factor, banded_solve),
    BANDED: (lambda blocks, shift: banded_factor(blocks, shift, check=False), banded_solve),
    UNCHECKED: (lambda blocks, shift: riccati_factor(blocks, shift, inertia=True),
                functools.partial(riccati_solve, past_singular=True)),
}


def solve(curv, b, damping, method="riccati", refine=3, return_info=False,
          uncertified="raise", fallback=True):
    """``(H + damping I)^{-1} b``, certified (docs/math.md sections 4 and 7).

    Parameters
    ----------
    b : array, shape ``(n_params,)`` or ``(n_params, k)``
        Right-hand side(s). With ``k = 0`` the result is empty and nothing is factored
        (so a singular ``H + damping I`` is not reported).
    damping : float
        The shift. For ``kind="hessian"`` any finite value (a negative one solves with
        ``H - |damping| I``, as shift-invert and spectrum slicing do); for
        ``kind="ggn"`` it must be >= 0.
    method : {"riccati", "ldu", "banded"}
        The factorization tried first: the stage-wise Riccati elimination (default,
        :mod:`tallskinny_np.riccati`), the paper's block LDU of the pivoted augmented
        system (:mod:`tallskinny_np.ldu`), or LAPACK's banded LU with partial pivoting
        of that system (:mod:`tallskinny_np.banded`).
    refine : int
        At most this many steps of fixed-precision iterative refinement with the
        factorization, each kept only while it halves the residual.
    return_info : bool
        Also return a :class:`SolveInfo` with each column's certified backward error,
        the steps that produced it and whether the figure is proved (docs/math.md
        section 7.1). Without it, ``uncertified="return"`` proves nothing: the figure,
        which no one reads, takes the model of the product's rounding (eq. (7.3g)).
    uncertified : {"raise", "warn", "return"}
        What happens when no step certifies a column: raise
        :class:`~tallskinny_np.errors.UncertifiedSolveError` (default), issue an
        :class:`~tallskinny_np.errors.UncertifiedSolveWarning` and return the best
        solution found, with its backward error in the info, or return it without a
        warning (for callers that judge the answer themselves and read the info).
    fallback : bool
        Whether columns that the first factorization (with refinement and GMRES-IR)
        leaves uncertified go on to the banded LU and the sweep past singular pivots
        (default True). These cost far more than the first factorization and help only
        where its elimination was unstable; False stops after it.

    Returns
    -------
    x : array, the shape of b
    info : SolveInfo, only with ``return_info=True``

    Raises
    ------
    SingularPivotError
        ``H + damping I`` is singular to working precision (condition number of at
        least about 1/eps), e.g. damping 0 for most networks: the softmax makes H
        singular.
    UncertifiedSolveError
        No step reached the bound, or no bound on the product's rounding could be
        proved for a column (and ``uncertified="raise"``), or no step gave a finite
        solution (whatever ``uncertified`` says).

    Notes
    -----
    Every returned column carries a certified normwise backward error
    ``||b - (H + damping I) x|| / (||H + damping I|| ||x|| + ||b||)`` at most
    ``info.bound = u max(n_params, 1000)``, measured with the exact O(L) product and a
    lower bound on the norm. The steps, each taken only for the columns that the
    previous ones left uncertified: the factorization's solve; fixed-precision
    refinement; GMRES-based iterative refinement (GMRES on the exact operator,
    preconditioned by the factorization, Carson and Higham 2017); then the same with
    the pivoted banded LU (CPU only). The figure bounds the backward error against the
    exact H: the residual's plus a bound on the rounding of the product (componentwise,
    else normwise through the exact chain of Jacobians), or the residual computed again
    in double words where those are too coarse. A column for which none of them proves
    a figure is not certified: ``uncertified="raise"`` raises, and otherwise
    ``info.proved`` is False for it and its figure takes a model of that rounding
    (docs/math.md section 7.1).

    References
    ----------
    E. Carson and N. J. Higham, "A new analysis of iterative refinement and its
    application to accurate solution of ill-conditioned sparse linear systems",
    SIAM J. Sci. Comput. 39(6), 2017. doi:10.1137/17M1122918

    Examples
    --------
    >>> import numpy as np
    >>> from tallskinny_np import MLP, Curvature
    >>> net = MLP([3, 4, 4, 2], activation="tanh")
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.standard_normal((5, 3)), rng.integers(0, 2, 5)
    >>> curv = Curvature(net, net.init_params(seed=0), X, y)
    >>> x, info = curv.solve(curv.grad, 0.1, return_info=True)
    >>> bool(info.backward_error[0] <= info.bound), info.path[0][0]
    (True, 'factor')
    """
    method = curv._check_method(method)
    if not isinstance(refine, numbers.Integral) or isinstance(refine, bool) or refine < 0:
        raise ValueError(f"refine must be an integer >= 0; got {refine!r}")
    if uncertified not in ("raise", "warn", "return"):
        raise ValueError(f"uncertified must be 'raise', 'warn' or 'return'; got "
                         f"{uncertified!r}")
    if isinstance(damping, (list, tuple)) or np.ndim(damping) != 0:
        raise ValueError("damping must be one number; use solve_dampings for several")
    damping = curv._check_damping(damping)
    Bm, vector = curv._columns(b, "b")
    if Bm.shape[1] == 0:                      # no columns: nothing to factor or certify
        X = Bm.copy()
        info = SolveInfo(np.zeros(0), (), backward_error_bound(curv.n_params,
                                                               curv.net.dtype),
                         np.zeros(0, dtype=bool), np.zeros(0))
        return (X, info) if return_info else X
    with sweep_threads():
        # a figure that no one reads is not proved: the model costs nothing
        X, info = certified_solve(curv, Bm, damping, method, refine, uncertified,
                                  fallback=fallback,
                                  prove=return_info or uncertified != "return")
    X = X[:, 0] if vector else X
    return (X, info) if return_info else X


def modified_solve(curv, b, damping, floor, refine=3):
    """``F^{-1} b`` for the positive definite ``F = H + damping I + E`` of the modified
    sweep (docs/math.md section 8.3, eq. (8.10)): the Riccati sweep with each pivot
    ``Qxx_l`` replaced by ``V max(|Lambda|, floor I) V^T`` as it is formed, so that
    ``E = blockdiag(E_l)`` over the layers' parameters, positive semi-definite, and
    ``E = 0`` when ``H + (damping - floor) I`` is positive definite.

    The solve is certified like :func:`solve`'s first steps: the normwise backward error
    for F (applied as ``H v + damping v + E v`` with the sweep's blocks ``E_l``) after at
    most ``refine`` steps of refinement must be at most ``u max(n_params, 1000)``.

    Parameters
    ----------
    b : array, shape ``(n_params,)`` or ``(n_params, k)``
    damping : float
        The shift added before the modification (>= 0 for a GGN).
    floor : float
        delta of eq. (8.9), > 0: the smallest pivot eigenvalue.
    refine : int
        Refinement steps at most.

    Returns
    -------
    x : array, the shape of b
    e_norm : float
        ``||E||_2 = max_l ||E_l||_2``, eq. (8.11).

    Raises
    ------
    UncertifiedSolveError
        The backward error stays above the bound.

    Examples
    --------
    >>> import numpy as np
    >>> from tallskinny_np import MLP, Curvature
    >>> net = MLP([3, 4, 4, 2], activation="tanh")
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.standard_normal((5, 3)), rng.integers(0, 2, 5)
    >>> curv = Curvature(net, net.init_params(seed=0, gain=2.0), X, y)
    >>> x, e_norm = curv.modified_solve(curv.grad, 1e-3, floor=1e-2)
    >>> bool(curv.grad @ x > 0), e_norm > 0          # a descent direction; H indefinite
    (True, True)
    """
    damping = curv._check_damping(damping)
    floor = finite_real(floor, "floor")
    if not floor > 0:
        raise ValueError(f"floor must be > 0; got {floor}")
    Bm, vector = curv._columns(b, "b")
    key = (damping, floor)
    if curv._modified is None or curv._modified[0] != key:
        with sweep_threads():
            curv._modified = (key, riccati_factor(curv.blocks, damping, modify=floor))
    fac = curv._modified[1]
    E = fac.modification

    def apply_F(V):
        xs = curv.net.split(V)
        Ex = [x * 0 if e is None else (e @ x.reshape(e.shape[0], -1)).reshape(x.shape)
              for e, x in zip(E, xs)]
        return curv._shifted_product(V, damping) + curv.net.join(Ex)

    e_norm = max((float(np.linalg.norm(to_numpy(e), 2)) for e in E if e is not None),
                 default=0.0)
    if Bm.shape[1] == 0:
        return Bm.copy(), e_norm
    bound = backward_error_bound(curv.n_params, curv.net.dtype)
    X = curv._substitute(fac, "riccati", Bm)
    X, R, _ = _refine(apply_F, lambda V: curv._substitute(fac, "riccati", V), Bm, X,
                      Bm - apply_F(X), refine, bound)
    eta = backward_errors(R, X, Bm)
    if not np.all(eta <= bound):
        raise UncertifiedSolveError(eta, bound, "refine")
    return (X[:, 0] if vector else X), e_norm


def solve_dampings(curv, b, dampings, method="riccati", refine=3):
    """``[(H + d I)^{-1} b for d in dampings]``, each certified as in :func:`solve`;
    the derivative blocks are shared.

    Parameters
    ----------
    b : array, shape ``(n_params,)`` or ``(n_params, k)``
    dampings : sequence of float
    method, refine
        As in :func:`solve`.

    Returns
    -------
    list of arrays, one per damping, each of b's shape

    Raises
    ------
    ValueError, SingularPivotError, UncertifiedSolveError
        As :func:`solve`; ``ValueError`` also for an empty sequence.
    """
    dampings = [curv._check_damping(d) for d in np.asarray(dampings, dtype=object).ravel()]
    if not dampings:
        raise ValueError("dampings is empty")
    return [solve(curv, b, d, method=method, refine=refine) for d in dampings]


def step_solve(curv, g, damping):
    """The optimizers' solve (docs/math.md eqs. (8.2)-(8.3)): ``x = (H + damping I)^{-1} g``
    from one Riccati factorization, GMRES-IR only where a bound on its backward error
    (with the free lower bound on ``||H + damping I||``) exceeds :data:`STEP_BOUND`, and
    the model's curvature term ``x^T H x = x^T (g - r) - damping x^T x`` from the residual
    ``r = g - (H + damping I) x`` of that bound, in place of another product. The
    reduction ratio judges the step: a backward error of ``sqrt(eps)`` changes it in
    digits no one reads, while certifying a smaller one would cost the Lanczos bound on
    the norm (20 products) whenever the free one is loose, as near a memorised batch.

    Parameters
    ----------
    curv : Curvature
    g : array, shape ``(n_params,)``
    damping : float

    Returns
    -------
    x : array, shape ``(n_params,)``
    xHx : float
        ``x^T H x``.

    Raises
    ------
    SingularPivotError
        ``H + damping I`` is singular to working precision.
    UncertifiedSolveError
        The factorization gave no finite solution.
    """
    damping = curv._check_damping(damping)
    G, _ = curv._columns(g, "g")
    bound = backward_error_bound(curv.n_params, curv.net.dtype)
    with sweep_threads(), np.errstate(all="ignore"):
        curv._factor(damping, "riccati")
        solved = _solve_with(curv, "riccati", G, damping, 0, max(bound, STEP_BOUND))
    if solved is None:
        raise UncertifiedSolveError(np.full(1, np.inf), bound, "factor")
    X, R, _, _ = solved
    _check_singular(curv, G, X, damping, bound, "riccati")
    x = X[:, 0]
    return x, float(x @ (G[:, 0] - R[:, 0])) - damping * float(x @ x)


def certified_solve(curv, B, shift, method, refine, uncertified, check=True,
                    fallback=True, prove=True):
    """The chain of :func:`solve` on the columns of B (n_params, k): each
    factorization in turn on the columns that are not yet certified (only the first
    without ``fallback``); ``check`` tests the result for singularity
    (:func:`_check_singular`); ``prove`` bounds the product's rounding
    (:func:`_product_rounding`, docs/math.md eq. (7.3f)), else the model of it is taken
    (eq. (7.3g))."""
    xp = array_module(B)
    n, k = B.shape
    bound = backward_error_bound(n, curv.net.dtype)
    aim = residual_bound(n, curv.net.dtype)
    X = xp.zeros_like(B)
    eta = np.full(k, np.inf)
    paths = [[] for _ in range(k)]
    chain = [method]
    if fallback:
        chain += ([BANDED] if xp is np else []) + [UNCHECKED]
    singular = None
    for m in chain:
        todo = np.flatnonzero(~(eta <= aim))
        if todo.size == 0 or (m == UNCHECKED and singular is None):
            break
        # A poor factorization (past a singular pivot, or in float32) can overflow:
        # inf and nan are expected there, and the certificate judges them.
        try:
            with np.errstate(all="ignore"):
                curv._factor(shift, m)
        except SingularPivotError as err:    # a pivot, not necessarily H + shift I
            singular = singular or err
            continue
        Bt = B[:, todo.tolist()]             # lists index NumPy and CuPy alike
        with np.errstate(all="ignore"):
            solved = _solve_with(curv, m, Bt, shift, refine, aim)
        if solved is None:
            continue                         # an exactly singular pivot
        Xt, _, eta_t, steps = solved
        for i, j in enumerate(todo):
            paths[j] += steps[i]
        better = np.flatnonzero(eta_t < eta[todo])
        X[:, todo[better].tolist()] = Xt[:, better.tolist()]
        eta[todo[better]] = eta_t[better]
    if not any(paths):      # no factorization gave a finite solution
        if singular is not None:             # a singular pivot: the first one says
            raise singular
        raise UncertifiedSolveError(eta, bound, "factor")
    if prove:
        eta, proved, evaluation = _product_rounding(curv, X, B, shift, eta, bound)
    else:
        eta = eta + product_rounding(X, B, shift, probe_norm(curv, shift), curv.net.dtype)
        proved, evaluation = np.zeros(k, dtype=bool), np.full(k, np.nan)
    if check:
        _check_singular(curv, B, X, shift, bound, method)
    info = SolveInfo(eta, tuple(tuple(p) for p in paths), bound, proved, evaluation)
    # a figure that was to be proved and is not is no certificate, however small
    if not np.all(eta <= bound) or (prove and not np.all(proved)):
        last = max(paths, key=len)[-1]
        error = UncertifiedSolveError(eta, bound, last, proved if prove else None)
        if uncertified == "raise":
            raise error
        if uncertified == "warn":
            warnings.warn(str(error), UncertifiedSolveWarning, stacklevel=4)
    return X, info


def _solve_with(curv, method, B, shift, refine, bound):
    """Steps 1-3 of :func:`solve` with one factorization: its solve, fixed-precision
    refinement, GMRES-IR on the columns still above ``bound``. Returns ``(X, residuals
    B - (H + shift I) X, backward error bounds, the steps of each column)``, or None for
    a non-finite solve."""
    xp = array_module(B)
    X = curv._solve_columns(B, shift, method)
    if not bool(xp.all(xp.isfinite(X))):
        return None
    first = "banded" if method == BANDED else "factor"
    # Refinement aims lower than the bound, at dense LU's level.
    target = REFINE_TARGET * np.finfo(curv.net.dtype).eps
    X, R, refined = _refine(lambda V: curv._shifted_product(V, shift),
                            lambda V: curv._solve_columns(V, shift, method), B, X,
                            B - curv._shifted_product(X, shift), refine, target,
                            probe_norm(curv, shift))
    steps = [[first] + ["refine"] * refined for _ in range(B.shape[1])]
    eta = _backward_errors(curv, R, X, B, shift, bound)
    # GMRES is a must above the bound; once the sharp bound was paid for (the residual
    # alone did not certify) it also goes on down to the refinement's target.
    aim = target if shift in curv._norm_bounds else bound
    for i in np.flatnonzero(~(eta <= aim)):
        x, r, e = _gmres_refinement(curv, B[:, i], X[:, i], R[:, i], shift, method, aim)
        steps[i].append("gmres")
        if e < eta[i]:
            X[:, i], R[:, i], eta[i] = x, r, e
    return X, R, eta, steps


def _gmres_refinement(curv, b, x, r, shift, method, aim):
    """GMRES-based iterative refinement of one column (Carson and Higham 2017): the
    correction equation ``(H + shift I) d = r`` solved by GMRES preconditioned with the
    factorization, the residual recomputed with the exact product, until the backward
    error bound is at most ``aim`` or stops decreasing. Returns the best
    ``(x, its residual, backward error bound)``."""
    def apply(v):
        return curv._shifted_product(v[:, None], shift)[:, 0]

    def precond(v):
        return curv._solve_columns(v[:, None], shift, method)[:, 0]

    eta = _backward_errors(curv, r[:, None], x[:, None], b[:, None], shift, aim)[0]
    for _ in range(GMRES_OUTER):
        x_new = x + gmres(apply, precond, r, GMRES_RESTART, GMRES_RTOL)
        r_new = b - apply(x_new)
        e = _backward_errors(curv, r_new[:, None], x_new[:, None], b[:, None], shift,
                                  aim)[0]
        if not e < eta:
            break
        x, r, eta = x_new, r_new, e
        if eta <= aim:
            break
    return x, r, eta


def _backward_errors(curv, R, X, B, shift, bound):
    """Per-column bounds on the backward error (:func:`certify.backward_errors`) with
    the free lower bound of :func:`~tallskinny_np.norms.probe_norm` on
    ``||H + shift I||``; the sharper one of the Lanczos interval is computed only when that
    does not certify."""
    eta = backward_errors(R, X, B, probe_norm(curv, shift))
    if np.all(eta <= bound):
        return eta
    return backward_errors(R, X, B, norm_lower_bound(curv, shift))


def _product_rounding(curv, X, B, shift, eta, bound):
    """``(figure, proved, evaluation)`` per column (docs/math.md section 7.1): the
    backward errors ``eta`` of residuals computed with the O(L) product, made bounds on
    those against the exact H (eq. (7.3f)) with a bound on that product's rounding at X
    and the measured rounding of the network's evaluation
    (:func:`~tallskinny_np.evaluation.evaluation_gap`, eq. (7.3m); its share of the figure
    is ``evaluation``, NaN where it could not be measured). The product's bound: the
    componentwise one of :func:`~tallskinny_np.products.hvp_rounding` (one product's
    cost); where that certifies nothing, the normwise one of
    :func:`~tallskinny_np.running_error.hvp_rounding_normwise` (eq. (7.3l), a few
    products); where neither does and the double-word residual can
    (:func:`certify.accurate_residual`), with it too; with the free lower bound on
    ``||H + shift I||`` of :func:`~tallskinny_np.norms.probe_norm`, then the Lanczos one.
    A column's figure is the best proved one; where the rounding part of every bound is
    above ``bound`` it is the model's (eq. (7.3g)), not proved."""
    net = curv.net
    dtype = net.dtype
    u = float(np.finfo(dtype).eps / 2)
    xs = net.split(X)
    gap = evaluation_gap(curv, X)
    measured = np.where(np.isnan(gap), 0.0, gap)      # not measured: nothing to add
    P, E = (net.join(v) for v in hvp_rounding(curv.blocks, xs))
    residuals = [(lambda nu: eta, column_norms(residual_rounding(P, E, X, shift, u)))]

    def against_h(nu):                    # the best proved figure, inf where none
        figure, proved = np.full(len(eta), np.inf), np.zeros(len(eta), dtype=bool)
        rounding = np.full(len(eta), np.inf)
        for eta_at, e in residuals:
            part = backward_errors_of_h(np.zeros(len(eta)), e, X, B, nu, dtype)
            ok = part <= bound
            figure = np.where(ok, np.minimum(figure, backward_errors_of_h(
                eta_at(nu), e + measured, X, B, nu, dtype)), figure)
            proved |= ok
            rounding = np.minimum(rounding, part)
        return figure, proved, rounding

    nu = probe_norm(curv, shift)
    figure, proved, rounding = against_h(nu)
    if not np.all(figure <= bound):
        residuals.append((lambda nu: eta, residual_rounding_normwise(
            *hvp_rounding_normwise(curv.blocks, xs), X, shift, u)))
        figure, proved, rounding = against_h(nu)
    # the double-word residual's rounding is about u_2 / u times the first's
    accurate = DoubleWord.UNIT if dtype == np.float64 else np.finfo(np.float64).eps / 2
    if np.any(~(figure <= bound) & (rounding * accurate / u <= bound)):
        R, e = accurate_residual(curv.blocks, xs, B, shift, net.join, normwise=True)
        residuals.append((lambda nu: backward_errors(R, X, B, nu), e))
        figure, proved, _ = against_h(nu)

    def share(nu):                        # the evaluation's part of a figure
        return measured / (nu * column_norms(X) + column_norms(B))

    def reported(figure, proved, nu):     # the model's figure where nothing is proved
        return np.where(proved, figure,
                        eta + product_rounding(X, B, shift, nu, dtype) + share(nu))

    if not np.all(reported(figure, proved, nu) <= bound):
        nu = max(nu, norm_lower_bound(curv, shift))
        figure, proved, _ = against_h(nu)
    return reported(figure, proved, nu), proved, np.where(np.isnan(gap), np.nan, share(nu))


def _check_singular(curv, B, X, shift, bound, method):
    """Raise :class:`SingularPivotError` when the solutions prove ``H + shift I``
    singular at the certificate's resolution: for x with ``A x`` close to b,
    ``nu ||x|| / ||b|| <= cond(A)`` for any lower bound nu on ``||A||``, and a value of
    at least ``1 / bound`` means that A is within the certified backward error of a
    singular matrix (no digit of x is guaranteed). nu is first the free bound of
    :func:`~tallskinny_np.norms.probe_norm`; only a suspicious solution (an estimate above
    ``1 / sqrt(bound)``) pays for the sharper Lanczos bound and, since b may miss
    the near-null space, for three steps of inverse iteration from a random start
    with certified solves."""
    x, b = column_norms(X), column_norms(B)
    growth = np.divide(x, b, out=np.zeros_like(x), where=b > 0).max()
    if not probe_norm(curv, shift) * growth * np.sqrt(bound) >= 1:
        return
    nu = norm_lower_bound(curv, shift)
    cond = nu * growth
    xp = array_module(B)
    z = random_start(B.shape[0], xp, B.dtype, 3, columns=1)
    for _ in range(3):
        if cond * bound >= 1:
            break
        z = z / float(column_norms(z)[0])
        z, info = certified_solve(curv, z, shift, method, 3, "return", check=False)
        if not info.backward_error[0] <= bound:
            break
        cond = max(cond, nu * float(column_norms(z)[0]))
    if cond * bound >= 1:
        raise SingularPivotError(
            None, float(1 / cond), "matrix H + damping I",
            f"||H + damping I|| ||(H + damping I)^-1|| >= {cond:.3g}, at least "
            f"1 / (the backward-error bound {bound:.3g}); increase the damping (H "
            f"itself is singular in general)")


def _refine(apply, solve, B, X, R, steps, target, norm=0.0):
    """Fixed-precision iterative refinement (docs/math.md eq. (6.2)) of ``A X = B`` with the
    residual ``R``: ``X += solve(R)`` while it at least halves the residual, at most
    ``steps`` times, stopping once the residual's bound on the backward error
    (:func:`certify.backward_errors`, with ``norm`` a lower bound on ``||A||``) is at most
    ``target``. Returns ``(X, R, steps taken)``."""
    taken = 0
    while taken < steps and not np.all(backward_errors(R, X, B, norm) <= target):
        X_new = X + solve(R)
        R_new = B - apply(X_new)
        if not _norm(R_new) <= 0.5 * _norm(R):
            break
        X, R = X_new, R_new
        taken += 1
    return X, R, taken


def _norm(R):
    """The largest column 2-norm of R, as a float."""
    return float(column_norms(R).max())
