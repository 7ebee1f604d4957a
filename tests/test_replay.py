"""Trace replay (s2pt.replay, `s2pt replay`): the two forms of the trace format and their
round trips, refusal of newer versions and malformed input (with line numbers / op indices),
the engine's replay of the default trace against the reference model's, and facts of the
summaries derived from the trace and KVM's rules (first touches, dirty logging, TLB events)."""

import dataclasses
import pickle
import struct

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import s2pt
from s2pt import Stage2Config, replay as R
from s2pt.cli import main

MiB = 1 << 20


# ---- the format -------------------------------------------------------------------------------

EVERY_OP = """\
s2pt-trace 1 granule=4096 ipa_bits=40 pa_bits=48 semantics=exact name=every-op
# one of each operation
add_memslot 7 0x4000_0000 0x1_0000_0000 64M backing=pmd
add_memslot 3 0x0 0x10_0000_0000 1M backing=page readonly
add_memslot 9 0x8000_0000 0x2_0000_0000 2M backing=8K log_dirty
access w 0x4000_0000 +4096 x256
access r 0x4000_0010 0x4020_0000 0x0
access x 0x10_0000
access ux 0x4000_0000 +0 x3
set_log_dirty 7 on eager_split
access w 0x4000_5000 0x4000_6008
get_dirty_log 7 noclear
clear_dirty_log 7 0 0x60 0x0
get_dirty_log 7
set_log_dirty 7 off
young 0x4000_0000 64M clear
test_clear_young 0x4000_0000 64M keep
test_clear_young 0x4000_0000 64M
split 0x4000_0000 2M
collapse 0x4000_0000 64M
unmap 0x4000_0000 4K
delete_memslot 3
#
#  two spaces kept
"""


def test_every_op_text_round_trip_is_exact():
    trace = R.parse_text(EVERY_OP)
    assert len(trace) == 23 and trace.accesses == 256 + 3 + 1 + 3 + 2
    assert R.format_text(trace) == EVERY_OP
    assert trace.ops[-1] == R.Comment(" two spaces kept") and trace.ops[-2] == R.Comment("")
    assert trace.ops[4] == R.AccessRun(s2pt.Access.WRITE, 0x4000_0000, 4096, 256)
    assert trace.ops[7] == R.AccessRun(s2pt.Access.EXEC_EL0, 0x4000_0000, 0, 3)
    assert trace.ops[4].kind is s2pt.Access.WRITE
    assert trace.ops[5].ipas.tolist() == [0x4000_0010, 0x4020_0000, 0]
    assert trace.lines[:3] == [2, 3, 4]


def test_every_op_binary_round_trip_is_exact():
    trace = R.parse_text(EVERY_OP)
    blob = R.format_binary(trace)
    assert blob[:8] == R.BINARY_MAGIC and struct.unpack_from("<I", blob, 8)[0] == 1
    back = R.parse_binary(blob)
    assert back == trace
    assert R.format_text(back) == EVERY_OP
    assert R.format_binary(back) == blob


def test_non_canonical_text_parses_to_the_canonical_trace():
    loose = ("s2pt-trace 1 ipa_bits=40 granule=4K\r\n"
             "\n"
             "   add_memslot   0  1073741824 0x100000000 0x4000000   backing=2M\n"
             "access  w 0x40000000 +0x1000 x0x10\n"
             "\tunmap 0x40000000 4096\n")
    trace = R.parse_text(loose)
    assert R.format_text(trace) == (
        "s2pt-trace 1 granule=4096 ipa_bits=40 pa_bits=48 semantics=exact\n"
        "add_memslot 0 0x4000_0000 0x1_0000_0000 64M backing=2M\n"
        "access w 0x4000_0000 +4096 x16\n"
        "unmap 0x4000_0000 4K\n")


@pytest.mark.parametrize("make", [R.default_trace, lambda: R.hit_trace(1 << 14)],
                         ids=["default", "hits"])
def test_generated_traces_round_trip_both_forms(make):
    trace = make()
    text, blob = R.format_text(trace), R.format_binary(trace)
    assert R.parse_text(text) == trace == R.parse_binary(blob)
    assert R.format_binary(R.parse_text(text)) == blob
    assert R.format_text(R.parse_binary(blob)) == text
    if any(isinstance(op, R.AccessList) for op in trace.ops):
        # the binary form is the compact one: IPAs as 8-byte words
        assert len(blob) < len(text)


