"""The cost model: what it learns from timed batches, and the plans it chooses."""

from __future__ import annotations

import pickle

import fsspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hdfsspec import DicomFrameCache
from hdfsspec.dicom.index import FrameIndex
from hdfsspec.filesystem import S3_POOL, target_concurrency
from hdfsspec.io.link import LinkEstimate, LinkModel, cheapest_ranges
from hdfsspec.io.planning import plan_frames
from hdfsspec.io.signed import POOL
from hdfsspec.testing import build_encapsulated, fake_jpeg_frames

MB = 1_000_000


def test_estimate_counts_waves_overhead_and_bytes():
    link = LinkEstimate(rtt=0.02, bandwidth=100 * MB, concurrency=10, overhead=0.001)
    assert link.seconds(0, 0) == 0
    assert link.seconds(10, MB) == pytest.approx(0.02 + 0.01 + 0.01)
    assert link.seconds(11, MB) == pytest.approx(0.04 + 0.011 + 0.01)


def test_model_learns_round_trip_then_bandwidth():
    model = LinkModel(concurrency=4, rtt=0.5, bandwidth=1 * MB, overhead=0.0)
    model.observe([1000], 0.02)  # a small request: the round trip
    assert model.estimate.rtt == pytest.approx(0.02 - 1000 / MB)
    model.observe([1000], 0.03)
    assert 0.02 < model.estimate.rtt < 0.03  # smoothed
    rtt = model.estimate.rtt
    model.observe([10 * MB] * 4, rtt + 0.2)  # one wave of 40 MB in 0.2 s of transfer
    assert model.estimate.bandwidth == pytest.approx(40 * MB / 0.2)
    model.observe([2 * MB] * 2, 0.001)  # too fast to say anything: ignored
    assert model.estimate.bandwidth == pytest.approx(40 * MB / 0.2)
    assert model.rtt_samples == 2 and model.bandwidth_samples == 1
    clone = pickle.loads(pickle.dumps(model))
    assert clone.estimate == model.estimate


def test_fixed_model_does_not_learn():
    model = LinkModel(concurrency=2, rtt=0.05, bandwidth=MB, learn=False)
    model.observe([10], 1.0)
    model.observe([10 * MB], 9.0)
    assert model.estimate == LinkEstimate(0.05, MB, 2, model.estimate.overhead)


def test_gaps_are_bridged_only_when_they_save_a_wave_or_overhead():
    ranges = [(i * 100_000, i * 100_000 + 4_000) for i in range(200)]  # 96 kB gaps
    wide = LinkEstimate(rtt=0.02, bandwidth=200 * MB, concurrency=100, overhead=0.0)
    assert cheapest_ranges(ranges, wide) == ranges  # two waves either way: exact ranges
    narrow = LinkEstimate(rtt=0.02, bandwidth=200 * MB, concurrency=10, overhead=0.0)
    merged = cheapest_ranges(ranges, narrow)
    assert len(merged) <= 10  # one wave: 20 ms saved per wave, 0.5 ms per gap bridged
    assert merged[0][0] == 0 and merged[-1][1] == ranges[-1][1]
    slow_requests = LinkEstimate(rtt=0.0, bandwidth=200 * MB, concurrency=100, overhead=0.001)
    assert len(cheapest_ranges(ranges, slow_requests)) == 1  # 1 ms per request > 0.5 ms a gap


def test_whole_span_when_the_plan_covers_most_of_it():
    link = LinkEstimate(rtt=0.02, bandwidth=200 * MB, concurrency=10, overhead=0.0)
    ranges = [(i * 1000, i * 1000 + 900) for i in range(0, 1000, 2)]  # half the frames
    span = (0, 1_000_000)
    assert cheapest_ranges(ranges, link, span=span) == [span]
    pieces = cheapest_ranges(ranges, link, span=span, max_block=300_000)
    assert pieces[0][0] == 0 and pieces[-1][1] == span[1] and len(pieces) == 4
    assert all(b - a <= 300_000 for a, b in pieces)
    few = [(0, 900), (500_000, 500_900)]
    assert cheapest_ranges(few, link, span=span) == few
    most = [(0, 400_000), (500_000, 900_000)]  # 80 % of the span, no gap worth bridging
    assert cheapest_ranges(most, link, span=span) == [span]
    assert cheapest_ranges(most, link) == most


@settings(max_examples=100, deadline=None)
@given(
    sizes=st.lists(st.tuples(st.integers(0, 50_000), st.integers(1, 20_000)), min_size=1),
    rtt=st.floats(0, 0.2),
    concurrency=st.integers(1, 200),
    max_block=st.none() | st.integers(1, 500_000),
)
def test_cheapest_ranges_cover_every_range_and_cost_no_more(sizes, rtt, concurrency, max_block):
    ranges, pos = [], 0
    for gap, length in sizes:
        ranges.append((pos + gap, pos + gap + length))
        pos += gap + length
    link = LinkEstimate(rtt=rtt, bandwidth=50 * MB, concurrency=concurrency, overhead=0.0005)
    out = cheapest_ranges(ranges, link, max_block=max_block)
    starts = [a for a, _ in out]
    assert starts == sorted(starts)
    for a, b in ranges:  # each range lies in one request
        assert any(s <= a and b <= e for s, e in out)
    if max_block is None:
        exact = link.seconds(len(ranges), sum(b - a for a, b in ranges))
        assert link.seconds(len(out), sum(b - a for a, b in out)) <= exact + 1e-12


