"""The MLP, its parameter layout and its loss (docs/math.md section 1).

Layers 1..L-1 are hidden, ``z_l = sigma(z_{l-1} W_l^T + 1 c_l^T)``; layer L is the loss
layer, ``loss = mean_s CE(z_{L-1,s} W_L^T + c_L, y_s)``. The flat parameter vector holds,
for each layer in order, ``W_l`` row-major ``(n_l x n_{l-1})`` then ``c_l``: the layout of
PyTorch's ``parameters_to_vector`` on a stack of ``nn.Linear``. The products and solvers
work on per-layer blocks ``[W_l, c_l]`` of shape ``(n_l, q_l, r)`` instead;
:meth:`MLP.split` and :meth:`MLP.join` convert between the two layouts.
"""
import math
import numbers

import numpy as np

from .activations import activation as _activation
from .backend import array_module


class MLP:
    r"""A tanh/sigmoid/softplus MLP with a cross-entropy loss layer.

    Layers 1 to L-1 are hidden, layer L fuses the last affine map with the mean
    cross-entropy (docs/math.md section 1.1, eqs. (1.1), (1.2)):

    .. math::

        Z_l = \sigma(Z_{l-1} W_l^T + 1 c_l^T), \qquad
        \mathrm{loss} = \frac{1}{B} \sum_s \mathrm{CE}(Z_{L-1,s} W_L^T + c_L, y_s).

    Parameters
    ----------
    sizes : sequence of int
        ``[n_0, n_1, ..., n_L]``: ``n_0`` inputs, hidden widths ``n_1..n_{L-1}``, ``n_L``
        classes. At least three sizes (one hidden layer and the loss layer), each
        positive, and at least two classes.
    activation : {"tanh", "sigmoid", "softplus"}, optional
        The hidden layers' activation (default "tanh").
    bias : bool, optional
        Whether every layer has a bias (default True).
    dtype : {numpy.float64, numpy.float32}, optional
        The precision of every computation (default float64).

    Attributes
    ----------
    sizes : tuple of int
        The layer sizes.
    layer_params : list of int
        ``p_l``, the parameter count of each layer (eq. (1.4)).
    offsets : list of int
        Where each layer starts in the flat parameter vector (``L + 1`` entries).
    n_params : int
        The total parameter count.

    Raises
    ------
    ValueError
        For sizes, activation, bias or dtype out of range; the message names the problem.

    Notes
    -----
    The flat parameter vector holds, for each layer in order, ``W_l`` row-major
    ``(n_l x n_{l-1})`` and then ``c_l``: the layout of PyTorch's ``parameters_to_vector``
    on a stack of ``nn.Linear`` (docs/math.md section 1.3).

    References
    ----------
    .. [1] A. Rahimi, "The Hessian of tall-skinny networks is easy to invert",
       arXiv:2601.06096, 2026.

    Examples
    --------
    >>> import numpy as np
    >>> from tallskinny_np import MLP
    >>> net = MLP([4, 3, 3, 2])
    >>> net
    MLP([4, 3, 3, 2], activation='tanh', bias=True, dtype=float64)
    >>> net.n_layers, net.n_classes, net.n_params, net.layer_params
    (3, 2, 35, [15, 12, 8])
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
        try:
            dtype = np.dtype(dtype)
        except TypeError:                  # NumPy's "data type ... not understood"
            raise ValueError(f"dtype must be float64 or float32; got {dtype!r}") from None
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
        """``n_L``, the number of classes of the loss layer."""
        return self.sizes[-1]

    def __repr__(self):
        return (f"MLP({list(self.sizes)}, activation={self.activation!r}, "
                f"bias={self.bias}, dtype={self.dtype.name})")

    def init_params(self, seed=0, gain=1.0):
        """A random flat parameter vector: ``W ~ N(0, gain^2 / fan_in)``, zero biases.

        Parameters
        ----------
        seed : int, optional
            Seed of ``numpy.random.default_rng`` (default 0).
        gain : float, optional
            Standard deviation of the weights times ``sqrt(fan_in)``, finite and >= 0
            (default 1).

        Returns
        -------
        params : ndarray, shape (n_params,)
            In the net's dtype and the flat layout of docs/math.md section 1.3.

        Examples
        --------
        >>> from tallskinny_np import MLP
        >>> params = MLP([4, 3, 2]).init_params(seed=0)
        >>> params.shape, params.dtype
        ((23,), dtype('float64'))
        """
        try:
            ok = (isinstance(gain, numbers.Real) and not isinstance(gain, bool)
                  and math.isfinite(gain) and gain >= 0)
        except OverflowError:              # a Fraction beyond float's range
            ok = False
        if not ok:
            raise ValueError(f"gain must be a finite real number >= 0; got {gain!r}")
        gain = float(gain)
        rng = np.random.default_rng(seed)
        params = np.zeros(self.n_params, dtype=self.dtype)
        for l, (n, m) in enumerate(zip(self.sizes[:-1], self.sizes[1:])):
            o = self.offsets[l]
            params[o:o + m * n] = rng.standard_normal(m * n) * (gain / np.sqrt(n))
        return params

    def unpack(self, params):
        """Per-layer views into a flat parameter vector.

        Parameters
        ----------
        params : ndarray, shape (n_params,)
            A flat parameter vector (not checked; see :meth:`check_params`).

        Returns
        -------
        layers : list of (ndarray, ndarray or None)
            ``[(W_1, c_1), ..., (W_L, c_L)]``, ``W_l`` of shape ``(n_l, n_{l-1})`` and
            ``c_l`` of shape ``(n_l,)``, views (not copies) of ``params``; ``c_l`` is None
            without bias.

        Examples
        --------
        >>> from tallskinny_np import MLP
        >>> net = MLP([4, 3, 2])
        >>> [(W.shape, c.shape) for W, c in net.unpack(net.init_params())]
        [((3, 4), (3,)), ((2, 3), (2,))]
        """
        layers = []
        for l, (n, m) in enumerate(zip(self.sizes[:-1], self.sizes[1:])):
            o = self.offsets[l]
            W = params[o:o + m * n].reshape(m, n)
            c = params[o + m * n:o + m * n + m] if self.bias else None
            layers.append((W, c))
        return layers

    def split(self, v):
        """Per-layer blocks ``x_l`` of shape ``(n_l, q_l) + v.shape[1:]`` from flat vectors v
        of shape ``(n_params,)`` or ``(n_params, r)``: row k of ``x_l`` holds ``W_l[k, :]``
        followed (with bias) by ``c_l[k]``, so ``q_l = n_{l-1} + 1`` with bias and
        ``n_{l-1}`` without. This is the layout in which Dx is Kronecker-structured
        (docs/math.md section 2), and the one the products and solvers take and return;
        :meth:`join` is its inverse."""
        if v.ndim < 1 or v.shape[0] != self.n_params:
            raise ValueError(f"split needs an array of shape ({self.n_params}, ...) for "
                             f"{self!r}; got {v.shape}")
        xp = array_module(v)
        rest = v.shape[1:]
        out = []
        for l, (n, m) in enumerate(zip(self.sizes[:-1], self.sizes[1:])):
            o = self.offsets[l]
            x = v[o:o + m * n].reshape((m, n) + rest)
            if self.bias:
                x = xp.concatenate([x, v[o + m * n:o + m * n + m].reshape((m, 1) + rest)],
                                   axis=1)
            out.append(x)
        return out

    def join(self, parts):
        """Flat vectors ``(n_params,) + rest`` from per-layer blocks ``(n_l, q_l) + rest``
        (the inverse of :meth:`split`)."""
        if len(parts) != self.n_layers:
            raise ValueError(f"join needs {self.n_layers} per-layer blocks for {self!r}; "
                             f"got {len(parts)}")
        xp = array_module(parts[0])
        rest = parts[0].shape[2:]
        flat = []
        for x, n in zip(parts, self.sizes[:-1]):
            flat.append(x[:, :n].reshape((-1,) + rest))
            if self.bias:
                flat.append(x[:, n])
        return xp.concatenate(flat, axis=0)

    def check_params(self, params):
        """``params`` as an array of the net's dtype, after checking shape and values.

        Parameters
        ----------
        params : array_like, shape (n_params,)
            A flat parameter vector (NumPy or CuPy).

        Returns
        -------
        params : ndarray
            The same values in the net's dtype (no copy when they already are).

        Raises
        ------
        ValueError
            If the shape is not ``(n_params,)`` or a value is nan or inf.
        """
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
        """``(X, y)`` after checking shapes, finiteness and label range.

        Parameters
        ----------
        X : array_like, shape (B, n_0)
            A batch of inputs, real, ``B >= 1``.
        y : array_like of int, shape (B,)
            Class labels in ``[0, n_classes)``.

        Returns
        -------
        X : ndarray
            X in the net's dtype.
        y : ndarray
            y unchanged.

        Raises
        ------
        ValueError
            For a wrong shape or dtype, a non-finite input or a label out of range.
        """
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
        """The logits ``O = Z_{L-1} W_L^T + 1 c_L^T`` of a batch (docs/math.md eq. (1.2)).

        Parameters
        ----------
        params : ndarray, shape (n_params,)
            A flat parameter vector (not checked).
        X : ndarray, shape (B, n_0)
            A batch of inputs (not checked).

        Returns
        -------
        O : ndarray, shape (B, n_classes)

        Examples
        --------
        >>> import numpy as np
        >>> from tallskinny_np import MLP
        >>> net = MLP([4, 3, 2])
        >>> net.logits(net.init_params(seed=0), np.ones((5, 4))).shape
        (5, 2)
        """
        xp = array_module(params, X)
        act = _activation(self.activation)
        Z = X
        layers = self.unpack(params)
        for W, c in layers[:-1]:
            Z = act(xp, Z @ W.T + (c if c is not None else 0))[0]
        W, c = layers[-1]
        return Z @ W.T + (c if c is not None else 0)

    def loss(self, params, X, y):
        """The mean cross-entropy of the batch (docs/math.md eq. (1.2)).

        Parameters
        ----------
        params : array_like, shape (n_params,)
            A flat parameter vector.
        X : array_like, shape (B, n_0)
            A batch of inputs.
        y : array_like of int, shape (B,)
            Class labels in ``[0, n_classes)``.

        Returns
        -------
        loss : scalar of the net's dtype

        Raises
        ------
        ValueError
            For parameters or data that :meth:`check_params` or :meth:`check_data`
            refuse.

        Examples
        --------
        >>> import numpy as np
        >>> from tallskinny_np import MLP
        >>> net = MLP([4, 3, 3, 2])
        >>> X = np.arange(12.0).reshape(3, 4) / 10
        >>> print(f"{net.loss(net.init_params(seed=0), X, [0, 1, 1]):.6f}")
        0.820232

        A uniform prediction over c classes costs ``log(c)``:

        >>> print(f"{net.loss(np.zeros(net.n_params), X, [0, 1, 1]):.6f}")
        0.693147
        """
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
