"""A plain NumPy forward pass, loss and backprop, independent of ``tallskinny_np``.

Written from docs/math.md section 1 ("The network and its parameter layout") and nothing
else: no function of ``tallskinny_np`` is called here, so that an error in the structured
code cannot cancel against the same error in its reference. Everything is evaluated in
float64 whatever the net's dtype, and is analytic in the parameters and activations
(no ``abs``, ``max`` or conjugation of a variable), so that a complex-step derivative of
any of these functions is exact to rounding (see :mod:`verify.fd`). The piecewise-linear
activations are evaluated by their pieces, the piece chosen by the real part (a constant
under a complex step): exact away from their kinks, where the verifier keeps its points.
A user's own activation is evaluated by its own functions.

Per-layer parameters are held as ``theta_l`` of shape ``(n_l, q)``: row k is ``W_l[k, :]``
followed, with bias, by ``c_l[k]`` (q = n_{l-1} + 1 with bias, n_{l-1} without). Flattened
row-major this is the ``(k, j)`` layout in which the derivative blocks are stored
(docs/math.md eq. (1.5)); :func:`block_order` maps it to the flat layout of section 1.3.
"""
import math

import numpy as np
import scipy.special

from tallskinny_np.activations import ACTIVATIONS

LEAKY_SLOPE = 0.01


def block_order(net):
    """Flat-layout index of every entry of ``[theta_1.ravel(), ..., theta_L.ravel()]``.

    docs/math.md section 1.3: layer l occupies ``n_l n_{l-1} (+ n_l)`` consecutive entries,
    ``W_l`` row-major then ``c_l``.
    """
    order, offset = [], 0
    for n, m in zip(net.sizes[:-1], net.sizes[1:]):
        idx = offset + np.arange(m * n).reshape(m, n)
        offset += m * n
        if net.bias:
            idx = np.hstack([idx, offset + np.arange(m)[:, None]])
            offset += m
        order.append(idx.ravel())
    return np.concatenate(order)


def split(net, params):
    """Flat parameters -> per-layer ``theta_l`` (n_l, q), in float64 (complex stays
    complex)."""
    params = np.asarray(params)
    if not np.iscomplexobj(params):
        params = params.astype(np.float64)
    v = params[block_order(net)]
    thetas, offset = [], 0
    for n, m in zip(net.sizes[:-1], net.sizes[1:]):
        q = n + 1 if net.bias else n
        thetas.append(v[offset:offset + m * q].reshape(m, q))
        offset += m * q
    return thetas


def join(net, thetas):
    """Per-layer ``theta_l`` (or anything shaped like them) -> a flat parameter vector."""
    flat = np.empty(net.n_params, dtype=np.result_type(*thetas))
    flat[block_order(net)] = np.concatenate([t.ravel() for t in thetas])
    return flat


def activation(act, U):
    """``(sigma(U), sigma'(U))`` of an activation record, analytic in U: the formulas of
    docs/math.md section 2.1 for the built-in ones, the record's own f and df for a
    user's."""
    if ACTIVATIONS.get(act.name) is not act:
        return act.f(U), act.df(U)
    name = act.name
    if name == "tanh":
        t = np.tanh(U)
        return t, 1 - t * t
    if name == "identity":
        return U, np.ones_like(U)
    if name in ("relu", "leaky_relu"):
        slope = 0.0 if name == "relu" else LEAKY_SLOPE
        pos = U.real > 0
        return np.where(pos, U, slope * U), np.where(pos, 1.0, slope)
    if name == "elu":
        pos = U.real > 0
        return np.where(pos, U, np.expm1(np.where(pos, 0, U))), np.where(pos, 1.0, np.exp(U))
    if name == "gelu":
        cdf = 0.5 * (1 + scipy.special.erf(U / math.sqrt(2)))
        pdf = np.exp(-U * U / 2) / math.sqrt(2 * math.pi)
        return U * cdf, cdf + U * pdf
    # the logistic function, written with tanh so that no exp overflows
    s = 0.5 * (1 + np.tanh(0.5 * U))
    if name == "sigmoid":
        return s, s * (1 - s)
    if name == "silu":
        return U * s, s * (1 + U * (1 - s))
    if name == "softplus":
        # log(1 + e^u) = u + log(1 + e^-u): pick the branch by the real part (a constant
        # under a complex step) so the exponent is never positive
        pos = U.real > 0
        return np.where(pos, U, 0) + np.log1p(np.exp(np.where(pos, -U, U))), s
    raise ValueError(f"no reference formula for activation {name!r}")


