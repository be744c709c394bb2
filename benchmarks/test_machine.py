"""The machine limit (docs/math.md section 5): the float64 matmul (dgemm) rate measured in the
same run; the report divides every achieved GFLOP/s by the best of these."""
import numpy as np
import pytest

DGEMM_SIZES = (256, 512, 1024, 2048)


@pytest.mark.parametrize("n", DGEMM_SIZES)
def test_dgemm(benchmark, settings, n):
    A, B = np.random.default_rng(0).standard_normal((2, n, n))
    benchmark.group = "cpu dgemm"
    benchmark.extra_info.update(suite="cpu", series="dgemm", backend="numpy", n=n,
                                flops=2 * n ** 3)
    benchmark.pedantic(np.matmul, args=(A, B), rounds=settings.max_rounds, warmup_rounds=1)
