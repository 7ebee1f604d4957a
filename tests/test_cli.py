"""The command line: `s2pt geometry` and `s2pt demo` (the README's main job)."""

import re
import subprocess
import sys

import pytest

from s2pt import Stage2Config
from s2pt.cli import _size, main


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



@pytest.mark.parametrize("granule,s1_levels,s2_levels", [(4096, 4, 4), (16384, 4, 3),
                                                          (65536, 3, 3)])  # 16K: 2 roots
def test_demo_nested_walk(capsys, granule, s1_levels, s2_levels):
    """The nested demo prints one read per row: levels * (stage-2 levels + 1) + stage-2
    levels of them (24 for 4 + 4), stage 2 before each stage-1 read, and the faults with
    their stage; stage 2 losing the last-level table page is an S1PTW fault at level 3."""
    out = run(capsys, "demo", "--nested", "--granule", str(granule))
    reads = s1_levels * (s2_levels + 1) + s2_levels
    assert f"{reads} descriptor reads, in the order hardware makes them" in out
    rows = re.findall(r"^\s+(\d+)\s+S([12])\s+L(\d)\s", out, re.M)
    assert [int(n) for n, _, _ in rows] == list(range(1, reads + 1))
    stages = "".join(stage for _, stage, _ in rows)
    assert stages == ("2" * s2_levels + "1") * s1_levels + "2" * s2_levels
    assert [int(lv) for _, stage, lv in rows if stage == "1"] == list(
        range(4 - s1_levels, 4))
    assert re.search(r"last-level table:\s+stage 2, translation fault at level 3, FSC 0x07, "
                     r"S1PTW 1", out)
    assert re.search(r"read-only:\s+stage 1, permission fault at level 3, FSC 0x0f", out)
    assert f"{reads} descriptor reads each" in out and "consistent" in out

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


def _ints(text):
    return [int(x) for x in text.split(", ")] if text else []


@pytest.mark.parametrize("granule", [4096, 16384, 65536])
def test_demo_live_migration_round(capsys, granule):
    """The dirty pages the harvest prints are exactly the pages the guest wrote, each
    written once as a DIRTY fault; the harvest write-protects them again (the next write is
    DIRTY again and logged again); enabling logging and harvesting flush the whole slot."""
    out = run(capsys, "demo", "--granule", str(granule))
    block = Stage2Config(40, granule).level_size(2)
    slot_size = 2 * block
    pages = slot_size // granule
    assert f"-> slot 0: {pages} pages, nothing mapped yet" in out
    # First touch: one fault per 2-block slot half maps the whole block (backing = block).
    touch = re.search(r"guest writes every 16th page \((\d+) accesses\): HIT (\d+), MAPPED (\d+); "
                      r"slot leaves L2: (\d+)\n", out)
    accesses, hits, mapped, blocks = map(int, touch.groups())
    assert accesses == pages // 16 and mapped == blocks == 2 and hits == accesses - 2
    # Eager split: every page of the slot a level-3 leaf; one SPLIT per block, then one
    # WRPROTECT range over the slot.
    assert f"set_log_dirty(on, eager_split): slot leaves L3: {pages}, all read-only" in out
    split = re.search(r"set_log_dirty.*\n    TLB: (.*)\n", out).group(1).split("; ")
    assert [e.endswith("[split]") for e in split] == [True, True, False]
    assert f"(level 2, {_size(block)})" in split[0] and hex(0x8000_0000 + block) in split[1]
    assert split[2] == f"TLBI range 0x80000000 + {_size(slot_size)} [wrprotect]"
    written = re.search(r"guest writes pages \[([\d, ]+)\]: DIRTY (\d+); TLB: (\d+) events "
                        r"\((\d+) perm\)", out)
    written_pages = _ints(written.group(1))
    assert int(written.group(2)) == int(written.group(3)) == len(written_pages)
    assert "the same writes again: HIT 4 (writable now); TLB: none" in out
    harvest = re.search(r"get_dirty_log\(clear=True\): dirty pages \[([\d, ]*)\]\n"
                        r"    TLB: (.*)\n", out)
    assert _ints(harvest.group(1)) == sorted(written_pages)
    assert harvest.group(2) == f"TLBI range 0x80000000 + {_size(slot_size)} [wrprotect]"
    again = re.search(r"page (\d+) write-protected again \(permission fault, level 3\); "
                      r"next write: DIRTY 1; log now \[(\d+)\]", out)
    assert int(again.group(1)) == int(again.group(2)) == written_pages[0]


