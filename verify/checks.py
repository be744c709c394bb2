"""``check_all``: every intermediate quantity of the structured algorithm, against brute
force.

Each check is a :class:`Step` record comparing a quantity computed by ``tallskinny_np`` (or
assembled densely from its derivative blocks by :mod:`verify.assemble`) with a reference
computed independently (:mod:`verify.reference`, :mod:`verify.fd`, NumPy's dense linear
algebra). Steps, as numbered in the report (sections and equations of docs/math.md):

1. forward pass: activations, logits, softmax (cross-entropy), loss;
2. each layer's Dx and Dz (section 2.2) vs central differences of the layer;
3. each layer's A, S, C (section 2.3) vs central differences of the b-contracted first
   derivatives;
4. backprop vectors b_l and the gradient ``e_L^T M^{-1} Dx`` vs central differences of the
   loss;
5. M (block lower-bidiagonal, identity diagonal) and the down-shift P (section 3.1);
6. the dense H of eq. (3.5) vs an H computed independently (:mod:`verify.dense`), symmetry;
7. ``Curvature.hvp`` vs the dense H;
8. the augmented K of eq. (4.1): its solution, the zero pattern of ``Pi K Pi^T``, the pivot
   blocks of :mod:`tallskinny_np.ldu` and the product of its LDU factors;
9. ``Curvature.solve`` (every method of :data:`tallskinny_np.curvature.METHODS`) vs
   the dense solve;
10. the symmetric form K_sym and the inertia identity (eqs. (4.10), (4.11)), and
    ``curv.inertia`` where the Curvature has one;
11. (GGN only) the GGN vs ``J^T Lambda J`` from a central-difference Jacobian.

Errors are those of :mod:`verify.report` (:func:`verify.report.compare`).

Tolerances, from the accuracy of each reference (u = ``eps`` of the net's dtype):

* ``rounding = 1e4 u`` (2.2e-12 in float64): both sides are exact formulas and differ by
  rounding only, a bound ``c n u`` with inner products of length n up to ~1e3. The
  complex-step H of :mod:`verify.dense` is exact to rounding, so comparisons with it use
  this tolerance too;
* ``FD_TOL = 1e-7`` (or ``rounding`` if larger) against central differences with
  Richardson extrapolation, which are good to 1e-10 or so (:mod:`verify.fd`);
* solutions of ``(H + eps I) x = g``: ``kappa`` times the tolerance of the matrix, kappa the
  2-norm condition number of ``H + eps I`` (a relative perturbation d of the matrix moves
  the solution by up to ``kappa d``);
* the LDU product: ``rounding`` times the growth ``max_l max(|Sigma_l| |F_l|) / max|K'|``
  (the classical bound ``|L D U - K'| <= c n u |L| |U|`` of Gaussian elimination).
"""
import numpy as np

from tallskinny_np import Curvature
from tallskinny_np import curvature as curvature_module
from tallskinny_np.blocks import to_dense
from tallskinny_np.augmented import pivot_blocks
from tallskinny_np.ldu import ldu_factor
from tallskinny_np.riccati import riccati_factor, riccati_solve

from . import assemble, dense, fd, reference
from .report import Report, count, failure, record

ROUNDING_FACTOR = 1e4
FD_TOL = 1e-7
KINK_MARGIN = 0.05
"""The least distance of a pre-activation from a kink (relu's 0) at a checked point: the
central differences' steps move pre-activations by up to about 0.02."""
MAX_DRAWS = 10000


def inertia(eigenvalues):
    """``(n_neg, n_zero, n_pos)``; an eigenvalue is zero within ``N eps max|lambda|``."""
    zero = len(eigenvalues) * np.finfo(np.float64).eps * np.max(np.abs(eigenvalues))
    return (int(np.sum(eigenvalues < -zero)), int(np.sum(np.abs(eigenvalues) <= zero)),
            int(np.sum(eigenvalues > zero)))


