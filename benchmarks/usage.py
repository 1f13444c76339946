"""Issue 19's workloads: the library used as people write it ("fast whatever way people read").

Each workload is ``(work(opened, target), methods)``: ``methods`` names the openers it is
measured with (see :func:`openers`). The openers return what the user's code holds: a
highdicom image (the loops, the threads) or an open file (``pydicom.dcmread``, eager
``highdicom.imread`` and the ``read()`` loop); ``run.py`` times the open and the work
together, and closes what the opener returned.

hdfsspec is opened by URL, as its documentation shows: ``hdfsspec.imread("s3://...",
storage_options=...)`` for images, ``fsspec.open("dicom::s3://...", s3=...)`` for files,
each with fsspec's instance cache (a second open reuses the filesystems and their S3
client, as in a user's process) and no persisted index (cold opens).
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import fsspec
import highdicom as hd
import numpy as np
import pydicom
from cells import Target

import hdfsspec

HDFSSPEC = "hdfsspec"
PLAIN_IMAGE = "highdicom + s3fs defaults"
PLAIN_FILE = "plain s3fs file (defaults)"
LOCAL = "local copy (highdicom, no network)"
LOCAL_FILE = "local file (no network)"
WHOLE_GET = "one whole-object GET (s3fs cat_file)"

RAW_LOOP = "get_raw_frame loop"
FRAME_LOOP = "get_frame loop (decoded)"
DCMREAD = "pydicom.dcmread(f)"
EAGER = "eager highdicom.imread(f)"
READ_LOOP = "64 KiB read() loop"
ONE_THREAD = "1 thread single random frames"
EIGHT_THREADS = "8 threads single random frames"

THREAD_FRAMES = 200
"""Random frames read one a call, by 1 or by 8 threads (the same frames)."""
READ_SIZE = 64 * 1024
SAMPLE = 97
"""Every 97th frame's result is kept for the comparison with the reference."""


@dataclass
class Timed:
    """A result and the seconds of the part of the work that is rated (the frames, after
    the open), with the number of frames in it."""

    value: Any
    seconds: float
    count: int

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0


# -- openers ------------------------------------------------------------------------------
Opener = Callable[[Target], Any]


def storage_options(endpoint: str) -> dict[str, Any]:
    """The user's ``storage_options`` for the benchmark's S3 (no persisted index)."""
    return {"s3": {"endpoint_url": endpoint, "use_listings_cache": False}, "index_cache": False}


def openers(endpoint: str, s3: Any) -> dict[str, dict[str, Opener]]:
    """The openers by kind (``image`` or ``file``) and method name."""
    options = storage_options(endpoint)

    def hdfsspec_image(t: Target) -> Any:
        return hdfsspec.imread(f"s3://{t.key}", storage_options=options)

    def hdfsspec_file(t: Target) -> Any:
        return fsspec.open(f"dicom::s3://{t.key}", "rb", **options).open()

    def plain_image(t: Target) -> Any:
        return hd.imread(s3.open(t.key, "rb"), lazy_frame_retrieval=True)

    def local_image(t: Target) -> Any:
        return hd.imread(io.BytesIO(t.local), lazy_frame_retrieval=True)

    return {
        "image": {LOCAL: local_image, HDFSSPEC: hdfsspec_image, PLAIN_IMAGE: plain_image},
        "file": {
            LOCAL_FILE: lambda t: open(t.path, "rb"),  # closed by the runner
            HDFSSPEC: hdfsspec_file,
            PLAIN_FILE: lambda t: s3.open(t.key, "rb"),
        },
    }


# -- workloads ----------------------------------------------------------------------------
def raw_loop(im: Any, t: Target) -> Any:
    """``for i in range(1, n + 1): im.get_raw_frame(i)``: the bytes, every 97th kept."""
    total, kept = 0, []
    for i in range(1, t.index.number_of_frames + 1):
        frame = im.get_raw_frame(i)
        total += len(frame)
        if i % SAMPLE == 1:
            kept.append(frame)
    return total, kept


def frame_loop(im: Any, t: Target) -> Any:
    """``for i in range(1, n + 1): im.get_frame(i)`` (decoded), every 97th frame kept."""
    kept = []
    for i in range(1, t.index.number_of_frames + 1):
        frame = im.get_frame(i)
        if i % SAMPLE == 1:
            kept.append(frame)
    return np.stack(kept)


def dcmread(f: Any, t: Target) -> Any:
    ds = pydicom.dcmread(f)
    return ds.SOPInstanceUID, ds.PixelData


