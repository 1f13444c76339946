"""The demo command: every method reads the same pixels, hdfsspec with the fewest bytes."""

from __future__ import annotations

import io

from hdfsspec.cli import demo, main


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
