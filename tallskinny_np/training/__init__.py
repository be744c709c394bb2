"""Applications on top of the core: training (``tallskinny-train``), datasets, the demo
(``tallskinny-demo``) and their command-line helpers. Needs the ``train`` extra (tqdm,
matplotlib); the core package (:mod:`tallskinny_np`) needs only numpy, scipy and numba."""
