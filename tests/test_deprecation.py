"""The public names that changed still work, each with a DeprecationWarning that names its
replacement, and give what the new name gives."""
import numpy as np
import pytest

from tallskinny_np import MLP, Curvature, certify, curvature, krylov, spectrum
from tallskinny_np.optim import SGD, Adam, DampedNewton
from tallskinny_np.riccati import riccati_factor, riccati_solve


@pytest.fixture(scope="module")
def curv():
    net = MLP([3, 4, 4, 2], activation="tanh")
    rng = np.random.default_rng(0)
    return Curvature(net, net.init_params(seed=0), rng.standard_normal((5, 3)),
                     rng.integers(0, 2, 5))


def test_the_damping_keyword_and_its_old_names(curv):
    with pytest.warns(DeprecationWarning, match="'shift' is deprecated; use 'damping'"):
        assert curv.inertia(shift=0.1) == curv.inertia(damping=0.1) == curv.inertia(0.1)
    with pytest.warns(DeprecationWarning, match="'shift' is deprecated; use 'damping'"):
        assert curv.is_positive_definite(shift=0.1) == curv.is_positive_definite(0.1)
    b = curv.net.split(curv.grad[:, None])
    with pytest.warns(DeprecationWarning, match="'eps' is deprecated; use 'damping'"):
        old = riccati_solve(riccati_factor(curv.blocks, eps=0.1), b)
    new = riccati_solve(riccati_factor(curv.blocks, damping=0.1), b)
    assert all(np.array_equal(x, y) for x, y in zip(old, new))
    opt = DampedNewton()
    with pytest.warns(DeprecationWarning, match="'lam' is deprecated; use 'damping'"):
        s_old, _ = opt.direction(curv, curv.grad, lam=0.1)
    assert np.array_equal(s_old, opt.direction(curv, curv.grad, damping=0.1)[0])
    with pytest.raises(TypeError, match="both 'shift' and its new name 'damping'"):
        curv.inertia(shift=0.1, damping=0.1)


def test_moved_names(curv):
    with pytest.warns(DeprecationWarning, match="certify.gmres moved to tallskinny_np.krylov"):
        assert certify.gmres is krylov.gmres
    with pytest.warns(DeprecationWarning, match="moved to tallskinny_np.krylov"):
        assert certify.lanczos_interval is krylov.lanczos_interval
    with pytest.warns(DeprecationWarning, match="moved to tallskinny_np.spectrum"):
        assert curvature.DENSE_INERTIA_MAX == spectrum.DENSE_INERTIA_MAX
    with pytest.raises(AttributeError):
        curvature.NO_SUCH_NAME


def test_the_first_order_marker():
    """``kind is None`` marked first order; ``order`` does now, and ``kind`` still reads
    None, with a warning."""
    for opt in (SGD(0.1), Adam(0.01)):
        assert opt.order == 1
        with pytest.warns(DeprecationWarning, match=rf"{type(opt).__name__}\.kind is "
                                                    r"deprecated; first-order optimizers"):
            assert opt.kind is None
    assert DampedNewton().kind == "hessian"
