"""The GPU check: ``bash benchmarks/gpu/run.sh`` (or ``python -m benchmarks.gpu.run``), see
:mod:`benchmarks.gpu.run`."""
