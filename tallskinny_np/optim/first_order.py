"""First-order optimizers (docs/math.md section 2 gives the gradient): SGD with heavy-ball
momentum and Adam, on flat parameter vectors (NumPy or CuPy), and the loss and gradient of
a batch by one forward and one backward pass."""
import warnings

from ..backend import array_module
from ..blocks import gradient, linearize
from .checks import real


@property
def _kind(self):
    """Deprecated: None, the curvature kind of a first-order step; ``order`` is 1."""
    warnings.warn(f"{type(self).__name__}.kind is deprecated; first-order optimizers have "
                  f"order = 1", DeprecationWarning, stacklevel=2)
    return None


def loss_and_gradient(net, params, X, y):
    """The batch-mean loss, its gradient and the softmax (the outputs for the MSE), by one
    forward and one backward pass and no derivative blocks (docs/math.md eqs. (2.8),
    (2.9)).

    Parameters
    ----------
    net : MLP
    params : array_like, shape (n_params,)
    X : array_like, shape (B, n_0)
    y : array_like of int, shape (B,), or of float, shape (B, n_L)
        Labels, or the MSE's targets.

    Returns
    -------
    loss : float
    g : ndarray, shape (n_params,)
        The gradient in the flat layout of docs/math.md section 1.3.
    pi : ndarray, shape (B, n_classes)
        The softmax of the logits; for ``loss="mse"`` the logits, the network's outputs.

    Raises
    ------
    ValueError
        For parameters or data that :class:`~tallskinny_np.MLP` refuses.

    Examples
    --------
    >>> import numpy as np
    >>> from tallskinny_np import MLP
    >>> from tallskinny_np.optim import loss_and_gradient
    >>> net = MLP([4, 3, 2])
    >>> loss, g, pi = loss_and_gradient(net, net.init_params(), np.ones((5, 4)), [0] * 5)
    >>> g.shape, pi.shape
    ((23,), (5, 2))
    """
    params = net.check_params(params)
    X, y = net.check_data(X, y)
    lin = linearize(net, params, X, y)
    return float(lin.loss), net.join(gradient(net, lin)), lin.O if lin.pi is None else lin.pi


class SGD:
    """SGD with heavy-ball momentum: ``v <- mu v + g``, ``theta <- theta - lr v``.

    Parameters
    ----------
    lr : float
        The learning rate, > 0.
    momentum : float, optional
        ``mu`` in [0, 1) (default 0.9).

    Raises
    ------
    ValueError
        For lr or momentum out of range.

    Examples
    --------
    Two steps on ``f(theta) = ||theta||^2 / 2``, whose gradient is theta:

    >>> import numpy as np
    >>> from tallskinny_np.optim import SGD
    >>> opt = SGD(lr=0.1, momentum=0.9)
    >>> theta = np.array([1.0, -2.0])
    >>> for _ in range(2):
    ...     theta = opt.step(theta, theta)
    >>> theta
    array([ 0.72, -1.44])
    """
    order = 1
    kind = _kind

    def __init__(self, lr, momentum=0.9):
        self.lr = real("lr", lr, "> 0", lambda x: x > 0)
        self.momentum = real("momentum", momentum, "in [0, 1)", lambda x: 0 <= x < 1)
        self.state = {}

    def step(self, params, grad):
        """The parameters after one step with gradient ``grad`` (a new array)."""
        v = self.state.get("velocity")
        v = grad if v is None else self.momentum * v + grad
        self.state["velocity"] = v
        return params - self.lr * v


class Adam:
    """Adam (Kingma and Ba 2015) with bias-corrected first and second moments.

    Parameters
    ----------
    lr : float
        The learning rate, > 0.
    beta1, beta2 : float, optional
        Decay rates of the first and second moments, in [0, 1) (defaults 0.9, 0.999).
    eps : float, optional
        Added to the root of the second moment, > 0 (default 1e-8).

    Raises
    ------
    ValueError
        For a parameter out of range.

    Examples
    --------
    The first step moves each coordinate by about ``lr`` against its gradient's sign:

    >>> import numpy as np
    >>> from tallskinny_np.optim import Adam
    >>> theta = np.array([1.0, -2.0])
    >>> Adam(lr=0.1).step(theta, theta)
    array([ 0.9, -1.9])
    """
    order = 1
    kind = _kind

    def __init__(self, lr, beta1=0.9, beta2=0.999, eps=1e-8):
        self.lr = real("lr", lr, "> 0", lambda x: x > 0)
        self.beta1 = real("beta1", beta1, "in [0, 1)", lambda x: 0 <= x < 1)
        self.beta2 = real("beta2", beta2, "in [0, 1)", lambda x: 0 <= x < 1)
        self.eps = real("eps", eps, "> 0", lambda x: x > 0)
        self.state = {}

    def step(self, params, grad):
        """The parameters after one step with gradient ``grad`` (a new array)."""
        xp = array_module(params)
        t = self.state.get("t", 0) + 1
        m = self.state.get("m", 0) * self.beta1 + (1 - self.beta1) * grad
        v = self.state.get("v", 0) * self.beta2 + (1 - self.beta2) * grad * grad
        self.state.update(t=t, m=m, v=v)
        m_hat = m / (1 - self.beta1 ** t)
        v_hat = v / (1 - self.beta2 ** t)
        return params - self.lr * m_hat / (xp.sqrt(v_hat) + self.eps)
