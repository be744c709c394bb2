"""The spectrum of H (or the GGN) at a point: certified inertia of ``H + damping I`` from
Riccati sweeps by Sylvester's law (docs/math.md sections 4.7 and 7.3), eigenvalue counts
below a value (spectrum slicing, eq. (4.19)), positive definiteness, the smallest
eigenvalue, and the smallest eigenpairs by shift-invert Lanczos on the certified solves
(section 8.2).

The functions take a :class:`~tallskinny_np.Curvature`, whose blocks and caches they use;
:meth:`Curvature.inertia <tallskinny_np.Curvature.inertia>` and its siblings call them.
"""
import numbers

import numpy as np

from .backend import array_module, sweep_threads, to_numpy
from .certified import certified_solve
from .certify import BOUND_FLOOR, factor_distance
from .errors import UncertifiedInertiaError, finite_real
from .krylov import inverse_iteration, random_start
from .norms import norm_estimate, ritz_interval
from .riccati import riccati_factor

OMEGA_MAX = 0.25       # a sweep's count is trusted when ||I - A F^{-1}|| estimates below this
DENSE_INERTIA_MAX = 3000
"""The largest network (parameters) whose inertia falls back to dense eigenvalues when the
sweeps cannot certify a count."""
FAR_SHIFT = 8.0
"""A count at a shift beyond FAR_SHIFT times the Lanczos estimate of ``||H||`` is that of
``shift I``, certified without a sweep (:func:`_far_shift_count`)."""


def inertia(curv, damping=0.0, tol=None):
    """``(n_neg, n_zero, n_pos)`` of ``H + damping I``, certified (docs/math.md
    section 7.3); the damping may be negative (a shift of the spectrum).

    An eigenvalue lambda of H counts as zero when ``|lambda + damping| <= tol ||H||``
    (``||H||`` from :func:`~tallskinny_np.norms.norm_estimate`; ``tol`` defaults to the
    square root of the dtype's machine epsilon, 1.5e-8 in float64). An eigenvalue further
    than that from ``-damping`` is never counted in the wrong class; one within it may be
    counted as zero or by its sign. A positive semi-definite GGN at damping 0 has no
    negative count.

    The counts come from two Riccati sweeps, at ``damping + t`` and ``damping - t`` with
    ``t = tol ||H|| / 2``, by Sylvester's law of inertia: the sweep at ``c`` gives the
    inertia of a factorization F of ``H + c I``, and an estimate of
    ``||I - (H + c I) F^{-1}||_2`` below 1/4 proves that it is that of ``H + c I``.
    Where a sweep is not certified the count comes from the dense eigenvalues of H for
    ``n_params <= DENSE_INERTIA_MAX``, else
    :class:`~tallskinny_np.errors.UncertifiedInertiaError` is raised.

    Parameters
    ----------
    curv : Curvature
    damping : float
    tol : float in (0, 1), optional
        Relative to ``||H||``; default ``sqrt(eps)`` of the dtype.

    Returns
    -------
    (n_neg, n_zero, n_pos) : tuple of int

    Raises
    ------
    UncertifiedInertiaError
        No sweep near ``-damping`` could be certified and the network is too large for
        the dense fallback.

    References
    ----------
    J. Kuczynski and H. Wozniakowski, "Estimating the largest eigenvalue by the power
    and Lanczos algorithms with a random start", SIAM J. Matrix Anal. Appl. 13(4),
    1992. doi:10.1137/0613066
    """
    damping = finite_real(damping, "damping")
    t = _half_band(curv, tol)
    n_neg = _negative_count(curv, damping + t, t / 2)
    n_pos = curv.n_params - _negative_count(curv, damping - t, t / 2)
    return n_neg, curv.n_params - n_neg - n_pos, n_pos


