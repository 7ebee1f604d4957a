"""Translation throughput: batch (one C loop) and per call from Python."""

import numpy as np
import pytest

GiB, PAGE = 1 << 30, 4096
PAGES_PER_GIB = GiB // PAGE


@pytest.mark.benchmark(group="translate-batch")
def test_translate_many_sequential_tables_shuffled(benchmark, sequential_vm, rng):
    ipas = rng.permutation(PAGES_PER_GIB).astype(np.uint64) * np.uint64(PAGE)
    pa, fsc = benchmark(sequential_vm.translate_many, ipas)
    assert (fsc == 0xFF).all() and (pa == ipas + np.uint64(1 << 32)).all()


@pytest.mark.benchmark(group="translate-batch")
def test_translate_many_random_64gib(benchmark, random_vm, rng):
    pt, ipas = random_vm
    ipas = rng.permutation(ipas)
    pa, fsc = benchmark(pt.translate_many, ipas)
    assert (fsc == 0xFF).all() and (pa == ipas + np.uint64(1 << 36)).all()


@pytest.mark.benchmark(group="translate-per-call")
def test_translate_per_call(benchmark, sequential_vm):
    ipas = [i * PAGE for i in range(4096)]

    def run():
        for ipa in ipas:
            sequential_vm.translate(ipa)

    benchmark(run)
    assert sequential_vm.translate(GiB - PAGE).pa == (1 << 32) + GiB - PAGE
