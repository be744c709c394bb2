"""pytest-benchmark scaling suites for tallskinny_np and their report generator.

Run everything (see benchmarks/README.md)::

    python -m pytest benchmarks --benchmark-json=bench.json
    python -m benchmarks.report bench.json --out benchmarks/results

The suites live outside ``tests/`` so the default ``python -m pytest`` never runs them.
"""
