"""The MLP, its parameter layout and its loss (DESIGN.md section 1).

Layers 1..L-1 are hidden, ``z_l = sigma(z_{l-1} W_l^T + 1 c_l^T)``; layer L is the loss
layer, ``loss = mean_s CE(z_{L-1,s} W_L^T + c_L, y_s)``. The flat parameter vector holds,
for each layer in order, ``W_l`` row-major ``(n_l x n_{l-1})`` then ``c_l``: the layout of
PyTorch's ``parameters_to_vector`` on a stack of ``nn.Linear``.
"""
import numbers

import numpy as np

from .activations import activation as _activation
from .backend import array_module


class MLP:
    """A tanh/sigmoid/softplus MLP with a cross-entropy loss layer.

    ``sizes = [n_0, n_1, ..., n_L]``: ``n_0`` inputs, hidden widths ``n_1..n_{L-1}``,
    ``n_L`` classes. ``dtype`` (float64 or float32) is the precision of every computation.
    """

    def __init__(self, sizes, activation="tanh", bias=True, dtype=np.float64):
        sizes = list(sizes)
        if len(sizes) < 3:
            raise ValueError(
                f"an MLP needs at least 2 layers (a hidden layer and the loss layer), "
                f"i.e. at least 3 sizes; got sizes={sizes}"
            )
        for n in sizes:
            if not isinstance(n, numbers.Integral) or isinstance(n, bool) or n < 1:
                raise ValueError(f"layer sizes must be positive integers; got sizes={sizes}")
        if sizes[-1] < 2:
            raise ValueError(
                f"the loss layer needs at least 2 classes (cross-entropy over one class is "
                f"constant); got {sizes[-1]}"
            )
        dtype = np.dtype(dtype)
        if dtype not in (np.float64, np.float32):
            raise ValueError(f"dtype must be float64 or float32; got {dtype}")
        _activation(activation)
        if not isinstance(bias, bool):
            raise ValueError(f"bias must be True or False; got {bias!r}")
        self.sizes = tuple(int(n) for n in sizes)
        self.activation = activation
        self.bias = bias
        self.dtype = dtype
        shapes = [(m, n) for n, m in zip(self.sizes[:-1], self.sizes[1:])]
        self.layer_params = [m * n + (m if bias else 0) for m, n in shapes]
        self.offsets = np.concatenate([[0], np.cumsum(self.layer_params)]).tolist()
        self.n_params = self.offsets[-1]

    @property
    def n_layers(self):
        """L, the number of affine layers (the loss layer included)."""
        return len(self.sizes) - 1

    @property
    def n_classes(self):
        return self.sizes[-1]

    def __repr__(self):
        return (f"MLP({list(self.sizes)}, activation={self.activation!r}, "
                f"bias={self.bias}, dtype={self.dtype.name})")

    def init_params(self, seed=0, gain=1.0):
        """A flat parameter vector with ``W ~ N(0, gain^2 / fan_in)`` and zero biases."""
        rng = np.random.default_rng(seed)
        params = np.zeros(self.n_params, dtype=self.dtype)
        for l, (n, m) in enumerate(zip(self.sizes[:-1], self.sizes[1:])):
            o = self.offsets[l]
            params[o:o + m * n] = rng.standard_normal(m * n) * (gain / np.sqrt(n))
        return params

    def unpack(self, params):
        """Views ``[(W_1, c_1), ..., (W_L, c_L)]`` into a flat vector (``c_l`` is None
        without bias)."""
        layers = []
        for l, (n, m) in enumerate(zip(self.sizes[:-1], self.sizes[1:])):
            o = self.offsets[l]
            W = params[o:o + m * n].reshape(m, n)
            c = params[o + m * n:o + m * n + m] if self.bias else None
            layers.append((W, c))
        return layers

    def check_params(self, params):
        """``params`` as an array of the net's dtype, after checking shape and values."""
        xp = array_module(params)
        params = xp.asarray(params)
        if params.shape != (self.n_params,):
            raise ValueError(
                f"params must have shape ({self.n_params},) for {self!r}; got {params.shape}"
            )
        check_real(params, "params")
        params = params.astype(self.dtype, copy=False)
        if not bool(xp.all(xp.isfinite(params))):
            raise ValueError("params contain non-finite values (nan or inf)")
        return params

    def check_data(self, X, y):
        """``(X, y)`` after checking shapes, finiteness and label range."""
        xp = array_module(X, y)
        X = xp.asarray(X)
        y = xp.asarray(y)
        if X.ndim != 2 or X.shape[1] != self.sizes[0] or X.shape[0] < 1:
            raise ValueError(
                f"X must have shape (batch, {self.sizes[0]}) with batch >= 1; got {X.shape}"
            )
        check_real(X, "X")
        X = X.astype(self.dtype, copy=False)
        if not bool(xp.all(xp.isfinite(X))):
            raise ValueError("X contains non-finite values (nan or inf)")
        if y.shape != (X.shape[0],):
            raise ValueError(f"y must have shape ({X.shape[0]},) to match X; got {y.shape}")
        if not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"y must hold integer class labels; got dtype {y.dtype}")
        if y.size and (int(y.min()) < 0 or int(y.max()) >= self.n_classes):
            raise ValueError(
                f"labels must lie in [0, {self.n_classes}); got min {int(y.min())}, "
                f"max {int(y.max())}"
            )
        return X, y

    def logits(self, params, X):
        """The loss layer's input map ``O = z_{L-1} W_L^T + c_L`` for a batch X."""
        xp = array_module(params, X)
        act = _activation(self.activation)
        Z = X
        layers = self.unpack(params)
        for W, c in layers[:-1]:
            Z = act(xp, Z @ W.T + (c if c is not None else 0))[0]
        W, c = layers[-1]
        return Z @ W.T + (c if c is not None else 0)

    def loss(self, params, X, y):
        """Mean cross-entropy of the batch (a float of the net's dtype)."""
        params = self.check_params(params)
        X, y = self.check_data(X, y)
        return cross_entropy(self.logits(params, X), y)[0]


