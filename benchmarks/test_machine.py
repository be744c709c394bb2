"""The machine limit (docs/math.md section 5): the float64 matmul (dgemm) rate measured in the
same run; the report divides every achieved GFLOP/s by the best of these."""
import numba
import numpy as np
import pytest
from threadpoolctl import threadpool_limits

DGEMM_SIZES = (256, 512, 1024, 2048)


@pytest.mark.parametrize("n", DGEMM_SIZES)
def test_dgemm(benchmark, settings, n):
    A, B = np.random.default_rng(0).standard_normal((2, n, n))
    benchmark.group = "cpu dgemm"
    benchmark.extra_info.update(suite="cpu", series="dgemm", backend="numpy", n=n,
                                flops=2 * n ** 3)
    benchmark.pedantic(np.matmul, args=(A, B), rounds=settings.max_rounds, warmup_rounds=1)


def test_dgemm_threads(benchmark, settings):
    """dgemm at n = 256 on as many BLAS threads as numba can run the compiled stages on,
    the rate that the factorization on those threads is compared with."""
    n = 256
    threads = numba.config.NUMBA_NUM_THREADS
    A, B = np.random.default_rng(0).standard_normal((2, n, n))
    benchmark.group = "cpu dgemm"
    benchmark.extra_info.update(suite="cpu", series="dgemm-threads", backend="numpy", n=n,
                                flops=2 * n ** 3, threads=threads)
    with threadpool_limits(limits=threads, user_api="blas"):
        benchmark.pedantic(np.matmul, args=(A, B), rounds=settings.max_rounds,
                           warmup_rounds=1)