class Context:
    """Everything the steps share: the Curvature under test, the independent references
    (computed once, on first use), the dense global matrices assembled from the
    Curvature's blocks, and the tolerances."""

    def __init__(self, curv, X, y, damping, method):
        self.net, self.curv, self.kind = curv.net, curv, curv.kind
        self.X, self.y, self.damping, self.method = X, y, damping, method
        self.L = self.net.n_layers
        self.rounding = ROUNDING_FACTOR * np.finfo(self.net.dtype).eps
        self.fd_tol = max(FD_TOL, self.rounding)
        self.ref_tol = self.rounding if method == "complex-step" else self.fd_tol
        self.params = np.asarray(curv.params, dtype=np.float64)
        self.thetas = reference.split(self.net, self.params)
        self.Zs, self.loss = reference.forward(self.net, self.thetas, X, y)
        self.bs, grads = reference.backprop(self.net, self.thetas, self.Zs, y)
        self.g_ref = reference.join(self.net, grads)
        self.order = reference.block_order(self.net)
        self.layer_params = assemble.offsets([t.size for t in self.thetas])
        self.glob = assemble.assemble(curv.blocks, X.size)
        self.H = assemble.hessian(self.glob)
        self.data = {}

    def cached(self, name, compute):
        if name not in self.data:
            self.data[name] = compute()
        return self.data[name]

    @property
    def H_ref(self):
        """The independent dense curvature, flat layout (:mod:`verify.dense`)."""
        curvature = dense.dense_ggn if self.kind == "ggn" else dense.dense_hessian
        return self.cached("H_ref", lambda: curvature(self.net, self.params, self.X,
                                                      self.y, self.method))

    @property
    def ref_name(self):
        what = "J^T Lambda J" if self.kind == "ggn" else "d(backprop grad)"
        return f"{what}, {self.method}"

    @property
    def tangents_fd(self):
        """Central differences of ``theta -> (z_0, z_1, ..., z_{L-1}, loss)`` (flat
        layout) and their error estimate: the rows after z_0 are ``d(z_1..z_L)/d theta``,
        the last row the gradient."""
        def outputs(v):
            Zs, loss = reference.forward(self.net, reference.split(self.net, v), self.X,
                                         self.y)
            return np.concatenate([Z.ravel() for Z in Zs] + [[loss]])
        return self.cached("tangents_fd",
                           lambda: fd.jacobian_and_error(outputs, self.params))

    @property
    def solution(self):
        """``(H_ref + eps I)^{-1} g_ref`` and the condition number of ``H_ref + eps I``."""
        def solve():
            Hd = self.H_ref + self.damping * np.eye(self.net.n_params)
            return np.linalg.solve(Hd, self.g_ref), np.linalg.cond(Hd)
        return self.cached("solution", solve)

    def block(self, M):
        """A flat-layout matrix (P x P) in the block layout."""
        return M[np.ix_(self.order, self.order)]

    def by_layer(self, name, x, ref, rows, estimate=None):
        """Pairs of the block rows of x and ref (and of the error estimate of ref, if
        given) split at the offsets ``rows``."""
        parts = (x, ref) if estimate is None else (x, ref, estimate)
        return [(f"{name} {l + 1}", *(a[rows[l]:rows[l + 1]] for a in parts))
                for l in range(len(rows) - 1)]


def step1_forward(ctx):
    lin = ctx.curv.linearization
    pairs = [(f"Z_{l} (input of layer {l + 1})", lin.Z[l], ctx.Zs[l])
             for l in range(ctx.L)]
    O = reference.affine(ctx.net.bias, ctx.thetas[-1], ctx.Zs[-1])
    ref = "plain NumPy forward (verify.reference)"
    steps = [
        record(1, "Z", "activations Z_l (linearization)", ref, pairs, ctx.rounding),
        record(1, "O", "logits O (linearization)", ref, [("O", lin.O, O)], ctx.rounding),
    ]
    if ctx.net.loss_name == "cross_entropy":
        steps.append(record(1, "pi", "softmax pi (linearization)", ref,
                            [("pi", lin.pi, reference.cross_entropy(O, ctx.y)[1])],
                            ctx.rounding))
    return steps + [record(1, "loss", "Curvature.loss", ref,
                           [("loss", ctx.curv.loss, ctx.loss)], ctx.rounding)]


