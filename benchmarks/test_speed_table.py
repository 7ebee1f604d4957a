"""Every row of the speed table (s2pt.perf.ROWS) as a pytest-benchmark, at two scales, for
each configuration the row names; and each row on s2pt and on the reference model at the
model's scale, so that their ratio comes from one run (rows the model cannot run, the MMU
layer's, run on s2pt only). Setup (building tables) is never timed; every round gets fresh
state; each result is checked against architectural counts. Timings are reported, never
asserted; the ratios between rows (s2pt.perf.RATIOS) come from the medians of this run and go
in the extra_info of the row that completes them and in the summary."""

import pytest

import s2pt
from s2pt import perf
from s2pt.model import ReferenceStage2

ROUNDS = 5


def run_row(benchmark, record, row, engine, config, scale, rounds=ROUNDS):
    cases = []

    def setup():
        cases.append(row.prepare(engine, config, scale))
        return (), {}

    result = benchmark.pedantic(lambda: cases[-1].run(), setup=setup, rounds=rounds,
                                iterations=1)
    cases[-1].check(result)
    ops = cases[-1].ops
    benchmark.extra_info.update(ops=ops, unit=row.unit, kernel_ns=row.kernel_ns,
                                target_ns=row.target_ns)
    if benchmark.stats is not None:  # None under --benchmark-disable
        ns = benchmark.stats.stats.median * 1e9 / ops
        benchmark.extra_info["ns_per_op"] = round(ns, 3)
        ratios = record(row.name, config, scale,
                        "s2pt" if engine is s2pt.Stage2 else "model", ns)
        for name, value in ratios.items():
            benchmark.extra_info[f"ratio_{name}"] = round(value, 4)


CASES = [pytest.param(row, config, scale, id=f"{row.name}-{config}-{scale}")
         for row in perf.ROWS for config in row.configs for scale in ("cache", "full")]


@pytest.mark.parametrize("row,config,scale", CASES)
def test_s2pt(benchmark, record, row, config, scale):
    benchmark.group = f"{row.name} {config}"
    run_row(benchmark, record, row, s2pt.Stage2, config, scale)


MODEL_CASES = [pytest.param(row, engine, id=f"{row.name}-{name}")
               for row in perf.ROWS if row.model
               for name, engine in (("s2pt", s2pt.Stage2), ("model", ReferenceStage2))]


@pytest.mark.parametrize("row,engine", MODEL_CASES)
def test_model_scale(benchmark, record, row, engine):
    benchmark.group = f"{row.name} 4k40 model scale: s2pt vs reference model"
    run_row(benchmark, record, row, engine, "4k40", "model", rounds=3)


@pytest.mark.parametrize("config", ["4k40", "4k48", "16k40", "64k42"])
def test_table_pages_are_kvms(config):
    """2**18 random pages in 64 GiB: exactly the tables KVM's rule implies (roots, plus one
    table per distinct entry span above the last level). The kernel's run: 32,821 for 4K/40."""
    used, expected = perf.table_pages(config, "full")
    assert used == expected
