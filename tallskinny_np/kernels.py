"""numba kernels for the hidden layers' second-derivative blocks (docs/math.md section 2).

The same sums as the einsums of :func:`tallskinny_np.blocks.hidden_blocks`, over a stack
of layers, written as loops that touch each output once::

    A[l,k,i,j]   = sum_s R[l,s,k] Zt[l,s,i] Zt[l,s,j]
    S[l,s,i,j]   = sum_k W[l,k,i] R[l,s,k] W[l,k,j]
    C[l,k,j,t,m] = R[l,t,k] W[l,k,m] Zt[l,t,j] + delta_jm b[l,t,k] S1[l,t,k]

Compiled on first use and cached on disk (``cache=True``).
"""
import numpy as np
from numba import njit


@njit(cache=True)
def block_A(Zt, R):
    """``A`` of a stack of hidden layers, ``(L, m, q, q)``."""
    L, B, q = Zt.shape
    m = R.shape[2]
    A = np.zeros((L, m, q, q), dtype=Zt.dtype)
    for l in range(L):
        for k in range(m):
            for s in range(B):
                r = R[l, s, k]
                for i in range(q):
                    ri = r * Zt[l, s, i]
                    for j in range(q):
                        A[l, k, i, j] += ri * Zt[l, s, j]
    return A


@njit(cache=True)
def blocks_S_C(Zt, W, R, bS1):
    """``(S, C)`` of a stack of hidden layers, ``(L, B, n, n)`` and ``(L, m, q, B, n)``."""
    L, B, q = Zt.shape
    m, n = W.shape[1], W.shape[2]
    S = np.zeros((L, B, n, n), dtype=Zt.dtype)
    C = np.empty((L, m, q, B, n), dtype=Zt.dtype)
    for l in range(L):
        for s in range(B):
            for k in range(m):
                r = R[l, s, k]
                for i in range(n):
                    ri = r * W[l, k, i]
                    for j in range(n):
                        S[l, s, i, j] += ri * W[l, k, j]
        for k in range(m):
            for j in range(q):
                for t in range(B):
                    rz = R[l, t, k] * Zt[l, t, j]
                    for mm in range(n):
                        C[l, k, j, t, mm] = rz * W[l, k, mm]
                    if j < n:
                        C[l, k, j, t, j] += bS1[l, t, k]
    return S, C
