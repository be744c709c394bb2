"""The records of :func:`verify.checks.check_all`: a :class:`Step` per check and the
:class:`Report` that lists them, and how a computed quantity is compared with its
reference.

Errors: ``max_abs_err`` is the largest entry of ``|computed - reference|``; ``rel_err`` is
that divided by the largest entry of ``|reference|`` (the error itself when the reference is
zero). Quantities made of several layers are compared layer by layer; the record keeps
the worst layer (``where``) and its errors. A central-difference reference comes with an
a posteriori estimate E of its own error (:func:`verify.fd.jacobian_and_error`), whose
rounding part is absolute: a check against it passes when the error is below
``max(tol max|reference|, ERROR_SAFETY max E)``, i.e. its relative error is taken against
``max(max|reference|, ERROR_SAFETY max E / tol)``. So a derivative much smaller than the
function differentiated (a vanishing gradient, a saturated unit) is checked to the accuracy
that central differences can give it, and no further. Integer checks (inertia) have
tolerance 0.
"""
import json
import math
from dataclasses import asdict, dataclass

import numpy as np

ERROR_SAFETY = 10


@dataclass
class Step:
    """One check: ``quantity`` (computed) against ``reference``."""
    step: int
    check: str
    quantity: str
    reference: str
    max_abs_err: float
    rel_err: float
    tol: float
    passed: bool
    where: str = ""

    @property
    def key(self):
        """``"step.check"``, e.g. ``"2.Dx"``: unique within a report."""
        return f"{self.step}.{self.check}"


class Report(list):
    """The list of :class:`Step` records of :func:`check_all`, with the configuration it
    ran on (``config``). ``str(report)`` is the table, :meth:`to_json` the JSON text."""

    def __init__(self, steps=(), config=None):
        super().__init__(steps)
        self.config = dict(config or {})

    @property
    def passed(self):
        return all(s.passed for s in self)

    @property
    def failed(self):
        """Keys of the failed checks."""
        return [s.key for s in self if not s.passed]

    def to_dict(self):
        finite = lambda v: v if not isinstance(v, float) or math.isfinite(v) else None
        steps = [{k: finite(v) for k, v in asdict(s).items()} for s in self]
        return {"config": self.config, "passed": self.passed, "steps": steps}

    def to_json(self, **kwargs):
        """JSON text (non-finite errors, from a NaN computed quantity, become null)."""
        return json.dumps(self.to_dict(), allow_nan=False, **kwargs)

    def __str__(self):
        head = ("step", "quantity", "reference", "max abs err", "rel err", "tol", "result",
                "worst")
        rows = [(f"{s.step}", s.quantity, s.reference, f"{s.max_abs_err:.2e}",
                 f"{s.rel_err:.2e}", f"{s.tol:.1e}", "PASS" if s.passed else "FAIL",
                 s.where) for s in self]
        widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
        line = lambda r: "  ".join(c.rjust(w) if i in (0, 3, 4, 5) else c.ljust(w)
                                   for i, (c, w) in enumerate(zip(r, widths))).rstrip()
        config = ", ".join(f"{k}={v}" for k, v in self.config.items())
        verdict = ("all checks passed" if self.passed
                   else f"FAILED: {', '.join(self.failed)}")
        return "\n".join([config, line(head), line(["-" * w for w in widths])]
                         + [line(r) for r in rows] + [verdict])


def compare(pairs, tol):
    """``(max abs err, rel err, label)`` of the worst of the pairs ``(label, computed,
    reference)`` or ``(label, computed, reference, error estimate of the reference)``,
    ranked by relative error (see the module docstring)."""
    worst = (0.0, 0.0, "")
    for label, x, ref, *estimate in pairs:
        x = np.asarray(x, dtype=np.float64)
        ref = np.asarray(ref, dtype=np.float64)
        if x.shape != ref.shape:
            return math.inf, math.inf, f"{label}: shape {x.shape} != {ref.shape}"
        err = float(np.max(np.abs(x - ref), initial=0.0))
        scale = float(np.max(np.abs(ref), initial=0.0))
        if estimate and tol > 0:
            scale = max(scale, ERROR_SAFETY * float(np.max(estimate[0], initial=0.0)) / tol)
        rel = err / scale if scale > 0 else err
        if math.isnan(rel) or rel > worst[1]:
            worst = (err, rel, label)
            if math.isnan(rel):
                break  # a NaN is the worst there is
    return worst


def record(step, check, quantity, ref, pairs, tol):
    err, rel, where = compare(pairs, tol)
    return Step(step, check, quantity, ref, err, rel, tol, bool(rel <= tol), where)


def failure(step, check, quantity, ref, error):
    """A check whose computation raised: FAIL, with the error as ``where``."""
    return Step(step, check, quantity, ref, math.inf, math.inf, 0.0, False,
                f"{type(error).__name__}: {error}")


def count(step, check, quantity, ref, computed, expected, where):
    """An integer check (tolerance 0)."""
    err = float(np.max(np.abs(np.subtract(computed, expected))))
    return Step(step, check, quantity, ref, err, err, 0.0, err == 0, where)