@pytest.mark.parametrize("granule", [4096, 65536])
def test_demo_aging_scan(capsys, granule):
    out = run(capsys, "demo", "--granule", str(granule))
    pages = 2 * Stage2Config(40, granule).level_size(2) // granule
    # Every page of the slot came from a block the guest touched (AF set), so all are young;
    # aging clears them with no TLB invalidation (as KVM); reads then take access-flag faults.
    assert f"young pages: {pages} of {pages}\n" in out
    assert "test_clear_young(slot) -> True; young pages now: 0; TLB: none" in out
    reads = re.search(r"guest reads pages \[([\d, ]+)\]: YOUNG (\d+) \(mkyoung\); "
                      r"young pages \[([\d, ]+)\]", out)
    assert int(reads.group(2)) == len(_ints(reads.group(1)))
    assert _ints(reads.group(3)) == _ints(reads.group(1))
    assert "test_clear_young -> True, again -> False" in out
    # fault_counts(): HIT = the first touch's hits + the repeated writes, DIRTY = the written
    # pages + the write after the harvest, YOUNG = the reads, MAPPED = the blocks.
    touch = re.search(r"\((\d+) accesses\): HIT (\d+), MAPPED (\d+)", out)
    written = _ints(re.search(r"guest writes pages \[([\d, ]+)\]", out).group(1))
    counts = dict((k, int(v)) for k, v in re.findall(
        r"(\w+) (\d+)", re.search(r"fault_counts\(\): (.*)\n", out).group(1)))
    assert counts == {"HIT": int(touch.group(2)) + len(written), "MAPPED": int(touch.group(3)),
                      "DIRTY": len(written) + 1, "YOUNG": len(_ints(reads.group(1)))}
    # Deleting the slot frees its tables: back to the count before it was added.
    before = re.search(r"\[after unmap\] table pages (\d+)", out).group(1)
    assert re.search(rf"delete_memslot\(0\): table pages \d+ -> {before}; slots left 0", out)


def test_ptdump_of_a_saved_file_and_of_the_default_trace(tmp_path, capsys):
    """`s2pt ptdump FILE` prints each saved VM as Stage2.dump() does; with no file, the VM the
    default replay trace leaves (its lines tile the whole IPA space)."""
    import s2pt
    from s2pt.cli import main

    a, b = s2pt.Stage2(), s2pt.Stage2(ipa_bits=42, granule=65536, vmid=5)
    a.map(0, 0x8000_0000, 2 << 20)
    b.map(1 << 30, 0x9000_0000, 3 << 16, s2pt.Prot.R)
    s2pt.save(tmp_path / "two.npz", a, b)
    assert main(["ptdump", str(tmp_path / "two.npz")]) == 0
    out = capsys.readouterr().out
    assert a.dump() in out and b.dump() in out and "VMID 5" in out
    assert main(["ptdump", str(tmp_path / "two.npz"), "--vm", "1"]) == 0
    assert capsys.readouterr().out.split("\n", 1)[1] == b.dump()
    assert main(["ptdump", str(tmp_path / "two.npz"), "--vm", "2"]) == 2
    assert main(["ptdump"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "---[ Guest IPA ]---"
    ranges = [tuple(int(x, 16) for x in line.split()[0].split("-")) for line in lines[2:]]
    assert ranges[0][0] == 0 and ranges[-1][1] == 1 << 40
    assert all(x[1] == y[0] for x, y in zip(ranges, ranges[1:]))
