"""``Curvature``: the gradient, ``H v``, certified solves with ``H + damping I`` and
certified eigenvalue counts of an MLP's loss at a point (docs/math.md sections 3, 4 and 7).

The damping-independent work (forward pass, backprop, derivative blocks of docs/math.md
section 2) is done once in the constructor; products and solves reuse it, and the latest
factorization of each method is kept so that further right-hand sides with the same damping
cost only the substitutions; the solves (:mod:`tallskinny_np.certified`), counts
(:mod:`tallskinny_np.spectrum`) and norm bounds (:mod:`tallskinny_np.norms`) use them.
"""
import copy

import numpy as np
from scipy.sparse.linalg import LinearOperator

from . import certified, norms, spectrum
from .backend import array_module, backend_module, sweep_threads, to_numpy
from .blocks import KINDS, Blocks, gradient, linearize
from .certified import METHODS, SOLVERS, UNCHECKED, SolveInfo  # noqa: F401 (SolveInfo: public)
from .deprecation import moved, renamed
from .errors import finite_real
from .plan import BASE_BYTES, available_bytes, check_fits, plan
from .products import hvp

__getattr__ = moved(__name__, {
    **dict.fromkeys(("BANDED", "GMRES_OUTER", "GMRES_RESTART", "GMRES_RTOL", "REFINE_TARGET"),
                    "tallskinny_np.certified"),
    **dict.fromkeys(("DENSE_INERTIA_MAX", "FAR_SHIFT", "OMEGA_MAX"), "tallskinny_np.spectrum")})
CHECKED_BYTES = 2 ** 28
"""Memory needs of at least this many bytes (256 MiB) are checked against the memory
available before they are allocated (:mod:`tallskinny_np.plan`)."""


class Curvature:
    r"""The exact curvature of ``net``'s mean loss (cross-entropy or squared error) at
    ``params`` on the batch ``(X, y)``, as an O(L) operator with O(L) solves.

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
    y : array of int, shape ``(B,)``, or of float, shape ``(B, n_L)``
        Labels, or the targets of ``loss="mse"``.
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
    data : tuple
        ``(X, y)`` as checked by ``net``, which the certificates evaluate again in a
        wider arithmetic (docs/math.md eq. (7.3m)).

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
        self.data = (X, y)
        self.linearization = linearize(net, params, X, y)
        self.blocks = Blocks(net, params, self.linearization, kind)
        self.loss = float(self.linearization.loss)
        g = gradient(net, self.linearization)
        self.grad = net.join(g)
        self._reset()

    def _reset(self):
        """Empty the caches of what depends on the blocks."""
        self._factors = {}        # method -> (shift, factorization): the latest of each
        self._interval = None     # Lanczos interval of H (krylov.lanczos_interval)
        self._norm_bounds = {}    # shift -> lower bound on ||H + shift I||
        self._counts = {}         # shift -> certified n_neg(H + shift I)
        self._eigenvalues = None  # dense eigenvalues, the inertia's fallback
        self._loss_diagonal = None  # extremes of diag(A_L), a free bound on ||H||
        self._modified = None     # ((damping, floor), the modified sweep): the latest
        self._wide = None         # the blocks of the wide evaluation (evaluation.py)

    def with_kind(self, kind):
        """The curvature of ``kind`` at the same parameters and batch, sharing this one's
        forward pass: only its derivative blocks are built (this one if ``kind`` is
        its own)."""
        if kind not in KINDS:
            raise ValueError(f"unknown curvature kind {kind!r}; choose one of {KINDS}")
        if kind == self.kind:
            return self
        other = copy.copy(self)
        other.kind = kind
        other.plan = plan(self.net, self.plan.batch, kind, backend=self.plan.backend)
        other._check_memory(other.plan.blocks, "the derivative blocks of this batch")
        other.blocks = Blocks(self.net, self.params, self.linearization, kind)
        other._reset()
        return other

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
        out = self.net.join(hvp(self.blocks, self.net.split(V)))
        return out[:, 0] if vector else out

    def _check_damping(self, damping):
        damping = finite_real(damping, "damping")
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
                self._factors[method] = (shift, SOLVERS[method][0](self.blocks, shift))
        return self._factors[method][1]

    def _solve_columns(self, Bm, shift, method):
        """One substitution with the cached factors of ``H + shift I``:
        Bm (n_params, r) -> (n_params, r)."""
        return self._substitute(self._factor(shift, method), method, Bm)

    def _substitute(self, fac, method, Bm):
        """The solve of factorization ``fac`` (of ``method``) on Bm (n_params, r)."""
        with sweep_threads():
            xs = SOLVERS[method][1](fac, self.net.split(Bm))
        return self.net.join(xs)

    def _shifted_product(self, X, damping):
        """``(H + damping I) X`` for X (n_params, r), by the O(L) product."""
        return self.net.join(hvp(self.blocks, self.net.split(X))) + damping * X

    def solve(self, b, damping, method="riccati", refine=3, return_info=False,
              uncertified="raise", fallback=True):
        """``(H + damping I)^{-1} b``, certified (docs/math.md sections 4 and 7), and with
        ``return_info`` a :class:`SolveInfo`: see :func:`tallskinny_np.certified.solve`."""
        return certified.solve(self, b, damping, method, refine, return_info, uncertified,
                               fallback)

    def step_solve(self, g, damping):
        """``x = (H + damping I)^{-1} g`` uncertified, for an optimizer's step, and
        ``x^T H x`` from its residual: :func:`tallskinny_np.certified.step_solve`."""
        return certified.step_solve(self, g, damping)

    def modified_solve(self, b, damping, floor, refine=3):
        """``(H + damping I + E)^{-1} b`` and ``||E||_2``: :func:`certified.modified_solve`."""
        return certified.modified_solve(self, b, damping, floor, refine)

    def solve_dampings(self, b, dampings, method="riccati", refine=3):
        """``[(H + d I)^{-1} b for d in dampings]``: :func:`certified.solve_dampings`."""
        return certified.solve_dampings(self, b, dampings, method, refine)

    @renamed(shift="damping")
    def inertia(self, damping=0.0, tol=None):
        """``(n_neg, n_zero, n_pos)`` of ``H + damping I``, certified (docs/math.md section
        7.3): see :func:`tallskinny_np.spectrum.inertia`."""
        return spectrum.inertia(self, damping, tol)

    def count_eigenvalues_below(self, sigma, tol=None):
        """``n(H < sigma)``, certified: :func:`spectrum.count_eigenvalues_below`."""
        return spectrum.count_eigenvalues_below(self, sigma, tol)

    @renamed(shift="damping")
    def is_positive_definite(self, damping=0.0, tol=None):
        """Whether ``H + damping I`` is positive definite with a margin (docs/math.md
        section 7.3): see :func:`tallskinny_np.spectrum.is_positive_definite`."""
        return spectrum.is_positive_definite(self, damping, tol)

    def lambda_min(self, tol=1e-8):
        """H's smallest eigenvalue, to ``tol max(1, ||H||)``: :func:`spectrum.lambda_min`."""
        return spectrum.lambda_min(self, tol)

    def ritz_interval(self):
        """Ritz values ``(theta_min, theta_max)`` of H from 20 Lanczos steps (docs/math.md
        eq. (7.2)), cached: see :func:`tallskinny_np.norms.ritz_interval`."""
        return norms.ritz_interval(self)

    def norm_estimate(self):
        """A lower bound on ``||H||_2`` from 20 Lanczos steps (docs/math.md eq. (7.2)): see
        :func:`tallskinny_np.norms.norm_estimate`."""
        return norms.norm_estimate(self)

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
