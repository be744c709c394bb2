"""A plain NumPy forward pass, loss and backprop, independent of ``tallskinny_np``.

Written from docs/math.md section 1 ("The network and its parameter layout") and nothing
else: no function of ``tallskinny_np`` is called here, so that an error in the structured
code cannot cancel against the same error in its reference. Everything is evaluated in
float64 whatever the net's dtype, and is analytic in the parameters and activations
(no ``abs``, ``max`` or conjugation of a variable), so that a complex-step derivative of
any of these functions is exact to rounding (see :mod:`verify.fd`).

Per-layer parameters are held as ``theta_l`` of shape ``(n_l, q)``: row k is ``W_l[k, :]``
followed, with bias, by ``c_l[k]`` (q = n_{l-1} + 1 with bias, n_{l-1} without). Flattened
row-major this is the ``(k, j)`` layout in which the derivative blocks are stored
(docs/math.md eq. (1.5)); :func:`block_order` maps it to the flat layout of section 1.3.
"""
import numpy as np


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


def activation(name, U):
    """``(sigma(U), sigma'(U))`` for tanh, sigmoid or softplus, analytic in U."""
    if name == "tanh":
        t = np.tanh(U)
        return t, 1 - t * t
    # the logistic function, written with tanh so that no exp overflows
    s = 0.5 * (1 + np.tanh(0.5 * U))
    if name == "sigmoid":
        return s, s * (1 - s)
    if name == "softplus":
        # log(1 + e^u) = u + log(1 + e^-u): pick the branch by the real part (a constant
        # under a complex step) so the exponent is never positive
        pos = U.real > 0
        return np.where(pos, U, 0) + np.log1p(np.exp(np.where(pos, -U, U))), s
    raise ValueError(f"unknown activation {name!r}")


def cross_entropy(O, y):
    """Mean cross-entropy of logits O (B x c) against labels y, and ``pi = softmax(O)``."""
    B = O.shape[0]
    # shifting by a real constant per row is exact and keeps the function analytic
    shifted = O - O.real.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    total = e.sum(axis=1)
    return (np.log(total) - shifted[np.arange(B), y]).mean(), e / total[:, None]


def cross_entropy_gradient(O, y):
    """``G = (pi - Y) / B``, the gradient of :func:`cross_entropy` in the logits
    (docs/math.md eq. (2.6))."""
    G = cross_entropy(O, y)[1]
    G[np.arange(len(y)), y] -= 1
    return G / len(y)


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
    the mean cross-entropy as a 1-vector (``a_L = 1``) for the loss layer."""
    U = affine(net.bias, theta, Z)
    if is_loss(net, l):
        return np.atleast_1d(cross_entropy(U, y)[0])
    return activation(net.activation, U)[0]


def layer_vjp(net, l, theta, Z, b, y):
    """``(d/d theta, d/d Z)`` of ``<b, layer(theta, Z)>``: the b-contracted first
    derivatives ``Dx^T b`` (n_l x q) and ``Dz^T b`` (B x n_{l-1}) of docs/math.md
    section 2.2. The loss layer ignores b (``b_L = 1``)."""
    U = affine(net.bias, theta, Z)
    if is_loss(net, l):
        R = cross_entropy_gradient(U, y)
    else:
        R = b * activation(net.activation, U)[1]
    return R.T @ with_ones(net.bias, Z), R @ theta[:, :Z.shape[1]]


def hidden(net, thetas, Z, start=0):
    """The inputs ``[Z_start, ..., Z_{L-1}]`` of layers ``start+1 .. L``, from Z (the input
    of layer start+1) through the hidden layers."""
    Zs = [Z]
    for l in range(start, net.n_layers - 1):
        Zs.append(activation(net.activation, affine(net.bias, thetas[l], Zs[-1]))[0])
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
    """The mean cross-entropy at a flat parameter vector (real or complex)."""
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
