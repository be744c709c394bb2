"""The Krylov methods of the package, each written once: Lanczos for the extreme Ritz values
of H (docs/math.md eq. (7.2)), right-preconditioned GMRES for GMRES-based iterative
refinement (section 7.2) and for indefinite systems preconditioned by an earlier
factorization (section 8.5), preconditioned conjugate gradients for the positive definite
ones, truncated conjugate gradients for Hessian-free steps (section 8.1) and inverse
iteration for the eigenvector of an eigenvalue near a shift (sections 4.7
and 7.3).

Each takes the operator as a function ``v -> A v`` (and a solve as ``v -> F^{-1} v``), so
that it applies to NumPy and CuPy arrays alike.
"""
import math

import numpy as np

from .backend import array_module


def lanczos_interval(apply, n, xp, dtype, steps=20, seed=0):
    """Ritz values ``(theta_min, theta_max)`` of the symmetric operator ``apply`` after
    ``steps`` Lanczos steps with full reorthogonalization from a seeded random start.
    Both lie in ``[lambda_min, lambda_max]`` (Cauchy interlacing), and the extreme Ritz
    values converge to the extreme eigenvalues first. Both are NaN when a product or an
    inner product is not finite (the operator overflows the dtype): Ritz values of a
    tridiagonal matrix with NaN in it would be garbage, not bounds."""
    with np.errstate(over="ignore", invalid="ignore"):      # judged below: NaN
        alpha, beta = _lanczos(apply, n, xp, dtype, min(steps, n), seed)
    if not np.all(np.isfinite(alpha + beta)):
        return np.nan, np.nan
    T = np.diag(alpha) + np.diag(beta[:len(alpha) - 1], 1) + np.diag(beta[:len(alpha) - 1], -1)
    theta = np.linalg.eigvalsh(T)
    return float(theta[0]), float(theta[-1])


def _lanczos(apply, n, xp, dtype, steps, seed):
    """The diagonal and off-diagonal of :func:`lanczos_interval`'s tridiagonal matrix."""
    q = random_start(n, xp, dtype, seed)
    Q = xp.zeros((steps, n), dtype=dtype)
    alpha, beta = [], []
    q = q / xp.linalg.norm(q)
    for j in range(steps):
        Q[j] = q
        w = apply(q)
        alpha.append(float(q @ w))
        for _ in range(2):                                # twice is enough (Kahan)
            w = w - Q[:j + 1].T @ (Q[:j + 1] @ w)
        b = float(xp.linalg.norm(w))
        if j + 1 == steps or b <= np.finfo(dtype).eps * max(1.0, max(map(abs, alpha))):
            break
        beta.append(b)
        q = w / b
    return alpha, beta


def gmres(apply, precond, r, restart, rtol):
    """Approximately solve ``A d = r`` (one column) by GMRES on ``A M^{-1}``, with
    ``precond`` applying ``M^{-1}``: at most ``restart`` steps, stopping when the
    least-squares residual falls below ``rtol ||r||``. Returns d."""
    xp = array_module(r)
    beta = float(xp.linalg.norm(r))
    if beta == 0:
        return xp.zeros_like(r)
    n = r.shape[0]
    restart = min(restart, n)
    V = xp.zeros((restart + 1, n), dtype=r.dtype)
    Z = xp.zeros((restart, n), dtype=r.dtype)
    Hs = np.zeros((restart + 1, restart))
    V[0] = r / beta
    e1 = np.zeros(restart + 1)
    e1[0] = beta
    y = np.zeros(0)
    for j in range(restart):
        Z[j] = precond(V[j])
        w = apply(Z[j])
        for _ in range(2):
            h = V[:j + 1] @ w
            w = w - V[:j + 1].T @ h
            Hs[:j + 1, j] += np.asarray(h.get() if xp is not np else h, dtype=float)
        Hs[j + 1, j] = float(xp.linalg.norm(w))
        y, *_ = np.linalg.lstsq(Hs[:j + 2, :j + 1], e1[:j + 2], rcond=None)
        res = np.linalg.norm(e1[:j + 2] - Hs[:j + 2, :j + 1] @ y)
        if res <= rtol * beta or Hs[j + 1, j] == 0:
            break
        V[j + 1] = w / Hs[j + 1, j]
    return Z[:len(y)].T @ xp.asarray(y, dtype=r.dtype)


def preconditioned_cg(apply, precond, r, max_iter, rtol):
    """Approximately solve ``A d = r`` (one column) for a symmetric positive definite A by
    conjugate gradients preconditioned with the symmetric positive definite ``M^{-1}``
    that ``precond`` applies: at most ``max_iter`` steps, stopping when the recursive
    residual falls below ``rtol ||r||``, or at ``p^T A p <= 0`` or ``r^T M^{-1} r <= 0``
    (A or M not positive definite to working precision: the iterate before it is
    returned). Returns d; the arguments are those of :func:`gmres`.

    Examples
    --------
    >>> import numpy as np
    >>> from tallskinny_np.krylov import preconditioned_cg
    >>> A = np.diag([1.0, 2.0, 4.0])
    >>> d = preconditioned_cg(lambda v: A @ v, lambda v: v / np.diag(A), np.ones(3), 1, 0.0)
    >>> np.allclose(d, [1, 0.5, 0.25])           # the exact inverse as M: one step
    True
    """
    xp = array_module(r)
    d = xp.zeros_like(r)
    target = rtol * float(xp.linalg.norm(r))
    p, rz = None, 1.0
    for _ in range(max_iter):                 # one product and one precond a step
        z = precond(r)
        rz_old, rz = rz, float(r @ z)
        p = z if p is None else z + (rz / rz_old) * p
        Ap = apply(p)
        curvature = float(p @ Ap)
        if not (curvature > 0 and rz > 0):
            break
        alpha = rz / curvature
        d = d + alpha * p
        r = r - alpha * Ap
        if float(xp.linalg.norm(r)) <= target:
            break
    return d