def test_default_trace_is_deterministic_and_cached():
    first = R.default_trace()
    assert R.default_trace() is first
    R.default_trace.cache_clear()
    again = R.default_trace()
    assert again is not first and R.format_binary(again) == R.format_binary(first)


def test_files_in_both_forms(tmp_path):
    trace = R.parse_text(EVERY_OP)
    R.write_trace(trace, tmp_path / "t.txt")
    R.write_trace(trace, tmp_path / "t.bin", format="binary")
    assert (tmp_path / "t.txt").read_text() == EVERY_OP
    assert R.read_trace(tmp_path / "t.txt") == trace == R.read_trace(tmp_path / "t.bin")
    with pytest.raises(ValueError):
        R.write_trace(trace, tmp_path / "t.x", format="yaml")


def test_traces_and_ops_pickle():
    trace = R.parse_text(EVERY_OP)
    back = pickle.loads(pickle.dumps(trace))
    assert back == trace and back.lines == trace.lines
    assert not back.ops[5].ipas.flags.writeable


_kinds = st.sampled_from(list(s2pt.Access))
_u64 = st.integers(0, 2**64 - 1)
_small = st.integers(0, 2**40)
_ops = st.one_of(
    st.builds(R.AccessRun, _kinds, st.integers(0, 2**48), st.integers(0, 2**20),
              st.integers(1, 2**20)),
    st.builds(R.AccessList, _kinds, st.lists(_u64, min_size=1, max_size=6)),
    st.builds(R.Young, _small, _small, st.booleans()),
    st.builds(R.TestClearYoung, _small, _small, st.booleans()),
    st.builds(R.Unmap, _u64, _u64),
    st.builds(R.Split, _small, _small),
    st.builds(R.Collapse, _small, _small),
    st.builds(R.Comment, st.text(st.characters(blacklist_characters="\r\n",
                                               blacklist_categories=("Cs",)), max_size=20)),
)


@st.composite
def traces(draw):
    header = R.TraceHeader(granule=draw(st.sampled_from([4096, 16384, 65536])),
                           ipa_bits=draw(st.integers(32, 52)),
                           pa_bits=draw(st.integers(32, 52)),
                           semantics=draw(st.sampled_from(["exact", "kvm"])),
                           name=draw(st.sampled_from(["", "x", "a-b_c.1"])))
    ops = []
    for slot in draw(st.lists(st.integers(0, 2**32 - 1), unique=True, max_size=3)):
        ops.append(R.AddMemslot(slot, draw(_u64), draw(_u64), draw(_u64),
                                draw(st.one_of(st.sampled_from(["page", "pmd", "pud"]),
                                               st.integers(1, 2**40))),
                                draw(st.booleans()), draw(st.booleans())))
        ops.append(R.SetLogDirty(slot, True, draw(st.booleans())))
        ops.append(R.GetDirtyLog(slot, draw(st.booleans())))
        ops.append(R.ClearDirtyLog(slot, draw(_u64), tuple(draw(st.lists(_u64, min_size=1,
                                                                          max_size=3)))))
        ops.extend(draw(st.lists(_ops, max_size=4)))
        if draw(st.booleans()):
            ops.append(R.DeleteMemslot(slot))
    ops.extend(draw(st.lists(_ops, max_size=6)))
    return R.Trace(header, ops)


@settings(max_examples=60)
@given(traces())
def test_any_trace_round_trips_through_both_forms(trace):
    text, blob = R.format_text(trace), R.format_binary(trace)
    assert R.parse_text(text) == trace
    assert R.parse_binary(blob) == trace
    assert R.format_text(R.parse_binary(blob)) == text
    assert R.format_binary(R.parse_text(text)) == blob


# ---- refusals ---------------------------------------------------------------------------------


def test_newer_text_version_is_refused():
    with pytest.raises(R.TraceVersionError) as exc:
        R.parse_text("s2pt-trace 2 granule=4096 ipa_bits=40\naccess r 0x0\n")
    assert exc.value.line == 1
    assert "version 2 is newer than this s2pt reads (version 1)" in str(exc.value)
    assert str(exc.value).startswith("<text>:1:")
    with pytest.raises(R.TraceVersionError):
        R.parse_text("s2pt-trace 0 granule=4096\n")


