"""Progress of scans of files without offset table: fsspec callbacks, the stderr bar."""

from __future__ import annotations

import fsspec
import pytest
from fsspec.callbacks import Callback

from hdfsspec.cache.progress import ScanProgress
from hdfsspec.testing import build_encapsulated, fake_jpeg_frames

FRAMES = fake_jpeg_frames(300, seed=9, min_size=500, max_size=900)
EMPTY = build_encapsulated(FRAMES, offset_table="empty")


class Recorder(Callback):
    def __init__(self) -> None:
        super().__init__()
        self.steps: list[int] = []

    def call(self, *args, **kwargs) -> None:  # fsspec calls this after each update
        self.steps.append(self.value)


def _open(progress, path="/progress/empty.dcm"):
    mem = fsspec.filesystem("memory")
    mem.pipe_file(path, EMPTY)
    dicom = fsspec.filesystem(
        "dicom",
        fs=mem,
        progress=progress,
        scan_window=16 * 1024,
        scan_concurrency=2,
        first_request=4096,
        skip_instance_cache=True,
    )
    return dicom.open(path)


def test_fsspec_callback_gets_size_and_every_round():
    recorder = Recorder()
    with _open(recorder) as f:
        index = f.index
        header_end = f.header.header_end
        assert recorder.size == len(EMPTY) - header_end
        assert recorder.steps == sorted(recorder.steps) and len(recorder.steps) > 3
        assert recorder.value == recorder.size  # the walk reached the end
        assert f.read_frames([299]) == [FRAMES[299]] and index.number_of_frames == 300


def test_bar_on_stderr_when_asked(capsys):
    with _open(True) as f:
        assert f.index.number_of_frames == 300
    assert "indexing memory:///progress/empty.dcm" in capsys.readouterr().err


@pytest.mark.parametrize("progress", [False, None])
def test_no_bar_when_disabled_or_short(capsys, progress):
    with _open(progress) as f:  # None: a scan shorter than two seconds shows nothing
        assert f.index.number_of_frames == 300
    assert capsys.readouterr().err == ""


def test_default_bar_appears_only_after_the_delay(capsys):
    late = ScanProgress(100, 1100, "late", None, delay=3600)
    late.update(600)
    late.close()
    assert capsys.readouterr().err == ""
    now = ScanProgress(100, 1100, "now", None, delay=0)
    now.update(600)
    now.update(1100)
    now.close()
    assert "now" in capsys.readouterr().err
