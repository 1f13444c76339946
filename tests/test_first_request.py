"""The first request of a cold open is sized by the link (by default): the header and
offset tables of a large slide come in the first round trip, its frames in the second.

(The rest of the suite opens with 64 KiB first requests, as its counts were written for:
see ``conftest.py``; these tests pass ``first_request=None``, the library's default.)
"""

from __future__ import annotations

import io

import highdicom as hd
import numpy as np
import pytest
from conftest import make_backend

import hdfsspec
from hdfsspec.io.link import LinkEstimate, link_sized_first_request
from hdfsspec.testing import build_slide, jpeg_tiles

KiB, MiB = 1024, 1024 * 1024
TILES = jpeg_tiles(3, 16, 3)
REGION = {"row_start": 1601, "row_end": 1632, "column_start": 1601, "column_end": 1632}


@pytest.mark.parametrize(
    ("rtt", "bandwidth", "expected"),
    [
        (0.030, 100e6, MiB),  # a cloud link: one bandwidth-delay product is more than 1 MiB
        (0.020, 20e6, 400_000),  # one bandwidth-delay product
        (0.001, 10e6, 64 * KiB),  # bytes are dear next to round trips: the floor
    ],
)
def test_the_first_request_is_one_bandwidth_delay_product_within_bounds(rtt, bandwidth, expected):
    assert link_sized_first_request(LinkEstimate(rtt=rtt, bandwidth=bandwidth)) == expected


@pytest.fixture(params=["s3", "http"])
def store(request, tmp_path_factory):
    return make_backend(request.param, request, tmp_path_factory)


@pytest.mark.parametrize("table", ["bot", "eot"])
def test_a_cold_region_of_a_large_slide_costs_two_round_trips(store, table):
    # 12,100 tiles of 16 px: a 48 KB Basic Offset Table, a 194 KB Extended Offset Table
    # (and its lengths), both beyond a 64 KiB first request
    blob = build_slide(1760, 1760, tile=16, tiles=TILES, offset_table=table)
    path = store.put(f"large-{table}.dcm", blob)
    fs, counting = store.counted(index_cache=False, first_request=None)
    with hdfsspec.imread(fs.open(path)) as im:
        region = im.get_total_pixel_matrix(**REGION)
        stats = im.file.stats
        first = counting.ranges[0]
        assert first[1:] == (0, MiB)  # the link-sized first request holds the tables
        assert stats.rounds == 2  # the open (header and tables), then the tiles
        assert counting.requests <= 1 + 3  # the open, then at most a range per row of tiles
        # the cost model may bridge the gaps between the rows: at most three rows of tiles
        assert counting.bytes <= MiB + 3 * 110 * max(len(t) for t in TILES)
    expected = hd.imread(io.BytesIO(blob)).get_total_pixel_matrix(**REGION)
    assert np.array_equal(region, expected)


def test_with_64_kib_the_same_region_needs_a_round_trip_for_the_table(store):
    blob = build_slide(1760, 1760, tile=16, tiles=TILES, offset_table="eot")
    path = store.put("large-eot-64k.dcm", blob)
    fs, _ = store.counted(index_cache=False, first_request=64 * KiB)
    with hdfsspec.imread(fs.open(path)) as im:
        im.get_total_pixel_matrix(**REGION)
        assert im.file.stats.rounds >= 3  # the table came in a round of its own


# -- the end of the object in the first round (dual DICOM-TIFF) -------------------------------
def _tiff_slide() -> bytes:
    # 12,100 tiles: the IFD and its arrays (97 KB) in the trailing padding
    return build_slide(1760, 1760, tile=16, tiles=TILES, offset_table="empty", dual_tiff=True)


