"""BLAS and LAPACK (float64) callable from numba-compiled code, through the function
pointers that SciPy exports in ``scipy.linalg.cython_blas`` and ``scipy.linalg.cython_lapack``.

The compiled Riccati stages (:mod:`tallskinny_np.stage`) call these directly, so a call
costs well under a microsecond of overhead instead of the tens that a Python-level
``get_lapack_funcs`` call costs. Matrices are column-major (Fortran) and are passed as an
array, the offset (in elements) of the first entry and a leading dimension, as in BLAS; a
submatrix is an offset inside its parent, so no block is ever copied to call a routine.
(The arrays themselves, not their addresses, are passed, so that numba keeps them alive
until the call.)
Every function here must be called from numba-compiled code. The option letters of BLAS
("N", "T", "L", "U", "R") are passed as the uint8 constants of this module and the
wrappers are inlined into their callers: numba would otherwise compile a separate version
of every routine for each combination of constant arguments at its call sites.
"""
import llvmlite.binding as llvm
import numpy as np
from numba import njit, types
from numba.extending import get_cython_function_address

def _bind(module, name, nargs):
    """The routine as a numba external function of ``nargs`` pointer arguments. The symbol
    is registered with LLVM under a name of its own at import, so compiled code refers to
    it by name and can be cached on disk (a ctypes pointer could not)."""
    symbol = f"tallskinny_np_{name}"
    llvm.add_symbol(symbol, get_cython_function_address(f"scipy.linalg.cython_{module}", name))
    return types.ExternalFunction(symbol, types.void(*([types.intp] * nargs)))


_dgemm = _bind("blas", "dgemm", 13)
_dgemv = _bind("blas", "dgemv", 11)
_dsyrk = _bind("blas", "dsyrk", 10)
_dtrsm = _bind("blas", "dtrsm", 11)
_dtrsv = _bind("blas", "dtrsv", 8)
_dpotrf = _bind("lapack", "dpotrf", 5)
_dsytrf = _bind("lapack", "dsytrf", 8)


N, T, L, U, R = (np.uint8(ord(c)) for c in "NTLUR")
"""BLAS option letters: no transpose, transpose, lower, upper (or unit diagonal), right."""


@njit(cache=True)
def _alive(*arrays):
    """Uses its arguments: called after a routine, it keeps the scalar arrays whose
    addresses were passed alive until the routine has returned."""
    return len(arrays)


@njit(cache=True, inline="always")
def _at(a, i):
    """The address of element i (counted in the storage order) of array a."""
    return a.ctypes.data + i * a.itemsize


@njit(cache=True, inline="always")
def gemm(ta, tb, m, n, k, alpha, a, ia, lda, b, ib, ldb, beta, c, ic, ldc):
    """``C = alpha op(A) op(B) + beta C`` with C m x n and inner dimension k."""
    if m > 0 and n > 0:
        ch = np.array([ta, tb], np.uint8)
        iv = np.array([m, n, k, lda, ldb, ldc], np.int32)
        dv = np.array([alpha, beta])
        _dgemm(ch.ctypes.data, ch.ctypes.data + 1, iv.ctypes.data, iv.ctypes.data + 4,
               iv.ctypes.data + 8, dv.ctypes.data, _at(a, ia), iv.ctypes.data + 12,
               _at(b, ib), iv.ctypes.data + 16, dv.ctypes.data + 8, _at(c, ic),
               iv.ctypes.data + 20)
        _alive(ch, iv, dv)


@njit(cache=True, inline="always")
def gemv(ta, m, n, alpha, a, ia, lda, x, ix, incx, beta, y, iy, incy):
    """``y = alpha op(A) x + beta y`` with A m x n, x and y vectors at offsets ix, iy of
    strides incx, incy. For one right-hand side: OpenBLAS's dgemm with a single row or
    column runs several times slower than dgemv on the same work (benchmarks/README.md,
    "Measurements behind the package's constants")."""
    if m > 0 and n > 0:
        ch = np.array([ta], np.uint8)
        iv = np.array([m, n, lda, incx, incy], np.int32)
        dv = np.array([alpha, beta])
        _dgemv(ch.ctypes.data, iv.ctypes.data, iv.ctypes.data + 4, dv.ctypes.data,
               _at(a, ia), iv.ctypes.data + 8, _at(x, ix), iv.ctypes.data + 12,
               dv.ctypes.data + 8, _at(y, iy), iv.ctypes.data + 16)
        _alive(ch, iv, dv)