def residual_layers(net):
    """For each layer, whether it adds its input (docs/math.md eq. (1.1a)): the hidden
    layers after the first whose input and output widths are equal, in a residual net."""
    L = net.n_layers
    return [net.residual and 0 < l < L - 1 and net.sizes[l] == net.sizes[l + 1]
            for l in range(L)]


def kink_distance(net, params, X):
    """The smallest ``|U - kink|`` over the hidden units of the layers whose activation
    has kinks (inf without any): where central differences of the verifier, whose steps
    move U by a few thousandths, are derivatives."""
    thetas = split(net, params)
    Zs = hidden(net, thetas, np.asarray(X, dtype=np.float64))
    out = math.inf
    for theta, Z, act in zip(thetas, Zs, net.activations):
        U = affine(net.bias, theta, Z)
        for kink in act.kinks:
            out = min(out, float(np.abs(U - kink).min()))
    return out


def softmax(O):
    """``(shifted, e, total, top, rest)``: each sample's top class t (by the real part, a
    constant under a complex step), the logits shifted by their top one, ``e =
    exp(shifted)``, ``total = sum_j e_j`` (so that ``pi = e / total``) and ``rest =
    sum_{j != t} e_j = total - 1``, summed without the 1.

    The shift is the top logit itself, not its real part, so that ``e_t = exp(0) = 1``
    exactly under a complex step too, and no derivative of pi cancels by more than a
    factor c (``pi_t >= 1 / c``). Shifted by the real part, a complex step in ``O_t``
    would leave ``e_t = 1 + i h``, and the imaginary part of ``pi_t = e_t / total``, the
    saturated softmax's ``Lambda_tt``, would come out as ``(h - h / (1 + rho)) / (1 +
    rho)`` with ``rho = sum_{j != t} e_j``: 0 once ``1 + rho`` rounds to 1."""
    B = O.shape[0]
    top = O.real.argmax(axis=1)
    shifted = O - O[np.arange(B), top][:, None]
    e = np.exp(shifted)
    rest = np.where(np.arange(O.shape[1]) == top[:, None], 0, e).sum(axis=1)
    return shifted, e, e.sum(axis=1), top, rest


def cross_entropy(O, y):
    """Mean cross-entropy of logits O (B x c) against labels y, and ``pi = softmax(O)``;
    ``log(total)`` as ``log1p(rest)``, which keeps the loss of a saturated sample labelled
    with its top class (``rest`` itself) instead of rounding ``1 + rest`` first."""
    shifted, e, total, _, rest = softmax(O)
    loss = np.log1p(rest) - shifted[np.arange(O.shape[0]), y]
    return loss.mean(), e / total[:, None]


def cross_entropy_gradient(O, y):
    """``G = (pi - Y) / B``, the gradient of :func:`cross_entropy` in the logits
    (docs/math.md eq. (2.6)), with the top class's ``pi_t - 1`` as ``-sum_{j != t} pi_j``:
    the difference is 0 once the softmax saturates."""
    _, e, total, top, rest = softmax(O)
    y = np.asarray(y)
    rows = np.arange(len(y))
    G = e / total[:, None]
    G[rows, y] = np.where(y == top, -rest / total, G[rows, y] - 1)
    return G / len(y)


def loss_value(net, O, y):
    """The mean cross-entropy (eq. (1.2)) or the mean squared error over all entries
    (eq. (1.2a)) of the logits O."""
    if net.loss_name == "mse":
        return ((O - y) ** 2).sum() / O.size
    return cross_entropy(O, y)[0]


