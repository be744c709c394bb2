"""The rounding of the network's evaluation in the certified figure (docs/math.md eq.
(7.3m), :mod:`tallskinny_np.evaluation`): on deep, high-gain nets the reported backward
error bounds the one against a dense H that the verifier's independent reference forms in
a wider arithmetic, and without the measured evaluation it does not."""
import numpy as np
import pytest

from test_certify import _backward_error, _deep, _shifted_logits
from tallskinny_np import Curvature, evaluation
from verify.dense import dense_ggn, dense_hessian

WIDE = np.finfo(np.longdouble).eps < np.finfo(np.float64).eps
U_LD = float(np.finfo(np.longdouble).eps) / 2
needs_wide = pytest.mark.skipif(not WIDE, reason="long double is float64 on this platform")

NETS = [("softplus", 4, 20, 3.0, True, 3, "ggn", "cross_entropy", False, 2),
        ("softplus", 3, 20, 3.0, False, 2, "hessian", "cross_entropy", False, 2),
        ("tanh", 4, 16, 3.0, True, 3, "hessian", "cross_entropy", False, 1),
        ("sigmoid", 4, 16, 4.0, True, 4, "ggn", "cross_entropy", False, 4),
        ("silu", 4, 20, 3.0, True, 3, "ggn", "mse", False, 2),
        ("silu", 3, 20, 3.0, True, 3, "hessian", "cross_entropy", False, 2),
        ("relu", 4, 20, 1.0, True, 3, "hessian", "cross_entropy", True, 2),
        ("tanh", 4, 20, 3.0, True, 3, "ggn", "mse", True, 1)]
"""Deep nets at high gain (saturated softplus, sigmoid and silu, chaotic tanh), both
losses, residual layers: where the product's bound alone was measured below the backward
error against the wide reference (down to 0.36 of it)."""


def _solves(config, dtype, shifted=0.0):
    """The net's curvature, the dense H of the verifier's reference (long double for a
    float64 net, float64 for a float32 one) and the solves at shifts far from and on the
    spectrum: ``[(shift, B, x, info, backward error against the reference)]``; with
    ``shifted``, its logits moved by a common part of that size (:func:`_shifted_logits`)."""
    activation, width, depth, gain, bias, classes, kind, loss, residual, seed = config
    net, params, X, y = _deep(activation, width, depth, gain, bias, classes, loss, residual,
                              seed=seed, dtype=dtype)
    if shifted:
        _shifted_logits(net, params, shifted, seed)
    curv = Curvature(net, params, X, y, kind=kind)
    dense = (dense_hessian if kind == "hessian" else dense_ggn)(
        net, params.astype(np.float64), X.astype(np.float64), y, wide=dtype == np.float64)
    dense = (dense + dense.T) / 2
    w = np.linalg.eigvalsh(dense.astype(np.float64))
    top = np.abs(w).max()
    rng = np.random.default_rng(seed)
    B = rng.standard_normal((net.n_params, 2)).astype(dtype)
    middle = w[np.argmin(np.abs(w - np.median(w)))]
    shifts = [10 * top, 1e-2 * top] + ([1e-5 * top, -middle + 1e-9 * top]
                                       if dtype == np.float64 else [])
    out = []
    for shift in shifts:
        x, info = curv.solve(B, shift, return_info=True, uncertified="return")
        true = _backward_error(dense + shift * np.eye(net.n_params), x, B,
                               np.abs(w + shift).max())
        out.append((shift, x, info, true))
    return curv, out


@needs_wide
@pytest.mark.parametrize("config", NETS, ids=str)
def test_the_figure_bounds_the_backward_error_against_a_wider_evaluation(config):
    """float64: the reported figure is at least the backward error against the dense H
    of the verifier's reference (which shares no code with the package) evaluated in
    long double, whose own rounding is 2^-11 of float64's; ``-s`` prints both and the
    evaluation's share of the figure."""
    u = np.finfo(np.float64).eps / 2
    _, solves = _solves(config, np.float64)
    for shift, _, info, true in solves:
        print(f"{config[0]} gain {config[3]} {config[6]} {config[7]} shift {shift:.3g}: "
              f"reported {info.backward_error / u} u (evaluation {info.evaluation / u} u), "
              f"against the wide H {true / u} u")
        assert np.all(info.proved)
        assert np.all(np.isfinite(info.evaluation)) and np.all(info.evaluation >= 0)
        assert np.all(info.evaluation <= info.backward_error)
        # the reference knows the backward error to its own unit roundoff
        assert np.all(info.backward_error >= true - U_LD)


