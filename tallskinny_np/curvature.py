"""``Curvature``: the gradient, ``H v``, certified solves with ``H + damping I`` and
certified eigenvalue counts of an MLP's loss at a point (docs/math.md sections 3, 4 and 7).

The damping-independent work (forward pass, backprop, derivative blocks of docs/math.md
section 2) is done once in the constructor; products and solves reuse it, and the latest
factorization of each method is kept so that further right-hand sides with the same damping
cost only the substitutions.
"""
import functools
import math
import numbers
import warnings
from typing import NamedTuple

import numpy as np
from scipy.sparse.linalg import LinearOperator

from .backend import array_module, backend_module, sweep_threads, to_numpy
from .banded import banded_factor, banded_solve
from .blocks import KINDS, Blocks, gradient, linearize
from .certify import (BOUND_FLOOR, PRODUCT_ROUNDING, DoubleWord, accurate_residual,
                      backward_error_bound, backward_errors, backward_errors_of_h,
                      column_norms, factor_distance, gmres, lanczos_interval,
                      product_rounding, residual_rounding)
from .errors import (SingularPivotError, UncertifiedInertiaError, UncertifiedSolveError,
                     UncertifiedSolveWarning)
from .ldu import ldu_factor, ldu_solve
from .plan import BASE_BYTES, available_bytes, check_fits, plan
from .products import hvp, hvp_rounding
from .riccati import riccati_factor, riccati_solve

METHODS = ("riccati", "ldu", "banded")

REFINE_TARGET = 10     # refinement stops at a backward error of 10 eps
GMRES_OUTER = 5        # GMRES-IR: corrections at most (each from one GMRES run)
GMRES_RESTART = 30     # GMRES steps per correction
GMRES_RTOL = 1e-10     # the inner GMRES's relative residual target
OMEGA_MAX = 0.25       # a sweep's count is trusted when ||I - A F^{-1}|| estimates below this
CHECKED_BYTES = 2 ** 28
"""Memory needs of at least this many bytes (256 MiB) are checked against the memory
available before they are allocated (:mod:`tallskinny_np.plan`)."""
DENSE_INERTIA_MAX = 3000
"""The largest network (parameters) whose inertia falls back to dense eigenvalues when the
sweeps cannot certify a count."""
FAR_SHIFT = 8.0
"""A count at a shift beyond FAR_SHIFT times the Lanczos estimate of ``||H||`` is that of
``shift I``, certified without a sweep (:meth:`Curvature._far_shift_count`)."""


class SolveInfo(NamedTuple):
    """What :meth:`Curvature.solve` certified, per right-hand side (column)."""
    backward_error: np.ndarray   # (k,): bounds on the normwise backward errors against the
    #                              exact H: the residual's and the product's rounding
    path: tuple                  # k tuples of step names: "factor", "refine", "gmres", "banded"
    bound: float                 # the certified bound u max(n_params, 1000)
    proved: np.ndarray           # (k,) bool: backward_error proved (docs/math.md eq. (7.3f)),
    #                              not the model of the product's rounding (eq. (7.3g))

BANDED = "banded, pivots unchecked"
UNCHECKED = "riccati, pivots unchecked"
"""The solve's fallbacks: the banded LU without its conditioning test (the augmented K'
can be far worse conditioned than ``H + damping I``) and, last, when a factorization met a
pivot that is singular to working precision, the Riccati sweep that goes on past such
pivots (as for the inertia): each still solves or preconditions GMRES, and the
certificate judges the result."""

# method -> (factor(blocks, damping), solve(factor, MLP.split rhs) -> MLP.split x)
_SOLVERS = {
    "riccati": (riccati_factor, riccati_solve),
    "ldu": (ldu_factor, ldu_solve),
    "banded": (banded_factor, banded_solve),
    BANDED: (lambda blocks, shift: banded_factor(blocks, shift, check=False), banded_solve),
    UNCHECKED: (lambda blocks, shift: riccati_factor(blocks, shift, inertia=True),
                functools.partial(riccati_solve, past_singular=True)),
}