def truncated_cg(apply, b, x0=None, max_iter=250, progress=5e-4, rtol=1e-12):
    """Conjugate gradients on ``phi(x) = 1/2 x^T A x - b^T x``, truncated as in Martens
    (2010, section 4.4).

    Iteration i stops when ``i > k``, ``phi(x_i) < 0`` and
    ``(phi(x_i) - phi(x_{i-k})) / phi(x_i) < k * progress`` with ``k = max(10, i / 10)``
    (the relative decrease of the quadratic over the last k iterations is too small to
    pay for them), when the residual is below ``rtol ||b||``, after ``max_iter``
    iterations, or at a direction of non-positive curvature ``p^T A p <= 0`` (possible for
    an indefinite A: the iterate before it is returned). A start ``x0`` (the warm start)
    with ``phi(x0) >= 0`` is replaced by 0. ``phi`` is tracked as
    ``-1/2 x^T (b + r)`` with the recursive residual r, at no extra product.

    Parameters
    ----------
    apply : callable
        ``v -> A v`` for a symmetric A.
    b : ndarray, shape (n,)
    x0 : ndarray, shape (n,), optional
        The first iterate (default 0).
    max_iter : int, optional
        Martens's cap on the iterations (default 250).
    progress : float, optional
        Martens's epsilon (default 5e-4): stop when the last k iterations improved phi by
        less than ``k * progress`` of it.
    rtol : float, optional
        Relative residual at which to stop (default 1e-12).

    Returns
    -------
    x : ndarray, shape (n,)
    iterations : int
        Products with A after the first residual.
    stop : str
        ``"progress"``, ``"residual"``, ``"max_iter"`` or ``"negative curvature"``.

    References
    ----------
    .. [1] J. Martens, "Deep learning via Hessian-free optimization", ICML 2010.

    Examples
    --------
    >>> import numpy as np
    >>> from tallskinny_np.krylov import truncated_cg
    >>> A = np.diag([1.0, 2.0, 4.0])
    >>> x, its, stop = truncated_cg(lambda v: A @ v, np.ones(3))
    >>> np.allclose(x, [1, 0.5, 0.25]), its, stop
    (True, 3, 'residual')
    """
    xp = array_module(b)
    bnorm = float(xp.linalg.norm(b))
    x = xp.zeros_like(b) if x0 is None else x0.copy()
    r = b - apply(x) if x0 is not None else b.copy()
    phi = -0.5 * float(x @ (b + r))
    if phi >= 0 and x0 is not None:
        x, r, phi = xp.zeros_like(b), b.copy(), 0.0
    history = [phi]
    p = None
    rr = float(r @ r)
    for i in range(1, max_iter + 1):
        if math.sqrt(rr) <= rtol * bnorm:
            return x, i - 1, "residual"
        p = r.copy() if p is None else r + (rr / rr_old) * p
        Ap = apply(p)
        curvature = float(p @ Ap)
        if not curvature > 0:
            return x, i, "negative curvature"
        alpha = rr / curvature
        x = x + alpha * p
        r = r - alpha * Ap
        rr_old, rr = rr, float(r @ r)
        phi = -0.5 * float(x @ (b + r))
        history.append(phi)
        k = max(10, i // 10)
        if i > k and phi < 0 and (phi - history[i - k]) / phi < k * progress:
            return x, i, "progress"
    return x, max_iter, "max_iter"


def random_start(n, xp, dtype, seed, columns=None):
    """A seeded standard normal start of length n (``columns`` of them as an ``(n, columns)``
    array), drawn by NumPy and moved to ``xp`` in ``dtype``: the same start on every
    backend."""
    rng = np.random.default_rng(seed)
    shape = n if columns is None else (n, columns)
    return xp.asarray(rng.standard_normal(shape)).astype(dtype)


def inverse_iteration(solve, u, steps=3):
    """``steps`` steps of inverse iteration ``u <- F^{-1} u / ||F^{-1} u||`` from u, with
    ``solve`` applying ``F^{-1} = (H - sigma I)^{-1}``: the direction of the eigenvector of H
    whose eigenvalue is nearest sigma grows by ``|lambda_1 - sigma| / |lambda_2 - sigma|``
    per step against the others (docs/math.md section 4.7)."""
    xp = array_module(u)
    for _ in range(steps):
        u = solve(u)
        u = u / xp.linalg.norm(u)
    return u