def count_eigenvalues_below(curv, sigma, tol=None):
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
        As :func:`inertia`.
    """
    sigma = finite_real(sigma, "sigma")
    t = _half_band(curv, tol)
    return _negative_count(curv, t - sigma, t / 2)      # the sweep inertia(-sigma) uses


def is_positive_definite(curv, damping=0.0, tol=None):
    """Whether ``H + damping I`` is positive definite with a margin: True when every
    eigenvalue of ``H + damping I`` exceeds ``tol ||H||``, False when one is below 0,
    either in between (docs/math.md section 7.3).

    Parameters
    ----------
    curv : Curvature
    damping : float
    tol : float in (0, 1), optional
        Relative to ``||H||``; default ``sqrt(eps)``.

    Returns
    -------
    bool

    Raises
    ------
    UncertifiedInertiaError
        As :func:`inertia`.
    """
    damping = finite_real(damping, "damping")
    t = _half_band(curv, tol)
    return _negative_count(curv, damping - t, t / 2) == 0  # the sweep inertia(damping) uses


def _half_band(curv, tol):
    """``t = tol ||H|| / 2``, half the band of eigenvalues counted as zero; tol defaults
    to the square root of the dtype's machine epsilon."""
    if tol is None:
        tol = float(np.sqrt(np.finfo(curv.net.dtype).eps))
    elif not (isinstance(tol, numbers.Real) and 0 < tol < 1):
        raise ValueError(f"tol must be a number in (0, 1); got {tol!r}")
    return 0.5 * float(tol) * norm_estimate(curv)


def _negative_count(curv, c, slack):
    """The certified number of negative eigenvalues of ``H + c' I`` for some c' within
    ``slack`` of c: c itself, then ``c +/- slack``, then the dense fallback."""
    if c in curv._counts:
        return curv._counts[c]
    far = _far_shift_count(curv, c)
    if far is not None:
        curv._counts[c] = far
        return far
    for trial in (c, c + slack, c - slack):
        count = _certified_sweep_count(curv, trial)
        if count is not None:
            curv._counts[c] = count
            return count
    count = _dense_negative_count(curv, c, slack)
    curv._counts[c] = count
    return count


def _far_shift_count(curv, c):
    """``n_neg(H + c I)`` for a shift far beyond ``||H||``, without a sweep: 0 for
    c > 0, n for c < 0, the inertia of ``F = c I``, certified by eq. (7.5) with
    ``omega = ||H|| / |c|`` estimated on ``A / c = I + H / c`` (no product with c,
    which may lie beyond the dtype's range; docs/math.md section 7.3). None when c is
    not far enough (then ``|c| <= FAR_SHIFT ||H||`` by the Lanczos bound)."""
    if not abs(c) > FAR_SHIFT * norm_estimate(curv):
        return None
    scale = 1.0 / c
    with np.errstate(under="ignore"):
        omega = factor_distance(lambda V: V + curv.hvp(V) * scale, lambda V: V,
                                curv.n_params, array_module(curv.params),
                                curv.net.dtype, stop_above=OMEGA_MAX)
    if not omega < OMEGA_MAX:
        return None
    return 0 if c > 0 else curv.n_params


def _certified_sweep_count(curv, c):
    """``n_neg(H + c I)`` from a Riccati sweep if its certificate holds, else None.
    Overflow in a sweep near the spectrum only fails the certificate: it is silenced."""
    with sweep_threads(), np.errstate(all="ignore"):
        fac = riccati_factor(curv.blocks, c, inertia=True)
        if fac.singular is not None or fac.inertia[1] != 0:
            return None                      # F singular: no certificate
        omega = factor_distance(lambda V: curv._shifted_product(V, c),
                                lambda V: curv._substitute(fac, "riccati", V),
                                curv.n_params, array_module(curv.params),
                                curv.net.dtype, stop_above=OMEGA_MAX)
    if not omega < OMEGA_MAX:
        return None
    curv._factors["riccati"] = (c, fac)      # a solve at this shift reuses it
    return fac.inertia[0]


def _dense_negative_count(curv, c, slack):
    """``n_neg(H + c I)`` from the dense eigenvalues of H, for small networks, when no
    eigenvalue lies within their error bound of ``-c``."""
    n = curv.n_params
    if n > DENSE_INERTIA_MAX:
        raise UncertifiedInertiaError(
            c, f"the Riccati sweeps near this shift are not accurate enough, and "
               f"{n} parameters is above the dense fallback's limit {DENSE_INERTIA_MAX}")
    if curv._eigenvalues is None:
        xp = array_module(curv.params)
        H = to_numpy(curv.hvp(xp.eye(n, dtype=curv.net.dtype)))
        curv._eigenvalues = np.linalg.eigvalsh(0.5 * (H + H.T))
    w = curv._eigenvalues + c
    # eigvalsh is backward stable: each eigenvalue within a small multiple of n u ||H||,
    # and the columns of H are O(L) products (their rounding: BOUND_FLOOR u ||H||).
    err = np.finfo(curv.net.dtype).eps * (n + BOUND_FLOOR) * max(np.abs(w).max(), abs(c))
    if not err < slack:
        raise UncertifiedInertiaError(c, "the dense eigenvalues are not accurate enough")
    if np.any(np.abs(w) <= err):
        # Within the slack a count at c -/+ slack is as good: pick the side that is clear.
        for trial in (c + slack, c - slack):
            if not np.any(np.abs(curv._eigenvalues + trial) <= err):
                return int((curv._eigenvalues + trial < 0).sum())
        raise UncertifiedInertiaError(c, "eigenvalues too close to the shift")
    return int((w < 0).sum())


