"""The rounding of the network's evaluation (docs/math.md section 7.1, "The evaluation",
eq. (7.3m)).

The stored blocks come from a forward pass, the activations' derivatives, the loss layer's
softmax and a backprop, all rounded in the working precision; so does every H that any
computation forms from the network. A residual, however accurately computed, is one
against the H of the stored blocks. Here the network is evaluated once more in a wider
arithmetic (float64 for a float32 network; for a float64 one the platform's extended long
double where it is wider, 64 significant bits on x86-64), its blocks formed there, and at
a solution X the distance ``||(H_stored - H_wide) x||`` per column is measured by the two
products in that arithmetic.

The wide evaluation repeats the working one's formulas, so its own distance to the exact
H is, to first order, that of the working one scaled by the ratio of the unit roundoffs
(``2^-11`` for long double, ``2^-29`` for float64 against float32), which the factor
``1 + 2 u_wide / u`` allows for: the figure is measured, not proved. gelu's ``erfc`` has
no long-double version in SciPy and is evaluated in float64 in the wide evaluation too, so
its own rounding (an ulp or two of each entry) is not in the measured distance. A user's
own activation may compute in float64 whatever its input, which would make the wide
evaluation no wider, so a network with one is not measured. The wide blocks take
``u_wide``'s itemsize over the working one's times the blocks' memory (twice in long
double); where that is not available, nothing is measured either.
"""
import numpy as np

from .activations import ACTIVATIONS
from .backend import array_module
from .blocks import Blocks, linearize
from .plan import available_bytes
from .products import hvp


def wide_dtype(dtype):
    """The arithmetic of the wide evaluation of a ``dtype`` network: float64 for float32,
    long double for float64 where its unit roundoff is smaller, else None."""
    if np.dtype(dtype) == np.float32:
        return np.dtype(np.float64)
    if np.finfo(np.longdouble).eps < np.finfo(np.float64).eps:
        return np.dtype(np.longdouble)
    return None


def evaluation_gap(curv, X):
    """Per column of X ``(n_params, r)``, ``||(H - H_wide) x||_2`` times
    ``1 + 2 u_wide / u`` (module docstring), float64 ``(r,)``; NaN where no wider
    arithmetic is at hand (a float64 network where long double is float64), the arrays
    are not NumPy's (CuPy: the wide evaluation would run on the host), an activation is a
    user's own, or the wide blocks do not fit in the memory available. The wide blocks are
    formed once per curvature and kept on it."""
    r = X.shape[1]
    wide = wide_dtype(curv.net.dtype)
    built_in = all(ACTIVATIONS.get(a.name) is a for a in curv.net.activations)
    if wide is None or array_module(X) is not np or not built_in:
        return np.full(r, np.nan)
    if curv._wide is None:
        available = available_bytes()
        need = curv.plan.blocks * wide.itemsize // np.dtype(curv.net.dtype).itemsize
        if available is not None and need > available:
            return np.full(r, np.nan)
        net, (X0, y) = curv.net, curv.data
        params, X0 = curv.params.astype(wide), X0.astype(wide)
        curv._wide = Blocks(net, params, linearize(net, params, X0, y), curv.kind)
    xs = curv.net.split(X.astype(wide))
    # the stored blocks' product in the wide arithmetic: NumPy converts them exactly, an
    # operation at a time, where they meet the wide x
    with np.errstate(over="ignore", invalid="ignore"):
        d = (curv.net.join(hvp(curv.blocks, xs, _compiled=False))
             - curv.net.join(hvp(curv._wide, xs, _compiled=False)))
        gap = np.sqrt((d * d).sum(axis=0)).astype(np.float64)
    # made a first-order bound on the distance to the exact H (module docstring)
    first_order = 1 + 2 * float(np.finfo(wide).eps / np.finfo(curv.net.dtype).eps)
    return np.where(np.isnan(gap), np.inf, gap) * first_order