def layer_variables(ctx, l):
    """``(w, unpack)``: layer l's variables, ``theta_l`` and (above layer 1) its input,
    as one vector, and the map back to ``(theta, Z)``."""
    theta, Z = ctx.thetas[l], ctx.Zs[l]
    p = theta.size
    if l == 0:
        return theta.ravel(), lambda w: (w.reshape(theta.shape), Z)
    return (np.concatenate([theta.ravel(), Z.ravel()]),
            lambda w: (w[:p].reshape(theta.shape), w[p:].reshape(Z.shape)))


def step2_first_derivatives(ctx):
    Dx, Dz = [], []
    for l, blk in enumerate(ctx.curv.blocks.layers):
        w, unpack = layer_variables(ctx, l)
        J, E = fd.jacobian_and_error(
            lambda v: reference.layer(ctx.net, l, *unpack(v), ctx.y), w)
        d = to_dense(blk)
        p = ctx.thetas[l].size
        Dx.append((f"layer {l + 1}", d.Dx, J[:, :p], E[:, :p]))
        if l > 0:
            Dz.append((f"layer {l + 1}", d.Dz, J[:, p:], E[:, p:]))
    ref = "central differences of the layer"
    return [record(2, "Dx", "Dx_l = d z_l / d theta_l", ref, Dx, ctx.fd_tol),
            record(2, "Dz", "Dz_l = d z_l / d z_{l-1}", ref, Dz, ctx.fd_tol)]


def second_derivatives(ctx, l):
    """Layer l's ``[[A, C], [C^T, S]]`` by central differences, and its error estimate:
    of the b-contracted first derivatives ``(Dx^T b, Dz^T b)`` for the Hessian; for the
    GGN's loss layer ``J^T Lambda J`` of the logits (:func:`verify.dense.gauss_newton`)."""
    w, unpack = layer_variables(ctx, l)
    if ctx.kind == "ggn":
        G, error = dense.gauss_newton(ctx.net,
                                      lambda v: reference.affine(ctx.net.bias, *unpack(v)),
                                      w, ctx.y, method="richardson")
        return G, np.full(G.shape, error)
    b = ctx.bs[l] if l < ctx.L - 1 else None
    return fd.jacobian_and_error(lambda v: np.concatenate(
        [d.ravel() for d in reference.layer_vjp(ctx.net, l, *unpack(v), b, ctx.y)]), w)


def step3_second_derivatives(ctx):
    A, S, C = [], [], []
    for l, blk in enumerate(ctx.curv.blocks.layers):
        d = to_dense(blk)
        p, a = ctx.thetas[l].size, ctx.Zs[l].size
        if ctx.kind == "ggn" and l < ctx.L - 1:
            # the GGN's hidden A, S, C are zero (docs/math.md section 2.5)
            zero = lambda r, c: np.zeros((r, c))
            A.append((f"layer {l + 1}", zero(p, p) if d.A is None else d.A, zero(p, p)))
            if l > 0:
                S.append((f"layer {l + 1}", zero(a, a) if d.S is None else d.S, zero(a, a)))
                C.append((f"layer {l + 1}", zero(p, a) if d.C is None else d.C, zero(p, a)))
            continue
        Hl, E = second_derivatives(ctx, l)
        A.append((f"layer {l + 1}", d.A, Hl[:p, :p], E[:p, :p]))
        if l > 0:
            S.append((f"layer {l + 1}", d.S, Hl[p:, p:], E[p:, p:]))
            C.append((f"layer {l + 1}", d.C, Hl[:p, p:], E[:p, p:]))
            # the paper's D_M D_xz is C^T (docs/math.md section 2.3)
            C.append((f"C^T layer {l + 1}", d.C.T, Hl[p:, :p], E[p:, :p]))
    if ctx.kind == "hessian":
        ref = "central differences of (Dx^T b, Dz^T b)"
    else:
        ref = "J^T Lambda J (central differences), hidden: 0"
    return [record(3, "A", "A_l = b . d2 z_l / d theta2", ref, A, ctx.fd_tol),
            record(3, "S", "S_l = b . d2 z_l / d z_{l-1}2", ref, S, ctx.fd_tol),
            record(3, "C", "C_l = b . d2 z_l / d theta dz_{l-1}", ref, C, ctx.fd_tol)]


