"""Collects ns per operation from the benchmarks and prints the speed table at the end:
median per row, configuration and scale, the kernel's figure, the target, and the ratio to
the reference model measured at the same (small) scale in the same run."""

import os

# numpy's OpenBLAS threads spin on the second core of a 2-core machine; nothing here uses BLAS.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import pytest  # noqa: E402

from s2pt import perf  # noqa: E402

_RESULTS = {}


@pytest.fixture(scope="session")
def record():
    """record(row, config, scale, engine, ns_per_op) for the summary table."""
    def put(row, config, scale, engine, ns):
        _RESULTS[(row, config, scale, engine)] = ns
    return put


def pytest_terminal_summary(terminalreporter):
    if not _RESULTS:
        return
    write = terminalreporter.write_line
    write("")
    write("s2pt speed table: median ns per operation (benchmark-disable runs are single shots)")
    write(f"{'row':<17} {'config':<6} {'unit':<6} {'kernel':>7} {'target':>7} {'cache':>8} "
          f"{'full':>8} {'met':>4} {'model/s2pt':>11}")
    for row in perf.ROWS:
        for config in row.configs:
            cache = _RESULTS.get((row.name, config, "cache", "s2pt"))
            full = _RESULTS.get((row.name, config, "full", "s2pt"))
            if cache is None and full is None:
                continue
            small = _RESULTS.get((row.name, config, "model", "s2pt"))
            model = _RESULTS.get((row.name, config, "model", "model"))
            ratio = f"{model / small:,.0f}x" if small and model else "-"
            met = "yes" if full is not None and full <= row.target_ns else "NO"
            write(f"{row.name:<17} {config:<6} {row.unit:<6} {row.kernel_ns:>7} "
                  f"{row.target_ns:>7} {_ns(cache):>8} {_ns(full):>8} {met:>4} {ratio:>11}")


def _ns(value):
    return "-" if value is None else f"{value:.2f}"
