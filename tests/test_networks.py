"""Every built-in activation, both losses, residual layers on and off, bias on and off,
Hessian and GGN: the gradient, ``H v`` and ``(H + eps I)^{-1} v`` agree with the dense
verifier to 1e-10 relative, the verifier's rows pass, and the inertia is right away from
the spectrum.

The grid is the registry's activations times :data:`tallskinny_np.losses.LOSSES` times
residual, bias and kind. The network ``[3, 4, 4, 4, 3]`` has two residual layers (the
hidden layers 2 and 3, 4 -> 4) when residual, and none in layer 1 (3 -> 4) or the loss
layer. The references are the verifier's: the plain backprop of :mod:`verify.reference`
and its complex-step Hessian (exact to rounding), which share no code with the package;
the batch keeps every pre-activation at least ``KINK_MARGIN`` from a kink, so a
piecewise-linear activation's pieces are those of its neighbourhood. Each test checks that
its network is not trivial: a Hessian of rank 10 or more, with negative eigenvalues, and a
GGN of rank B or more (at most ``B n_L`` for the MSE, ``B (n_L - 1)`` for the
cross-entropy, whose ``Lambda_s`` annihilates ``1``; less where dead units or a linear net
without bias make J deficient). The damping is a tenth to a quarter of ``||H||`` (so that
it does not swamp the spectrum), chosen as far as it can be from the eigenvalues of
``-H``.
"""
import numpy as np
import pytest

import verify
from tallskinny_np import MLP, Activation, Curvature
from tallskinny_np.activations import ACTIVATIONS, evaluate
from tallskinny_np.losses import LOSSES
from tallskinny_np.plan import plan
from tallskinny_np.products import hvp
from tallskinny_np.riccati import riccati_factor, riccati_solve
from verify import reference
from verify.checks import draw_batch

SIZES = [3, 4, 4, 4, 3]
DAMPING = 0.1
DAMPINGS = (0.1, 0.13, 0.17, 0.21, 0.25)
TOL = 1e-10
GRID = [(activation, loss, residual, bias)
        for activation in ACTIVATIONS for loss in LOSSES
        for residual in (False, True) for bias in (True, False)]


def build(activation, loss, residual, bias, dtype=np.float64, sizes=SIZES):
    """``(net, params, X, y)``: weights of gain 1.3, biases uniform in [-0.5, 0.5], a
    batch of 3 away from kinks (:func:`verify.checks.draw_batch`)."""
    net = MLP(sizes, activation=activation, bias=bias, dtype=dtype, loss=loss,
              residual=residual)
    seed = sorted(ACTIVATIONS).index(activation) + 10 * LOSSES.index(loss) + 100 * residual
    rng = np.random.default_rng(seed)
    params = net.init_params(seed=seed, gain=1.3)
    if bias:
        for _, c in net.unpack(params):
            c[:] = rng.uniform(-0.5, 0.5, size=c.shape)
    X, y = draw_batch(net, params, rng, 3)
    return net, params, X, y


def damping(eigenvalues):
    """The damping of :data:`DAMPINGS` times ``||H||`` farthest from the eigenvalues of
    ``-H``."""
    scale = np.abs(eigenvalues).max()
    return max((d * scale for d in DAMPINGS),
               key=lambda eps: np.abs(eigenvalues + eps).min())


def relative(x, ref):
    return float(np.linalg.norm(x - ref) / np.linalg.norm(ref))