def lambda_min(curv, tol=1e-8):
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
    xp = array_module(curv.params)
    theta_min, _ = ritz_interval(curv)
    scale = max(1.0, norm_estimate(curv))
    count_tol = min(0.25 * tol * scale / norm_estimate(curv), 0.5) \
        if norm_estimate(curv) > 0 else None
    lo, hi = theta_min - tol * scale, theta_min + tol * scale
    while count_eigenvalues_below(curv, lo, count_tol) > 0:
        lo -= 2 * (hi - lo)
    while count_eigenvalues_below(curv, hi, count_tol) == 0:
        hi += 2 * (hi - lo)
    while hi - lo > tol * scale:
        mid = 0.5 * (lo + hi)
        if count_eigenvalues_below(curv, mid, count_tol) > 0:
            hi = mid
        else:
            lo = mid
    u = random_start(curv.n_params, xp, curv.net.dtype, 0, columns=1)
    try:
        # inverse iteration needs no certificate
        u = inverse_iteration(lambda v: certified_solve(curv, v, -lo, "riccati", 3,
                                                        "return", prove=False)[0], u)
        rq = float((u[:, 0] @ curv.hvp(u[:, 0])))
    except np.linalg.LinAlgError:            # lo sits on the eigenvalue itself
        return lo
    return min(max(rq, lo), hi)


def smallest_eigenpairs(curv, k):
    """The k smallest eigenvalues of H (ascending) and their orthonormal eigenvectors, by
    shift-invert Lanczos (ARPACK's ``eigsh``) on the certified O(L) solves with
    ``H - sigma I`` (docs/math.md section 8.2).

    sigma lies below lambda_min: the Lanczos value theta_min minus a gap (1% of ``||H||``,
    quadrupled until the certified count ``n(H < sigma)`` is 0), so the eigenvalues of
    ``(H - sigma I)^{-1}`` of largest magnitude belong to the smallest of H. For
    ``k >= n_params - 1`` (ARPACK needs ``k < n``) the dense eigendecomposition is used.

    Raises
    ------
    numpy.linalg.LinAlgError
        When ARPACK does not converge, or a solve cannot be certified.
    """
    from scipy.sparse.linalg import ArpackError, eigsh
    n = curv.n_params
    if array_module(curv.params) is not np:
        raise ValueError("saddle-free steps need NumPy arrays (ARPACK's shift-invert mode)")
    if k >= n - 1:
        w, U = np.linalg.eigh(curv.hvp(np.eye(n, dtype=curv.dtype)))
        return w[:k], U[:, :k]
    theta_min, _ = curv.ritz_interval()
    gap = 0.01 * max(curv.norm_estimate(), np.finfo(curv.dtype).tiny)   # refused if NaN
    while curv.count_eigenvalues_below(theta_min - gap) > 0:
        gap *= 4
    sigma = theta_min - gap
    try:
        w, U = eigsh(curv.to_scipy(), k=k, sigma=sigma, which="LM",
                     OPinv=curv.inverse(-sigma), tol=0)
    except ArpackError as e:
        raise np.linalg.LinAlgError(f"shift-invert Lanczos for {k} eigenpairs: {e}") from None
    order = np.argsort(w)
    return w[order], U[:, order]


def negative_pairs(curv, max_pairs=None, tol=1e-6):
    """``(k, w, U)``: the certified number k of eigenvalues of H below ``-tol ||H||``, and
    the ``min(k, max_pairs)`` smallest eigenpairs (one more when ``max_pairs < k``: the
    top-k shift needs it), as :func:`saddle_free_solve` uses them."""
    n_neg = curv.count_eigenvalues_below(-tol * curv.norm_estimate())
    k = n_neg if max_pairs is None else min(n_neg, max_pairs)
    if n_neg == 0:
        return 0, None, None
    return (n_neg, *smallest_eigenpairs(curv, k + (n_neg > k)))
