"""Before step 0 of ``tallskinny-train``: the exact step's plan
(:mod:`tallskinny_np.plan`) printed, and refused with what would fit where it cannot fit
in the memory available; whether the compiled kernels are in numba's cache yet."""
import os

import numpy as np

from .. import stage
from ..plan import BASE_BYTES, available_bytes, gigabytes, plan
from .options import batch_size
from .optimizers import FIRST_ORDER, OPTIMIZERS


def curvature_batch(args):
    """The largest batch a curvature of the chosen optimizers is built on."""
    second = [n for n in args.optimizers if n not in FIRST_ORDER]
    size = max((batch_size(args, task, n) for task in args.tasks for n in second),
               default=args.batch)
    return min(size, args.curvature_batch or size)


def check_plan(args, problem, kinds):
    """Print the exact step's plan (:func:`tallskinny_np.plan.plan`) and refuse, before
    step 0, a step that cannot fit in the memory available, naming what would fit."""
    batch = curvature_batch(args)
    held = any(OPTIMIZERS[n].holds for n in args.optimizers)

    def plan_at(b, kind, dtype=problem.dtype, backend=args.backend):
        return plan(problem.net, b, kind, dtype, backend, held)

    plans = [plan_at(batch, kind) for kind in kinds]
    worst = max(plans, key=lambda p: p.peak)
    if not args.quiet:
        print(worst.summary())
    available = available_bytes(problem.xp)
    need = lambda p: p.peak - BASE_BYTES
    if available is None or need(worst) <= available:
        return
    kind = "hessian" if "hessian" in kinds else "ggn"
    fits = [b for b in range(batch - 1, 0, -1) if need(plan_at(b, kind)) <= available]
    options = []
    if fits:
        options.append(f"--curvature-batch {fits[0]}")
    if problem.dtype == np.float64:
        p32 = plan_at(batch, kind, dtype=np.float32)
        options.append("--dtype float32" + ("" if need(p32) <= available else
                                            f" (about {gigabytes(need(p32))}: not here)"))
    if args.backend == "numpy":
        gpu = plan_at(batch, kind, backend="cupy")
        options.append(f"--backend cupy on a GPU with {gigabytes(need(gpu))} free")
    raise MemoryError(f"the exact step at curvature batch {batch} needs about "
                      f"{gigabytes(need(worst))} and {gigabytes(available)} is available; "
                      f"{' or '.join(options)} would fit")


def kernels_compiled():
    """Whether numba's disk cache already holds the compiled Riccati stage (numba's own
    cache index; False when it cannot tell)."""
    try:
        return os.path.exists(stage.factor_stage._cache._cache_file._index_path)
    except AttributeError:
        return False
