"""Saddle-free Newton (Dauphin et al. 2014; docs/math.md section 8.2): steps
``-(|H| + lam I)^{-1} g`` with the exact |H| on the negative eigenpairs, found by
shift-invert Lanczos on the certified solves, and the O(L) solve elsewhere."""
import numpy as np

from ..deprecation import renamed
from ..spectrum import negative_pairs
from .checks import count
from .newton import DampedNewton


def saddle_free_solve(curv, b, damping, max_pairs=None, tol=1e-6, pairs=None):
    """``(|H| + damping I)^{-1} b`` with ``|H| = sum_i |lambda_i| u_i u_i^T``, in O(L) plus
    a rank-k correction (docs/math.md section 8.2, eqs. (8.5)-(8.7)).

    The number k of negative eigenvalues is the certified count ``n(H < -tol ||H||)``:
    a count at 0 itself is not certifiable, H being singular (docs/math.md section 3.5),
    and an eigenvalue in ``[-tol ||H||, 0)`` left unflipped changes the result by at most
    ``2 tol ||H|| / (damping - tol ||H||)`` relative. The eigenpairs ``(w, U)`` come from
    :func:`smallest_eigenpairs`, and with ``c = U^T b``::

        x = P (H + damping I)^{-1} (b - U c) + U diag(1 / (|w| + damping)) c,
        P = I - U U^T

    which is ``(H + damping I)^{-1} b`` corrected on the span of U; the right-hand side and
    the result are projected off U, so a ``lambda_i + damping`` near 0 leaves no trace
    (a ``H + damping I`` singular to working precision still raises).

    With ``max_pairs`` below k (the top-k variant) only the ``max_pairs`` most negative
    pairs are flipped and the shift becomes ``damping - lambda_{max_pairs + 1}``, so that
    the matrix inverted, H with those pairs flipped plus the shift, is positive definite
    (its smallest eigenvalue is ``damping``).

    ``pairs``, the result of :func:`negative_pairs` for this curvature, saves computing
    them again for another damping.

    Returns
    -------
    x : ndarray, shape (n_params,)
    info : dict
        ``negative`` (k), ``flipped`` (pairs used) and ``shift`` (the damping applied).

    Examples
    --------
    >>> import numpy as np
    >>> from tallskinny_np import MLP, Curvature
    >>> from tallskinny_np.optim import saddle_free_solve
    >>> net = MLP([3, 4, 4, 2], activation="tanh")
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.standard_normal((5, 3)), rng.integers(0, 2, 5)
    >>> curv = Curvature(net, net.init_params(seed=0, gain=2.0), X, y)
    >>> x, info = saddle_free_solve(curv, curv.grad, 0.1)
    >>> w, U = np.linalg.eigh(curv @ np.eye(net.n_params))
    >>> dense = U @ ((U.T @ curv.grad) / (np.abs(w) + 0.1))
    >>> info["negative"] > 0, bool(np.linalg.norm(x - dense) <= 1e-10 * np.linalg.norm(dense))
    (True, True)
    """
    n_neg, w, U = pairs or negative_pairs(curv, max_pairs, tol)
    k = n_neg if max_pairs is None else min(n_neg, max_pairs)
    if n_neg == 0:
        return curv.solve(b, damping), dict(negative=0, flipped=0, shift=damping)
    shift = damping
    if n_neg > k:
        shift = damping - min(float(w[k]), 0.0)
        w, U = w[:k], U[:, :k]
    c = U.T @ b
    x = curv.solve(b - U @ c, shift)
    x = x - U @ (U.T @ x) + U @ (c / (np.abs(w) + shift))
    return x, dict(negative=n_neg, flipped=k, shift=shift)


class SaddleFreeNewton(DampedNewton):
    """Saddle-free Newton ``s = -(|H| + lam I)^{-1} g`` (Dauphin et al. 2014) with the
    exact |H| on the negative eigenvalues found by :func:`saddle_free_solve`, lam adapted by
    the Levenberg-Marquardt rule of :class:`DampedNewton` (the reduction ratio judges the
    step against the quadratic model with H, whose decrease is positive for this step).

    Parameters
    ----------
    damping, factor, min_damping, trials, max_failures
        As :class:`DampedNewton`.
    max_pairs : int, optional
        Flip at most this many of the most negative eigenpairs (the top-k variant; default
        None: all of them).

    References
    ----------
    .. [1] Y. N. Dauphin, R. Pascanu, C. Gulcehre, K. Cho, S. Ganguli and Y. Bengio,
       "Identifying and attacking the saddle point problem in high-dimensional non-convex
       optimization", NeurIPS 2014.
    """

    def __init__(self, damping=1.0, max_pairs=None, **rule):
        super().__init__(damping, "hessian", **rule)
        if max_pairs is not None:
            max_pairs = count("max_pairs", max_pairs, 0)
        self.max_pairs = max_pairs
        self._pairs = None      # (curvature, negative_pairs of it): the latest

    @renamed(lam="damping")
    def direction(self, curv, grad, damping):
        """``-(|H| + damping I)^{-1} g`` (top-k: see :func:`saddle_free_solve`); the
        eigenpairs of a curvature are computed once for all its trial dampings."""
        if self._pairs is None or self._pairs[0] is not curv:
            self._pairs = (curv, negative_pairs(curv, self.max_pairs))
        x, info = saddle_free_solve(curv, grad, damping, self.max_pairs,
                                    pairs=self._pairs[1])
        return -x, info