class Curvature:
    r"""The exact curvature of ``net``'s mean cross-entropy at ``params`` on the batch
    ``(X, y)``, as an O(L) operator with O(L) solves.

    .. math::

        H = A + C P M^{-1} D_x + (C P M^{-1} D_x)^T + D_x^T M^{-T} P^T S P M^{-1} D_x

    (docs/math.md eq. (3.5)), or for ``kind="ggn"`` the generalized Gauss-Newton matrix
    :math:`G = J^T \Lambda J` (section 2.5).

    Parameters
    ----------
    net : MLP
    params : array, shape ``(n_params,)``
        The point, in the layout of docs/math.md section 1.3.
    X : array, shape ``(B, n_0)``
    y : array of int, shape ``(B,)``
    kind : {"hessian", "ggn"}
    backend : {None, "numpy", "cupy"}
        Where to compute. By default the arrays' own module: CuPy arrays in means GPU
        computation, with results as CuPy arrays. On CuPy the blocks, ``hvp``, the Riccati
        solve, the inertia and the operators run on the GPU; ``"ldu"`` and ``"banded"`` are
        LAPACK (CPU) solvers and refuse CuPy arrays.

    Attributes
    ----------
    loss : float
    grad : array, shape ``(n_params,)``
    blocks : tallskinny_np.blocks.Blocks
        The per-layer derivative blocks (records :class:`~tallskinny_np.blocks.FirstLayer`,
        :class:`~tallskinny_np.blocks.HiddenLayer`, :class:`~tallskinny_np.blocks.LossLayer`).
    linearization : tallskinny_np.blocks.Linearization
        The forward and backward pass.

    Raises
    ------
    ValueError
        For an unknown kind or backend, or parameters and data that ``net`` refuses.

    Notes
    -----
    ``curv @ v`` is ``curv.hvp(v)``; :meth:`to_scipy` and :meth:`inverse` give scipy
    LinearOperators. Every solve is certified by its backward error and every eigenvalue
    count by a factorization-distance test (docs/math.md section 7); what cannot be
    certified raises a :class:`numpy.linalg.LinAlgError` subclass.

    References
    ----------
    A. Rahimi, "The Hessian of tall-skinny networks is easy to invert", arXiv:2601.06096,
    2026. B. A. Pearlmutter, "Fast exact multiplication by the Hessian", Neural Computation
    6(1), 1994. doi:10.1162/neco.1994.6.1.147

    Examples
    --------
    >>> import numpy as np
    >>> from tallskinny_np import MLP, Curvature
    >>> net = MLP([3, 4, 4, 2], activation="tanh")
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.standard_normal((5, 3)), rng.integers(0, 2, 5)
    >>> curv = Curvature(net, net.init_params(seed=0), X, y)
    >>> v = rng.standard_normal(net.n_params)
    >>> Hv = curv @ v                                  # O(L), exact
    >>> x = curv.solve(v, damping=0.1)                 # (H + 0.1 I)^{-1} v, certified
    >>> bool(np.linalg.norm(curv @ x + 0.1 * x - v) <= 1e-10 * np.linalg.norm(v))
    True
    >>> n_neg, n_zero, n_pos = curv.inertia(0.1)       # of H + 0.1 I
    >>> n_neg + n_zero + n_pos == net.n_params
    True
    """

    def __init__(self, net, params, X, y, kind="hessian", backend=None):
        if kind not in KINDS:
            raise ValueError(f"unknown curvature kind {kind!r}; choose one of {KINDS}")
        if backend is not None:
            xp = backend_module(backend)
            params, X, y = (xp.asarray(to_numpy(a)) for a in (params, X, y))
        params = net.check_params(params)
        X, y = net.check_data(X, y)
        self.net = net
        self.kind = kind
        self.params = params
        xp = array_module(params)
        self.plan = plan(net, X.shape[0], kind, backend="numpy" if xp is np else "cupy")
        self._check_memory(self.plan.blocks, "the derivative blocks of this batch")
        self.linearization = linearize(net, params, X, y)
        self.blocks = Blocks(net, params, self.linearization, kind)
        self.loss = float(self.linearization.loss)
        g = gradient(net, self.linearization)
        self.grad = net.join(g)
        self._factors = {}        # method -> (shift, factorization): the latest of each
        self._interval = None     # Lanczos interval of H (certify.lanczos_interval)
        self._norm_bounds = {}    # shift -> lower bound on ||H + shift I||
        self._counts = {}         # shift -> certified n_neg(H + shift I)
        self._eigenvalues = None  # dense eigenvalues, the inertia's fallback
        self._loss_diagonal = None  # extremes of diag(A_L), a free bound on ||H||
        self._modified = None     # ((damping, floor), the modified sweep): the latest

    @property
    def n_params(self):
        return self.net.n_params

    def _columns(self, v, name):
        """v as (n_params, r) in the net's dtype, and whether it was a vector."""
        xp = array_module(self.params)
        v = xp.asarray(v)
        if v.ndim not in (1, 2) or v.shape[0] != self.n_params:
            raise ValueError(
                f"{name} must have shape ({self.n_params},) or ({self.n_params}, k); "
                f"got {v.shape}")
        if not (np.issubdtype(v.dtype, np.floating) or np.issubdtype(v.dtype, np.integer)):
            raise ValueError(f"{name} must be a real array; got dtype {v.dtype}")
        v = v.astype(self.net.dtype, copy=False)
        if not bool(xp.all(xp.isfinite(v))):
            raise ValueError(f"{name} contains non-finite values (nan or inf)")
        return (v[:, None] if v.ndim == 1 else v), v.ndim == 1

    def _result(self, xs, vector):
        out = self.net.join(xs)
        return out[:, 0] if vector else out

    def hvp(self, v):
        """``H v`` (or ``G v`` for the GGN) in O(L): Pearlmutter's product written with the
        blocks, a forward and a backward pass (docs/math.md section 3.4).

        Parameters
        ----------
        v : array, shape ``(n_params,)`` or ``(n_params, k)``, ``k = 0`` included

        Returns
        -------
        array, the shape of v

        Raises
        ------
        ValueError
            For a wrong shape, a complex or non-numeric dtype, or non-finite entries.
        """
        V, vector = self._columns(v, "v")
        if V.shape[1] == 0:                       # no columns: an empty product
            return V.copy()
        return self._result(hvp(self.blocks, self.net.split(V)), vector)

    def _check_damping(self, damping):
        damping = _finite_real(damping, "damping")
        top = float(np.finfo(self.net.dtype).max)
        if abs(damping) > top:
            raise ValueError(f"damping {damping:g} is beyond the range of the network's "
                             f"dtype {np.dtype(self.net.dtype).name} (at most {top:.3g})")
        if self.kind == "ggn" and damping < 0:
            raise ValueError(
                f"damping must be >= 0 for kind='ggn' (the Gauss-Newton matrix is positive "
                f"semi-definite and damping is what makes it invertible); got {damping}")
        return damping

    def _check_method(self, method):
        if method not in METHODS:
            raise ValueError(f"unknown solve method {method!r}; choose one of {METHODS}")
        if method != "riccati" and array_module(self.params) is not np:
            raise ValueError(f"method {method!r} is a CPU (LAPACK) solver; on the GPU use "
                             f"method='riccati', or pass NumPy arrays")
        return method

    def factor(self, damping, method="riccati"):
        """The factorization of ``H + damping I`` by ``method``, cached: the latest
        factorization of each method is kept, so right-hand sides with the same damping
        reuse it.

        Parameters
        ----------
        damping : float
        method : {"riccati", "ldu", "banded"}

        Returns
        -------
        The method's factorization (:func:`~tallskinny_np.riccati.riccati_factor`,
        :func:`~tallskinny_np.ldu.ldu_factor`, :func:`~tallskinny_np.banded.banded_factor`).

        Raises
        ------
        SingularPivotError
            A pivot of this method is singular to working precision. (:meth:`solve` then
            goes on to other factorizations; this method does not.)
        """
        return self._factor(self._check_damping(damping), self._check_method(method))

    def _check_memory(self, need, what):
        """:class:`~tallskinny_np.errors.PlanMemoryError` when ``need`` bytes of the
        plan (:mod:`tallskinny_np.plan`) do not fit in the memory available; needs below
        :data:`CHECKED_BYTES` are not checked."""
        if need >= CHECKED_BYTES:
            check_fits(need, available_bytes(array_module(self.params)), self.plan, what)

    def _factor(self, shift, method):
        cached = self._factors.get(method)
        if cached is None or cached[0] != shift:
            if method in ("riccati", UNCHECKED):
                # the last factorization of each method is dropped first: it is replaced
                held = sum(p.kept for p in self.plan.layers) if "riccati" in self._factors else 0
                self._check_memory(self.plan.peak - BASE_BYTES - self.plan.blocks - held,
                                   "the Riccati factorization of this batch")
            # Store only after a successful factorization: a failure leaves no state.
            with sweep_threads():
                self._factors[method] = (shift, _SOLVERS[method][0](self.blocks, shift))
        return self._factors[method][1]

    def solve(self, b, damping, method="riccati", refine=3, return_info=False,
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
            Also return a :class:`SolveInfo` with each column's certified backward error
            and the steps that produced it.
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
            No step reached the bound (and ``uncertified="raise"``), or no step gave a
            finite solution (whatever ``uncertified`` says).

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
        exact H: the residual's plus a bound on the rounding of the product, or the
        residual computed again in double words where that bound is too coarse;
        ``info.proved`` is False for a column where both are (deep nets whose Jacobians'
        absolute values grow along the chain), whose figure then takes a model of that
        rounding (docs/math.md section 7.1).

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
        method = self._check_method(method)
        if not isinstance(refine, numbers.Integral) or isinstance(refine, bool) or refine < 0:
            raise ValueError(f"refine must be an integer >= 0; got {refine!r}")
        if uncertified not in ("raise", "warn", "return"):
            raise ValueError(f"uncertified must be 'raise', 'warn' or 'return'; got "
                             f"{uncertified!r}")
        if isinstance(damping, (list, tuple)) or np.ndim(damping) != 0:
            raise ValueError("damping must be one number; use solve_dampings for several")
        damping = self._check_damping(damping)
        Bm, vector = self._columns(b, "b")
        if Bm.shape[1] == 0:                      # no columns: nothing to factor or certify
            X = Bm.copy()
            info = SolveInfo(np.zeros(0), (), backward_error_bound(self.n_params,
                                                                   self.net.dtype),
                             np.zeros(0, dtype=bool))
            return (X, info) if return_info else X
        with sweep_threads():
            # a figure that no one reads is not proved: the model costs nothing
            X, info = self._certified_solve(Bm, damping, method, refine, uncertified,
                                            fallback=fallback,
                                            prove=return_info or uncertified != "return")
        X = X[:, 0] if vector else X
        return (X, info) if return_info else X

    def modified_solve(self, b, damping, floor, refine=3):
        """``F^{-1} b`` for the positive definite ``F = H + damping I + E`` of the modified
        sweep (docs/math.md section 8.3, eq. (8.8)): the Riccati sweep with each pivot
        ``Qxx_l`` replaced by ``V max(|Lambda|, floor I) V^T`` as it is formed, so that
        ``E = blockdiag(E_l)`` over the layers' parameters, positive semi-definite, and
        ``E = 0`` when ``H + (damping - floor) I`` is positive definite.

        The solve is certified like :meth:`solve`'s first steps: the normwise backward error
        for F (applied as ``H v + damping v + E v`` with the sweep's blocks ``E_l``) after at
        most ``refine`` steps of refinement must be at most ``u max(n_params, 1000)``.

        Parameters
        ----------
        b : array, shape ``(n_params,)`` or ``(n_params, k)``
        damping : float
            The shift added before the modification (>= 0 for a GGN).
        floor : float
            delta of eq. (8.7), > 0: the smallest pivot eigenvalue.
        refine : int
            Refinement steps at most.

        Returns
        -------
        x : array, the shape of b
        e_norm : float
            ``||E||_2 = max_l ||E_l||_2``, eq. (8.9).

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
        damping = self._check_damping(damping)
        floor = _finite_real(floor, "floor")
        if not floor > 0:
            raise ValueError(f"floor must be > 0; got {floor}")
        Bm, vector = self._columns(b, "b")
        key = (damping, floor)
        if self._modified is None or self._modified[0] != key:
            with sweep_threads():
                self._modified = (key, riccati_factor(self.blocks, damping, modify=floor))
        fac = self._modified[1]
        E = fac.modification

        def apply_F(V):
            xs = self.net.split(V)
            Ex = [x * 0 if e is None else (e @ x.reshape(e.shape[0], -1)).reshape(x.shape)
                  for e, x in zip(E, xs)]
            return self._shifted_product(V, damping) + self.net.join(Ex)

        e_norm = max((float(np.linalg.norm(to_numpy(e), 2)) for e in E if e is not None),
                     default=0.0)
        if Bm.shape[1] == 0:
            return Bm.copy(), e_norm
        bound = backward_error_bound(self.n_params, self.net.dtype)
        X = self._substitute(fac, "riccati", Bm)
        X, R, _ = _refine(apply_F, lambda V: self._substitute(fac, "riccati", V), Bm, X,
                          Bm - apply_F(X), refine, bound)
        eta = backward_errors(R, X, Bm)
        if not np.all(eta <= bound):
            raise UncertifiedSolveError(eta, bound, "refine")
        return (X[:, 0] if vector else X), e_norm

    def solve_dampings(self, b, dampings, method="riccati", refine=3):
        """``[(H + d I)^{-1} b for d in dampings]``, each certified as in :meth:`solve`;
        the derivative blocks are shared.

        Parameters
        ----------
        b : array, shape ``(n_params,)`` or ``(n_params, k)``
        dampings : sequence of float
        method, refine
            As in :meth:`solve`.

        Returns
        -------
        list of arrays, one per damping, each of b's shape

        Raises
        ------
        ValueError, SingularPivotError, UncertifiedSolveError
            As :meth:`solve`; ``ValueError`` also for an empty sequence.
        """
        dampings = [self._check_damping(d) for d in np.asarray(dampings, dtype=object).ravel()]
        if not dampings:
            raise ValueError("dampings is empty")
        return [self.solve(b, d, method=method, refine=refine) for d in dampings]

    def _certified_solve(self, B, shift, method, refine, uncertified, check=True,
                         fallback=True, prove=True):
        """The chain of :meth:`solve` on the columns of B (n_params, k): each
        factorization in turn on the columns that are not yet certified (only the first
        without ``fallback``); ``check`` tests the result for singularity
        (:meth:`_check_singular`); ``prove`` bounds the product's rounding
        (:meth:`_product_rounding`), else the model of it is taken."""
        xp = array_module(B)
        n, k = B.shape
        bound = backward_error_bound(n, self.net.dtype)
        # The residual's share of the bound: the product's rounding takes the rest.
        residual_bound = bound - PRODUCT_ROUNDING * float(np.finfo(self.net.dtype).eps / 2)
        X = xp.zeros_like(B)
        eta = np.full(k, np.inf)
        paths = [[] for _ in range(k)]
        chain = [method]
        if fallback:
            chain += ([BANDED] if xp is np else []) + [UNCHECKED]
        singular = None
        for m in chain:
            todo = np.flatnonzero(~(eta <= residual_bound))
            if todo.size == 0 or (m == UNCHECKED and singular is None):
                break
            # A poor factorization (past a singular pivot, or in float32) can overflow:
            # inf and nan are expected there, and the certificate judges them.
            try:
                with np.errstate(all="ignore"):
                    self._factor(shift, m)
            except SingularPivotError as err:    # a pivot, not necessarily H + shift I
                singular = singular or err
                continue
            Bt = B[:, todo.tolist()]             # lists index NumPy and CuPy alike
            with np.errstate(all="ignore"):
                solved = self._solve_with(m, Bt, shift, refine, residual_bound)
            if solved is None:
                continue                         # an exactly singular pivot
            Xt, eta_t, steps = solved
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
            eta, proved = self._product_rounding(X, B, shift, eta, bound)
        else:
            eta = eta + product_rounding(X, B, shift, self._probe_norm(shift), self.net.dtype)
            proved = np.zeros(k, dtype=bool)
        if check:
            self._check_singular(B, X, shift, bound, method)
        info = SolveInfo(eta, tuple(tuple(p) for p in paths), bound, proved)
        if not np.all(eta <= bound):
            last = max(paths, key=len)[-1]
            if uncertified == "raise":
                raise UncertifiedSolveError(eta, bound, last)
            if uncertified == "warn":
                warnings.warn(str(UncertifiedSolveError(eta, bound, last)),
                              UncertifiedSolveWarning, stacklevel=3)
        return X, info

    def _solve_with(self, method, B, shift, refine, bound):
        """Steps 1-3 of :meth:`solve` with one factorization: its solve, fixed-precision
        refinement, GMRES-IR on the columns still above ``bound``. Returns ``(X, backward
        error bounds, the steps of each column)``, or None for a non-finite solve."""
        xp = array_module(B)
        X = self._solve_columns(B, shift, method)
        if not bool(xp.all(xp.isfinite(X))):
            return None
        first = "banded" if method == BANDED else "factor"
        # Refinement aims lower than the bound, at dense LU's level.
        target = REFINE_TARGET * np.finfo(self.net.dtype).eps
        X, R, refined = _refine(lambda V: self._shifted_product(V, shift),
                                lambda V: self._solve_columns(V, shift, method), B, X,
                                B - self._shifted_product(X, shift), refine, target,
                                self._probe_norm(shift))
        steps = [[first] + ["refine"] * refined for _ in range(B.shape[1])]
        eta = self._backward_errors(R, X, B, shift, bound)
        # GMRES is a must above the bound; once the sharp bound was paid for (the residual
        # alone did not certify) it also goes on down to the refinement's target.
        aim = target if shift in self._norm_bounds else bound
        for i in np.flatnonzero(~(eta <= aim)):
            x, e = self._gmres_refinement(B[:, i], X[:, i], R[:, i], shift, method, aim)
            steps[i].append("gmres")
            if e < eta[i]:
                X[:, i], eta[i] = x, e
        return X, eta, steps

    def _gmres_refinement(self, b, x, r, shift, method, aim):
        """GMRES-based iterative refinement of one column (Carson and Higham 2017): the
        correction equation ``(H + shift I) d = r`` solved by GMRES preconditioned with the
        factorization, the residual recomputed with the exact product, until the backward
        error bound is at most ``aim`` or stops decreasing. Returns the best
        ``(x, backward error bound)``."""
        def apply(v):
            return self._shifted_product(v[:, None], shift)[:, 0]

        def precond(v):
            return self._solve_columns(v[:, None], shift, method)[:, 0]

        eta = self._backward_errors(r[:, None], x[:, None], b[:, None], shift, aim)[0]
        for _ in range(GMRES_OUTER):
            x_new = x + gmres(apply, precond, r, GMRES_RESTART, GMRES_RTOL)
            r_new = b - apply(x_new)
            e = self._backward_errors(r_new[:, None], x_new[:, None], b[:, None], shift,
                                      aim)[0]
            if not e < eta:
                break
            x, r, eta = x_new, r_new, e
            if eta <= aim:
                break
        return x, eta

    def _backward_errors(self, R, X, B, shift, bound):
        """Per-column bounds on the backward error (:func:`certify.backward_errors`) with
        the free lower bound of :meth:`_probe_norm` on ``||H + shift I||``; the sharper
        one of the Lanczos interval is computed only when that does not certify."""
        eta = backward_errors(R, X, B, self._probe_norm(shift))
        if np.all(eta <= bound):
            return eta
        return backward_errors(R, X, B, self._norm_lower_bound(shift))

    def _product_rounding(self, X, B, shift, eta, bound):
        """``(figure, proved)`` per column (docs/math.md section 7.1): the backward errors
        ``eta`` of residuals computed with the O(L) product, made bounds on those against
        the exact H (eq. (7.3f)) with the bound of :func:`products.hvp_rounding` on that
        product's rounding at X (one product's cost); where that certifies nothing and the
        double-word residual can (:func:`certify.accurate_residual`), with it too; with the
        free lower bound on ``||H + shift I||`` of :meth:`_probe_norm`, then the Lanczos
        one. A column's figure is proved when the rounding part of a bound is at most
        ``bound``; else it is the model's (eq. (7.3g))."""
        dtype = self.net.dtype
        u = float(np.finfo(dtype).eps / 2)
        xs = self.net.split(X)
        P, E = (self.net.join(v) for v in hvp_rounding(self.blocks, xs))
        residuals = [(lambda nu: eta, residual_rounding(P, E, X, shift, u))]

        def against_h(nu):                    # the best proved figure, inf where none
            figure, proved = np.full(len(eta), np.inf), np.zeros(len(eta), dtype=bool)
            for eta_at, e in residuals:
                rounding = backward_errors_of_h(np.zeros(len(eta)), e, X, B, nu, dtype)
                ok = rounding <= bound
                figure = np.where(ok, np.minimum(figure, backward_errors_of_h(
                    eta_at(nu), e, X, B, nu, dtype)), figure)
                proved |= ok
            return figure, proved, rounding

        nu = self._probe_norm(shift)
        figure, proved, rounding = against_h(nu)
        # the double-word residual's rounding is about u_2 / u times the first's
        accurate = DoubleWord.UNIT if dtype == np.float64 else np.finfo(np.float64).eps / 2
        if np.any(~(figure <= bound) & (rounding * accurate / u <= bound)):
            R, e = accurate_residual(self.blocks, xs, B, shift, self.net.join)
            residuals.append((lambda nu: backward_errors(R, X, B, nu), e))
            figure, proved, _ = against_h(nu)
        if not np.all(np.where(proved, figure, eta + product_rounding(X, B, shift, nu, dtype))
                      <= bound):
            nu = max(nu, self._norm_lower_bound(shift))
            figure, proved, _ = against_h(nu)
        return np.where(proved, figure, eta + product_rounding(X, B, shift, nu, dtype)), proved

    def _check_singular(self, B, X, shift, bound, method):
        """Raise :class:`SingularPivotError` when the solutions prove ``H + shift I``
        singular at the certificate's resolution: for x with ``A x`` close to b,
        ``nu ||x|| / ||b|| <= cond(A)`` for any lower bound nu on ``||A||``, and a value of
        at least ``1 / bound`` means that A is within the certified backward error of a
        singular matrix (no digit of x is guaranteed). nu is first the free bound of
        :meth:`_probe_norm`; only a suspicious solution (an estimate above
        ``1 / sqrt(bound)``) pays for the sharper Lanczos bound and, since b may miss
        the near-null space, for three steps of inverse iteration from a random start
        with certified solves."""
        x, b = column_norms(X), column_norms(B)
        growth = np.divide(x, b, out=np.zeros_like(x), where=b > 0).max()
        if not self._probe_norm(shift) * growth * np.sqrt(bound) >= 1:
            return
        nu = self._norm_lower_bound(shift)
        cond = nu * growth
        xp = array_module(B)
        z = xp.asarray(np.random.default_rng(3).standard_normal((B.shape[0], 1)))
        z = z.astype(B.dtype)
        for _ in range(3):
            if cond * bound >= 1:
                break
            z = z / float(column_norms(z)[0])
            z, info = self._certified_solve(z, shift, method, 3, "return", check=False)
            if not info.backward_error[0] <= bound:
                break
            cond = max(cond, nu * float(column_norms(z)[0]))
        if cond * bound >= 1:
            raise SingularPivotError(
                None, float(1 / cond), "matrix H + damping I",
                f"||H + damping I|| ||(H + damping I)^-1|| >= {cond:.3g}, at least "
                f"1 / (the backward-error bound {bound:.3g}); increase the damping (H "
                f"itself is singular in general)")

    def _probe_norm(self, shift):
        """``max_i |H_ii + shift| <= ||H + shift I||_2`` over the loss layer's parameters,
        whose diagonal block of H is the loss layer's A (docs/math.md section 3.3): a free
        lower bound, ``(A_L)_{(k,j),(k,j)} = sum_s pi_sk (1 - pi_sk) zt_sj^2 / B``."""
        if self._loss_diagonal is None:
            loss = self.blocks.layers[-1]
            var = loss.pi * (1 - loss.pi) / loss.pi.shape[0]
            # var before either zt: zt^2 alone overflows where a saturated softmax is 0
            diagonal = ((var[:, :, None] * loss.Zt[:, None, :]) * loss.Zt[:, None, :]).sum(axis=0)
            self._loss_diagonal = (float(diagonal.min()), float(diagonal.max()))
        lo, hi = self._loss_diagonal
        return max(abs(lo + shift), abs(hi + shift))

    def ritz_interval(self):
        """Ritz values ``(theta_min, theta_max)`` of H from 20 Lanczos steps (cached):
        ``lambda_min <= theta_min`` and ``theta_max <= lambda_max``, usually within a few
        percent of them (docs/math.md eq. (7.2)).

        Returns
        -------
        (theta_min, theta_max) : tuple of float
            Both NaN when a product or inner product of the Lanczos steps overflows the
            dtype (``||H||`` near float32's range with huge inputs): then no certificate
            that needs ``||H||`` can be given.
        """
        if self._interval is None:
            xp = array_module(self.params)
            self._interval = lanczos_interval(lambda v: self.hvp(v), self.n_params, xp,
                                              self.net.dtype)
        return self._interval

    def _norm_lower_bound(self, shift):
        """``max(|theta_min + shift|, |theta_max + shift|) <= ||H + shift I||_2``."""
        if shift not in self._norm_bounds:
            lo, hi = self.ritz_interval()
            self._norm_bounds[shift] = max(abs(lo + shift), abs(hi + shift))
        return self._norm_bounds[shift]

    def norm_estimate(self):
        """A lower bound on ``||H||_2`` from 20 Lanczos steps (usually within a few percent
        of it; docs/math.md eq. (7.2)), the scale of the inertia's tolerance.

        Returns
        -------
        float

        Raises
        ------
        UncertifiedInertiaError
            ``||H||`` is too large for the dtype (:meth:`ritz_interval` is NaN): without a
            scale no eigenvalue count can be certified.
        """
        lo, hi = self.ritz_interval()
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise UncertifiedInertiaError(
                None, f"||H|| is too large for {np.dtype(self.net.dtype).name} (its Lanczos "
                      f"estimate overflows); use float64 or scale the inputs")
        return max(abs(lo), abs(hi))

    def _solve_columns(self, Bm, shift, method):
        """One substitution with the cached factors of ``H + shift I``:
        Bm (n_params, r) -> (n_params, r)."""
        return self._substitute(self._factor(shift, method), method, Bm)

    def _substitute(self, fac, method, Bm):
        """The solve of factorization ``fac`` (of ``method``) on Bm (n_params, r)."""
        with sweep_threads():
            xs = _SOLVERS[method][1](fac, self.net.split(Bm))
        return self.net.join(xs)

    def _shifted_product(self, X, damping):
        """``(H + damping I) X`` for X (n_params, r), by the O(L) product."""
        return self.net.join(hvp(self.blocks, self.net.split(X))) + damping * X

    def inertia(self, shift=0.0, tol=None):
        """``(n_neg, n_zero, n_pos)`` of ``H + shift I``, certified (docs/math.md
        section 7.3).

        An eigenvalue lambda of H counts as zero when ``|lambda + shift| <= tol ||H||``
        (``||H||`` from :meth:`norm_estimate`; ``tol`` defaults to the square root of the
        dtype's machine epsilon, 1.5e-8 in float64). An eigenvalue further than that from
        ``-shift`` is never counted in the wrong class; one within it may be counted as
        zero or by its sign. A positive semi-definite GGN at shift 0 has no negative count.

        The counts come from two Riccati sweeps, at ``shift + t`` and ``shift - t`` with
        ``t = tol ||H|| / 2``, by Sylvester's law of inertia: the sweep at ``c`` gives the
        inertia of a factorization F of ``H + c I``, and an estimate of
        ``||I - (H + c I) F^{-1}||_2`` below 1/4 proves that it is that of ``H + c I``.
        Where a sweep is not certified the count comes from the dense eigenvalues of H for
        ``n_params <= DENSE_INERTIA_MAX``, else
        :class:`~tallskinny_np.errors.UncertifiedInertiaError` is raised.

        Parameters
        ----------
        shift : float
        tol : float in (0, 1), optional
            Relative to ``||H||``; default ``sqrt(eps)`` of the dtype.

        Returns
        -------
        (n_neg, n_zero, n_pos) : tuple of int

        Raises
        ------
        UncertifiedInertiaError
            No sweep near the shift could be certified and the network is too large for
            the dense fallback.

        References
        ----------
        J. Kuczynski and H. Wozniakowski, "Estimating the largest eigenvalue by the power
        and Lanczos algorithms with a random start", SIAM J. Matrix Anal. Appl. 13(4),
        1992. doi:10.1137/0613066
        """
        shift = _finite_real(shift, "shift")
        t = self._half_band(tol)
        n_neg = self._negative_count(shift + t, t / 2)
        n_pos = self.n_params - self._negative_count(shift - t, t / 2)
        return n_neg, self.n_params - n_neg - n_pos, n_pos

    def count_eigenvalues_below(self, sigma, tol=None):
        """The number of eigenvalues of H below sigma, ``n_neg(H - sigma I)``, exact for
        every eigenvalue further than ``tol ||H||`` from sigma (spectrum slicing,
        docs/math.md eq. (4.19) and section 7.3).

        Parameters
        ----------
        sigma : float
        tol : float in (0, 1), optional
            Relative to ``||H||``; default ``sqrt(eps)``.

        Returns
        -------
        int

        Raises
        ------
        UncertifiedInertiaError
            As :meth:`inertia`.
        """
        sigma = _finite_real(sigma, "sigma")
        t = self._half_band(tol)
        return self._negative_count(t - sigma, t / 2)      # the sweep inertia(-sigma) uses

    def is_positive_definite(self, shift=0.0, tol=None):
        """Whether ``H + shift I`` is positive definite with a margin: True when every
        eigenvalue of ``H + shift I`` exceeds ``tol ||H||``, False when one is below 0,
        either in between (docs/math.md section 7.3).

        Parameters
        ----------
        shift : float
        tol : float in (0, 1), optional
            Relative to ``||H||``; default ``sqrt(eps)``.

        Returns
        -------
        bool

        Raises
        ------
        UncertifiedInertiaError
            As :meth:`inertia`.
        """
        shift = _finite_real(shift, "shift")
        t = self._half_band(tol)
        return self._negative_count(shift - t, t / 2) == 0  # the sweep inertia(shift) uses

    def _half_band(self, tol):
        """``t = tol ||H|| / 2``, half the band of eigenvalues counted as zero; tol defaults
        to the square root of the dtype's machine epsilon."""
        if tol is None:
            tol = float(np.sqrt(np.finfo(self.net.dtype).eps))
        elif not (isinstance(tol, numbers.Real) and 0 < tol < 1):
            raise ValueError(f"tol must be a number in (0, 1); got {tol!r}")
        return 0.5 * float(tol) * self.norm_estimate()

    def _negative_count(self, c, slack):
        """The certified number of negative eigenvalues of ``H + c' I`` for some c' within
        ``slack`` of c: c itself, then ``c +/- slack``, then the dense fallback."""
        if c in self._counts:
            return self._counts[c]
        far = self._far_shift_count(c)
        if far is not None:
            self._counts[c] = far
            return far
        for trial in (c, c + slack, c - slack):
            count = self._certified_sweep_count(trial)
            if count is not None:
                self._counts[c] = count
                return count
        count = self._dense_negative_count(c, slack)
        self._counts[c] = count
        return count

    def _far_shift_count(self, c):
        """``n_neg(H + c I)`` for a shift far beyond ``||H||``, without a sweep: 0 for
        c > 0, n for c < 0, the inertia of ``F = c I``, certified by eq. (7.5) with
        ``omega = ||H|| / |c|`` estimated on ``A / c = I + H / c`` (no product with c,
        which may lie beyond the dtype's range; docs/math.md section 7.3). None when c is
        not far enough (then ``|c| <= FAR_SHIFT ||H||`` by the Lanczos bound)."""
        if not abs(c) > FAR_SHIFT * self.norm_estimate():
            return None
        scale = 1.0 / c
        with np.errstate(under="ignore"):
            omega = factor_distance(lambda V: V + self.hvp(V) * scale, lambda V: V,
                                    self.n_params, array_module(self.params),
                                    self.net.dtype, stop_above=OMEGA_MAX)
        if not omega < OMEGA_MAX:
            return None
        return 0 if c > 0 else self.n_params

    def _certified_sweep_count(self, c):
        """``n_neg(H + c I)`` from a Riccati sweep if its certificate holds, else None.
        Overflow in a sweep near the spectrum only fails the certificate: it is silenced."""
        with sweep_threads(), np.errstate(all="ignore"):
            fac = riccati_factor(self.blocks, c, inertia=True)
            if fac.singular is not None or fac.inertia[1] != 0:
                return None                      # F singular: no certificate
            omega = factor_distance(lambda V: self._shifted_product(V, c),
                                    lambda V: self._substitute(fac, "riccati", V),
                                    self.n_params, array_module(self.params),
                                    self.net.dtype, stop_above=OMEGA_MAX)
        if not omega < OMEGA_MAX:
            return None
        self._factors["riccati"] = (c, fac)      # a solve at this shift reuses it
        return fac.inertia[0]

    def _dense_negative_count(self, c, slack):
        """``n_neg(H + c I)`` from the dense eigenvalues of H, for small networks, when no
        eigenvalue lies within their error bound of ``-c``."""
        n = self.n_params
        if n > DENSE_INERTIA_MAX:
            raise UncertifiedInertiaError(
                c, f"the Riccati sweeps near this shift are not accurate enough, and "
                   f"{n} parameters is above the dense fallback's limit {DENSE_INERTIA_MAX}")
        if self._eigenvalues is None:
            xp = array_module(self.params)
            H = to_numpy(self.hvp(xp.eye(n, dtype=self.net.dtype)))
            self._eigenvalues = np.linalg.eigvalsh(0.5 * (H + H.T))
        w = self._eigenvalues + c
        # eigvalsh is backward stable: each eigenvalue within a small multiple of n u ||H||,
        # and the columns of H are O(L) products (their rounding: BOUND_FLOOR u ||H||).
        err = np.finfo(self.net.dtype).eps * (n + BOUND_FLOOR) * max(np.abs(w).max(), abs(c))
        if not err < slack:
            raise UncertifiedInertiaError(c, "the dense eigenvalues are not accurate enough")
        if np.any(np.abs(w) <= err):
            # Within the slack a count at c -/+ slack is as good: pick the side that is clear.
            for trial in (c + slack, c - slack):
                if not np.any(np.abs(self._eigenvalues + trial) <= err):
                    return int((self._eigenvalues + trial < 0).sum())
            raise UncertifiedInertiaError(c, "eigenvalues too close to the shift")
        return int((w < 0).sum())

    def lambda_min(self, tol=1e-8):
        """The smallest eigenvalue of H, to ``tol * max(1, ||H||)``: bisection on the
        certified eigenvalue count (spectrum slicing, docs/math.md section 4.7), then
        refined by inverse iteration with the bisection's lower end as the shift and a
        Rayleigh quotient, kept inside the bisection bracket.

        Parameters
        ----------
        tol : float in (0, 1)

        Returns
        -------
        float

        Raises
        ------
        UncertifiedInertiaError
            When a count of the bisection cannot be certified.
        """
        if not (isinstance(tol, numbers.Real) and 0 < tol < 1):
            raise ValueError(f"tol must be a number in (0, 1); got {tol!r}")
        xp = array_module(self.params)
        theta_min, _ = self.ritz_interval()
        scale = max(1.0, self.norm_estimate())
        count_tol = min(0.25 * tol * scale / self.norm_estimate(), 0.5) \
            if self.norm_estimate() > 0 else None
        lo, hi = theta_min - tol * scale, theta_min + tol * scale
        while self.count_eigenvalues_below(lo, count_tol) > 0:
            lo -= 2 * (hi - lo)
        while self.count_eigenvalues_below(hi, count_tol) == 0:
            hi += 2 * (hi - lo)
        while hi - lo > tol * scale:
            mid = 0.5 * (lo + hi)
            if self.count_eigenvalues_below(mid, count_tol) > 0:
                hi = mid
            else:
                lo = mid
        rng = np.random.default_rng(0)
        u = xp.asarray(rng.standard_normal((self.n_params, 1))).astype(self.net.dtype)
        try:
            for _ in range(3):                  # inverse iteration needs no certificate
                u, _ = self._certified_solve(u, -lo, "riccati", 3, "return")
                u = u / xp.linalg.norm(u)
            rq = float((u[:, 0] @ self.hvp(u[:, 0])))
        except np.linalg.LinAlgError:            # lo sits on the eigenvalue itself
            return lo
        return min(max(rq, lo), hi)

    @property
    def shape(self):
        """``(n_params, n_params)``: the curvature is a square operator."""
        return (self.n_params, self.n_params)

    @property
    def dtype(self):
        """The dtype of the network, hence of every product and solve."""
        return np.dtype(self.net.dtype)

    # NumPy's operators on an array and a Curvature defer to the Curvature's (v @ curv).
    __array_ufunc__ = None

    def __matmul__(self, v):
        """``curv @ v`` is :meth:`hvp`."""
        return self.hvp(v)

    def __rmatmul__(self, v):
        """``v @ curv``: H is symmetric, so a vector gives ``H v`` and a matrix
        ``(k, n_params)`` gives ``(H v^T)^T``."""
        v = array_module(self.params).asarray(v)
        if v.ndim == 2:
            if v.shape[1] != self.n_params:
                raise ValueError(f"v in v @ curv must have shape ({self.n_params},) or "
                                 f"(k, {self.n_params}); got {v.shape}")
            return self.hvp(v.T).T
        return self.hvp(v)

    def to_scipy(self):
        """H (or the GGN) as a symmetric ``scipy.sparse.linalg.LinearOperator`` (on CuPy
        arrays, ``cupyx.scipy.sparse.linalg``'s), for scipy's eigsh, minres, cg, ...

        Returns
        -------
        SymmetricOperator
            ``matvec``/``matmat`` are :meth:`hvp`; its adjoint ``.H`` is itself.

        Examples
        --------
        >>> import numpy as np
        >>> from scipy.sparse.linalg import eigsh
        >>> from tallskinny_np import MLP, Curvature
        >>> net = MLP([3, 4, 4, 2], activation="tanh")
        >>> rng = np.random.default_rng(0)
        >>> curv = Curvature(net, net.init_params(seed=0), rng.standard_normal((5, 3)),
        ...                  rng.integers(0, 2, 5))
        >>> op = curv.to_scipy()
        >>> op.shape == curv.shape and op.H is op
        True
        >>> top = eigsh(op, k=1, which="LA", return_eigenvectors=False)
        >>> bool(top[0] <= curv.norm_estimate() * (1 + 1e-6))
        True
        """
        return _operator(self, self.hvp)

    def inverse(self, damping, method="riccati"):
        """``(H + damping I)^{-1}`` as a symmetric LinearOperator (see :meth:`to_scipy`):
        factors once, then each product costs the certified substitutions of
        :meth:`solve`.

        Parameters
        ----------
        damping : float
        method : {"riccati", "ldu", "banded"}

        Returns
        -------
        scipy.sparse.linalg.LinearOperator

        Raises
        ------
        SingularPivotError
            As :meth:`factor`; products raise as :meth:`solve`.
        """
        self.factor(damping, method)
        return _operator(self, lambda v: self.solve(v, damping, method))


