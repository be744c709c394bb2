"""``Curvature``: gradient, H v and (H + damping I)^{-1} b of an MLP at a point.

The damping-independent work (forward pass, backprop, derivative blocks of DESIGN.md
section 2) is done once in the constructor; products and solves reuse it, and the most
recent factorization is kept so that further right-hand sides with the same damping cost
only the substitutions.
"""
import numbers

import numpy as np

from .backend import array_module, backend_module, sweep_threads, to_numpy
from .banded import banded_factor, banded_solve
from .blocks import KINDS, Blocks, gradient, linearize
from .ldu import ldu_factor, ldu_solve
from .products import hvp
from .riccati import riccati_factor, riccati_solve

METHODS = ("riccati", "ldu", "banded")

# method -> (factor(blocks, damping), solve(factor, MLP.split rhs) -> MLP.split x)
_SOLVERS = {
    "riccati": (riccati_factor, riccati_solve),
    "ldu": (ldu_factor, ldu_solve),
    "banded": (banded_factor, banded_solve),
}


class Curvature:
    """Exact curvature of ``net``'s mean cross-entropy at ``params`` on the batch (X, y).

    ``kind="hessian"`` is the Hessian H; ``kind="ggn"`` the generalized Gauss-Newton
    matrix ``J^T Lambda J`` (DESIGN.md section 2, last paragraph). ``backend`` ("numpy" or
    "cupy") moves the data there; by default the arrays' own module is used, so CuPy arrays
    in means GPU computation, with results as CuPy arrays. On CuPy, blocks, ``hvp``, the
    ``riccati`` solve, the inertia and the operators run on the GPU; ``ldu`` and ``banded``
    are LAPACK (CPU) solvers and refuse CuPy arrays. Attributes: ``loss``
    (float), ``grad`` (flat vector), ``blocks`` (:class:`tallskinny_np.blocks.Blocks`),
    ``linearization`` (forward and backward pass).
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
        self.linearization = linearize(net, params, X, y)
        self.blocks = Blocks(net, params, self.linearization, kind)
        self.loss = float(self.linearization.loss)
        g = gradient(net, self.linearization)
        self.grad = net.join(g)
        self._factors = {}

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
        """``H v`` (or ``G v`` for the GGN) in O(L), DESIGN.md section 3. v may be
        ``(n_params,)`` or ``(n_params, k)``; the result has v's shape."""
        V, vector = self._columns(v, "v")
        return self._result(hvp(self.blocks, self.net.split(V)), vector)

    def _check_damping(self, damping):
        damping = _finite_real(damping, "damping")
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
        """The factorization of ``H + damping I`` by ``method`` (cached: the latest
        factorization of each method is kept, so right-hand sides with the same damping
        reuse it)."""
        return self._factor(self._check_damping(damping), self._check_method(method))

    def _factor(self, shift, method):
        cached = self._factors.get(method)
        if cached is None or cached[0] != shift:
            # Store only after a successful factorization: a failure leaves no state.
            with sweep_threads():
                self._factors[method] = (shift, _SOLVERS[method][0](self.blocks, shift))
        return self._factors[method][1]

    def solve(self, b, damping, method="riccati", refine=3):
        """``(H + damping I)^{-1} b`` (DESIGN.md section 4), b of shape ``(n_params,)``
        or ``(n_params, k)``; the result has b's shape. A sequence of dampings returns a
        list, one solution per damping, sharing the derivative blocks and the checks.

        ``damping`` is a shift: for ``kind="hessian"`` any finite value is accepted, and
        a negative one solves with ``H - |damping| I`` (as shift-invert and spectrum
        slicing do; H is indefinite anyway). For ``kind="ggn"`` it must be >= 0. A
        singular or numerically singular pivot (for example damping = 0, where H is
        singular in general) raises :class:`tallskinny_np.errors.SingularPivotError`
        naming the layer.

        Methods: ``"riccati"`` (default), the stage-wise elimination
        (:mod:`tallskinny_np.riccati`); ``"ldu"``, the paper's algorithm literally: the
        pivoted augmented system, block LDU, forward and backward substitution
        (:mod:`tallskinny_np.ldu`); ``"banded"``, LAPACK's banded LU with partial pivoting
        on the same system (:mod:`tallskinny_np.banded`).

        ``refine``: at most this many steps of fixed-precision iterative refinement,
        ``x += solve(b - (H + damping I) x)``, with the exact O(L) ``hvp`` for the residual
        and the cached factors for the correction; a step is kept only while it at least
        halves the residual. Riccati and the block LDU eliminate stage by stage without
        pivoting across stages, so on an indefinite, ill-conditioned ``H + damping I`` an
        intermediate pivot can be far worse conditioned than the whole matrix, and their
        raw backward error can exceed dense LU's by orders of magnitude (measured in
        tests/test_solve.py); refinement restores it. No step is taken when the first
        solve is already backward stable: as ``||(H + damping I) x|| <= ||H + damping I||
        ||x||``, the residual r bounds the normwise backward error by
        ``||r|| / (||b - r|| + ||b||)``, and a bound below 10 eps certifies it.
        ``refine=0`` gives the raw algorithm.
        """
        method = self._check_method(method)
        if not isinstance(refine, numbers.Integral) or isinstance(refine, bool) or refine < 0:
            raise ValueError(f"refine must be an integer >= 0; got {refine!r}")
        if isinstance(damping, (list, tuple, np.ndarray)):
            dampings = [self._check_damping(d) for d in np.asarray(damping, dtype=object).ravel()]
            if not dampings:
                raise ValueError("damping is an empty sequence")
        else:
            dampings = [self._check_damping(damping)]
        Bm, vector = self._columns(b, "b")
        out = []
        for d in dampings:
            X = self._solve_columns(Bm, d, method)
            R = Bm - self._shifted_product(X, d) if refine else None
            for _ in range(refine if refine and not _backward_stable(R, Bm) else 0):
                X_new = X + self._solve_columns(R, d, method)
                R_new = Bm - self._shifted_product(X_new, d)
                if not _norm(R_new) <= 0.5 * _norm(R):
                    break
                X, R = X_new, R_new
            out.append(X[:, 0] if vector else X)
        return out if len(dampings) > 1 or not np.isscalar(damping) else out[0]

    def _solve_columns(self, Bm, shift, method):
        """One substitution with the cached factors of ``H + shift I``:
        Bm (n_params, r) -> (n_params, r)."""
        fac = self._factor(shift, method)
        with sweep_threads():
            xs = _SOLVERS[method][1](fac, self.net.split(Bm))
        return self.net.join(xs)

    def _shifted_product(self, X, damping):
        """``(H + damping I) X`` for X (n_params, r), by the O(L) product."""
        return self.net.join(hvp(self.blocks, self.net.split(X))) + damping * X

    def inertia(self, shift=0.0):
        """``(n_neg, n_zero, n_pos)`` of ``H + shift I`` by Sylvester's law of inertia from
        one backward Riccati sweep (DESIGN.md section 4, "Inertia"), O(L). An eigenvalue
        within round-off of zero (pivot below ``n eps ||Qxx||``) counts as zero."""
        shift = _finite_real(shift, "shift")
        cached = self._factors.get("riccati")
        if cached is not None and cached[0] == shift and cached[1].inertia is not None:
            return cached[1].inertia
        with sweep_threads():
            fac = riccati_factor(self.blocks, shift, inertia=True)
        if fac.singular is None:               # sound pivots: a solve at this shift reuses it
            self._factors["riccati"] = (shift, fac)
        return fac.inertia

    def count_eigenvalues_below(self, sigma):
        """The number of eigenvalues of H strictly below sigma: ``n_neg(H - sigma I)``."""
        return self.inertia(-_finite_real(sigma, "sigma"))[0]

    def is_positive_definite(self, shift=0.0):
        """Whether ``H + shift I`` is positive definite (all pivots of the sweep > 0)."""
        return self.inertia(shift)[2] == self.n_params

    def lambda_min(self, tol=1e-8):
        """The smallest eigenvalue of H, to ``tol * max(1, ||H||)``: bisection on the
        eigenvalue count (spectrum slicing, DESIGN.md section 4), then refined by
        inverse iteration with the bisection's lower end as the shift and a Rayleigh
        quotient, kept inside the bisection bracket."""
        if not (isinstance(tol, numbers.Real) and 0 < tol < 1):
            raise ValueError(f"tol must be a number in (0, 1); got {tol!r}")
        xp = array_module(self.params)
        rng = np.random.default_rng(0)
        v = xp.asarray(rng.standard_normal(self.n_params)).astype(self.net.dtype)
        for _ in range(30):                     # power iteration: a scale for the bracket
            w = self.hvp(v)
            norm = float(xp.linalg.norm(w))
            if norm == 0:
                break
            v = w / norm
        scale = max(1.0, norm)
        lo, hi = -1.5 * scale, 1.5 * scale
        while self.count_eigenvalues_below(lo) > 0:
            lo *= 2
        while self.count_eigenvalues_below(hi) == 0:
            hi *= 2
        while hi - lo > tol * scale:
            mid = 0.5 * (lo + hi)
            if self.count_eigenvalues_below(mid) > 0:
                hi = mid
            else:
                lo = mid
        try:
            u = v[:, None]
            for _ in range(3):
                u = self._solve_columns(u, -lo, "riccati")
                u = u / xp.linalg.norm(u)
            rq = float((u[:, 0] @ self.hvp(u[:, 0])))
        except np.linalg.LinAlgError:           # lo sits on the eigenvalue itself
            return lo
        return min(max(rq, lo), hi)

    def as_linear_operator(self):
        """H (or the GGN) as a ``scipy.sparse.linalg.LinearOperator`` (symmetric)."""
        return _operator(self, self.hvp)

    def inverse_operator(self, damping, method="riccati"):
        """``(H + damping I)^{-1}`` as a LinearOperator; factors once, then each product
        costs only the substitutions."""
        self.factor(damping, method)
        return _operator(self, lambda v: self.solve(v, damping, method))


