"""``Curvature``: gradient, H v and (H + damping I)^{-1} b of an MLP at a point.

The damping-independent work (forward pass, backprop, derivative blocks of DESIGN.md
section 2) is done once in the constructor; products and solves reuse it, and the most
recent factorization is kept so that further right-hand sides with the same damping cost
only the substitutions.
"""
import numbers

import numpy as np

from .backend import array_module
from .blocks import KINDS, Blocks, linearize
from .ldu import ldu_factor, ldu_solve
from .model import from_layers, to_layers
from .products import gradient, hvp

METHODS = ("ldu",)


class Curvature:
    """Exact curvature of ``net``'s mean cross-entropy at ``params`` on the batch (X, y).

    ``kind="hessian"`` is the Hessian H; ``kind="ggn"`` the generalized Gauss-Newton
    matrix ``J^T Lambda J`` (DESIGN.md section 2, last paragraph). Attributes: ``loss``
    (float), ``grad`` (flat vector), ``blocks`` (:class:`tallskinny_np.blocks.Blocks`),
    ``linearization`` (forward and backward pass).
    """

    def __init__(self, net, params, X, y, kind="hessian"):
        if kind not in KINDS:
            raise ValueError(f"unknown curvature kind {kind!r}; choose one of {KINDS}")
        params = net.check_params(params)
        X, y = net.check_data(X, y)
        self.net = net
        self.kind = kind
        self.params = params
        self.linearization = linearize(net, params, X, y)
        self.blocks = Blocks(net, params, self.linearization, kind)
        self.loss = float(self.linearization.loss)
        g = gradient(self.blocks, self.linearization.b)
        self.grad = from_layers(net, [gl[..., None] for gl in g])[:, 0]
        self._factorization = None

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
        if not (xp.issubdtype(v.dtype, xp.floating) or xp.issubdtype(v.dtype, xp.integer)):
            raise ValueError(f"{name} must be a real array; got dtype {v.dtype}")
        v = v.astype(self.net.dtype, copy=False)
        if not bool(xp.all(xp.isfinite(v))):
            raise ValueError(f"{name} contains non-finite values (nan or inf)")
        return (v[:, None] if v.ndim == 1 else v), v.ndim == 1

    def _result(self, xs, vector):
        out = from_layers(self.net, xs)
        return out[:, 0] if vector else out

    def hvp(self, v):
        """``H v`` (or ``G v`` for the GGN) in O(L), DESIGN.md section 3. v may be
        ``(n_params,)`` or ``(n_params, k)``; the result has v's shape."""
        V, vector = self._columns(v, "v")
        return self._result(hvp(self.blocks, to_layers(self.net, V)), vector)

    def _check_damping(self, damping):
        if (not isinstance(damping, numbers.Real) or isinstance(damping, bool)
                or not np.isfinite(damping)):
            raise ValueError(f"damping must be a finite real number; got {damping!r}")
        if self.kind == "ggn" and damping < 0:
            raise ValueError(
                f"damping must be >= 0 for kind='ggn' (the Gauss-Newton matrix is positive "
                f"semi-definite and damping is what makes it invertible); got {damping}")
        return float(damping)

    def solve(self, b, damping, method="ldu"):
        """``(H + damping I)^{-1} b`` (DESIGN.md section 4), b of shape ``(n_params,)``
        or ``(n_params, k)``; the result has b's shape.

        ``damping`` is a shift: for ``kind="hessian"`` any finite value is accepted, and
        a negative one solves with ``H - |damping| I`` (as shift-invert and spectrum
        slicing do; H is indefinite anyway). For ``kind="ggn"`` it must be >= 0. A
        singular or numerically singular pivot (for example damping = 0, where H is
        singular in general) raises :class:`tallskinny_np.errors.SingularPivotError`
        naming the layer.

        ``method="ldu"`` is the paper's algorithm: the pivoted augmented system, block LDU,
        forward and backward substitution (:mod:`tallskinny_np.ldu`).
        """
        damping = self._check_damping(damping)
        if method not in METHODS:
            raise ValueError(f"unknown solve method {method!r}; choose one of {METHODS}")
        Bm, vector = self._columns(b, "b")
        key = (method, damping)
        if self._factorization is None or self._factorization[0] != key:
            self._factorization = (key, ldu_factor(self.blocks, damping))
        fac = self._factorization[1]
        gs = [x.reshape(-1, x.shape[-1]) for x in to_layers(self.net, Bm)]
        xs = ldu_solve(fac, gs)
        shapes = [x.shape for x in to_layers(self.net, Bm)]
        return self._result([x.reshape(s) for x, s in zip(xs, shapes)], vector)