def loss_gradient(net, O, y):
    """The gradient of :func:`loss_value` in the logits: eq. (2.6) or ``2 (O - T) /
    (B n_L)`` (eq. (2.6a))."""
    if net.loss_name == "mse":
        return 2 * (O - y) / O.size
    return cross_entropy_gradient(O, y)


def affine(bias, theta, Z):
    """``Z W^T + 1 c^T`` (eq. (1.1)), with ``theta = [W, c]``."""
    n = Z.shape[1]
    U = Z @ theta[:, :n].T
    return U + theta[:, n] if bias else U


def with_ones(bias, Z):
    """``[Z, 1]`` with bias, Z without: the rows that multiply ``theta``."""
    return np.hstack([Z, np.ones((Z.shape[0], 1))]) if bias else Z


def is_loss(net, l):
    return l == net.n_layers - 1


def layer(net, l, theta, Z, y):
    """Layer l's function (0-based): ``sigma(Z W^T + c)`` (B x n_l) for a hidden layer,
    plus Z in a residual one, the mean loss as a 1-vector (``a_L = 1``) for the loss
    layer."""
    U = affine(net.bias, theta, Z)
    if is_loss(net, l):
        return np.atleast_1d(loss_value(net, U, y))
    out = activation(net.activations[l], U)[0]
    return Z + out if residual_layers(net)[l] else out


def layer_vjp(net, l, theta, Z, b, y):
    """``(d/d theta, d/d Z)`` of ``<b, layer(theta, Z)>``: the b-contracted first
    derivatives ``Dx^T b`` (n_l x q) and ``Dz^T b`` (B x n_{l-1}) of docs/math.md
    section 2.2. The loss layer ignores b (``b_L = 1``)."""
    U = affine(net.bias, theta, Z)
    if is_loss(net, l):
        R = loss_gradient(net, U, y)
    else:
        R = b * activation(net.activations[l], U)[1]
    dZ = R @ theta[:, :Z.shape[1]]
    return R.T @ with_ones(net.bias, Z), dZ + b if residual_layers(net)[l] else dZ


def hidden(net, thetas, Z, start=0):
    """The inputs ``[Z_start, ..., Z_{L-1}]`` of layers ``start+1 .. L``, from Z (the input
    of layer start+1) through the hidden layers."""
    Zs = [Z]
    for l in range(start, net.n_layers - 1):
        out = activation(net.activations[l], affine(net.bias, thetas[l], Zs[-1]))[0]
        Zs.append(Zs[-1] + out if residual_layers(net)[l] else out)
    return Zs


def forward(net, thetas, Z, y, start=0):
    """:func:`hidden` and the loss."""
    Zs = hidden(net, thetas, Z, start)
    return Zs, layer(net, net.n_layers - 1, thetas[-1], Zs[-1], y)[0]


def backprop(net, thetas, Zs, y):
    """Backprop vectors ``b_l = d loss / d z_l`` of the hidden layers (B x n_l, l = 1..L-1)
    and per-layer gradients ``Dx_l^T b_l`` (docs/math.md eqs. (2.8), (2.9))."""
    L = net.n_layers
    bs, grads = [None] * (L - 1), [None] * L
    b = None
    for l in range(L - 1, -1, -1):
        grads[l], b = layer_vjp(net, l, thetas[l], Zs[l], b, y)
        if l > 0:
            bs[l - 1] = b
    return bs, grads


def loss(net, params, X, y):
    """The mean loss at a flat parameter vector (real or complex)."""
    return forward(net, split(net, params), X, y)[1]


def gradient(net, params, X, y):
    """The flat gradient by plain backprop (real or complex parameters)."""
    thetas = split(net, params)
    Zs, _ = forward(net, thetas, X, y)
    return join(net, backprop(net, thetas, Zs, y)[1])


def logits(net, params, X):
    """The loss layer's input map ``O = z_{L-1} W_L^T + c_L`` (B x c)."""
    thetas = split(net, params)
    return affine(net.bias, thetas[-1], hidden(net, thetas, X)[-1])