def _finite_real(value, name):
    """value as a float, or ValueError if it is not a finite real number (a 0-d real
    array counts as a number; a Fraction or an int converts to the nearest float)."""
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "fiu":
        value = value.item()
    try:
        ok = (isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
              and math.isfinite(value))
    except OverflowError:                  # a Fraction or int beyond float's range
        ok = False
    if not ok:
        raise ValueError(f"{name} must be a finite real number; got {value!r}")
    return float(value)


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


class SymmetricOperator(LinearOperator):
    """A symmetric ``scipy.sparse.linalg.LinearOperator`` from one function that applies
    it to a vector or to the columns of a matrix: its adjoint is itself."""

    def __init__(self, apply, n, dtype):
        super().__init__(dtype, (n, n))
        self._apply = apply

    def _matvec(self, v):
        return self._apply(v.reshape(-1))

    def _matmat(self, V):
        return self._apply(V)

    def _adjoint(self):
        return self


def _operator(curv, apply):
    n = curv.n_params
    if array_module(curv.params) is np:
        return SymmetricOperator(apply, n, curv.dtype)
    from cupyx.scipy.sparse.linalg import LinearOperator as CupyOperator
    return CupyOperator((n, n), matvec=apply, rmatvec=apply, matmat=apply, rmatmat=apply,
                        dtype=curv.dtype)
