"""When a pivot block is singular and when a pivot eigenvalue counts as zero.

docs/math.md section 4.7, "Inertia": the one tolerance policy of every factorization of a
symmetric pivot block ``Q`` (``n x n``) in the package, whatever computed it (the compiled
Cholesky or Bunch-Kaufman of :mod:`tallskinny_np.pivot`, SciPy's LAPACK or ``eigh`` in
:mod:`tallskinny_np.symmetric`, the structured stages of :mod:`tallskinny_np.wide`).
``eps_mach`` is the machine epsilon of the working precision.

- A pivot eigenvalue (of the ``D`` of ``L D L^T``, or of ``Q`` itself) of modulus at most
  ``n eps_mach ||Q||_1`` counts as zero: ``Q`` is singular to working precision there.
- Cholesky is accepted only when its reciprocal condition estimate exceeds
  ``n eps_mach``; a barely positive definite block goes to Bunch-Kaufman, which counts its
  near-zero pivots as zero eigenvalues.
- A pivot whose reciprocal condition estimate is below ``eps_mach`` is singular to working
  precision: the criterion of LAPACK's expert drivers (xGESVX). A stricter ``n eps_mach``
  refused well-conditioned float32 systems whose pivots are worse conditioned than
  ``H + eps I``.

The functions are plain array code, so that they run on any array module; the compiled
factorization compiles the same functions with numba.
"""
import numpy as np


def zero_tolerance(n, anorm, eps_mach):
    """The modulus ``n eps_mach anorm`` at or below which a pivot eigenvalue of an
    ``n x n`` block of 1-norm ``anorm`` counts as zero."""
    return n * eps_mach * anorm


def eigenvalue_signs(w, tol):
    """``(n_neg, n_zero, n_pos)`` of the eigenvalues w, those within ``tol`` of 0 counted
    as zero."""
    n_neg, n_pos = int((w < -tol).sum()), int((w > tol).sum())
    return n_neg, int(w.size) - n_neg - n_pos, n_pos


def cholesky_accepted(rcond, n, eps_mach):
    """Whether a Cholesky factor of an ``n x n`` block with reciprocal condition estimate
    ``rcond`` is kept (else the block is factored by Bunch-Kaufman)."""
    return rcond > n * eps_mach


def singular(rcond, dtype):
    """Whether a pivot with reciprocal condition estimate ``rcond`` is singular to the
    working precision of ``dtype`` (NaN counts as singular)."""
    return not rcond >= np.finfo(dtype).eps
