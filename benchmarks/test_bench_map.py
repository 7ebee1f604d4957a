"""Map and unmap throughput of the C core (ns per 4 KiB page = time / 262144)."""

import pytest

import s2pt

GiB, PAGE = 1 << 30, 4096


def fresh():
    return (s2pt.Stage2(ipa_bits=40, granule=PAGE),), {}


@pytest.mark.benchmark(group="map-1GiB")
def test_map_1gib_pages(benchmark):
    pt = benchmark.pedantic(lambda pt: pt.map(0, 1 << 32, GiB, blocks=False) or pt,
                            setup=fresh, rounds=5, iterations=1)
    assert pt.stats()["leaves_by_level"][3] == GiB // PAGE


@pytest.mark.benchmark(group="map-1GiB")
def test_map_1gib_2mib_blocks(benchmark):
    def run(pt):
        for i in range(512):  # one call per block: the per-block cost
            pt.map(i << 21, (1 << 32) + (i << 21), 1 << 21)
        return pt

    pt = benchmark.pedantic(run, setup=fresh, rounds=5, iterations=1)
    assert pt.stats()["leaves_by_level"][2] == 512


@pytest.mark.benchmark(group="unmap-1GiB")
def test_unmap_1gib_pages(benchmark):
    def setup():
        pt = s2pt.Stage2(ipa_bits=40, granule=PAGE)
        pt.map(0, 1 << 32, GiB, blocks=False)
        return (pt,), {}

    unmapped = benchmark.pedantic(lambda pt: pt.unmap(0, GiB), setup=setup, rounds=5,
                                  iterations=1)
    assert unmapped == GiB


@pytest.mark.benchmark(group="map-per-call")
def test_map_one_page_per_call(benchmark):
    def run(pt):
        for i in range(4096):
            pt.map(i * PAGE, (1 << 32) + i * PAGE, PAGE)
        return pt

    pt = benchmark.pedantic(run, setup=fresh, rounds=5, iterations=1)
    assert pt.stats()["leaves_by_level"][3] == 4096
