"""The MLP, its parameter layout and its loss (docs/math.md section 1).

Layers 1..L-1 are hidden, ``z_l = sigma_l(z_{l-1} W_l^T + 1 c_l^T)``, plus ``z_{l-1}`` in a
residual layer; layer L is the loss layer, the mean cross-entropy or squared error of the
logits ``z_{L-1} W_L^T + c_L``. The flat parameter vector holds, for each layer in order,
``W_l`` row-major ``(n_l x n_{l-1})`` then ``c_l``: the layout of PyTorch's
``parameters_to_vector`` on a stack of ``nn.Linear``. The products and solvers work on
per-layer blocks ``[W_l, c_l]`` of shape ``(n_l, q_l, r)`` instead; :meth:`MLP.split` and
:meth:`MLP.join` convert between the two layouts.
"""
import math
import numbers

import numpy as np

from . import losses
from .activations import Activation, activation as _activation, value
from .backend import array_module


class MLP:
    r"""An MLP with a cross-entropy or squared-error loss layer, optionally residual.

    Layers 1 to L-1 are hidden, layer L fuses the last affine map with the loss
    (docs/math.md section 1.1, eqs. (1.1), (1.1a), (1.2), (1.2a)):

    .. math::

        Z_l = \sigma_l(Z_{l-1} W_l^T + 1 c_l^T) \; [+ Z_{l-1}], \qquad
        \mathrm{loss} = \ell(Z_{L-1} W_L^T + 1 c_L^T, y),

    with the identity term in the residual layers and ``ell`` the mean cross-entropy
    against labels or the mean squared error against targets.

    Parameters
    ----------
    sizes : sequence of int
        ``[n_0, n_1, ..., n_L]``: ``n_0`` inputs, hidden widths ``n_1..n_{L-1}``, ``n_L``
        classes or outputs. At least three sizes (one hidden layer and the loss layer),
        each positive, and at least two classes for the cross-entropy.
    activation : str, Activation or list of them, optional
        The hidden layers' activation (default "tanh"): a name of
        :data:`tallskinny_np.activations.ACTIVATIONS` (the table of docs/math.md
        section 2.1), a user's
        :class:`~tallskinny_np.activations.Activation` (its derivatives are checked
        against central differences here), or a list of these, one per hidden layer.
        At the kink of relu and leaky_relu the derivative is torch's: ``relu'(0) = 0``,
        ``leaky_relu'(0) = 0.01``.
    bias : bool, optional
        Whether every layer has a bias (default True).
    dtype : {numpy.float64, numpy.float32}, optional
        The precision of every computation (default float64).
    loss : {"cross_entropy", "mse"}, optional
        The mean cross-entropy against integer labels (default), or the mean over all
        ``B n_L`` entries of the squared error against float targets of shape
        ``(B, n_L)``, as ``torch.nn.MSELoss()``.
    residual : bool, optional
        Whether every hidden layer after the first whose input and output widths are
        equal adds its input, ``Z_l = Z_{l-1} + sigma_l(...)`` (default False). The
        parameter layout is unchanged.

    Attributes
    ----------
    sizes : tuple of int
        The layer sizes.
    activations : tuple of Activation
        The activation of each hidden layer.
    loss_name : str
        "cross_entropy" or "mse".
    residual_layers : tuple of bool
        For each of the L layers, whether it adds its input (eq. (1.1a)).
    layer_params : list of int
        ``p_l``, the parameter count of each layer (eq. (1.4)).
    offsets : list of int
        Where each layer starts in the flat parameter vector (``L + 1`` entries).
    n_params : int
        The total parameter count.

    Raises
    ------
    ValueError
        For sizes, activation, bias, dtype, loss or residual out of range; the message
        names the problem.

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
    >>> MLP([4, 3, 3, 4], activation="relu", loss="mse", residual=True)
    MLP([4, 3, 3, 4], activation='relu', bias=True, dtype=float64, loss='mse', residual=True)
    >>> MLP([4, 3, 3, 4], activation=["relu", "gelu"]).activation_names
    ['relu', 'gelu']
    >>> MLP([4, 3, 3, 4], residual=True).residual_layers
    (False, True, False)
    """

    def __init__(self, sizes, activation="tanh", bias=True, dtype=np.float64,
                 loss="cross_entropy", residual=False):
        sizes = list(sizes)
        if len(sizes) < 3:
            raise ValueError(
                f"an MLP needs at least 2 layers (a hidden layer and the loss layer), "
                f"i.e. at least 3 sizes; got sizes={sizes}"
            )
        for n in sizes:
            if not isinstance(n, numbers.Integral) or isinstance(n, bool) or n < 1:
                raise ValueError(f"layer sizes must be positive integers; got sizes={sizes}")
        losses.check_loss(loss)
        if loss == "cross_entropy" and sizes[-1] < 2:
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
        if not isinstance(bias, bool):
            raise ValueError(f"bias must be True or False; got {bias!r}")
        if not isinstance(residual, bool):
            raise ValueError(f"residual must be True or False; got {residual!r}")
        self.activations = _hidden_activations(activation, len(sizes) - 2)
        self.sizes = tuple(int(n) for n in sizes)
        self.activation = activation if isinstance(activation, (str, Activation)) else list(
            activation)
        self.bias = bias
        self.dtype = dtype
        self.loss_name = loss
        self.residual = residual
        L = len(self.sizes) - 1
        # the first and the loss layer never add their input (eq. (1.1a))
        self.residual_layers = tuple(residual and 0 < l < L - 1
                                     and self.sizes[l] == self.sizes[l + 1]
                                     for l in range(L))
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

    @property
    def activation_names(self):
        """The hidden activations' names: one string when all layers share it, else a
        list with one per hidden layer (what a checkpoint records)."""
        names = [a.name for a in self.activations]
        return names[0] if len(set(names)) == 1 and not isinstance(
            self.activation, list) else names

    def __repr__(self):
        extra = "" if self.loss_name == "cross_entropy" else f", loss={self.loss_name!r}"
        if self.residual:
            extra += ", residual=True"
        return (f"MLP({list(self.sizes)}, activation={self.activation_names!r}, "
                f"bias={self.bias}, dtype={self.dtype.name}{extra})")

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
        y : array_like of int, shape (B,), or of float, shape (B, n_L)
            Class labels in ``[0, n_classes)`` for the cross-entropy, real targets for
            the MSE.

        Returns
        -------
        X : ndarray
            X in the net's dtype.
        y : ndarray
            The labels unchanged, or the targets in the net's dtype.

        Raises
        ------
        ValueError
            For a wrong shape or dtype, a non-finite input or target, or a label out of
            range.
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
        if self.loss_name == "mse":
            return X, self._check_targets(xp, y, X.shape[0])
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

    def _check_targets(self, xp, y, B):
        """The MSE's targets y ``(B, n_L)`` in the net's dtype, after checking them."""
        if y.shape != (B, self.sizes[-1]):
            raise ValueError(f"y must hold float targets of shape ({B}, {self.sizes[-1]}) "
                             f"for loss='mse'; got shape {y.shape}")
        check_real(y, "y")
        y = y.astype(self.dtype, copy=False)
        if not bool(xp.all(xp.isfinite(y))):
            raise ValueError("y contains non-finite values (nan or inf)")
        return y

    def logits(self, params, X):
        """The logits ``O = Z_{L-1} W_L^T + 1 c_L^T`` of a batch (docs/math.md eqs. (1.1),
        (1.1a), (1.2)): for the MSE, the network's outputs.

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
        Z = X
        layers = self.unpack(params)
        for (W, c), act, skip in zip(layers[:-1], self.activations, self.residual_layers):
            out = value(act, Z @ W.T + (c if c is not None else 0))
            Z = Z + out if skip else out
        W, c = layers[-1]
        return Z @ W.T + (c if c is not None else 0)

    def loss(self, params, X, y):
        """The batch's mean cross-entropy or squared error (docs/math.md eqs. (1.2),
        (1.2a)).

        Parameters
        ----------
        params : array_like, shape (n_params,)
            A flat parameter vector.
        X : array_like, shape (B, n_0)
            A batch of inputs.
        y : array_like of int, shape (B,), or of float, shape (B, n_L)
            Class labels in ``[0, n_classes)`` for the cross-entropy; targets for the MSE.

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
        return losses.value(self.loss_name, self.logits(params, X), y)


def check_real(a, name):
    """Refuse an array that is not real (complex, bool, object): ``astype`` to the net's
    dtype would silently drop an imaginary part."""
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise ValueError(f"{name} must be a real array; got dtype {a.dtype}")


def _hidden_activations(activation, n_hidden):
    """The :class:`Activation` of each of the ``n_hidden`` hidden layers, from one name or
    record or a list of them."""
    if isinstance(activation, (str, Activation)):
        return (_activation(activation),) * n_hidden
    try:
        specs = list(activation)
    except TypeError:
        raise ValueError(f"unknown activation {activation!r}: give a name, an Activation "
                         f"or a list of them") from None
    if len(specs) != n_hidden:
        raise ValueError(f"activation lists one per hidden layer: {n_hidden} for this "
                         f"network; got {len(specs)}")
    return tuple(_activation(a) for a in specs)
