"""Damaged objects: a typed error or the right bytes, never a crash, a hang or a runaway read.

Each case damages a file of the synthetic corpus (bytes flipped in its header and
offset tables, a length field overwritten, the object cut short) and reads every
frame through the cache. Whatever the damage, the read must end in one of the typed
errors of :mod:`hdfsspec.errors`, or return bytes; it may never raise anything else,
never ask for bytes beyond the object, and never read more than a few times its size.
A small fixed set runs with the suite; ``-m slow`` runs many more.
"""

from __future__ import annotations

import random
import struct
import warnings

import pytest
from conftest import CORPUS

from hdfsspec import DicomFormatError
from hdfsspec.cache.dicom_cache import DicomFrameCache

LENGTHS = (0xFFFFFFFF, 0xFFFFFFF0, 0x7FFFFFFF, 0x10000, 0xFFFF, 1, 0)


def _damage(blob: bytes, rng: random.Random) -> bytes:
    """One random kind of damage, mostly in the first bytes (header and tables)."""
    kind = rng.choice(("flip", "length", "cut", "zero"))
    data = bytearray(blob)
    hot = min(len(data), rng.choice((512, 2048, len(data))))
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(0 if rng.random() < 0.3 else 132, hot)] = rng.randrange(256)
    elif kind == "length":
        pos = rng.randrange(132, max(133, hot - 4))
        fmt = rng.choice(("<L", "<H"))
        value = rng.choice(LENGTHS) & (0xFFFF if fmt == "<H" else 0xFFFFFFFF)
        data[pos : pos + struct.calcsize(fmt)] = struct.pack(fmt, value)
    elif kind == "cut":
        del data[rng.randrange(1, len(data)) :]
    else:
        start = rng.randrange(132, hot)
        data[start : start + rng.randint(1, 64)] = bytes(min(64, len(data) - start))
    return bytes(data)


def _read_everything(blob: bytes) -> tuple[list[bytes] | DicomFormatError, list[tuple[int, int]]]:
    log: list[tuple[int, int]] = []

    def fetch(start: int, stop: int) -> bytes:
        assert 0 <= start <= stop <= len(blob), (start, stop, len(blob))
        log.append((start, stop))
        return blob[start:stop]

    def fetch_ranges(ranges: list[tuple[int, int]]) -> list[bytes]:
        return [fetch(a, b) for a, b in ranges]

    cache = DicomFrameCache(0, fetch, len(blob), fetch_ranges=fetch_ranges, path="mem://d.dcm")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom's warnings on damaged values
            n = cache.index.number_of_frames
            return cache.read_frames(range(n)), log
    except DicomFormatError as exc:
        assert exc.path == "mem://d.dcm" and exc.offset is not None, exc
        return exc, log


def _check(name: str, seed: int) -> None:
    rng = random.Random(f"{name}-{seed}")
    blob = _damage(CORPUS[name], rng)
    _, log = _read_everything(blob)
    fetched = sum(b - a for a, b in log)
    assert fetched <= 4 * len(blob) + 256 * 1024, (name, seed, fetched, len(blob))
    assert len(log) <= 64, (name, seed, len(log))


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_damaged_objects_fail_typed(name):
    for seed in range(40):
        _check(name, seed)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CORPUS))
def test_damaged_objects_fail_typed_many(name):
    for seed in range(40, 5000):
        _check(name, seed)