@pytest.mark.parametrize("config", NETS[:4] + NETS[6:], ids=str)
def test_in_float32_the_figure_bounds_the_backward_error_against_float64(config):
    """float32: the wide evaluation is float64's, and the figure bounds the backward
    error against the verifier's float64 dense H."""
    _, solves = _solves(config, np.float32)
    for _, _, info, true in solves:
        assert np.all(info.proved)
        assert np.all(info.backward_error >= true)


@needs_wide
def test_without_the_evaluation_the_figure_is_below_the_backward_error(monkeypatch):
    """On the saturated softplus net's Gauss-Newton system with a common part of about
    1e4 in its logits, which the forward pass rounds at its size before the softmax
    cancels it, the product's bound alone reports 3 to 60 percent of the backward error
    against the wide reference at three of the four shifts (measured: 33 u against 560 u
    at a shift of 1e-2 ||G||); with no wider arithmetic at hand the evaluation's share is
    NaN and not in the figure."""
    _, with_it = _solves(NETS[0], np.float64, shifted=1e4)
    monkeypatch.setattr(evaluation, "wide_dtype", lambda dtype: None)
    _, without = _solves(NETS[0], np.float64, shifted=1e4)
    below = 0
    for (_, _, info, true), (_, _, old, _) in zip(with_it, without):
        assert np.all(np.isnan(old.evaluation))
        assert np.all(info.backward_error >= true)
        below += int(np.any(old.backward_error < true))
    assert below >= 2


def test_the_wide_dense_h_agrees_with_float64_and_refuses_what_it_cannot_evaluate():
    """The verifier's wide option: the long-double H agrees with float64's to rounding;
    gelu (no complex long-double erf) and finite differences are refused."""
    net, params, X, y = _deep("tanh", 3, 5, 2.0, True, 3, seed=0)
    wide = dense_hessian(net, params, X, y, wide=True)
    assert wide.dtype == np.longdouble
    H = dense_hessian(net, params, X, y)
    assert np.abs(wide - H).max() <= 1e-13 * np.abs(H).max()
    net_gelu, params, X, y = _deep("gelu", 3, 4, 1.0, True, 3, seed=0)
    with pytest.raises(ValueError, match="gelu"):
        dense_ggn(net_gelu, params, X, y, wide=True)
    with pytest.raises(ValueError, match="complex-step"):
        dense_hessian(net, params, X, y, method="richardson", wide=True)


@needs_wide
def test_the_certificates_grid_runs_and_refuses_a_bad_option(capsys):
    """``python -m verify.certificates`` on every 128th network: both variants counted,
    none proved below the reference here; ``--every 0`` is refused with one line."""
    from verify import certificates
    assert certificates.main(["--every", "128"]) == 0
    out = capsys.readouterr().out
    assert "as solved:" in out and "without the evaluation:" in out
    assert "0 proved below" in out.splitlines()[1]
    with pytest.raises(SystemExit) as exit_:
        certificates.main(["--every", "0"])
    assert exit_.value.code == 2
    assert "--every" in capsys.readouterr().err


@needs_wide
def test_where_the_wide_blocks_do_not_fit_nothing_is_measured(monkeypatch):
    """With less memory available than the wide blocks take, the evaluation is not
    measured (NaN) and the figure is the one against the stored blocks' H."""
    import tallskinny_np.evaluation as module
    net, params, X, y = _deep("tanh", 4, 6, 1.0, True, 3, seed=0)
    curv = Curvature(net, params, X, y)
    b = np.ones(net.n_params)
    _, info = curv.solve(b, 0.1, return_info=True)
    assert np.isfinite(info.evaluation).all()
    curv = Curvature(net, params, X, y)
    monkeypatch.setattr(module, "available_bytes", lambda: curv.plan.blocks)
    _, scarce = curv.solve(b, 0.1, return_info=True)
    assert np.isnan(scarce.evaluation).all() and curv._wide is None
    assert scarce.backward_error <= info.backward_error


def test_a_users_own_activation_is_not_measured():
    """A user's activation may compute in float64 whatever its input: the evaluation is
    not measured (NaN), the figure is the one against the stored blocks' H."""
    from tallskinny_np import MLP, Activation
    cube = Activation("cube", lambda u: u ** 3, lambda u: 3 * u ** 2, lambda u: 6 * u)
    net = MLP([3, 4, 4, 2], activation=cube)
    rng = np.random.default_rng(0)
    curv = Curvature(net, net.init_params(seed=0), rng.standard_normal((5, 3)),
                     rng.integers(0, 2, 5))
    _, info = curv.solve(np.ones(net.n_params), 0.1, return_info=True)
    assert np.isnan(info.evaluation).all() and np.all(info.proved)
