"""The commands of the ``hdfsspec`` command line, run in-process against real servers.

S3 is moto's server behind the shaping proxy (its log counts every request on the
wire); HTTP is the Range server. Every read test checks the values written (PNG pixels
against highdicom decoding a local copy, frame files against pydicom's encoded frames)
and that the requests and bytes the command reports are those the server saw.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import fsspec
import highdicom as hd
import numpy as np
import pydicom
import pytest
from conftest import BUCKET, _s3_options
from oracle import reference_frames
from PIL import Image

from hdfsspec.cli import main
from hdfsspec.testing import (
    ShapingProxy,
    build_native,
    build_pyramid,
    build_slide,
    jpeg_tiles,
)

TILES = jpeg_tiles(5, 64, 3)
SLIDES = {  # 1024 columns x 768 rows: 16 x 12 tiles of 64 px
    layout: build_slide(
        768,
        1024,
        tile=64,
        tiles=TILES,
        offset_table="bot" if layout == "bot" else "empty",
        dual_tiff=layout == "tiff",
    )
    for layout in ("bot", "empty", "tiff")
}
NATIVE = build_native(np.random.default_rng(3).integers(0, 4096, (5, 9, 7), dtype=np.uint16))
STORED = {  # what highdicom decodes, as the commands ask for it
    "apply_real_world_transform": False,
    "apply_modality_transform": False,
    "apply_voi_transform": False,
}
_FETCHED = re.compile(r"fetched: ([\d,]+) requests?, ([\d,]+) bytes")


@pytest.fixture
def proxy(s3_endpoint: str) -> Iterator[ShapingProxy]:
    with ShapingProxy(s3_endpoint, lifetime=300) as p:
        yield p


def put_s3(s3_endpoint: str, name: str, data: bytes) -> str:
    path = f"{BUCKET}/cli/{name}"
    fsspec.filesystem("s3", **_s3_options(s3_endpoint)).pipe_file(path, data)
    return f"s3://{path}"


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def fetched(out: str) -> tuple[int, int]:
    """The requests and bytes a command says it fetched."""
    found = _FETCHED.search(out)
    assert found is not None, out
    return int(found[1].replace(",", "")), int(found[2].replace(",", ""))


def local(blob: bytes) -> hd.Image:
    return hd.imread(io.BytesIO(blob))


def png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.array(im)


# -- info ------------------------------------------------------------------------------
@pytest.mark.parametrize("layout,kind", [("bot", "bot"), ("empty", "scan"), ("tiff", "tiff")])
def test_info_says_what_the_object_is_and_what_it_fetched(
    capsys, s3_endpoint, proxy, layout, kind
):
    blob = SLIDES[layout]
    url = put_s3(s3_endpoint, f"info-{layout}.dcm", blob)
    code, out, err = cli(capsys, "info", url, "--json", "-s", f"endpoint_url={proxy.url}")
    assert code == 0 and err == ""
    facts = json.loads(out)
    ds = pydicom.dcmread(io.BytesIO(blob), stop_before_pixels=True)
    assert facts["sop_class_uid"] == ds.SOPClassUID
    assert facts["transfer_syntax_uid"] == ds.file_meta.TransferSyntaxUID
    assert (facts["rows"], facts["columns"]) == (ds.Rows, ds.Columns)
    assert facts["frames"] == int(ds.NumberOfFrames) == 16 * 12
    assert facts["total_pixel_matrix"] == [ds.TotalPixelMatrixRows, ds.TotalPixelMatrixColumns]
    assert facts["tiled"] and facts["encapsulated"]
    assert facts["offset_table"] == kind and not facts["index_from_store"]
    # the top-left 512 x 512 pixels are 8 x 8 tiles; every frame is planned
    assert facts["region"]["frames"] == 64
    assert facts["region"]["rows"] == facts["region"]["columns"] == [1, 512]
    assert facts["every_frame"]["frames"] == int(ds.NumberOfFrames)
    if kind == "scan":  # not walked by info: the frames beyond the first request are unknown
        assert 0 < facts["every_frame"]["unknown"] < int(ds.NumberOfFrames)
    else:
        assert facts["region"]["unknown"] == facts["every_frame"]["unknown"] == 0
        assert facts["every_frame"]["bytes"] > facts["region"]["bytes"] > 0
    assert facts["fetched"]["index"]["requests"] == (1 if kind == "tiff" else 0)  # its table
    assert facts["fetched"]["frames"]["requests"] == 0  # a plan fetches no frame
    assert (facts["fetched"]["requests"], facts["fetched"]["bytes"]) == (
        proxy.log.requests,
        proxy.log.bytes,
    )


def test_info_as_text(capsys, http_server):
    url = http_server.put("cli/info-text.dcm", SLIDES["bot"])
    http_server.log.clear()
    code, out, _ = cli(capsys, "info", url)
    assert code == 0
    lines = dict(line.split(":", 1) for line in out.splitlines())
    assert lines["offset table"].strip() == "Basic Offset Table"
    assert "192 of 64 x 64 px" in lines["frames"]
    assert "total pixel matrix 768 x 1,024 px" in lines["tiled"]
    assert (
        lines["region"].strip().startswith("512 x 512 px (rows 1-512, columns 1-512): 64 frames")
    )
    got = re.match(r"([\d,]+) requests?, ([\d,]+) bytes", lines["info fetched"].strip())
    assert got is not None
    assert int(got[1]) == http_server.log.requests
    assert int(got[2].replace(",", "")) == http_server.log.bytes


# -- region ----------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["bot", "tiff"])
def test_region_fetches_what_info_planned(capsys, s3_endpoint, proxy, tmp_path, layout):
    blob = SLIDES[layout]
    url = put_s3(s3_endpoint, f"plan-{layout}.dcm", blob)
    endpoint = f"endpoint_url={proxy.url}"
    _, out, _ = cli(capsys, "info", url, "--json", "-s", endpoint)
    planned = json.loads(out)["region"]
    proxy.log.clear()
    code, out, err = cli(capsys, "region", url, "-o", str(tmp_path / "r.png"), "-s", endpoint)
    assert code == 0 and err == ""
    expected = local(blob).get_total_pixel_matrix(1, 513, 1, 513, dtype=np.uint8, **STORED)
    assert np.array_equal(png(tmp_path / "r.png"), expected)
    assert fetched(out) == (proxy.log.requests, proxy.log.bytes)
    phase = re.search(r"frames ([\d,]+) requests? / ([\d,]+) B", out)
    assert phase is not None, out
    assert planned["requests"] > 0
    assert (int(phase[1]), int(phase[2].replace(",", ""))) == (
        planned["requests"],
        planned["bytes"],
    )


@pytest.mark.parametrize("where", ["s3", "http"])
def test_region_png_holds_highdicom_s_pixels(
    capsys, request, s3_endpoint, http_server, tmp_path, where
):
    blob = SLIDES["empty"]  # no offset table: the items are walked up to the tiles
    options: list[str] = []
    if where == "s3":
        proxy = request.getfixturevalue("proxy")
        url, log = put_s3(s3_endpoint, "region.dcm", blob), proxy.log
        options = ["-s", f"endpoint_url={proxy.url}"]
    else:
        url, log = http_server.put("cli/region.dcm", blob), http_server.log
        log.clear()
    out_png = tmp_path / "region.png"
    argv = ["region", url, "--x", "100", "--y", "70", "--width", "300", "--height", "200"]
    code, out, err = cli(capsys, *argv, "-o", str(out_png), *options)
    assert code == 0 and err == ""
    expected = local(blob).get_total_pixel_matrix(
        row_start=71, row_end=271, column_start=101, column_end=401, dtype=np.uint8, **STORED
    )
    assert expected.shape == (200, 300, 3)
    assert np.array_equal(png(out_png), expected)
    assert "300 x 200 px, RGB; x 100-399, y 70-269" in out
    assert fetched(out) == (log.requests, log.bytes)
    assert log.bytes < len(blob)


def test_region_of_a_frame_of_an_image_that_is_not_tiled(capsys, http_server, tmp_path):
    url = http_server.put("cli/native.dcm", NATIVE)
    http_server.log.clear()
    argv = ["region", url, "--frame", "3", "--x", "1", "--y", "2", "--width", "4", "--height", "5"]
    code, out, _ = cli(capsys, *argv, "-o", str(tmp_path / "f.png"))
    assert code == 0
    expected = local(NATIVE).get_frame(3, dtype=np.uint16, **STORED)[2:7, 1:5]
    got = png(tmp_path / "f.png")
    assert got.shape == (5, 4) and np.array_equal(got, expected)
    assert fetched(out) == (http_server.log.requests, http_server.log.bytes)


def test_region_of_a_pyramid_level(capsys, s3_endpoint, proxy, tmp_path):
    pyramid = build_pyramid(500, 380, levels=3, tile=64, seed=1)
    for name, blob in pyramid.items():
        put_s3(s3_endpoint, f"pyramid/{name}", blob)
    prefix = f"s3://{BUCKET}/cli/pyramid/"
    argv = ["region", prefix, "--level", "1", "--x", "100", "--y", "60", "--width", "100"]
    code, out, err = cli(
        capsys,
        *argv,
        "--height",
        "80",
        "-o",
        str(tmp_path / "l.png"),
        "-s",
        f"endpoint_url={proxy.url}",
    )
    assert code == 0, err
    # level 1 halves level 0: (100, 60) in level-0 pixels is (50, 30) on it
    expected = local(pyramid["level-1.dcm"]).get_total_pixel_matrix(
        row_start=31, row_end=111, column_start=51, column_end=151, dtype=np.uint8, **STORED
    )
    assert np.array_equal(png(tmp_path / "l.png"), expected)
    assert "x 50-149, y 30-109 of level 1" in out
    # the instances' reads (headers, level 1's tiles), the listing of the prefix apart
    reads = [e for e in proxy.log.gets() if "list-type" not in e[1]]
    assert len(reads) == proxy.log.requests - 1
    assert fetched(out) == (len(reads), sum(e[4] for e in reads))
    assert "not counted: the listing" in out


# -- frames ----------------------------------------------------------------------------
def test_frames_are_written_as_stored(capsys, s3_endpoint, proxy, tmp_path):
    blob = SLIDES["bot"]
    url = put_s3(s3_endpoint, "frames.dcm", blob)
    argv = ["frames", url, "1", "5-7", "192", "5", "-o", str(tmp_path / "out")]
    code, out, err = cli(capsys, *argv, "-s", f"endpoint_url={proxy.url}")
    assert code == 0 and err == ""
    expected = reference_frames(blob)
    numbers = [1, 5, 6, 7, 192]
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == [f"frame-{n:03d}.jpg" for n in numbers]
    for n in numbers:
        assert (tmp_path / "out" / f"frame-{n:03d}.jpg").read_bytes() == expected[n - 1]
    assert "wrote 5 frames" in out
    assert fetched(out) == (proxy.log.requests, proxy.log.bytes)


def test_native_frames_are_raw_and_decoded_frames_png(capsys, http_server, tmp_path):
    url = http_server.put("cli/native-frames.dcm", NATIVE)
    code, _, _ = cli(capsys, "frames", url, "--all", "-o", str(tmp_path / "raw"))
    assert code == 0
    expected = reference_frames(NATIVE)
    assert [(tmp_path / "raw" / f"frame-{n}.raw").read_bytes() for n in range(1, 6)] == expected
    http_server.log.clear()
    code, out, _ = cli(capsys, "frames", url, "2", "4", "--decode", "-o", str(tmp_path / "png"))
    assert code == 0
    image = local(NATIVE)
    for n in (2, 4):
        got = png(tmp_path / "png" / f"frame-{n}.png")
        assert np.array_equal(got, image.get_frame(n, dtype=np.uint16, **STORED))
    assert fetched(out) == (http_server.log.requests, http_server.log.bytes)


def test_decoded_jpeg_frames(capsys, http_server, tmp_path):
    blob = SLIDES["tiff"]
    url = http_server.put("cli/decoded.dcm", blob)
    http_server.log.clear()
    code, out, _ = cli(capsys, "frames", url, "3", "100", "--decode", "-o", str(tmp_path))
    assert code == 0
    image = local(blob)
    for n in (3, 100):
        got = png(tmp_path / f"frame-{n:03d}.png")
        assert np.array_equal(got, image.get_frame(n, dtype=np.uint8, **STORED))
    assert fetched(out) == (http_server.log.requests, http_server.log.bytes)


# -- index -----------------------------------------------------------------------------
def test_index_walks_once_and_later_opens_cost_no_index_request(
    capsys, s3_endpoint, proxy, tmp_path
):
    blob = SLIDES["empty"]
    url = put_s3(s3_endpoint, "index.dcm", blob)
    common = ["--index-cache", str(tmp_path / "store"), "-s", f"endpoint_url={proxy.url}"]
    code, out, err = cli(capsys, "index", url, *common)
    assert code == 0
    assert "192 frames located" in out and f"index saved in {tmp_path / 'store'}" in out
    assert "indexing" in err  # the progress bar of the walk
    assert fetched(out) == (proxy.log.requests, proxy.log.bytes)
    assert proxy.log.bytes >= len(blob) - 65536  # the walk read the items
    proxy.log.clear()
    code, out, _ = cli(capsys, "info", url, "--json", *common)
    facts = json.loads(out)
    assert facts["index_from_store"] and facts["offset_table"] == "scan"
    assert facts["every_frame"]["unknown"] == 0  # every frame located, with no walk
    assert facts["fetched"]["index"]["requests"] == 0
    assert facts["fetched"]["requests"] == proxy.log.requests <= 1
    proxy.log.clear()
    code, out, _ = cli(capsys, "index", url, *common, "--no-progress")
    assert code == 0 and "in the store already" in out
    assert fetched(out) == (proxy.log.requests, proxy.log.bytes)


def test_index_needs_a_store(capsys, http_server):
    url = http_server.put("cli/no-store.dcm", SLIDES["bot"])
    code, out, err = cli(capsys, "index", url, "--index-cache", "off")
    assert code == 1 and out == ""
    assert err.startswith("hdfsspec: error: the index store is off")
    assert len(err.splitlines()) == 1