def test_newer_binary_version_is_refused():
    blob = bytearray(R.format_binary(R.parse_text(EVERY_OP)))
    blob[8:12] = struct.pack("<I", 2)
    with pytest.raises(R.TraceVersionError, match="version 2 is newer"):
        R.parse_binary(bytes(blob))


def test_newer_version_file_refused_by_the_cli(tmp_path, capsys):
    path = tmp_path / "future.s2pt"
    path.write_text("s2pt-trace 7 granule=4096 ipa_bits=40 flux=1\nwarp 9\n")
    assert main(["replay", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:1: trace format version 7 is newer" in err


BAD_LINES = [
    ("frobnicate 0x0", "unknown operation 'frobnicate'"),
    ("access q 0x0", "expected 'access r|w|x|ux"),
    ("access r", "no IPA given"),
    ("access r 0xg", "'0xg' is not a number"),
    ("access r 0x1_0000_0000_0000_0000", "not an unsigned 64-bit number"),
    ("access r -4096", "not an unsigned 64-bit number"),
    ("access w 0x0 +4096 x0", "count of at least 1"),
    ("access w 0xffff_ffff_ffff_f000 +4096 x2", "past 2**64"),
    ("unmap 0x0", "expected 'unmap IPA SIZE'"),
    ("young 0x0 4K clear clear", "expected 'young IPA SIZE [clear]'"),
    ("test_clear_young 0x0 4K mkold", "unexpected 'mkold'"),
    ("add_memslot 1 0x0 0x0 4K backing=huge", "'huge' is not a number"),
    ("add_memslot 1 0x0 0x0 4K writable", "unexpected 'writable'"),
    ("add_memslot 1 0x0 0x0 4K readonly readonly", "'readonly' given twice"),
    ("set_log_dirty 0 maybe", "must be on or off"),
    ("set_log_dirty 0 off eager_split", "eager_split only goes with on"),
    ("get_dirty_log 5", "no slot labelled 5"),
    ("add_memslot 0 0x0 0x0 4K", "slot 0 is already added"),
    ("unmap 0x0 4K # drop it", "a comment must be a line of its own"),
    ("clear_dirty_log 0 0", "expected 'clear_dirty_log SLOT FIRST_PAGE MASK...'"),
    ("add_memslot 4294967296 0x0 0x0 4K", "below 2**32"),
]


@pytest.mark.parametrize("line,message", BAD_LINES, ids=[b[0].split()[0] + str(i)
                                                        for i, b in enumerate(BAD_LINES)])
def test_malformed_lines_name_their_line(line, message):
    text = ("s2pt-trace 1 granule=4096 ipa_bits=40\n"
            "# slot 0 exists\n"
            "add_memslot 0 0x0 0x0 4K\n"
            "\n"
            f"{line}\n"
            "access r 0x0\n")
    with pytest.raises(R.TraceError) as exc:
        R.parse_text(text, source="bad.s2pt")
    assert exc.value.line == 5, str(exc.value)
    assert message in str(exc.value)
    assert str(exc.value).startswith("bad.s2pt:5: ")
    assert isinstance(exc.value, (s2pt.S2ptError, ValueError))


@pytest.mark.parametrize("text,message", [
    ("", "empty trace"),
    ("hello\n", "not an s2pt trace"),
    ("s2pt-trace\n", "no format version"),
    ("s2pt-trace one\n", "'one' is not a number"),
    ("s2pt-trace 1 granule=8192\n", "granule=8192"),
    ("s2pt-trace 1 colour=blue\n", "header field 'colour=blue'"),
    ("s2pt-trace 1 granule=4096 granule=4096\n", "granule given twice"),
    ("s2pt-trace 1 semantics=linux\n", "semantics='linux'"),
])
def test_malformed_headers(text, message):
    with pytest.raises(R.TraceError, match=message) as exc:
        R.parse_text(text)
    assert exc.value.line == 1


def _records(blob):
    _, _, hlen, nops, _, _ = R._PREFIX.unpack_from(blob, 0)
    start = R._PREFIX.size + hlen + (-hlen % 8)
    return start, nops


def test_malformed_binary_names_the_op():
    trace = R.parse_text(EVERY_OP)
    good = R.format_binary(trace)
    start, nops = _records(good)
    with pytest.raises(R.TraceError, match="bad magic"):
        R.parse_binary(b"S2PTXXX\0" + good[8:])
    with pytest.raises(R.TraceError, match="its header says"):
        R.parse_binary(good[:-1])
    with pytest.raises(R.TraceError, match="its header says"):
        R.parse_binary(good + b"\0")
    recs = np.frombuffer(good, dtype=R.OP_DTYPE, count=nops, offset=start).copy()

    def patched(i, **fields):
        r = recs.copy()
        for k, v in fields.items():
            r[i][k] = v
        return good[:start] + r.tobytes() + good[start + r.nbytes:]

    with pytest.raises(R.TraceError) as exc:
        R.parse_binary(patched(4, op=99))
    assert exc.value.op == 4 and "unknown operation code 99" in str(exc.value)
    with pytest.raises(R.TraceError, match="op 8: set_log_dirty: unknown flags 0x4"):
        R.parse_binary(patched(8, flags=4))
    with pytest.raises(R.TraceError, match="op 5: access: offset 0 \\+ count 999 beyond"):
        R.parse_binary(patched(5, c=999))
    with pytest.raises(R.TraceError, match="op 2: add_memslot: bad backing"):
        R.parse_binary(patched(2, kind=9))
    with pytest.raises(R.TraceError, match="op 20: no slot labelled 5"):
        R.parse_binary(patched(20, slot=5))


def test_replay_errors_name_the_operation():
    text = ("s2pt-trace 1 granule=4096 ipa_bits=40\n"
            "add_memslot 0 0x80_0000_0000 0x0 2M\n")
    R.replay(R.parse_text(text), progress=False)  # fits 40 bits
    with pytest.raises(R.ReplayError) as exc:
        R.replay(R.parse_text(text, source="t.s2pt"), ipa_bits=36, progress=False)
    assert str(exc.value).startswith("t.s2pt:2: add_memslot 0 0x80_0000_0000")
    assert isinstance(exc.value.__cause__, s2pt.RangeError)
    with pytest.raises(ValueError, match="engine"):
        R.replay(engine="qemu")


# ---- replay: engine against the reference model -------------------------------------------------


def test_default_trace_engine_matches_the_model():
    """The whole default trace on s2pt and on the pure-Python reference model: every
    summary figure but the wall time (and the TLB log, which the model does not keep) is
    the same, down to the sum of the PAs every access got."""
    engine = R.replay(progress=False, check=True)
    model = R.replay(engine="model", progress=False, check=True)
    assert model.tlb_events is None and engine.tlb_events
    assert engine.facts(tlb=False) == model.facts(tlb=False)
    assert engine.accesses == R.default_trace().accesses
    for outcome in ("HIT", "MAPPED", "DIRTY", "RELAXED", "YOUNG", "MMIO", "ABORT"):
        assert engine.faults[outcome] > 0, outcome


@pytest.mark.parametrize("granule,ipa_bits,semantics", [(65536, 42, "exact"),
                                                        (16384, 40, "kvm")])
def test_engine_matches_the_model_on_other_geometries(granule, ipa_bits, semantics):
    """The same trace on a 64K and a 16K VM (the model replays these in a few seconds),
    one of them with KVM's semantics."""
    base = R.default_trace()
    trace = R.Trace(dataclasses.replace(base.header, semantics=semantics), base.ops)
    engine = R.replay(trace, granule=granule, ipa_bits=ipa_bits, progress=False)
    model = R.replay(trace, granule=granule, ipa_bits=ipa_bits, engine="model",
                     progress=False)
    assert engine.facts(tlb=False) == model.facts(tlb=False)
    assert (engine.granule, engine.ipa_bits, engine.semantics) == (granule, ipa_bits, semantics)


# ---- summary facts, derived from the trace and KVM's rules -------------------------------------


def _section(trace, title):
    """Index of the comment op starting with title."""
    return next(i for i, op in enumerate(trace.ops)
                if isinstance(op, R.Comment) and op.text.startswith(title))


def _ipas(op):
    return np.concatenate(list(op.batches(1 << 20)))


def _leaf(config, backing):
    return R._backing(config, backing)


@pytest.mark.parametrize("granule", [4096, 16384, 65536])
def test_boot_maps_one_leaf_per_page_or_block_touched(granule):
    """During the boot every first touch of a leaf-sized unit of a slot (the backing's
    block for THP RAM, a page elsewhere) is one MAPPED fault and nothing else maps; writes
    to the read-only flash and accesses outside every slot exit (MMIO), the fetch from a
    hole is an abort, and fetches from blocks the kernel load mapped (writable, not
    executable) relax their permission once per block."""
    trace = R.default_trace()
    boot = trace[:_section(trace, "guest running")]
    config = Stage2Config(ipa_bits=40, granule=granule)
    slots, touched, exits, aborts, relaxed = {}, set(), 0, 0, set()
    mapped_by = {}  # unit -> access kind that mapped it
    for op in boot.ops:
        if isinstance(op, R.AddMemslot):
            slots[op.slot] = op
            continue
        if not isinstance(op, R._ACCESS_OPS):
            continue
        for ipa in _ipas(op).tolist():
            slot = next((s for s in slots.values() if s.ipa <= ipa < s.ipa + s.size), None)
            if slot is None:
                aborts += op.kind == s2pt.Access.EXEC
                exits += op.kind != s2pt.Access.EXEC
                continue
            if slot.readonly and op.kind == s2pt.Access.WRITE:
                exits += 1
                continue
            unit = (slot.slot, ipa // _leaf(config, slot.backing))
            if unit not in touched:
                touched.add(unit)
                mapped_by[unit] = op.kind
            elif op.kind == s2pt.Access.EXEC and mapped_by[unit] != s2pt.Access.EXEC:
                relaxed.add(unit)
    summary = R.replay(boot, granule=granule, progress=False)
    assert summary.faults["MAPPED"] == len(touched)
    assert summary.faults["MMIO"] == exits == 4 + 16 + 64
    assert summary.faults["ABORT"] == aborts == 1
    assert summary.faults["RELAXED"] == len(relaxed)
    assert summary.faults["YOUNG"] == summary.faults["DIRTY"] == 0
    # every access needed at most one handler run
    assert sum(summary.faults.values()) == summary.accesses == boot.accesses
    assert summary.leaves_by_level[2] == R.RAM_SIZE // _leaf(config, "pmd")  # RAM: blocks
    if granule == 4096:
        # 64 + 16 flash pages, 512 RAM blocks, 128 hot-plugged pages; 4 blocks of kernel text
        assert (len(touched), len(relaxed)) == (80 + 512 + 128, 4)


@pytest.mark.parametrize("granule", [4096, 65536])
def test_dirty_logging_rounds_follow_kvms_rules(granule):
    """Each round's first write to a write-protected page is one DIRTY fault; a harvest with
    clear re-protects what it returns, the manual-protect round re-protects only what its
    clear_dirty_log names (the first 32 MiB), so pages dirtied above it stay writable and
    are harvested again by the next round."""
    trace = R.default_trace()
    start = _section(trace, "live migration")
    end = _section(trace, "migration cancelled")
    ram = next(op for op in trace.ops if isinstance(op, R.AddMemslot) and op.slot == 1)
    writable, dirty, faults, harvested = set(), set(), 0, 0
    for op in trace.ops[start:end]:
        if isinstance(op, R.AccessList) and op.kind == s2pt.Access.WRITE:
            pages = set(((_ipas(op) - np.uint64(ram.ipa)) // np.uint64(granule)).tolist())
            faults += len(pages - writable)
            writable |= pages
            dirty |= pages
        elif isinstance(op, R.GetDirtyLog):
            harvested += len(dirty)
            if op.clear:
                writable -= dirty
                dirty = set()
        elif isinstance(op, R.ClearDirtyLog):
            lo = op.first_page * 4096 // granule
            hi = lo + len(op.masks) * 64 * 4096 // granule
            assert all(m == (1 << 64) - 1 for m in op.masks)
            cleared = {p for p in dirty if lo <= p < hi}
            dirty -= cleared
            writable -= cleared
    summary = R.replay(trace[:end], granule=granule, progress=False)
    assert summary.faults["DIRTY"] == faults
    assert summary.dirty_pages == harvested
    assert summary.harvests == 4
    # eager split: the whole slot in pages, write-protected (one flush for the slot, then one
    # per clearing harvest and one for the clear_dirty_log)
    assert summary.tlb_events["wrprotect"] == 1 + 3 + 1


def test_default_trace_tlb_and_table_facts():
    """4K/40: the host THP split (16 MiB: 8 blocks) and eager split (all 512 blocks of the
    1 GiB slot, refaulted after the balloon) log one SPLIT each; collapse rebuilds the same
    blocks (one COALESCE each); at the end RAM is 512 blocks again beside 80 flash pages."""
    s = R.replay(progress=False, check=True)
    assert s.tlb_events["split"] == 8 + 512
    assert s.tlb_events["coalesce"] == s.collapsed_blocks == 8 + 512
    assert s.split_tables == 8  # one level-3 table per block split by split()
    assert s.unmapped_bytes == 64 * MiB
    assert s.leaves_by_level == {1: 0, 2: 512, 3: 80}
    assert s.mapped_bytes == (1 << 30) + 80 * 4096
    # roots (2) + the level-2 table of the RAM's 1 GiB + the two over flash (level 2, 3)
    assert s.table_pages == 2 + 1 + 2
    # peak: while the slot was pages: 512 level-3 tables + 1 level-2 table for RAM, the
    # 2 roots and flash's two tables
    assert s.peak_table_pages == 2 + 2 + 1 + 512
    # the young() scans: a quarter of RAM right after the eager split (every page inherits
    # its block's access flag), and half of it after the collapse and a write to every block
    # (its access-flag fault set the flag of the whole block)
    pages = (1 << 30) // 4096
    assert s.young_pages == pages // 4 + pages // 2


def test_hit_trace_hits():
    trace = R.hit_trace(1 << 18)
    s = R.replay(trace, progress=False)
    assert s.faults["MAPPED"] == 512 and s.faults["HIT"] == trace.accesses - 512
    assert sum(s.faults.values()) == s.accesses == (1 << 18) + 512
    assert s.tlb_events == {} and s.table_pages == 3
    # the PAs: every IPA translated by the slot's offset (PA - IPA = 0x1_0000_0000 - RAM)
    ipas = np.concatenate([_ipas(op) for op in trace.ops if isinstance(op, R._ACCESS_OPS)])
    assert s.pa_sum == int((ipas + np.uint64(0x1_0000_0000 - R.RAM)).sum(dtype=np.uint64))


def test_coalesced_batches_equal_one_access_at_a_time():
    """Replay coalesces consecutive accesses into access_many batches: batches of 1 give
    the same summary."""
    trace = R.default_trace()
    boot = trace[:_section(trace, "memslot churn")]
    one = R.replay(boot, chunk=1, progress=False)
    big = R.replay(boot, progress=False)
    assert one.facts() == big.facts()


def test_clear_dirty_log_masks_on_another_granule():
    op = R.ClearDirtyLog(0, 64, ((1 << 64) - 1, 0b1))  # 4K pages 64..127 and 128
    first, words = R._masks_for(op, 4096, 16384)  # 16K pages 16..31 and 32
    assert first == 0 and s2pt.bitmap_pages(words).tolist() == list(range(16, 33))
    first, words = R._masks_for(R.ClearDirtyLog(0, 0, (0b10,)), 65536, 4096)
    assert first == 0 and s2pt.bitmap_pages(words).tolist() == list(range(16, 32))


def test_backing_on_each_granule():
    c4, c64 = Stage2Config(40, 4096), Stage2Config(42, 65536)
    assert [R._backing(c4, b) for b in ("page", "pmd", "pud", 8192, 3 << 20)] == \
        [4096, 2 << 20, 1 << 30, 4096, 2 << 20]
    # 64K: the level-2 block is 512 MiB; a 2 MiB backing is pages there
    assert [R._backing(c64, b) for b in ("page", "pmd", 2 << 20)] == \
        [65536, 512 << 20, 65536]


def test_summary_pickles_and_reads():
    s = R.replay(R.parse_text(EVERY_OP), progress=False, check=True)
    back = pickle.loads(pickle.dumps(s))
    assert back == s
    text = s.format()
    assert text.splitlines()[0] == ("every-op on s2pt: 4K granule, 40-bit IPA, 48-bit PA, "
                                    "exact")
    assert "faults by outcome" in text and "TLB events" in text
    err = pickle.loads(pickle.dumps(R.TraceError("bad", line=3, source="f")))
    assert str(err) == "f:3: bad" and err.line == 3


def test_progress_bar_quiet_when_not_a_tty(capsys):
    R.replay(R.hit_trace(1 << 16), progress=None)
    assert capsys.readouterr().err == ""


# ---- the command line ---------------------------------------------------------------------------


def test_cli_default_trace(capsys):
    assert main(["replay", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("default on s2pt: 4K granule, 40-bit IPA, 48-bit PA, exact\n")
    assert "faults by outcome" in out and "MAPPED 1,200" in out


def test_cli_grid_in_two_processes(capsys):
    argv = ["replay", "--granule", "4K,16K", "--granule", "64K", "--ipa-bits", "40,48",
            "--jobs", "2"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    heads = [line for line in out.splitlines() if line.startswith("default on s2pt")]
    assert len(heads) == 6
    grid = out[out.index("trace "):].splitlines()
    assert [row.split()[1] for row in grid[2:]] == ["4K/40", "4K/48", "16K/40", "16K/48",
                                                    "64K/40", "64K/48"]
    # the same run in this process gives the same figures
    single = R.replay(granule=16384, ipa_bits=48, progress=False)
    assert single.format().splitlines()[:-1] == \
        out.split("\n\n")[3].splitlines()[:-1]


def test_cli_write_and_replay_files(tmp_path, capsys):
    text, binary = tmp_path / "default.s2pt", tmp_path / "default.s2ptb"
    assert main(["replay", "--write-default", str(text)]) == 0
    assert main(["replay", "--write", str(binary), "--format", "binary"]) == 0
    assert R.read_trace(text) == R.default_trace() == R.read_trace(binary)
    assert text.read_text() == R.format_text(R.default_trace())
    capsys.readouterr()
    assert main(["replay", str(text), str(binary), "--jobs", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    runs = [chunk for chunk in out.split("\n\n") if chunk.startswith("default on")]
    assert len(runs) == 2
    assert runs[0].splitlines()[:-1] == runs[1].splitlines()[:-1]  # all but the time
    assert main(["replay", str(binary), "--write", str(tmp_path / "back.s2pt")]) == 0
    assert (tmp_path / "back.s2pt").read_text() == text.read_text()


def test_cli_bad_trace_exits_2_with_the_line(tmp_path, capsys):
    path = tmp_path / "bad.s2pt"
    path.write_text("s2pt-trace 1 granule=4096 ipa_bits=40\naccess r 0x0\nunmap 0x0\n")
    assert main(["replay", str(path)]) == 2
    assert f"{path}:3: unmap: expected 'unmap IPA SIZE'" in capsys.readouterr().err


def test_cli_failed_run_exits_1(tmp_path, capsys):
    path = tmp_path / "high.s2pt"
    path.write_text("s2pt-trace 1 granule=4096 ipa_bits=40\n"
                    "add_memslot 0 0x80_0000_0000 0x0 2M\naccess r 0x80_0000_0000\n")
    assert main(["replay", str(path), "--ipa-bits", "36,40", "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "high.s2pt at 4K/36: failed: " in out and "high.s2pt:2: add_memslot" in out
    assert "high.s2pt on s2pt: 4K granule, 40-bit IPA" in out


def test_cli_model_engine(tmp_path, capsys):
    path = tmp_path / "every.s2pt"
    path.write_text(EVERY_OP)
    assert main(["replay", str(path), "--engine", "model", "--check"]) == 0
    model = capsys.readouterr().out
    assert main(["replay", str(path), "--check"]) == 0
    engine = capsys.readouterr().out
    assert "every-op on model" in model and "TLB events                not modelled" in model
    drop = ("every-op on", "TLB events", "wall time", "guest accesses")
    assert [l for l in model.splitlines() if not l.lstrip().startswith(drop)] == \
        [l for l in engine.splitlines() if not l.lstrip().startswith(drop)]