@njit(cache=True, inline="always")
def syrk(uplo, trans, n, k, alpha, a, ia, lda, beta, c, ic, ldc):
    """One triangle of ``C = alpha A A^T + beta C`` (trans N, A n x k) or
    ``alpha A^T A + beta C`` (trans T, A k x n)."""
    if n > 0:
        ch = np.array([uplo, trans], np.uint8)
        iv = np.array([n, k, lda, ldc], np.int32)
        dv = np.array([alpha, beta])
        _dsyrk(ch.ctypes.data, ch.ctypes.data + 1, iv.ctypes.data, iv.ctypes.data + 4,
               dv.ctypes.data, _at(a, ia), iv.ctypes.data + 8, dv.ctypes.data + 8,
               _at(c, ic), iv.ctypes.data + 12)
        _alive(ch, iv, dv)


@njit(cache=True, inline="always")
def trsm(side, uplo, transa, diag, m, n, alpha, a, ia, lda, b, ib, ldb):
    """``B = alpha op(A)^{-1} B`` (side L) or ``alpha B op(A)^{-1}`` (side R), A
    triangular, B m x n."""
    if m > 0 and n > 0:
        ch = np.array([side, uplo, transa, diag], np.uint8)
        iv = np.array([m, n, lda, ldb], np.int32)
        dv = np.array([alpha])
        _dtrsm(ch.ctypes.data, ch.ctypes.data + 1, ch.ctypes.data + 2, ch.ctypes.data + 3,
               iv.ctypes.data, iv.ctypes.data + 4, dv.ctypes.data, _at(a, ia),
               iv.ctypes.data + 8, _at(b, ib), iv.ctypes.data + 12)
        _alive(ch, iv, dv)


@njit(cache=True, inline="always")
def trsv(uplo, trans, diag, n, a, lda, x, ix, incx):
    """``x = op(A)^{-1} x`` for the vector of n entries at offset ix of x, stride incx."""
    if n > 0:
        ch = np.array([uplo, trans, diag], np.uint8)
        iv = np.array([n, lda, incx], np.int32)
        _dtrsv(ch.ctypes.data, ch.ctypes.data + 1, ch.ctypes.data + 2, iv.ctypes.data,
               a.ctypes.data, iv.ctypes.data + 4, _at(x, ix), iv.ctypes.data + 8)
        _alive(ch, iv)


@njit(cache=True)
def potrf(uplo, n, a, lda):
    """Cholesky factorization in place; returns LAPACK's info (0: positive definite)."""
    ch = np.array([uplo], np.uint8)
    iv = np.array([n, lda, 0], np.int32)
    _dpotrf(ch.ctypes.data, iv.ctypes.data, a.ctypes.data, iv.ctypes.data + 4,
            iv.ctypes.data + 8)
    _alive(ch)
    return iv[2]


@njit(cache=True)
def sytrf(uplo, n, a, lda, ipiv):
    """Bunch-Kaufman ``U D U^T`` (or ``L D L^T``) in place, pivots in ``ipiv`` (int32,
    LAPACK's 1-based convention); returns info (> 0: D is exactly singular)."""
    ch = np.array([uplo], np.uint8)
    iv = np.array([n, lda, -1, 0], np.int32)
    query = np.empty(1)
    _dsytrf(ch.ctypes.data, iv.ctypes.data, a.ctypes.data, iv.ctypes.data + 4,
            ipiv.ctypes.data, query.ctypes.data, iv.ctypes.data + 8, iv.ctypes.data + 12)
    iv[2] = max(1, int(query[0]))
    work = np.empty(iv[2])
    _dsytrf(ch.ctypes.data, iv.ctypes.data, a.ctypes.data, iv.ctypes.data + 4,
            ipiv.ctypes.data, work.ctypes.data, iv.ctypes.data + 8, iv.ctypes.data + 12)
    _alive(ch, query, work)
    return iv[3]