def test_plan_frames_with_the_cost_model():
    n = 50
    starts = np.arange(n, dtype=np.int64) * 1000 + 500
    index = FrameIndex(
        size=n * 1000 + 600,
        header_end=500,
        starts=starts,
        stops=starts + 992,
        encapsulated=True,
        transfer_syntax_uid="1.2.840.10008.1.2.4.50",
        offset_table="bot",
    )
    link = LinkEstimate(rtt=0.02, bandwidth=100 * MB, concurrency=1, overhead=0.0)
    fixed = plan_frames(index, [1, 30], max_gap=0)
    assert fixed.requests == 2
    bridged = plan_frames(index, [1, 30], max_gap=None, link=link)
    assert bridged.ranges == ((1500, 31500),)  # 28 kB < one round trip at 100 MB/s
    whole = plan_frames(index, range(0, n, 2), max_gap=None, link=link, whole_below=10**6)
    assert whole.ranges == ((500, 50_500),)  # every block, the last with its next item tag
    no_room = plan_frames(index, range(0, n, 2), max_gap=None, link=link, whole_below=1000)
    assert no_room.nbytes < index.size - 500


def test_frames_brought_by_a_bridged_gap_are_cached():
    blob = build_encapsulated(fake_jpeg_frames(30, seed=2), offset_table="bot")
    log: list[tuple[int, int]] = []

    def fetch(a: int, b: int) -> bytes:
        log.append((a, b))
        return blob[a:b]

    link = LinkModel(concurrency=1, rtt=0.05, bandwidth=10 * MB, learn=False)
    cache = DicomFrameCache(
        0,
        fetch,
        len(blob),
        fetch_ranges=lambda r: [fetch(a, b) for a, b in r],
        link=link,
        first_request=1024,
    )
    assert cache.index.offset_table == "bot"  # the header, then the rest of the table
    before = len(log)
    cache.read_frames([5, 25])
    assert len(log) == before + 1  # one bridged request
    frames_before = cache.stats.phases["frames"].hits
    cache.read_frames(list(range(5, 26)))
    assert len(log) == before + 1  # everything between came with it
    assert cache.stats.phases["frames"].hits == frames_before + 21


def test_target_concurrency_and_s3_pool(tmp_path):
    assert target_concurrency(fsspec.filesystem("memory")) == 1
    assert target_concurrency(fsspec.filesystem("http", skip_instance_cache=True)) == 100
    dicom = fsspec.filesystem(
        "dicom",
        target_protocol="s3",
        target_options={"anon": True, "skip_instance_cache": True},
        skip_instance_cache=True,
        rtt=None,  # conftest fixes the link of the other tests
    )
    assert dicom.fs.config_kwargs["max_pool_connections"] == S3_POOL
    assert dicom.fs.config_kwargs["response_checksum_validation"] == "when_required"
    assert dicom.link.estimate.concurrency == POOL  # reads go by signed URLs
    assert dicom.link.learn  # no rtt / bandwidth given
    unsigned = fsspec.filesystem(
        "dicom",
        target_protocol="s3",
        target_options={"anon": True, "skip_instance_cache": True},
        skip_instance_cache=True,
        signed_urls=False,
    )
    assert unsigned.link.estimate.concurrency == S3_POOL
    mine = fsspec.filesystem(
        "dicom",
        target_protocol="s3",
        target_options={"config_kwargs": {"max_pool_connections": 7}, "skip_instance_cache": True},
        rtt=0.01,
        bandwidth=5e7,
        skip_instance_cache=True,
    )
    assert mine.link.estimate.concurrency == 7 and not mine.link.learn  # signed reads too
    assert mine._signed_pool == 7
    none = fsspec.filesystem(  # config_kwargs=None is no configuration, as s3fs takes it
        "dicom",
        target_protocol="s3",
        target_options={"anon": True, "config_kwargs": None, "skip_instance_cache": True},
        skip_instance_cache=True,
    )
    assert none._signed_pool == POOL and none.fs.config_kwargs["max_pool_connections"] == S3_POOL


def test_ramped_sizes_grow_to_the_size():
    from hdfsspec.io.link import ramped_size

    assert [ramped_size(1000, 4, k) for k in range(1, 7)] == [250, 500, 750, 1000, 1000, 1000]
    assert ramped_size(1000, 1, 1) == ramped_size(1000, 0, 1) == 1000  # no ramp
    assert ramped_size(3, 8, 1) == 1  # never an empty transfer
