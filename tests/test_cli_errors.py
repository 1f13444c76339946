"""The command line's errors, help and version, in-process and through ``python -m hdfsspec``.

Bad arguments: one line on stderr, exit status 2. Errors of hdfsspec and of the
backends: one line ``hdfsspec: error: ...``, a non-zero status, the traceback only
with ``--debug``.
"""

from __future__ import annotations

import json
import subprocess
import sys

import fsspec
import pytest
from conftest import BUCKET, _s3_options

import hdfsspec
from hdfsspec.cli import main, middle_region
from hdfsspec.testing import build_pyramid, build_slide, jpeg_tiles

SLIDE = build_slide(512, 640, tile=64, tiles=jpeg_tiles(3, 64, 3))  # 10 x 8 tiles


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize(
    "argv, says",
    [
        (["demo", "--tile", "0"], "argument --tile: 0 is out of range"),
        (["demo", "--size", "10"], "argument --size: 10 is out of range"),
        (["demo", "--size", "eight"], "'eight' is not an integer"),
        (["demo", "--size", "512", "--tile", "1024"], "--tile 1024 is larger than the slide"),
        (["demo", "-s", "anon=true"], "-s applies to --url"),
        (["region", "x.dcm", "--width", "0", "-o", "a.png"], "argument --width: 0 is out of"),
        (["region", "x.dcm", "--x", "-3", "-o", "a.png"], "argument --x: -3 is out of range"),
        (["region", "x.dcm"], "the following arguments are required: -o/--output"),
        (["frames", "x.dcm", "0"], "frames are numbered from 1"),
        (["frames", "x.dcm", "5-2"], "a range A-B needs A <= B"),
        (["frames", "x.dcm", "two"], "'two' is not a frame number"),
        (["info"], "the following arguments are required: url"),
        (["info", "x.dcm", "-s", "anon"], "'anon' is not KEY=VALUE"),
        (["info", "x.dcm", "-s", "=1"], "'=1' is not KEY=VALUE"),
        (["bogus"], "invalid choice: 'bogus'"),
        ([], "the following arguments are required: COMMAND"),
    ],
)
def test_bad_arguments_are_one_line_and_status_2(capsys, argv, says):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    line = one_line(err)
    assert line.startswith("hdfsspec") and ": error: " in line and says in line


def test_arguments_wrong_for_the_object_are_status_2(capsys, http_server, tmp_path):
    url = http_server.put("cli-errors/slide.dcm", SLIDE)
    out_png = str(tmp_path / "r.png")
    cases = [
        (["region", url, "--x", "600", "-o", out_png], "goes beyond the total pixel matrix"),
        (["frames", url, "81", "-o", str(tmp_path)], "frame 81: the object has 80 frames"),
        (["frames", url, "-o", str(tmp_path)], "give frame numbers or --all"),
    ]
    for argv, says in cases:
        code, out, err = run(capsys, *argv)
        assert code == 2 and out == "", argv
        line = one_line(err)
        assert line.startswith(f"hdfsspec {argv[0]}: error: ") and says in line, line
    assert not (tmp_path / "r.png").exists()


def test_a_level_beyond_the_pyramid(capsys, tmp_path):
    pyramid = build_pyramid(256, 192, levels=2, tile=64, label=False, overview=False)
    folder = tmp_path / "slide"
    folder.mkdir()
    for name, blob in pyramid.items():
        (folder / name).write_bytes(blob)
    code, _, err = run(
        capsys, "region", str(folder), "--level", "2", "-o", str(tmp_path / "x.png")
    )
    assert code == 2 and "--level 2: the slide has 2 levels" in one_line(err)
    assert not (tmp_path / "x.png").exists()


def test_errors_of_hdfsspec_and_of_the_backend_are_one_line(capsys, s3_endpoint, tmp_path):
    s3 = fsspec.filesystem("s3", **_s3_options(s3_endpoint))
    s3.pipe_file(f"{BUCKET}/cli-errors/not.dcm", b"\0" * 4096)
    s3.pipe_file(f"{BUCKET}/cli-errors/cut.dcm", SLIDE[:700])
    endpoint = ["-s", f"endpoint_url={s3_endpoint}"]
    cases = [
        ("missing.dcm", "hdfsspec: error: FileNotFoundError: "),
        ("not.dcm", "hdfsspec: error: NotDicomError: s3://hdfsspec-test/cli-errors/not.dcm: "),
        ("cut.dcm", "hdfsspec: error: TruncatedDicomError: s3://hdfsspec-test/cli-errors/cut"),
    ]
    for name, says in cases:
        url = f"s3://{BUCKET}/cli-errors/{name}"
        code, out, err = run(capsys, "info", url, *endpoint)
        assert code == 1 and out == ""
        line = one_line(err)
        assert line.startswith(says) and line.endswith("(--debug shows why)"), line
    code, out, err = run(capsys, "--debug", "info", f"s3://{BUCKET}/cli-errors/not.dcm", *endpoint)
    assert code == 1 and out == ""
    assert err.startswith("Traceback (most recent call last)")
    assert err.splitlines()[-1].startswith("hdfsspec: error: NotDicomError: ")
    code, _, err = run(capsys, "info", f"s3://{BUCKET}/cli-errors/cut.dcm", *endpoint, "--debug")
    assert code == 1 and "Traceback" in err  # --debug after the subcommand too


def test_help_shows_the_defaults_and_version_the_package_s(capsys):
    code, out, err = run(capsys, "info", "--help")
    assert code == 0 and err == ""
    assert "--region PIXELS" in out and "(default: 512)" in out
    assert "``" not in out  # plain text, not reST
    code, out, _ = run(capsys, "region", "--help")
    assert code == 0 and "--width WIDTH" in out and "(default: 512)" in out
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for command in ("info", "region", "frames", "index", "demo"):
        assert f"    {command} " in out
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out == f"hdfsspec {hdfsspec.__version__}\n"


def test_python_m_hdfsspec(http_server):
    done = subprocess.run(
        [sys.executable, "-m", "hdfsspec", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and done.stdout == f"hdfsspec {hdfsspec.__version__}\n"
    url = http_server.put("cli-errors/subprocess.dcm", SLIDE)
    http_server.log.clear()
    done = subprocess.run(
        [sys.executable, "-m", "hdfsspec", "info", url, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    facts = json.loads(done.stdout)
    assert facts["frames"] == 80 and facts["offset_table"] == "bot"
    fetched = facts["fetched"]
    assert (fetched["requests"], fetched["bytes"]) == (
        http_server.log.requests,
        http_server.log.bytes,
    )
    done = subprocess.run(
        [sys.executable, "-m", "hdfsspec", "info", http_server.url("cli-errors/missing.dcm")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and done.stdout == ""
    assert one_line(done.stderr).startswith("hdfsspec: error: FileNotFoundError")


@pytest.mark.parametrize("rows", [256, 300, 511, 512, 768, 1000, 8192])
@pytest.mark.parametrize("columns", [256, 700, 8192])
def test_the_demo_region_is_inside_the_image_counted_from_1(rows, columns):
    window = middle_region(rows, columns)
    assert 1 <= window["row_start"] < window["row_end"] <= rows + 1
    assert 1 <= window["column_start"] < window["column_end"] <= columns + 1
    assert window["row_end"] - window["row_start"] == min(512, rows)
    assert window["column_end"] - window["column_start"] == min(512, columns)
