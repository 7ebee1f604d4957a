"""Replays on dask.distributed (the optional extra ``s2pt[dask]``): the README's recipe on a
local cluster of worker processes. Traces and summaries pickle; replay takes a trace and a
configuration (not a VM), so a worker builds its own VM. Skipped when dask is not
installed (``pip install '.[dask]'``)."""

import pytest

distributed = pytest.importorskip("dask.distributed")

from s2pt import replay as R  # noqa: E402


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None, host="127.0.0.1")
    with cluster, distributed.Client(cluster) as c:
        yield c


def test_replays_on_a_local_cluster(client):
    """client.map(replay, ...) over traces and granules: the same summaries as replays in
    this process (all but the wall time), computed in the workers."""
    small = R.parse_text("s2pt-trace 1 granule=4096 ipa_bits=40 name=small\n"
                         "add_memslot 0 0x4000_0000 0x1_0000_0000 64M backing=pmd\n"
                         "access w 0x4000_0000 +4096 x16384\n"
                         "set_log_dirty 0 on eager_split\n"
                         "access w 0x4000_0000 +65536 x1024\n"
                         "get_dirty_log 0\n")
    traces = [None, small, R.hit_trace(1 << 16)]  # None: the default trace
    granules = [4096, 65536]
    jobs = [(t, g) for t in traces for g in granules]
    futures = client.map(lambda t, g: R.replay(t, granule=g, progress=False),
                         [t for t, _ in jobs], [g for _, g in jobs])
    summaries = client.gather(futures)
    assert [(s.trace, s.granule) for s in summaries] == \
        [(t.name if t else "default", g) for t, g in jobs]
    for (trace, granule), summary in zip(jobs, summaries):
        local = R.replay(trace, granule=granule, progress=False)
        assert summary.facts() == local.facts()
    workers = client.run(lambda: __import__("os").getpid())
    assert len(set(workers.values())) == 2


def test_trace_files_on_workers(client, tmp_path):
    """Workers can be handed paths (a shared file system) and a grid of configurations."""
    path = tmp_path / "default.s2ptb"
    R.write_trace(R.default_trace(), path, format="binary")
    futures = client.map(lambda ipa_bits: R.replay(str(path), ipa_bits=ipa_bits,
                                                   progress=False), [36, 40, 48])
    summaries = client.gather(futures)
    assert [s.ipa_bits for s in summaries] == [36, 40, 48]
    assert len({s.faults["MAPPED"] for s in summaries}) == 1  # the IPA size changes no fault
