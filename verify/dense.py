"""The dense Hessian and Gauss-Newton matrix of a small network, in the flat parameter
layout of docs/math.md section 1.3, computed two independent ways.

``method="complex-step"`` (default) or ``"richardson"`` differentiate the plain backprop
gradient of :mod:`verify.reference` (which shares no code with ``tallskinny_np``) column by
column with :func:`verify.fd.jacobian`; complex step is exact to rounding (relative error
around 1e-15 for float64), Richardson-extrapolated central differences good to about
1e-10. ``method="formula"`` assembles docs/math.md eq. (3.5),
``H = A + C P M^{-1} Dx + (C P M^{-1} Dx)^T + Dx^T M^{-T} P^T S P M^{-1} Dx``, from the
derivative blocks of :class:`tallskinny_np.Curvature`, with M and P formed as dense
matrices (:mod:`verify.assemble`).

Both refuse networks above :data:`MAX_PARAMS` parameters or :data:`MAX_ACTIVATIONS`
activations (see :func:`check_size`).
"""
import numpy as np

from tallskinny_np import Curvature

from . import assemble, fd, reference

MAX_PARAMS = 3000
MAX_ACTIVATIONS = 3000
METHODS = fd.METHODS + ("formula",)


def check_size(net, X):
    """Refuse networks whose dense matrices are too large to form.

    The verifier forms H (P x P) and the augmented K of docs/math.md eq. (4.1), of size
    ``P + 2 sum_l a_l``, and takes eigenvalues of the latter: O((P + 2 sum a)^3) time.
    With P <= 3000 parameters and ``sum_{l=0}^{L-1} B n_l`` <= 3000 activations that is at
    most 9000 x 9000 (650 MB a copy, and the checks hold a few) and minutes on one core.
    """
    activations = X.shape[0] * sum(net.sizes[:-1])
    if net.n_params > MAX_PARAMS or activations > MAX_ACTIVATIONS:
        raise ValueError(
            f"{net!r} with a batch of {X.shape[0]} is too large for the dense verifier: "
            f"{net.n_params} parameters (limit {MAX_PARAMS}) and {activations} activations "
            f"B * (n_0 + ... + n_{{L-1}}) (limit {MAX_ACTIVATIONS}); the dense matrices it "
            f"forms grow as the square of these and their factorizations as the cube")


def check_method(method):
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")


def to_flat(net, H):
    """A matrix in the block layout of :mod:`verify.assemble` -> the flat layout."""
    order = reference.block_order(net)
    out = np.empty_like(H)
    out[np.ix_(order, order)] = H
    return out


def formula(curv):
    """The dense curvature (Hessian or GGN, as ``curv.kind``) of docs/math.md eq. (3.5),
    assembled from ``curv.blocks``, in the flat layout."""
    a0 = curv.linearization.Z[0].size
    return to_flat(curv.net, assemble.hessian(assemble.assemble(curv.blocks, a0)))


def dense_hessian(net, params, X, y, method="complex-step", wide=False):
    """The dense Hessian of the mean loss of a small network.

    Parameters
    ----------
    net : tallskinny_np.MLP
    params : ndarray, shape (P,)
        The point, in the flat layout of docs/math.md section 1.3.
    X : array_like, shape (B, n_0)
    y : array_like of int, shape (B,), or of float, shape (B, n_L)
        Labels, or the targets of ``loss="mse"``.
    method : {"complex-step", "richardson", "formula"}, optional
        ``"complex-step"`` (default) and ``"richardson"`` differentiate the plain
        backprop gradient of :mod:`verify.reference`, which shares no code with
        ``tallskinny_np``; ``"formula"`` assembles docs/math.md eq. (3.5) from the
        derivative blocks.
    wide : bool, optional
        With complex step, evaluate the reference in complex long double (not for gelu,
        whose erf SciPy has only in complex128): H in long double, rounded about 2^-11 as
        much as float64's where the platform's long double is wider (x86-64); the
        reference for the rounding of the network's evaluation (docs/math.md section
        7.1).

    Returns
    -------
    H : ndarray, shape (P, P)
        float64 (long double with ``wide``), in the flat layout.

    Raises
    ------
    ValueError
        For an unknown method or a network above :data:`MAX_PARAMS` parameters or
        :data:`MAX_ACTIVATIONS` activations.

    Examples
    --------
    The two independent constructions agree to rounding:

    >>> import numpy as np
    >>> from tallskinny_np import MLP
    >>> from verify import dense_hessian  # installed: tallskinny_np.verify
    >>> net = MLP([3, 2, 2])
    >>> params = net.init_params(seed=0)
    >>> X, y = np.random.default_rng(0).standard_normal((2, 3)), np.array([0, 1])
    >>> H = dense_hessian(net, params, X, y)
    >>> H.shape
    (14, 14)
    >>> bool(np.allclose(H, dense_hessian(net, params, X, y, method="formula"),
    ...                  rtol=0, atol=1e-12))
    True
    """
    check_method(method)
    check_size(net, X)
    check_wide(net, method, wide)
    if method == "formula":
        return formula(Curvature(net, params, X, y, kind="hessian"))
    X = np.asarray(X, dtype=np.float64)
    return fd.jacobian(lambda v: reference.gradient(net, v, X, y), params, method, wide)


