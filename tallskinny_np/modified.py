"""The modified pivot of the modified-Newton sweep (docs/math.md section 8.3, eq. (8.9)):
a symmetric ``Qxx = V Lambda V^T`` replaced by ``M = V max(|Lambda|, delta I) V^T``, the
nearest matrix with the eigenvectors of Qxx and eigenvalues of modulus at least delta."""
from .backend import array_module


def modified_pivot(Qxx, floor):
    """``(M, E)``: the positive definite pivot ``M = V max(|Lambda|, floor I) V^T`` and
    ``E = M - Qxx = V (max(|Lambda|, floor I) - Lambda) V^T``, positive semi-definite
    (docs/math.md eqs. (8.9), (8.10)), for a symmetric ``Qxx`` (``p x p``) and ``floor > 0``.

    Examples
    --------
    >>> import numpy as np
    >>> from tallskinny_np.modified import modified_pivot
    >>> M, E = modified_pivot(np.diag([2.0, -3.0, 0.0]), 1e-3)
    >>> np.diag(M).tolist(), np.diag(E).tolist()
    ([2.0, 3.0, 0.001], [0.0, 6.0, 0.001])
    """
    xp = array_module(Qxx)
    lam, V = xp.linalg.eigh(0.5 * (Qxx + Qxx.T))
    mod = xp.maximum(xp.abs(lam), floor)
    M = (V * mod) @ V.T
    E = (V * (mod - lam)) @ V.T
    return 0.5 * (M + M.T), 0.5 * (E + E.T)
