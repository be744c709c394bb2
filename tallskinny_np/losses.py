"""The losses of the loss layer as functions of the logits O (``B x n_L``): the value, the
gradient ``G = d loss / d O`` and the action of the per-sample Hessians ``Lambda_s``
(docs/math.md sections 1.1, 2.4 and 2.6).

``"cross_entropy"``: the mean softmax cross-entropy against integer labels (eqs. (1.2),
(2.6), (2.14), (2.14b)). ``"mse"``: the mean over all ``B n_L`` entries of the squared
error against float targets of shape ``(B, n_L)``, as ``torch.nn.MSELoss()`` (eqs. (1.2a),
(2.6a), (2.14a)); its ``Lambda_s = 2 / (B n_L) I`` is the same for every sample and does
not depend on the point.
"""
from .backend import array_module

LOSSES = ("cross_entropy", "mse")
"""The losses of :class:`tallskinny_np.MLP` (its ``loss`` argument)."""


def check_loss(loss):
    """``loss`` if it names a loss of :data:`LOSSES`, else a ValueError naming it."""
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose one of {LOSSES}")
    return loss


def cross_entropy(O, y):
    """Mean cross-entropy of logits O (B x c) against labels y, and softmax(O) (eq. (1.2)).
    With the logits shifted by each sample's largest, whose exponential is 1 exactly, the
    log-sum-exp is ``log1p`` of the other classes' sum: where the softmax saturates, the
    loss of a sample labelled with its top class is that sum itself, not a difference of
    two numbers near 1."""
    return _cross_entropy(O, y)[:2]


def _cross_entropy(O, y):
    """:func:`cross_entropy` and each sample's top class ``(B,)``, that of its largest
    logit, hence of its largest pi."""
    xp = array_module(O)
    B = O.shape[0]
    rows, top = xp.arange(B), O.argmax(axis=1)
    shifted = O - O[rows, top][:, None]
    e = xp.exp(shifted)
    pi = e / e.sum(axis=1, keepdims=True)
    lse = xp.log1p(_others(e, top))
    loss = (lse - shifted[rows, y]).mean()
    return loss, pi, top


def _others(p, top):
    """``sum_{j != t} p_sj`` for each sample s and its class t = ``top[s]`` ``(B,)``, of
    the softmax's pi (``1 - pi_st`` as a sum of small terms) or of its exponentials."""
    rest = p.copy()
    rest[array_module(p).arange(p.shape[0]), top] = 0
    return rest.sum(axis=1)


def squared_error(O, T):
    """``mean((O - T)^2)`` over all ``B n_L`` entries (eq. (1.2a))."""
    R = O - T
    return (R * R).mean()


def value_and_gradient(loss, O, y):
    """``(loss, G, pi)``: the loss at the logits O, ``G = d loss / d O`` (``B x n_L``;
    eqs. (2.6), (2.6a)) and the softmax ``pi`` for the cross-entropy (None for the
    MSE)."""
    if loss == "mse":
        return squared_error(O, y), (O - y) * (2 / O.size), None
    xp = array_module(O)
    value, pi, top = _cross_entropy(O, y)
    rows = xp.arange(O.shape[0])
    G = pi.copy()
    # pi_y - 1 at a label on its sample's top class is -sum_{j != y} pi_j, which does not
    # cancel where the softmax saturates (eq. (2.6b))
    G[rows, y] = xp.where(y == top, -_others(pi, top), pi[rows, y] - 1)
    G /= O.shape[0]
    return value, G, pi


def value(loss, O, y):
    """The loss at the logits O (eqs. (1.2), (1.2a))."""
    if loss == "mse":
        return squared_error(O, y)
    return cross_entropy(O, y)[0]


def top_classes(pi):
    """Each sample's class of largest softmax ``(B,)``, from pi (``(B, c)``, any array
    module, any real arithmetic): the class at which :func:`hessian_action` deflates
    ``Lambda_s``. It depends on pi alone, so every arithmetic that applies ``Lambda_s`` to
    the same pi (the product, its double-word residual, its rounding bound) deflates at
    the same class."""
    return array_module(pi).argmax(pi, axis=1)


def hessian_action(loss, pi, v):
    """``Lambda_s v_s`` for every sample s, for v ``(B, c, r)``, without forming
    ``Lambda_s``. For the cross-entropy deflated at the sample's top class t
    (:func:`top_classes`; eq. (2.14b)): ``pi_s .* (w_s - pi_s . w_s) / B`` with ``w_s = v_s
    - v_st 1``, the same as eq. (2.14) since ``Lambda_s 1 = 0``, but its top entry
    ``-pi_st sum_{j != t} pi_sj w_sj / B`` does not lose ``1 - pi_st`` to cancellation
    where the softmax saturates. For the MSE ``2 v_s / (B c)`` (eq. (2.14a)), as ``(2 v_s)
    / (B c)``: the doubling is exact, and only the division by an integer rounds, in any
    arithmetic (docs/math.md eq. (7.3c)); the constant ``2 / (B c)`` would be rounded
    first, to float64 even for double words."""
    if loss == "mse":
        return v * 2 / (v.shape[0] * v.shape[1])
    xp = array_module(pi)
    B = pi.shape[0]
    w = v - v[xp.arange(B), top_classes(pi)][:, None]
    p = pi[:, :, None]
    return p * (w - (p * w).sum(axis=1, keepdims=True)) / B


def hessian_diagonal(loss, pi, Zt, c):
    """The diagonals of the ``Lambda_s`` as a ``(B, c)`` array of the dtype and array module
    of the loss layer's inputs Zt ``(B, q)``: ``pi (1 - pi) / B`` (eq. (2.14)), with the top
    class's ``1 - pi_st`` as ``sum_{j != t} pi_sj`` (the diagonal of
    :func:`hessian_action`), or ``2 / (B c)`` (eq. (2.14a))."""
    B = Zt.shape[0]
    xp = array_module(Zt)
    if loss == "mse":
        return xp.full((B, c), 2 / (B * c), dtype=Zt.dtype)
    rows, top = xp.arange(B), top_classes(pi)
    complement = 1 - pi
    complement[rows, top] = _others(pi, top)
    return pi * complement / B
