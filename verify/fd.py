"""Dense Jacobians by differentiation of a black box: the references of the verifier.

Two methods, both column by column (``J[:, j] = d f / d x_j``):

``"richardson"``: central differences ``D(h) = (f(x + h e_j) - f(x - h e_j)) / (2h)``
    extrapolated once, ``R(h) = (4 D(h/2) - D(h)) / 3 = f' + O(h^4)``, with the step
    ``h_j = RICHARDSON_STEP * max(1, |x_j|)`` = 2e-3. The truncation error is about
    ``h^4 |f^(5)| / 480`` (1e-14 for derivatives of order 1); the rounding error of row i
    is about ``3 delta_i / h`` with ``delta_i`` the rounding error of evaluating ``f_i``
    (at least ``u |f_i|``, more when f sums terms larger than itself). The result is
    typically good to 1e-11 to 1e-10 relative to the function. Because the rounding
    error is absolute, a derivative much smaller than the function (a vanishing
    gradient) is resolved only to that level; :func:`jacobian_and_error` measures it
    a posteriori: ``|R(h) - R(h/2)|``, dominated by the error of ``R(h/2)`` (twice the
    rounding error of ``R(h)``, a sixteenth of its truncation error), estimates the error
    of ``R(h)`` from above up to a small factor.

``"complex-step"``: ``Im f(x + i h e_j) / h`` with h = 1e-20 (Squire and Trapp 1998). There
    is no subtraction, so no cancellation: the truncation error ``h^2 |f'''| / 6`` is below
    any float, and the result is exact to the rounding error of evaluating f, about
    ``u`` times the size of the terms summed. It needs an f that is analytic in x written
    without ``abs``, ``max`` or conjugation of a variable, such as
    :mod:`verify.reference`.
"""
import numpy as np

RICHARDSON_STEP = 2e-3
COMPLEX_STEP = 1e-20
METHODS = ("complex-step", "richardson")


def columns(f, x):
    """``(flat x, evaluate)``: x as a flat float64 (or long double) vector and f on flat
    vectors."""
    x = np.asarray(x)
    x = x.astype(np.result_type(x, np.float64))
    return x.ravel(), lambda v: np.asarray(f(v.reshape(x.shape))).ravel()


def central(evaluate, flat, j, s):
    """``D(s)`` along ``e_j``, divided by the step actually taken (``x + s`` rounds)."""
    up, down = flat.copy(), flat.copy()
    up[j] += s
    down[j] -= s
    return (evaluate(up) - evaluate(down)) / (up[j] - down[j])


def jacobian(f, x, method="richardson", wide=False):
    """The Jacobian ``(f.size, x.size)`` of ``f`` at the real array ``x`` (any shape;
    ``f(x)`` of any shape, both flattened row-major). With ``wide`` (complex step only)
    f is evaluated in complex long double and the Jacobian is long double: its rounding
    is that of the platform's long double (64 significant bits on x86-64, 2^-11 of
    float64's), a reference for the rounding of float64 evaluations."""
    if method == "richardson":
        if wide:
            raise ValueError("wide evaluation needs method='complex-step'")
        return jacobian_and_error(f, x)[0]
    if method != "complex-step":
        raise ValueError(f"unknown differentiation method {method!r}; choose one of "
                         f"{METHODS}")
    flat, evaluate = columns(f, x)
    cols = []
    for j in range(flat.size):
        v = flat.astype(np.clongdouble if wide else np.complex128)
        v[j] += COMPLEX_STEP * 1j
        cols.append(evaluate(v).imag / COMPLEX_STEP)
    return np.stack(cols, axis=1)


def jacobian_and_error(f, x):
    """The ``"richardson"`` Jacobian ``R(h)`` and the entrywise estimate of its error,
    ``|R(h) - R(h/2)|`` (module docstring); 1.5 times the evaluations of R(h) alone."""
    flat, evaluate = columns(f, x)
    cols, errs = [], []
    for j in range(flat.size):
        h = RICHARDSON_STEP * max(1.0, abs(flat[j]))
        D1, D2, D4 = (central(evaluate, flat, j, s) for s in (h, h / 2, h / 4))
        R, R_half = (4 * D2 - D1) / 3, (4 * D4 - D2) / 3
        cols.append(R)
        errs.append(np.abs(R - R_half))
    return np.stack(cols, axis=1), np.stack(errs, axis=1)
