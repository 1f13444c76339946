"""The demo command: every method reads the same pixels, hdfsspec with the fewest bytes."""

from __future__ import annotations

import io

import numpy as np

import hdfsspec
from hdfsspec.cli import demo, main
from hdfsspec.testing import build_native


def test_demo_reads_the_same_pixels_with_fewer_bytes():
    out = io.StringIO()
    assert demo(size=2048, tile=256, out=out) == 0
    lines = out.getvalue().splitlines()
    assert lines[-1] == "same pixels from every method: yes"
    rows = [line.split() for line in lines if "hdfsspec.imread" in line or "fsspec http" in line]
    assert len(rows) == 6  # three methods, two layouts
    megabytes = [float(row[-2]) for row in rows]
    for layout in (megabytes[:3], megabytes[3:]):  # hdfsspec first, then the baselines
        assert layout[0] < min(layout[1:])


def test_main_runs_the_demo(capsys):
    assert main(["demo", "--size", "1024"]) == 0
    assert "same pixels from every method: yes" in capsys.readouterr().out


def test_demo_on_one_s_own_object(http_server):
    """``demo --url``: the same region of one's own slide, each method's requests counted
    by the client; together they are the server's (with the open that checks the image)."""
    from hdfsspec.cli import demo_url
    from hdfsspec.testing import build_slide, jpeg_tiles

    slide = build_slide(2048, 1536, tile=256, tiles=jpeg_tiles(4, 256, 3))
    url = http_server.put("demo/own.dcm", slide)
    http_server.log.clear()
    with hdfsspec.imread(url, {"index_cache": False}) as im:
        assert im.is_tiled  # what demo_url checks first
    probe = http_server.log.requests
    http_server.log.clear()
    out = io.StringIO()
    assert demo_url(url, {}, out) == 0
    lines = out.getvalue().splitlines()
    assert lines[-1] == "same pixels from every method: yes"
    rows = [line.split() for line in lines if line.startswith("your object")]
    assert [" ".join(r[2:-3]) for r in rows] == [
        "hdfsspec.imread (dicom::)",
        "highdicom + fsspec http (default 5 MiB blocks)",
        "highdicom + fsspec http (500 kB blocks)",
    ]
    requests = [int(r[-3]) for r in rows]
    assert http_server.log.requests == probe + sum(requests)
    megabytes = [float(r[-2]) for r in rows]
    assert megabytes[0] < min(megabytes[1:])


def test_main_runs_the_demo_of_one_s_own_object(capsys, http_server):
    from hdfsspec.testing import build_slide, jpeg_tiles

    url = http_server.put(
        "demo/main.dcm", build_slide(768, 768, tile=256, tiles=jpeg_tiles(2, 256, 3))
    )
    assert main(["demo", "--url", url]) == 0
    assert "same pixels from every method: yes" in capsys.readouterr().out
    assert main(["demo", "--url", url, "--size", "300"]) == 0  # the sample's options: unused
    not_tiled = http_server.put("demo/native.dcm", build_native(np.zeros((2, 4, 4), np.uint8)))
    assert main(["demo", "--url", not_tiled]) == 2
    assert "demo --url reads a region of a tiled image" in capsys.readouterr().err