def gradient_pairs(ctx, g):
    """Per-layer pairs of a gradient in the block layout and the central differences of
    the loss."""
    T, E = ctx.tangents_fd
    return ctx.by_layer("layer", g, T[-1][ctx.order], ctx.layer_params, E[-1][ctx.order])


def step4_backprop(ctx):
    b = []
    for l in range(ctx.L - 1):
        Z = ctx.Zs[l + 1]
        J, E = fd.jacobian_and_error(
            lambda v: reference.forward(ctx.net, ctx.thetas, v, ctx.y, start=l + 1)[1], Z)
        b.append((f"b_{l + 1}", ctx.curv.linearization.b[l], J.reshape(Z.shape), E))
    # e_L^T M^{-1} Dx: the last row of the tangents (a_L = 1)
    g_blocks = assemble.tangents(ctx.glob)[-1]
    ref = "central differences of the loss"
    return [
        record(4, "b", "b_l (linearization)", ref, b, ctx.fd_tol),
        record(4, "grad_blocks", "e_L^T M^{-1} Dx (from the blocks)", ref,
               gradient_pairs(ctx, g_blocks), ctx.fd_tol),
        record(4, "grad", "Curvature.grad", ref,
               gradient_pairs(ctx, ctx.curv.grad[ctx.order]), ctx.fd_tol),
        record(4, "grad_reference", "backprop of verify.reference", ref,
               gradient_pairs(ctx, ctx.g_ref[ctx.order]), ctx.fd_tol),
    ]


def step5_structure(ctx):
    g = ctx.glob
    out, inp = assemble.offsets(g.a[1:]), assemble.offsets(g.a[:-1])

    def residual(z):
        # r_l = z_l - f_l(theta_l, z_{l-1}): M = dr/dz (docs/math.md section 3.1)
        zs = [ctx.X] + [z[out[l]:out[l + 1]].reshape(ctx.Zs[l + 1].shape)
                        for l in range(ctx.L - 1)]
        f = [reference.layer(ctx.net, l, ctx.thetas[l], zs[l], ctx.y).ravel()
             for l in range(ctx.L)]
        return z - np.concatenate(f)

    z = np.concatenate([Z.ravel() for Z in ctx.Zs[1:]] + [[ctx.loss]])
    M_fd, E_M = fd.jacobian_and_error(residual, z)
    T, E = (a[:, ctx.order] for a in ctx.tangents_fd)
    T_out, T_in = T[g.a[0]:], T[:-1]
    return [
        record(5, "M", "M: block lower-bidiagonal, identity diagonal, -Dz_l below",
               "dr/dz, r_l = z_l - f_l(z_{l-1}) (central diff.)",
               ctx.by_layer("block row", g.M, M_fd, out, E_M), ctx.fd_tol),
        record(5, "tangents", "M^{-1} Dx", "d(z_1..z_L)/d theta (central diff.)",
               ctx.by_layer("z", assemble.tangents(g), T_out, out, E[g.a[0]:]), ctx.fd_tol),
        record(5, "P", "P (down-shift) applied to d(z_1..z_L)/d theta",
               "d(z_0..z_{L-1})/d theta (central diff.)",
               ctx.by_layer("input of layer", g.P @ T_out, T_in, inp), ctx.rounding),
    ]