def check_real(a, name):
    """Refuse an array that is not real (complex, bool, object): ``astype`` to the net's
    dtype would silently drop an imaginary part."""
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise ValueError(f"{name} must be a real array; got dtype {a.dtype}")


def cross_entropy(O, y):
    """Mean cross-entropy of logits O (B x c) against labels y, and softmax(O)."""
    xp = array_module(O)
    shifted = O - O.max(axis=1, keepdims=True)
    e = xp.exp(shifted)
    lse = xp.log(e.sum(axis=1))
    pi = e / e.sum(axis=1, keepdims=True)
    B = O.shape[0]
    loss = (lse - shifted[xp.arange(B), y]).mean()
    return loss, pi


def to_layers(net, v):
    """Split flat vectors v (n_params, r) into per-layer blocks ``x_l`` of shape
    ``(n_l, q_l, r)``: row k holds ``W_l[k, :]`` followed (with bias) by ``c_l[k]``, so
    ``q_l = n_{l-1} + 1`` with bias and ``n_{l-1}`` without. This is the layout in which
    Dx is Kronecker-structured (DESIGN.md section 2)."""
    xp = array_module(v)
    r = v.shape[1]
    out = []
    for l, (n, m) in enumerate(zip(net.sizes[:-1], net.sizes[1:])):
        o = net.offsets[l]
        x = v[o:o + m * n].reshape(m, n, r)
        if net.bias:
            x = xp.concatenate([x, v[o + m * n:o + m * n + m].reshape(m, 1, r)], axis=1)
        out.append(x)
    return out


def from_layers(net, xs):
    """Inverse of :func:`to_layers`: per-layer blocks back to flat vectors (n_params, r)."""
    xp = array_module(xs[0])
    parts = []
    for x, n in zip(xs, net.sizes[:-1]):
        r = x.shape[-1]
        parts.append(x[:, :n].reshape(-1, r))
        if net.bias:
            parts.append(x[:, n])
    return xp.concatenate(parts, axis=0)
