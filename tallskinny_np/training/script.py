"""The ``tallskinny-train`` script's entry point: it sets up the signal handling before the
heavy modules load, so it imports nothing else until then."""
from . import signals


def train_main():
    """The ``tallskinny-train`` script: a signal during start-up gets one line from the
    first instant (:func:`signals.quiet_start`), then
    :func:`tallskinny_np.training.train.main`."""
    signals.quiet_start("tallskinny-train")
    from .train import main
    return main()


if __name__ == "__main__":
    import sys
    sys.exit(train_main())
