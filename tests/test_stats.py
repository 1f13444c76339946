"""Round counting of CacheStats and the parts of a batch (hdfsspec.highdicom_io._waves)."""

from __future__ import annotations

import itertools
import threading

from hypothesis import given
from hypothesis import strategies as st

from hdfsspec.highdicom_io import _waves
from hdfsspec.stats import CacheStats


def test_batches_in_flight_together_are_one_round():
    stats = CacheStats()
    a = stats.begin()
    b = stats.begin()  # starts while a is in flight
    assert stats.rounds == 1
    assert not stats.end(b)  # overlapped: its time is no sample of the link
    assert not stats.end(a)  # b started during a
    c = stats.begin()
    assert stats.rounds == 2 and stats.end(c)  # alone
    stats.record("frames", 3, 30, 0.1)
    stats.record("header", 1, 10, rounds=1)  # a request made before the cache
    assert stats.rounds == 3 and stats.requests == 4 and stats.bytes == 40


def test_rounds_from_many_threads():
    stats = CacheStats()
    gate = threading.Barrier(8)

    def one() -> None:
        gate.wait()
        stats.end(stats.begin())

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 1 <= stats.rounds <= 8 and stats._in_flight == 0


@given(
    st.lists(st.integers(0, 60), unique=True, max_size=40),
    st.integers(1, 6),
)
def test_waves_keep_runs_of_adjacent_frames_together(frames, parts):
    waves = _waves(frames, parts)
    assert [f for w in waves for f in w] == frames
    assert all(waves) and len(waves) <= max(1, parts)
    for left, right in itertools.pairwise(waves):
        assert abs(right[0] - left[-1]) != 1  # a cut never splits a run


def test_waves_split_rows_of_a_region():
    rows = [*range(10, 13), *range(20, 23), *range(30, 33)]
    assert _waves(rows, 3) == [[10, 11, 12], [20, 21, 22], [30, 31, 32]]
    assert _waves(rows, 1) == [rows]
    assert _waves([], 4) == []
