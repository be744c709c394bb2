"""numba kernels for the hidden layers' second-derivative blocks (docs/math.md section 2).

The same sums as the einsums of :func:`tallskinny_np.blocks.hidden_blocks`, over a stack
of layers, written as loops that touch each output once::

    A[l,k,i,j]   = sum_s R[l,s,k] Zt[l,s,i] Zt[l,s,j]
    S[l,s,i,j]   = sum_k W[l,k,i] R[l,s,k] W[l,k,j]
    C[k,j,t,m]   = R[t,k] W[k,m] Zt[t,j] + delta_jm b[t,k] S1[t,k]     (one layer)

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
def block_S(W, R):
    """``S`` of a stack of hidden layers, ``(L, B, n, n)``."""
    L, B, m = R.shape
    n = W.shape[2]
    S = np.zeros((L, B, n, n), dtype=W.dtype)
    for l in range(L):
        for s in range(B):
            for k in range(m):
                r = R[l, s, k]
                for i in range(n):
                    ri = r * W[l, k, i]
                    for j in range(n):
                        S[l, s, i, j] += ri * W[l, k, j]
    return S


@njit(cache=True)
def cross_block(Zt, W, R, bS1, C):
    """One hidden layer's dense ``C`` ``(p, a')`` = ``(m q, B n)`` into the C-order C, from
    its factors (docs/math.md eq. (2.13)): the transient input of the compiled dense stage,
    which takes it over as ``Qxy^T``'s storage."""
    B, q = Zt.shape
    m, n = W.shape
    for k in range(m):
        for j in range(q):
            row = k * q + j
            for t in range(B):
                rz = R[t, k] * Zt[t, j]
                for mm in range(n):
                    C[row, t * n + mm] = rz * W[k, mm]
                if j < n:
                    C[row, t * n + j] += bS1[t, k]
