"""The checks of the optimizers' parameters: a ValueError that names the parameter and
says what it must be."""
import math
import numbers

import numpy as np


def real(name, value, what, test):
    """``value`` as a float if it is a finite real number for which ``test`` holds, else a
    ValueError naming ``name`` and saying ``what`` it must be."""
    try:
        ok = (isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
              and math.isfinite(value) and test(float(value)))
    except OverflowError:                  # a Fraction or int beyond float's range
        ok = False
    if not ok:
        raise ValueError(f"{name} must be a finite number {what}; got {value!r}")
    return float(value)


def count(name, value, low):
    """``value`` as an int if it is an integer >= low, else a ValueError naming ``name``."""
    if (not isinstance(value, numbers.Integral) or isinstance(value, (bool, np.bool_))
            or value < low):
        raise ValueError(f"{name} must be an integer >= {low}; got {value!r}")
    return int(value)