def step6_hessian(ctx):
    name = "GGN" if ctx.kind == "ggn" else "H"
    return [
        record(6, "H", f"{name} = A + C P M^-1 Dx + ... (eq. 3.5)", ctx.ref_name,
               ctx.by_layer("block row", ctx.H, ctx.block(ctx.H_ref), ctx.layer_params),
               ctx.ref_tol),
        record(6, "H_symmetric", f"{name} (eq. 3.5) symmetric", f"{name}^T",
               [(name, ctx.H, ctx.H.T)], ctx.rounding),
        record(6, "H_ref_symmetric", f"reference {name} symmetric", "its transpose",
               [(name, ctx.H_ref, ctx.H_ref.T)], ctx.ref_tol),
    ]


def step7_hvp(ctx):
    HV = ctx.curv.hvp(np.eye(ctx.net.n_params))
    return [record(7, "hvp", "Curvature.hvp(e_j), all j", ctx.ref_name,
                   ctx.by_layer("block row", ctx.block(HV), ctx.block(ctx.H_ref),
                                ctx.layer_params), ctx.ref_tol)]


def step8_augmented(ctx):
    g, eps = ctx.glob, ctx.damping
    K = assemble.augmented(g, eps)
    rhs = np.zeros(len(K))
    rhs[:ctx.net.n_params] = ctx.g_ref[ctx.order]
    x_K = np.zeros(ctx.net.n_params)
    x_K[ctx.order] = np.linalg.solve(K, rhs)[:ctx.net.n_params]
    x_ref, kappa = ctx.solution
    pi = assemble.pivot(g)
    Kp = K[np.ix_(pi, pi)]
    sizes = assemble.pivot_sizes(g)
    outside = assemble.outside_tridiagonal(sizes)
    o = assemble.offsets(sizes)
    dense_layers = [to_dense(blk) for blk in ctx.curv.blocks.layers]
    blocks = []
    for l in range(ctx.L):
        D, Lo, Up = pivot_blocks(dense_layers, l, eps)
        rows = slice(o[l], o[l + 1])
        blocks.append((f"D_{l + 1}", D, Kp[rows, rows]))
        if Lo is not None:
            blocks.append((f"Lo_{l + 1}", Lo, Kp[rows, o[l - 1]:o[l]]))
        if Up is not None:
            blocks.append((f"Up_{l + 1}", Up, Kp[rows, o[l + 1]:o[l + 2]]))
    steps = [
        record(8, "K_solve", "x of K [x; y; z] = [g; 0; 0] (eq. 4.1)",
               "numpy.linalg.solve(H_ref + eps I, g)", [("x", x_K, x_ref)],
               kappa * ctx.ref_tol),
        record(8, "tridiagonal", "K' = Pi K Pi^T outside its block-tridiagonal band",
               "0", [("K'", Kp[outside], np.zeros(np.count_nonzero(outside)))], 0.0),
        record(8, "pivot_blocks", "tallskinny_np.augmented.pivot_blocks D_l, Lo_l, Up_l",
               "blocks of Pi K Pi^T", blocks, ctx.rounding),
    ]
    quantity, ref = "L D U of tallskinny_np.ldu.ldu_factor", "K' = Pi K Pi^T"
    try:
        fac = ldu_factor(ctx.curv.blocks, eps)
    except np.linalg.LinAlgError as e:
        return steps + [failure(8, "LDU", quantity, ref, e)]
    growth = max(np.max(np.abs(assemble.lu_matrix(lu)) @ np.abs(F))
                 for lu, F in zip(fac.pivots, fac.upper) if F is not None)
    growth = max(1.0, growth / np.max(np.abs(Kp)))
    return steps + [record(8, "LDU", quantity, ref,
                           [("K'", assemble.ldu_product(fac), Kp)],
                           ctx.rounding * growth)]


