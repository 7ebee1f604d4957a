"""Replay throughput (s2pt.replay): a hit-only trace (a 1 GiB THP-backed slot faulted in by
512 first touches, then 2^24 reads and writes at cache-line, page, 2 MiB strides and random
addresses) replayed end to end through access_many, reported as guest accesses per second
(target >= 10 M/s on one core); the default trace per access; and the rows
s2pt.replay.bench_rows() offers `s2pt bench`, on s2pt and (hit row) the reference model.
Timings are reported in extra_info, never asserted; each result is checked."""

import pytest

import s2pt
from s2pt import replay as R
from s2pt.model import ReferenceStage2

ROUNDS = 5


@pytest.fixture(scope="module")
def hits():
    return R.hit_trace(1 << 24)


def _report(benchmark, accesses):
    benchmark.extra_info["accesses"] = accesses
    if benchmark.stats is not None:  # None under --benchmark-disable
        seconds = benchmark.stats.stats.median
        benchmark.extra_info["accesses_per_s"] = round(accesses / seconds)
        benchmark.extra_info["ns_per_access"] = round(seconds * 1e9 / accesses, 3)


@pytest.mark.benchmark(group="replay hits")
@pytest.mark.parametrize("granule,ipa_bits", [(4096, 40), (4096, 48), (16384, 40),
                                              (65536, 42)])
def test_replay_hit_trace(benchmark, hits, granule, ipa_bits):
    summary = benchmark.pedantic(
        lambda: R.replay(hits, granule=granule, ipa_bits=ipa_bits, progress=False),
        rounds=ROUNDS, iterations=1)
    blocks = R.RAM_SIZE // s2pt.Stage2Config(ipa_bits, granule).level_size(2)
    assert summary.faults["MAPPED"] == blocks
    assert summary.faults["HIT"] == hits.accesses - blocks
    assert sum(summary.faults.values()) == summary.accesses == hits.accesses
    _report(benchmark, hits.accesses)


@pytest.mark.benchmark(group="replay default trace")
def test_replay_default_trace(benchmark):
    trace = R.default_trace()
    summary = benchmark.pedantic(lambda: R.replay(trace, progress=False), rounds=ROUNDS,
                                 iterations=1)
    assert summary.accesses == trace.accesses and summary.faults["DIRTY"] > 0
    _report(benchmark, trace.accesses)


ROWS = [pytest.param(row, config, scale, id=f"{row.name}-{config}-{scale}")
        for row in R.bench_rows() for config in row.configs for scale in ("cache", "full")]


@pytest.mark.benchmark(group="replay rows (s2pt bench)")
@pytest.mark.parametrize("row,config,scale", ROWS)
def test_bench_rows(benchmark, row, config, scale):
    cases = []

    def setup():
        cases.append(row.prepare(s2pt.Stage2, config, scale))
        return (), {}

    result = benchmark.pedantic(lambda: cases[-1].run(), setup=setup, rounds=3, iterations=1)
    cases[-1].check(result)
    _report(benchmark, cases[-1].ops)


@pytest.mark.parametrize("row", [r for r in R.bench_rows() if r.model], ids=lambda r: r.name)
def test_bench_rows_on_the_model(row):
    """The rows that say so run on the reference model at its scale (one shot, checked)."""
    case = row.prepare(ReferenceStage2, "4k40", "model")
    case.check(case.run())