def eager_imread(f: Any, t: Target) -> Any:
    im = hd.imread(f, lazy_frame_retrieval=False)
    return im.SOPInstanceUID, im.PixelData


def read_loop(f: Any, t: Target) -> Any:
    """``while f.read(65536): ...``: the chunks (kept, not joined)."""
    chunks = []
    while chunk := f.read(READ_SIZE):
        chunks.append(chunk)
    return chunks


def thread_frames(t: Target) -> list[int]:
    """The random frames (1-based) read one a call by the thread workloads."""
    rng = np.random.default_rng(19)
    return (rng.choice(t.index.number_of_frames, THREAD_FRAMES, replace=False) + 1).tolist()


def threaded(threads: int) -> Callable[[Any, Target], Timed]:
    """``get_raw_frame`` of single random frames from a pool of ``threads`` threads."""

    def work(im: Any, t: Target) -> Timed:
        frames = thread_frames(t)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            got = list(pool.map(im.get_raw_frame, frames))
        return Timed(got, time.perf_counter() - t0, len(frames))

    return work


@dataclass(frozen=True)
class Workload:
    """One of issue 19's workloads: the work, the kind of opener, the methods measured,
    those repeated (median kept) and the frames of its lower bound."""

    work: Callable[[Any, Target], Any]
    kind: str
    methods: tuple[str, ...]
    repeated: tuple[str, ...]
    frames: Callable[[Target], list[int]]
    whole_get: bool = False
    repeat: int | None = None
    """At most this many runs of the repeated methods (else ``--repeat``)."""


def _every(t: Target) -> list[int]:
    return list(range(t.index.number_of_frames))


def _thread_frames(t: Target) -> list[int]:
    return [f - 1 for f in thread_frames(t)]


IMAGE_METHODS = (LOCAL, HDFSSPEC, PLAIN_IMAGE)
FILE_METHODS = (LOCAL_FILE, HDFSSPEC, PLAIN_FILE)
USAGE: dict[str, Workload] = {
    RAW_LOOP: Workload(raw_loop, "image", IMAGE_METHODS, (LOCAL, HDFSSPEC), _every, True),
    FRAME_LOOP: Workload(
        frame_loop, "image", IMAGE_METHODS, (LOCAL, HDFSSPEC), _every, repeat=3
    ),  # about 9 s a run (the JPEG decoding): three runs
    DCMREAD: Workload(dcmread, "file", FILE_METHODS, (HDFSSPEC, PLAIN_FILE), _every),
    EAGER: Workload(eager_imread, "file", FILE_METHODS, (HDFSSPEC, PLAIN_FILE), _every),
    READ_LOOP: Workload(read_loop, "file", FILE_METHODS, (HDFSSPEC, PLAIN_FILE), _every),
    ONE_THREAD: Workload(threaded(1), "image", (HDFSSPEC,), (HDFSSPEC,), _thread_frames, repeat=3),
    EIGHT_THREADS: Workload(
        threaded(8), "image", (HDFSSPEC,), (HDFSSPEC,), _thread_frames, repeat=3
    ),
}
"""Issue 19's in-process workloads by name."""

LOOP_TARGET = "slide_small"
THREAD_TARGET = "slide_bot"
"""The loops and the files read the small slide (1,024 frames: the slow baselines end in
seconds); the threads read single frames of the large one (a tile server's case)."""
GROUPS: dict[str, tuple[str, ...]] = {
    "loops": (RAW_LOOP, FRAME_LOOP),
    "files": (DCMREAD, EAGER, READ_LOOP),
    "threads": (ONE_THREAD, EIGHT_THREADS),
}
"""The workloads of each ``--only`` group measured in process."""


def reference(name: str, t: Target) -> Any:
    """The expected result of workload ``name`` on ``t``, from the local copy (unmeasured)."""
    w = USAGE[name]
    if w.kind == "file":
        with open(t.path, "rb") as f:
            return w.work(f, t)
    # one thread: highdicom's own objects read through one file position
    work = threaded(1) if name in (ONE_THREAD, EIGHT_THREADS) else w.work
    result = work(hd.imread(io.BytesIO(t.local), lazy_frame_retrieval=True), t)
    return result.value if isinstance(result, Timed) else result


def same(a: Any, b: Any) -> bool:
    """Whether two results of a workload are equal (arrays by value, nested)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return bool(np.array_equal(np.asarray(a), np.asarray(b)))
    if isinstance(a, tuple | list) and isinstance(b, tuple | list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)