@pytest.mark.parametrize("kind", ["hessian", "ggn"])
@pytest.mark.parametrize("activation, loss, residual, bias", GRID)
def test_agrees_with_the_verifier(activation, loss, residual, bias, kind):
    net, params, X, y = build(activation, loss, residual, bias)
    assert net.residual_layers == (False, residual, residual, False)
    curv = Curvature(net, params, X, y, kind=kind)
    dense = verify.dense_hessian if kind == "hessian" else verify.dense_ggn
    H = dense(net, params, X, y)
    B, c = X.shape[0], SIZES[-1]
    if kind == "ggn":
        assert B <= np.linalg.matrix_rank(H) <= B * (c if loss == "mse" else c - 1)
    else:
        assert np.linalg.matrix_rank(H) >= 10
    eigenvalues = np.linalg.eigvalsh(H)
    eps = damping(eigenvalues)
    if kind == "hessian" and not (activation == "identity" and loss == "mse"):
        # a deep linear net with a squared loss has H >= 0 near 0 only by chance; the
        # others are indefinite here
        assert eigenvalues.min() < -1e-3 * np.abs(eigenvalues).max()
    rng = np.random.default_rng(7)
    v = rng.standard_normal((net.n_params, 2))

    assert relative(curv.grad, reference.gradient(net, params, X, y)) <= TOL
    assert relative(curv.hvp(v), H @ v) <= TOL
    x_ref = np.linalg.solve(H + eps * np.eye(net.n_params), v)
    assert relative(curv.solve(v, eps), x_ref) <= TOL

    # inertia at shifts between eigenvalues, at least 1e-3 ||H|| from each
    gaps = np.diff(eigenvalues)
    wide = np.flatnonzero(gaps > 2e-3 * np.abs(eigenvalues).max())
    assert wide.size >= 1
    for i in np.unique(wide[[0, wide.size // 2, -1]]):
        shift = -(eigenvalues[i] + eigenvalues[i + 1]) / 2
        below = i + 1
        assert tuple(curv.inertia(damping=shift)) == (below, 0, net.n_params - below)

    report = verify.check_all(net, params, X, y, kind=kind, damping=eps, curv=curv)
    assert report.passed, str(report)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("activation", ["relu", "gelu", "identity"])
def test_every_path_solves_residual_networks(activation, loss):
    """The compiled stages, the array-module stages (the CuPy path, run on NumPy), the
    structured range stages and the array-module products agree with the dense solve and
    product on a residual net: the identity in Dz reaches each of them. The stages are
    the raw, unrefined solves, held to the verifier's rule for solutions: the condition
    number times its rounding tolerance (``1e4 eps_mach``)."""
    net, params, X, y = build(activation, loss, True, True, sizes=[3, 5, 5, 5, 5, 2])
    assert sum(net.residual_layers) == 3
    curv = Curvature(net, params, X, y)
    H = verify.dense_hessian(net, params, X, y)
    v = np.random.default_rng(3).standard_normal((net.n_params, 1))
    M = H + DAMPING * np.eye(net.n_params)
    x_ref = np.linalg.solve(M, v)
    tol = np.linalg.cond(M) * verify.checks.ROUNDING_FACTOR * np.finfo(np.float64).eps
    for options in ({}, {"_strategy": "lapack"}, {"_structured": True},
                    {"_structured": True, "_strategy": "lapack"}):
        fac = riccati_factor(curv.blocks, DAMPING, **options)
        x = net.join(riccati_solve(fac, net.split(v)))
        assert relative(x, x_ref) <= tol, options
    for compiled in (True, False):
        Hv = net.join(hvp(curv.blocks, net.split(v), _compiled=compiled))
        assert relative(Hv, H @ v) <= TOL, compiled


@pytest.mark.parametrize("activation", ["relu", "gelu", "silu"])
def test_float32_agrees_with_the_verifier(activation):
    """float32 residual MSE nets pass the verifier at float32's tolerances; their errors
    are float32 rounding (above float64's, below the tolerance)."""
    net, params, X, y = build(activation, "mse", True, True, dtype=np.float32)
    eps = damping(np.linalg.eigvalsh(verify.dense_hessian(net, params, X, y)))
    report = verify.check_all(net, params, X, y, damping=eps)
    assert report.passed, str(report)
    H = next(s for s in report if s.key == "6.H")
    assert 1e-9 < H.rel_err <= verify.checks.ROUNDING_FACTOR * np.finfo(np.float32).eps


def test_mse_is_torch_mse_loss():
    """The mean over all ``B n_L`` entries of the squared error, and targets of another
    shape or with a non-finite entry are refused."""
    net, params, X, y = build("tanh", "mse", False, True)
    O = net.logits(params, X)
    assert net.loss(params, X, y) == pytest.approx(np.mean((O - y) ** 2), rel=1e-15)
    for bad, message in ((y[:, :2], r"shape \(3, 3\)"), (y[:, 0], r"shape \(3, 3\)"),
                         (np.where(y > 0, np.nan, y), "non-finite"),
                         (y + 1j, "real array")):
        with pytest.raises(ValueError, match=message):
            net.loss(params, X, bad)
    assert MLP([3, 4, 1], loss="mse").n_classes == 1      # one output: a regression
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        MLP([3, 4, 2], loss="hinge")
    with pytest.raises(ValueError, match="residual must be True or False"):
        MLP([3, 4, 2], residual=1)


def test_mse_never_takes_the_softmax_stage():
    """The structured loss stage is the softmax's: an MSE loss layer is planned and
    factored densely even where the cross-entropy's would take it, and even when asked
    for the structured stages."""
    wide = [64, 16, 16, 300]
    for loss, stage in (("cross_entropy", "loss"), ("mse", "dense")):
        assert plan(MLP(wide, loss=loss), 32).layers[-1].stage == stage
    net, params, X, y = build("tanh", "mse", False, True)
    curv = Curvature(net, params, X, y)
    fac = riccati_factor(curv.blocks, DAMPING, _structured=True)
    assert type(fac.stages[-1].factor).__name__ != "LossFactor"


def test_residual_keeps_the_parameter_layout():
    """``residual=True`` changes the function, not the parameters: the same count and
    flat layout."""
    plain, residual = MLP(SIZES), MLP(SIZES, residual=True)
    assert plain.n_params == residual.n_params and plain.offsets == residual.offsets
    params = plain.init_params(seed=0)
    X = np.random.default_rng(0).standard_normal((4, 3))
    assert not np.allclose(plain.logits(params, X), residual.logits(params, X))


def test_own_activation_agrees_with_the_verifier():
    """A user's activation in a list runs through the blocks and the solve like a built-in
    one: the verifier's checks pass (its reference uses the record's own f and df)."""
    sine = Activation("sine", np.sin, np.cos, lambda u: -np.sin(u))
    net = MLP([3, 4, 4, 2], activation=[sine, "silu"])
    params = net.init_params(seed=1, gain=1.3)
    X, y = draw_batch(net, params, np.random.default_rng(1), 3)
    report = verify.check_all(net, params, X, y)
    assert report.passed, report.failed


def test_the_verifier_has_a_formula_for_every_activation():
    """The reference's own formulas (docs/math.md section 2.1) agree with the package's
    at points off the kinks."""
    u = np.linspace(-2, 2, 9) + 0.01
    for act in ACTIVATIONS.values():
        np.testing.assert_allclose(reference.activation(act, u), evaluate(act, u)[:2],
                                   rtol=1e-14, atol=1e-15)