def _finite_real(value, name):
    """value as a float, or ValueError if it is not a finite real number."""
    if (not isinstance(value, numbers.Real) or isinstance(value, bool)
            or not np.isfinite(value)):
        raise ValueError(f"{name} must be a finite real number; got {value!r}")
    return float(value)


def _backward_stable(R, Bm):
    """Whether every column's residual certifies a normwise backward error below 10 eps:
    ``||r|| <= 10 eps (||b - r|| + ||b||)``, an upper bound (see ``Curvature.solve``)."""
    xp = array_module(R)
    eps = np.finfo(R.dtype).eps
    norm = lambda A: xp.linalg.norm(A, axis=0)
    return bool(xp.all(norm(R) <= 10 * eps * (norm(Bm - R) + norm(Bm))))


def _norm(R):
    """The largest column 2-norm of R, as a float."""
    return float(array_module(R).linalg.norm(R, axis=0).max())


def _operator(curv, apply):
    if array_module(curv.params) is np:
        from scipy.sparse.linalg import LinearOperator
    else:
        from cupyx.scipy.sparse.linalg import LinearOperator
    n = curv.n_params
    return LinearOperator((n, n), matvec=apply, rmatvec=apply, matmat=apply,
                          rmatmat=apply, dtype=curv.net.dtype)
