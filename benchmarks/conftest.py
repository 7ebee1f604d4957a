"""Collects ns per operation from the benchmarks and prints the speed table at the end:
median per row, configuration and scale, the kernel's figure, the target, and the ratio to
the reference model measured at the same (small) scale in the same run; then the ratios
between rows that the issue-8 targets are stated as (s2pt.perf.RATIOS), from this run's
medians. They are also written to the benchmark JSON (``--benchmark-json``) under
``s2pt_ratios``."""

import os

# numpy's OpenBLAS threads spin on the second core of a 2-core machine; nothing here uses BLAS.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import pytest  # noqa: E402

from s2pt import perf  # noqa: E402

_RESULTS = {}


def ratio_values(config, scale):
    """{ratio name: value} for the ratios whose two rows have a result at config and scale."""
    out = {}
    for ratio in perf.RATIOS:
        value = ratio.value(_RESULTS.get((ratio.num, config, scale, "s2pt")),
                            _RESULTS.get((ratio.den, config, scale, "s2pt")))
        if value is not None:
            out[ratio.name] = value
    return out


@pytest.fixture(scope="session")
def record():
    """record(row, config, scale, engine, ns_per_op) for the summary table; returns the ratios
    (perf.RATIOS) this result completes, {name: value}."""
    def put(row, config, scale, engine, ns):
        _RESULTS[(row, config, scale, engine)] = ns
        if engine != "s2pt":
            return {}
        return {name: value for name, value in ratio_values(config, scale).items()
                if row in (perf.RATIO[name].num, perf.RATIO[name].den)}
    return put


def pytest_benchmark_update_json(config, benchmarks, output_json):
    ratios = {}
    for cfg in perf.CONFIGS:
        for scale in ("cache", "full"):
            for name, value in ratio_values(cfg, scale).items():
                ratio = perf.RATIO[name]
                ratios[f"{name}-{cfg}-{scale}"] = {
                    "title": ratio.title, "value": round(value, 4), "target": ratio.goal,
                    "met": ratio.met(value)}
    if ratios:
        output_json["s2pt_ratios"] = ratios


def pytest_terminal_summary(terminalreporter):
    if not _RESULTS:
        return
    write = terminalreporter.write_line
    write("")
    write("s2pt speed table: median per operation (benchmark-disable runs are single shots)")
    write(f"{'row':<17} {'config':<6} {'unit':<9} {'kernel':>7} {'target':>7} {'cache':>8} "
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
            met = {True: "yes", False: "NO", None: "-"}[row.met(full)]
            write(f"{row.name:<17} {config:<6} {row.per:<9} {_num(row.kernel_ns):>7} "
                  f"{_num(row.shown(row.target_ns)):>7} {_ns(row.shown(cache)):>8} "
                  f"{_ns(row.shown(full)):>8} {met:>4} {ratio:>11}")
    lines = []
    for ratio in perf.RATIOS:
        for config in perf.ROW[ratio.num].configs:
            values = {scale: ratio_values(config, scale).get(ratio.name)
                      for scale in ("cache", "full")}
            if values["cache"] is None and values["full"] is None:
                continue
            met = {True: "yes", False: "NO", None: "-"}[ratio.met(values["full"])]
            lines.append(f"{ratio.title:<44} {config:<6} {ratio.goal:>8} "
                         f"{_x(values['cache']):>8} {_x(values['full']):>8} {met:>4}   "
                         f"({ratio.num} / {ratio.den})")
    if lines:
        write("")
        write(f"{'ratio (medians of this run)':<44} {'config':<6} {'target':>8} {'cache':>8} "
              f"{'full':>8} {'met':>4}")
        for line in lines:
            write(line)


def _num(value):
    return "-" if value is None else f"{value:g}"


def _ns(value):
    return "-" if value is None else f"{value:.2f}"


def _x(value):
    return "-" if value is None else f"{value:.2f}x"