def test_a_cold_region_of_a_dual_tiff_slide_costs_two_round_trips(store):
    blob = _tiff_slide()
    paths = [store.put(f"large-tiff-{k}.dcm", blob) for k in range(2)]
    fs, counting = store.counted(index_cache=False, first_request=None, tail_request=None)
    expected = hd.imread(io.BytesIO(blob)).get_total_pixel_matrix(**REGION)
    size, most = len(blob), 3 * 110 * max(len(t) for t in TILES)
    with hdfsspec.imread(fs.open(paths[0])) as im:  # the filesystem's first object
        assert np.array_equal(im.get_total_pixel_matrix(**REGION), expected)
        # the header; the IFD with its arrays, to the end of the object; the tiles
        assert im.file.stats.rounds == 3 and im.file.stats.phases["index"].requests == 1
    counting.reset()
    with hdfsspec.imread(fs.open(paths[1])) as im:  # a dual file was opened: the end too
        assert np.array_equal(im.get_total_pixel_matrix(**REGION), expected)
        stats = im.file.stats
        # head and tail together: the size is known (a HEAD), the tail is half the first
        assert [r[1:] for r in counting.ranges[:2]] == [(0, MiB), (size - 512 * KiB, size)]
        assert stats.rounds == 2 and stats.phases["index"].requests == 0
        assert counting.requests <= 2 + 3
        assert counting.bytes <= MiB + 512 * KiB + most


def test_no_tail_for_other_objects(store):
    tiff = store.put("tiff-first.dcm", _tiff_slide())
    small = build_slide(256, 256, tile=16, tiles=TILES, offset_table="empty", dual_tiff=True)
    bot = build_slide(1760, 1760, tile=16, tiles=TILES, offset_table="bot")
    fs, counting = store.counted(index_cache=False, first_request=None, tail_request=None)
    with fs.open(tiff) as f:
        f.index  # noqa: B018  (a dual file: the next large object's end comes with its head)
    counting.reset()
    with fs.open(store.put("small-tiff.dcm", small)) as f:  # too small for a tail
        f.read_frames([0])
        assert counting.ranges[0][1:] == (0, len(small)) and counting.requests == 1
    for k in range(2):  # after a dual file, a tail; after a BOT file, none
        counting.reset()
        with fs.open(store.put(f"large-bot-{k}.dcm", bot)) as f:
            f.read_frames([0])  # held by the first request
            assert counting.ranges[0][1:] == (0, MiB) and counting.requests == 2 - k


def test_s3_fetches_the_tail_with_the_first_get_once_it_has_seen_large_objects(
    s3_endpoint, request, tmp_path_factory
):
    # S3 opens with one GET that gives the size too (no HEAD): the size is not known before
    # it, so the tail goes with it where the last object opened was large
    s3 = make_backend("s3", request, tmp_path_factory)
    blob = _tiff_slide()
    paths = [s3.put(f"large-tiff-{k}.dcm", blob) for k in range(2)]
    fs = hdfsspec.DicomFileSystem(
        target_protocol="s3",
        target_options=s3.storage_options["s3"],
        index_cache=False,
        first_request=None,
        tail_request=None,
    )
    expected = hd.imread(io.BytesIO(blob)).get_total_pixel_matrix(**REGION)
    rounds = []
    for path in paths:
        with hdfsspec.imread(fs.open(path)) as im:
            assert np.array_equal(im.get_total_pixel_matrix(**REGION), expected)
            stats = im.file.stats
            rounds.append((stats.rounds, stats.phases["header"].requests))
            if len(rounds) == 1:  # the IFD near the end is read with its arrays: one round
                assert stats.phases["index"].requests == 1
    assert rounds == [(3, 1), (2, 2)]


def test_no_tail_when_turned_off(store):
    path = store.put("large-tiff-off.dcm", _tiff_slide())
    fs, counting = store.counted(index_cache=False, first_request=None, tail_request=0)
    with hdfsspec.imread(fs.open(path)) as im:
        im.get_total_pixel_matrix(**REGION)
        assert im.file.stats.rounds == 3  # head; the IFD with its arrays; the tiles
        assert counting.ranges[0][1:] == (0, MiB)