def step9_solve(ctx):
    x_ref, kappa = ctx.solution
    steps = []
    ref = "numpy.linalg.solve(H_ref + eps I, g)"
    for method in curvature_module.METHODS:
        quantity = f"Curvature.solve(g, eps, method={method!r})"
        try:
            x = ctx.curv.solve(ctx.g_ref, ctx.damping, method=method)
        except np.linalg.LinAlgError as e:
            steps.append(failure(9, f"solve[{method}]", quantity, ref, e))
            continue
        steps.append(record(9, f"solve[{method}]", quantity, ref, [("x", x, x_ref)],
                            kappa * ctx.ref_tol))
    # every structured stage, unrefined: by flop count small networks take the dense ones
    quantity = "riccati_solve(riccati_factor(blocks, eps, _structured=True), g)"
    net = ctx.curv.net
    try:
        fac = riccati_factor(ctx.curv.blocks, ctx.damping, _structured=True)
        x = net.join(riccati_solve(fac, net.split(np.asarray(ctx.g_ref)[:, None])))[:, 0]
    except np.linalg.LinAlgError as e:
        return steps + [failure(9, "solve[structured]", quantity, ref, e)]
    return steps + [record(9, "solve[structured]", quantity, ref, [("x", x, x_ref)],
                           kappa * ctx.ref_tol)]


def step10_inertia(ctx):
    g, eps = ctx.glob, ctx.damping
    K_sym = assemble.symmetric(g, eps)
    ny = g.M.shape[0]  # sum_{l=1}^{L} a_l, a_L = 1 included
    In_K = inertia(np.linalg.eigvalsh(K_sym))
    In_H = inertia(np.linalg.eigvalsh(ctx.H + eps * np.eye(len(ctx.H))))
    shifted = (In_K[0] - ny, In_K[1], In_K[2] - ny)
    where = (f"In(K_sym) = {In_K}, In(H + eps I) = {In_H}, sum_l a_l = {ny} "
             f"(a_L = 1 included)")
    steps = [
        record(10, "K_sym_symmetric", "K_sym (eq. 4.10) symmetric", "K_sym^T",
               [("K_sym", K_sym, K_sym.T)], ctx.rounding),
        count(10, "inertia", "In(K_sym) - (sum a_l, 0, sum a_l)",
              "In(H + eps I), numpy.linalg.eigvalsh", shifted, In_H, where),
    ]
    if hasattr(ctx.curv, "inertia"):
        quantity, ref = f"Curvature.inertia(damping={eps})", "In(H + eps I), eigvalsh"
        try:
            In_c = tuple(ctx.curv.inertia(damping=eps))
        except np.linalg.LinAlgError as e:
            return steps + [failure(10, "inertia_curv", quantity, ref, e)]
        steps.append(count(10, "inertia_curv", quantity, ref, In_c, In_H,
                           f"Curvature.inertia = {In_c}, eigvalsh: {In_H}"))
    return steps


def step11_ggn(ctx):
    if ctx.kind != "ggn":
        return []
    G_fd, error = dense.gauss_newton(ctx.net, lambda v: reference.logits(ctx.net, v, ctx.X),
                                     ctx.params, ctx.y, method="richardson")
    return [record(11, "ggn", "GGN = A + C P M^-1 Dx + ... (eq. 3.5)",
                   "J^T Lambda J, J central differences",
                   ctx.by_layer("block row", ctx.H, ctx.block(G_fd), ctx.layer_params,
                                np.full(G_fd.shape, error)), ctx.fd_tol)]


STEPS = (step1_forward, step2_first_derivatives, step3_second_derivatives, step4_backprop,
         step5_structure, step6_hessian, step7_hvp, step8_augmented, step9_solve,
         step10_inertia, step11_ggn)


