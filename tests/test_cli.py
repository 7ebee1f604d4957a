"""The command line: `s2pt geometry` and `s2pt demo` (the README's main job)."""

import re
import subprocess
import sys

import pytest

from s2pt.cli import main


def run(capsys, *argv):
    assert main(list(argv)) == 0
    return capsys.readouterr().out


def test_geometry_4k_rows(capsys):
    out = run(capsys, "geometry")
    rows = {int(line.split()[2]): line.split() for line in out.splitlines()
            if re.match(r"\s*4 KiB\s+\d+", line)}
    assert sorted(rows) == list(range(32, 49))
    # 4K, 40-bit IPA: 3 levels from level 1, 2 concatenated tables, T0SZ 24, SL0 1.
    assert rows[40][4:8] == ["3", "1", "2", "1024"]
    assert rows[40][10:13] == ["24", "1", hex(0x8005_3558)]
    # 32..34 bits: 2 levels from level 2 with 4, 8, 16 concatenated tables.
    assert [rows[b][6] for b in (32, 33, 34)] == ["4", "8", "16"]
    assert rows[44][4:7] == ["4", "0", "1"]


def test_geometry_64k_forced_two_levels(capsys):
    out = run(capsys, "geometry", "--granule", "65536", "--ipa-bits", "32")
    row = [line for line in out.splitlines() if "64 KiB" in line and " 32 " in line][0].split()
    # The formula gives one level for 64K/32-bit; KVM keeps two.
    assert row[4:7] == ["2", "2", "1"]


def test_geometry_from_vtcr(capsys):
    out = run(capsys, "geometry", "--vtcr", "0x80053558")
    assert "0x80053558" in out and " 40 " in out


def test_geometry_bad_config_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["geometry", "--ipa-bits", "49"])
    assert exc.value.code == 2
    assert "invalid stage-2 configuration" in capsys.readouterr().err


@pytest.mark.parametrize("granule", [4096, 16384, 65536])
def test_demo_runs(capsys, granule):
    out = run(capsys, "demo", "--granule", str(granule))
    assert "check(): every refcount" in out
    assert "destroy(): pool back to 0 used pages." in out


def test_demo_4k_facts(capsys):
    out = run(capsys, "demo")
    # A read from the hole at 0x0a00_0000: the level-1 entry holds a table (flash, UART), the
    # level-2 entry (index 80) is empty -> translation fault at level 2, FSC 0b000110.
    assert re.search(r"read 0x00000a000000: translation\s+fault, level 2, FSC 0x06", out)
    assert re.search(r"write 0x000000002000: permission\s+fault, level 2, FSC 0x0e", out)
    assert re.search(r"read 0x000100000000: access_flag\s+fault, level 3, FSC 0x0b", out)
    assert re.search(r"read 0x010000000000: translation\s+fault, level 0, FSC 0x04", out)
    # Unmapping one page inside a 2 MiB block adds one level-3 table.
    assert "table pages 8 -> 9" in out


def test_python_dash_m(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "s2pt", "geometry", "--ipa-bits", "40"],
                          capture_output=True, text=True, cwd=tmp_path, check=True)
    assert "0x80053558" in proc.stdout


@pytest.mark.parametrize("config", ["4k40", "64k42"])
def test_bench_small(capsys, config):
    """Every row runs (on s2pt and the model), each result is checked inside perf, and the
    table-page row reports KVM's count; at the model scale targets are not judged."""
    code = main(["bench", "--config", config, "--scale", "model", "--repeat", "1"])
    out = capsys.readouterr().out
    assert code == 0
    for title in ("map 1 GiB of pages, one call", "translate_many, random pages in 64 GiB",
                  "unmap one page per call (Python loop)"):
        assert title in out
    assert re.search(r"table pages for the random pages\s+pages\s+-\s+KVM\s+\d+\s+yes", out)
    assert "ratio" in out and "machine:" in out


def test_bench_one_row_no_model(capsys):
    code = main(["bench", "--scale", "cache", "--repeat", "1", "--row", "unmap_random",
                 "--no-model"])
    out = capsys.readouterr().out
    assert code == 0
    assert "unmap the whole range, random pages" in out and "model" not in out.split("\n")[3]
