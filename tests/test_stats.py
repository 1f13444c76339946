"""Round counting of CacheStats: batches in flight together are one round trip."""

from __future__ import annotations

import threading

from hdfsspec.io.stats import CacheStats


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