def check_all(net, params, X, y, kind=None, damping=0.1, curv=None,
              method="complex-step"):
    """Run every check of this module on ``net`` at ``params`` with the batch ``(X, y)``.

    Parameters
    ----------
    net : tallskinny_np.MLP
        A small network (see :func:`verify.dense.check_size`).
    params : ndarray, shape (n_params,)
        The point, in the flat layout of docs/math.md section 1.3.
    X : array_like, shape (B, n_0)
        For a piecewise-linear activation, every pre-activation at least
        :data:`KINK_MARGIN` from a kink (:func:`draw_batch`).
    y : array_like of int, shape (B,), or of float, shape (B, n_L)
        Labels, or the targets of ``loss="mse"``.
    kind : {"hessian", "ggn"}, optional
        The curvature to check (default ``curv.kind``, or "hessian").
    damping : float, optional
        eps of ``H + eps I`` for the solve and inertia checks (default 0.1).
    curv : tallskinny_np.Curvature, optional
        The Curvature under test, of ``net`` at ``params`` (default: a new one of
        ``kind``); pass one to check it as it is, for example after corrupting its
        blocks.
    method : {"complex-step", "richardson"}, optional
        How the independent dense H is differentiated (:mod:`verify.dense`; default
        "complex-step").

    Returns
    -------
    report : Report
        One :class:`Step` per check, in the order of the module docstring;
        ``report.passed`` says whether all passed, ``str(report)`` is the table.

    Raises
    ------
    ValueError
        For a network above the size limit, an unknown method, a point within
        :data:`KINK_MARGIN` of a kink, or a ``curv`` that is not of ``net`` at
        ``params`` or not of ``kind``.

    Examples
    --------
    >>> import numpy as np
    >>> from tallskinny_np import MLP
    >>> from verify import check_all  # installed: tallskinny_np.verify
    >>> net = MLP([3, 2, 2])
    >>> X = np.random.default_rng(0).standard_normal((2, 3))
    >>> report = check_all(net, net.init_params(seed=0), X, np.array([0, 1]))
    >>> report.passed, report.failed
    (True, [])
    >>> print(report)  # doctest: +ELLIPSIS
    net=MLP([3, 2, 2], ...), batch=2, kind=hessian, damping=0.1, ...
    step  quantity ...
    ...
    all checks passed
    """
    if method not in fd.METHODS:
        raise ValueError(f"unknown reference method {method!r}; choose one of {fd.METHODS}")
    dense.check_size(net, X)
    margin = reference.kink_distance(net, params, X)
    if margin < KINK_MARGIN:
        raise ValueError(
            f"a pre-activation lies {margin:.2g} from a kink of the activation, closer than "
            f"{KINK_MARGIN}: the derivatives are those of one piece only where central "
            f"differences stay on it; draw the batch by verify.checks.draw_batch")
    if curv is None:
        curv = Curvature(net, params, X, y, kind=kind or "hessian")
    elif kind not in (None, curv.kind):
        raise ValueError(f"curv.kind is {curv.kind!r} but kind={kind!r} was asked for")
    elif curv.net is not net or not np.array_equal(curv.params, params):
        raise ValueError("curv must be the Curvature of net at params")
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    ctx = Context(curv, X, y, float(damping), method)
    config = {"net": repr(net), "batch": int(X.shape[0]), "kind": curv.kind,
              "damping": float(damping), "reference": method,
              "n_params": int(net.n_params)}
    report = Report(config=config)
    for number, step in enumerate(STEPS, 1):
        try:
            report.extend(step(ctx))
        except np.linalg.LinAlgError as e:
            # garbage in the quantities under test (a NaN, a singular K) fails the step
            report.append(failure(number, "raised", f"step {number}", "", e))
    return report


def draw_batch(net, params, rng, batch):
    """``(X, y)``: standard normal inputs and uniform labels (standard normal targets for
    the MSE) from the generator rng; for an activation with kinks, each sample is redrawn
    until all its pre-activations lie at least :data:`KINK_MARGIN` from them (samples
    pass through the network independently)."""
    rows = []
    for _ in range(MAX_DRAWS):
        x = rng.standard_normal((1, net.sizes[0]))
        if reference.kink_distance(net, params, x) >= KINK_MARGIN:
            rows.append(x)
            if len(rows) == batch:
                break
    else:
        raise ValueError(f"no batch of {batch} samples with every pre-activation "
                         f"{KINK_MARGIN} from a kink in {MAX_DRAWS} draws")
    X = np.concatenate(rows).astype(net.dtype)
    c = net.sizes[-1]
    if net.loss_name == "mse":
        return X, rng.standard_normal((batch, c))
    return X, rng.integers(0, c, size=batch)

