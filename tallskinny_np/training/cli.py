"""What the command-line programs (``tallskinny-demo``, ``tallskinny-train``) share:
argparse types that check numbers on parsing with a message that says what was expected,
the help layout and the one-line error message."""
import argparse
import math
import sys


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


def or_word(word, parse):
    """An argparse type: ``word`` (given as None) or what ``parse`` accepts."""
    def either(text):
        return None if text == word else parse(text)
    return either


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Help with each option's default appended (none for options without one or whose
    help already says it), and the description and epilog laid out as written."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or "default" in action.help:
            return action.help
        return super()._get_help_string(action)


def error(prog, message, status=2):
    """Print ``prog: error: message`` (one line) to stderr; return ``status``."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    return status
