"""The O(L) gradient, products and solves against PyTorch's autograd, on the same networks
built as ``nn.Linear`` stacks: an independent implementation of the same mathematics, for
every registered activation, both losses, residual layers on and off, bias on and off, the
Hessian and the Gauss-Newton matrix. Not part of the tests (torch is a heavy dependency of
the ``[imagenet]`` extra, not of the core): ``python -m verify.autograd``.

Per network, in float64, with ``v`` a random vector and the damping ``eps = 0.1``:

- the gradient, against ``torch.autograd.grad`` of the loss;
- ``H v``, against the derivative of ``g . v`` (double backward), and ``G v`` against
  ``J^T Lambda J v`` (a forward-mode product, the loss's Hessian in the outputs by double
  backward, a reverse-mode product; :func:`torch.func.jvp`, :func:`torch.func.vjp`);
- ``x = (H + eps I)^{-1} v`` (``Curvature.solve``), by the residual
  ``||(H + eps I) x - v|| / (||H + eps I|| ||x|| + ||v||)`` with torch's product and
  ``||H + eps I||`` bounded below by the largest of its columns' norms from torch.

Each is a relative error; the table and the largest of each column are printed, and the
exit status is 1 when one is above 1e-10.
"""
import argparse
import itertools
import sys

import numpy as np

from tallskinny_np import MLP, Curvature
from tallskinny_np.activations import ACTIVATIONS, LEAKY_SLOPE
from tallskinny_np.losses import LOSSES

TOLERANCE = 1e-10
DAMPING = 0.1


def torch_activation(torch, name):
    """The torch function of a registered activation, with torch's defaults (exact GELU,
    leaky ReLU's slope 0.01)."""
    F = torch.nn.functional
    return {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "softplus": F.softplus,
            "identity": lambda u: u, "relu": F.relu,
            "leaky_relu": lambda u: F.leaky_relu(u, LEAKY_SLOPE), "gelu": F.gelu,
            "silu": F.silu, "elu": F.elu}[name]


def torch_loss(torch, net, params, X, y):
    """``theta -> loss`` and ``theta -> outputs`` of ``net`` as torch functions of the flat
    parameter vector (the layout of ``parameters_to_vector`` on an ``nn.Linear`` stack)."""
    Xt = torch.from_numpy(X)
    acts = [torch_activation(torch, a.name) for a in net.activations]

    def outputs(theta):
        Z, start = Xt, 0
        for l, (n_in, n_out) in enumerate(zip(net.sizes[:-1], net.sizes[1:])):
            W = theta[start:start + n_out * n_in].reshape(n_out, n_in)
            start += n_out * n_in
            U = Z @ W.T
            if net.bias:
                U = U + theta[start:start + n_out]
                start += n_out
            if l == len(net.sizes) - 2:
                return U
            Z = Z + acts[l](U) if net.residual_layers[l] else acts[l](U)

    def loss(O):
        if net.loss_name == "mse":
            return torch.nn.functional.mse_loss(O, torch.from_numpy(y))
        return torch.nn.functional.cross_entropy(O, torch.from_numpy(y))

    return (lambda theta: loss(outputs(theta))), outputs, loss


def check(torch, activation, loss, residual, bias, kind, seed=0):
    """The relative errors of one network (module docstring)."""
    rng = np.random.default_rng(seed)
    sizes = [5, 6, 6, 6, 4]
    net = MLP(sizes, activation=activation, bias=bias, loss=loss, residual=residual)
    params = net.init_params(seed=seed)
    X = rng.standard_normal((7, sizes[0]))
    y = (rng.standard_normal((7, sizes[-1])) if loss == "mse"
         else rng.integers(0, sizes[-1], 7))
    curv = Curvature(net, params, X, y, kind=kind)
    f, outputs, loss_of = torch_loss(torch, net, params, X, y)
    theta = torch.from_numpy(params.copy()).requires_grad_(True)
    (g,) = torch.autograd.grad(f(theta), theta, create_graph=True)

    def product(V):                         # H V or G V, torch's, for V (n, k)
        cols = []
        for v in V.T:
            vt = torch.from_numpy(np.ascontiguousarray(v))
            if kind == "hessian":
                (hv,) = torch.autograd.grad(g @ vt, theta, retain_graph=True)
            else:
                O, Jv = torch.func.jvp(outputs, (theta.detach(),), (vt,))
                Ot = O.detach().requires_grad_(True)
                (dO,) = torch.autograd.grad(loss_of(Ot), Ot, create_graph=True)
                (lam_Jv,) = torch.autograd.grad((dO * Jv).sum(), Ot)
                hv = torch.func.vjp(outputs, theta.detach())[1](lam_Jv)[0]
            cols.append(hv.detach().numpy())
        return np.stack(cols, axis=1)

    relative = lambda a, b: float(np.linalg.norm(a - b) / np.linalg.norm(b))
    v = rng.standard_normal(net.n_params)
    errors = {"gradient": relative(curv.grad, g.detach().numpy()),
              "product": relative(curv.hvp(v), product(v[:, None])[:, 0])}
    x = curv.solve(v, DAMPING)
    A = product(np.eye(net.n_params)) + DAMPING * np.eye(net.n_params)
    norm = np.linalg.norm(A, axis=0).max()
    errors["solve"] = float(np.linalg.norm(A @ x - v) / (norm * np.linalg.norm(x)
                                                         + np.linalg.norm(v)))
    return errors


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m verify.autograd",
                                     description=__doc__.split("\n\n")[0])
    parser.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("python -m verify.autograd: needs torch (pip install torch)", file=sys.stderr)
        return 2
    torch.set_default_dtype(torch.float64)
    worst = {"gradient": 0.0, "product": 0.0, "solve": 0.0}
    print(f"{'activation':<11} {'loss':<13} {'residual':<8} {'bias':<5} {'kind':<7} "
          f"{'gradient':>9} {'product':>9} {'solve':>9}")
    for act, loss, residual, bias, kind in itertools.product(
            ACTIVATIONS, LOSSES, (False, True), (True, False), ("hessian", "ggn")):
        e = check(torch, act, loss, residual, bias, kind)
        worst = {k: max(worst[k], e[k]) for k in worst}
        print(f"{act:<11} {loss:<13} {str(residual):<8} {str(bias):<5} {kind:<7} "
              f"{e['gradient']:9.1e} {e['product']:9.1e} {e['solve']:9.1e}")
    print("largest: " + ", ".join(f"{k} {v:.1e}" for k, v in worst.items()))
    return 0 if max(worst.values()) <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
