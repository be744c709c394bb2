"""argparse types shared by the command-line programs (``tallskinny-demo``,
``tallskinny-train``): numbers checked on parsing, with a message that says what was
expected."""
import argparse
import math


def integer(low, high=None):
    """An argparse type: an integer in ``[low, high]`` (no upper bound if high is None)."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            bound = f">= {low}" if high is None else f"between {low} and {high}"
            raise argparse.ArgumentTypeError(f"must be an integer {bound}, got {value}")
        return value
    return parse


def _finite_float(text, positive):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and (value > 0 if positive else value >= 0)):
        raise argparse.ArgumentTypeError(
            f"must be a finite number {'>' if positive else '>='} 0, got {text}")
    return value


def positive_float(text):
    """An argparse type: a finite number > 0."""
    return _finite_float(text, positive=True)


def nonnegative_float(text):
    """An argparse type: a finite number >= 0."""
    return _finite_float(text, positive=False)