def check_wide(net, method, wide):
    """Refuse a wide evaluation the reference cannot do (:func:`dense_hessian`)."""
    if wide and (method != "complex-step"
                 or any(a.name == "gelu" for a in net.activations)):
        raise ValueError("wide evaluation needs method='complex-step' and an activation "
                         "other than gelu (SciPy's erf has no complex long double)")


def gauss_newton(net, logits, w, y, method="complex-step", wide=False):
    """``J^T Lambda J`` with J the Jacobian of ``logits(w)`` (B x c) at w and Lambda the
    Hessian of ``net``'s loss in the logits, the Jacobian of its gradient
    (:func:`verify.reference.loss_gradient`), both
    differentiated by ``method``; and an estimate of its absolute error for
    ``"richardson"`` (0 for complex step): first-order propagation of the largest error
    estimates ``dJ``, ``dLam`` of :func:`verify.fd.jacobian_and_error`,
    ``2 dJ max_j (1^T |Lambda| |J|)_j + dLam (max_j sum_k |J_kj|)^2``. With ``wide``
    (complex step) all of it in long double, the logits too."""
    O = logits(w.astype(np.clongdouble)).real if wide else logits(w)
    gradient = lambda o: reference.loss_gradient(net, o, y)
    if method != "richardson":
        J = fd.jacobian(logits, w, method, wide)
        Lam = fd.jacobian(gradient, O, method, wide)
        return J.T @ Lam @ J, 0.0
    J, dJ = fd.jacobian_and_error(logits, w)
    Lam, dLam = fd.jacobian_and_error(gradient, O)
    aJ = np.abs(J)
    error = (2 * np.max(dJ) * np.max(np.abs(Lam).sum(0) @ aJ)
             + np.max(dLam) * np.max(aJ.sum(0)) ** 2)
    return J.T @ Lam @ J, error


def dense_ggn(net, params, X, y, method="complex-step", wide=False):
    """The dense generalized Gauss-Newton matrix ``J^T Lambda J`` of a small network
    (docs/math.md eq. (2.19)).

    Parameters
    ----------
    net, params, X, y, method, wide
        As for :func:`dense_hessian`; with a finite-difference method J and Lambda are
        differentiated from the logits of :mod:`verify.reference`
        (:func:`gauss_newton`).

    Returns
    -------
    G : ndarray, shape (P, P)
        float64 (long double with ``wide``), in the flat layout, symmetric positive
        semi-definite.

    Raises
    ------
    ValueError
        As for :func:`dense_hessian`.

    Examples
    --------
    >>> import numpy as np
    >>> from tallskinny_np import MLP
    >>> from verify import dense_ggn  # installed: tallskinny_np.verify
    >>> net = MLP([3, 2, 2])
    >>> X, y = np.random.default_rng(0).standard_normal((2, 3)), np.array([0, 1])
    >>> G = dense_ggn(net, net.init_params(seed=0), X, y)
    >>> bool(np.linalg.eigvalsh(G).min() > -1e-12)
    True
    """
    check_method(method)
    check_size(net, X)
    check_wide(net, method, wide)
    if method == "formula":
        return formula(Curvature(net, params, X, y, kind="ggn"))
    X = np.asarray(X, dtype=np.float64)
    return gauss_newton(net, lambda v: reference.logits(net, v, X), params, y, method,
                        wide)[0]
