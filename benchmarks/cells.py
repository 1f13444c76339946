"""Methods, workloads and the lower bound of the benchmark matrix."""

from __future__ import annotations

import contextlib
import gc
import hashlib
import io
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import highdicom as hd
import numpy as np
import pydicom

import hdfsspec
from hdfsspec.cache.whole_index import build_index
from hdfsspec.dicom.parse import parse_header

RANDOM_FRAMES = 200


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Collect, then keep the objects already alive out of the collector until the end.

    A measured run pays the collections of its own objects, not a full pass over the
    benchmark process's: the imports, the matrix and earlier cells (375,000 objects in
    a child, about 100 ms a pass here). Such a pass falls into whichever run happens
    to promote the objects that tip CPython's threshold: highdicom's open of the
    24,649-frame slide leaves it about 3,000 promotions away, the local copy's decode
    then promotes fewer, and hdfsspec's 200 concurrent requests more, so without this
    the pass always landed in hdfsspec's run (its 200-frame fetch 0.15 s instead of
    0.06 s), a debt of the open both share. ``gc.freeze()`` for every method alike.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@dataclass
class Cell:
    """One row of the results: a method's requests, bytes and seconds on a workload."""

    target: str
    workload: str
    method: str
    requests: int
    nbytes: int
    seconds: float
    capped: bool = False
    note: str = ""
    rounds: int | None = None
    """Batches of requests (hdfsspec's ``stats.rounds``; the open's GET is one)."""
    scan_rate: float | None = None
    """Bytes per second of hdfsspec's scan of Pixel Data without offset table, if any."""
    local_seconds: float | None = None
    """The same workload on the local copy, measured in the same (child) process."""
    spread: tuple[float, float] | None = None
    """Fastest and slowest of the repeated runs this cell is the median of."""
    rate: float | None = None
    """Frames per second of the rated part of the work (the thread workloads), if any."""
    after: int = 0
    """Requests the proxy saw after the work ended (reads ahead still in flight, or made
    after the close): counted in ``requests`` and ``nbytes``, not in ``seconds``."""


def median_run(runs: list[Cell], failed: Callable[[Cell], bool] = lambda c: bool(c.note)) -> Cell:
    """The run of median seconds among repeated runs of one row, or the last failed one.

    The median run keeps the fastest and slowest seconds of them all (``spread``).
    """
    ordered = sorted(runs, key=lambda c: (failed(c), c.seconds))
    if any(failed(c) for c in ordered):
        return ordered[-1]
    cell = ordered[len(ordered) // 2]
    if len(ordered) > 1:
        cell.spread = (ordered[0].seconds, ordered[-1].seconds)
    return cell


@dataclass
class Target:
    """One object: its key in the bucket, its local copy and what we know of it."""

    name: str
    key: str
    local: bytes
    is_seg: bool
    path: str = ""
    """The local file (what the proxy serves, and the local copy of child processes)."""

    def __post_init__(self) -> None:
        fetch = lambda a, b: self.local[a:b]  # noqa: E731
        parsed = parse_header(fetch, len(self.local))
        self.header_end = parsed.header_end
        self.index, _ = build_index(parsed, lambda r: [fetch(a, b) for a, b in r])
        self.dataset = parsed.dataset


# -- methods: how an object is opened as a highdicom object --------------------------------
Opener = Callable[[Target], Any]


def hdfsspec_method(dicom_fs: Any) -> Opener:
    def open_(t: Target) -> Any:
        reader = hdfsspec.segread if t.is_seg else hdfsspec.imread
        return reader(dicom_fs.open(t.key))

    return open_


def plain_method(s3: Any, **open_kwargs: Any) -> Opener:
    def open_(t: Target) -> Any:
        f = s3.open(t.key, "rb", **open_kwargs)
        reader = hd.seg.segread if t.is_seg else hd.imread
        return reader(f, lazy_frame_retrieval=True)

    return open_


def local_method(t: Target) -> Any:
    reader = hd.seg.segread if t.is_seg else hd.imread
    return reader(io.BytesIO(t.local), lazy_frame_retrieval=True)


# -- workloads ------------------------------------------------------------------------------
def region_args(t: Target) -> dict[str, int]:
    rows, cols = t.dataset.TotalPixelMatrixRows, t.dataset.TotalPixelMatrixColumns
    r, c = rows // 2 - 256 + 37, cols // 2 - 256 + 53  # the middle, not tile aligned
    return {"row_start": r, "row_end": r + 512, "column_start": c, "column_end": c + 512}


def region_frames(t: Target) -> list[int]:
    a = region_args(t)
    tile, cols_t = t.dataset.Rows, -(-t.dataset.TotalPixelMatrixColumns // t.dataset.Columns)
    return [
        r * cols_t + c
        for r in range(a["row_start"] // tile, (a["row_end"] - 1) // tile + 1)
        for c in range(a["column_start"] // tile, (a["column_end"] - 1) // tile + 1)
    ]


def random_frames(t: Target) -> list[int]:
    rng = np.random.default_rng(42)
    return sorted(rng.choice(t.index.number_of_frames, RANDOM_FRAMES, replace=False).tolist())


def seg_segments(t: Target) -> list[int]:
    return [3, 17, 41]


def seg_frames(t: Target) -> list[int]:
    wanted = set(seg_segments(t))
    return [
        i
        for i, item in enumerate(t.dataset.PerFrameFunctionalGroupsSequence)
        if item.SegmentIdentificationSequence[0].ReferencedSegmentNumber in wanted
    ]


def read_metadata(im: Any, _: None = None) -> Any:
    return (im.SOPInstanceUID, im.number_of_frames)


def read_region(im: Any, args: dict[str, int]) -> Any:
    return im.get_total_pixel_matrix(**args)


def read_stored_frames(im: Any, frames: list[int]) -> Any:
    return im.get_stored_frames(frames, as_indices=True)


PORTABLE: dict[str, tuple[Callable[[Any, Any], Any], Callable[[Target], Any]]] = {
    "open + metadata": (read_metadata, lambda t: None),
    "512x512 region": (read_region, region_args),
    f"{RANDOM_FRAMES} random frames": (read_stored_frames, random_frames),
}
"""Workloads a child process can run: ``(read(image, params), params(target))``.

The parameters are plain JSON (no target needed), so a new interpreter runs the
same calls as the matrix does.
"""


def run_metadata(im: Any, t: Target) -> Any:
    return read_metadata(im)


def run_region(im: Any, t: Target) -> Any:
    return read_region(im, region_args(t))


def run_random(im: Any, t: Target) -> Any:
    return read_stored_frames(im, random_frames(t))


def run_all_frames(im: Any, t: Target) -> Any:
    """Raw bytes of every frame, in order, through each method's own API."""
    n = t.index.number_of_frames
    if isinstance(im, hdfsspec.highdicom.readers.DicomImage):
        return sum(len(b) for _, b in im.file.iter_frames())  # one batch fetched ahead
    return sum(len(im.get_raw_frame(i, as_index=True)) for i in range(n))


def run_seg_volume(im: Any, t: Target) -> Any:
    return im.get_volume(segment_numbers=seg_segments(t)).array


WORKLOADS: dict[str, tuple[Callable[[Any, Target], Any], Callable[[Target], list[int]]]] = {
    "open + metadata": (run_metadata, lambda t: []),
    "512x512 region": (run_region, region_frames),
    f"{RANDOM_FRAMES} random frames": (run_random, random_frames),
    "every frame in order": (run_all_frames, lambda t: list(range(t.index.number_of_frames))),
    "3 of 50 segments (get_volume)": (run_seg_volume, seg_frames),
}


def lower_bound(
    t: Target, frames: list[int], rtt: float, bandwidth: float
) -> tuple[int, int, float]:
    """Requests, bytes and seconds of the ideal client: the header, then exact frame ranges.

    The header (with its offset table) is one request; the frames' exact item
    ranges, merged where they touch, go in one concurrent round.
    """
    index = t.index
    ranges: list[list[int]] = []
    for f in sorted(set(frames)):
        a, b = index.frame_range(f)
        b = b if b >= 0 else t.index.size
        if ranges and ranges[-1][1] == a:
            ranges[-1][1] = b
        else:
            ranges.append([a, b])
    nbytes = t.header_end + sum(b - a for a, b in ranges)
    rounds = 1 + (1 if ranges else 0)
    return 1 + len(ranges), nbytes, rounds * rtt + nbytes / bandwidth


def load_targets(
    files: dict[str, Any], bucket: str, names: Iterable[str] | None = None
) -> list[Target]:
    """The targets of ``files`` (those of ``names`` only, if given)."""
    out = []
    wanted = set(files) if names is None else set(names)
    for name, path in files.items():
        if name not in wanted:
            continue
        blob = path.read_bytes()
        out.append(Target(name, f"{bucket}/{path.name}", blob, name == "seg", str(path)))
    return out


def digest(result: Any) -> str:
    """SHA-256 of a workload's result (an array's dtype, shape and bytes; else its JSON)."""
    if isinstance(result, np.ndarray):
        head = f"{result.dtype.str}{result.shape}".encode()
        return hashlib.sha256(head + np.ascontiguousarray(result).tobytes()).hexdigest()
    return hashlib.sha256(json.dumps(result, default=str).encode()).hexdigest()


def frames_match(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return bool(np.array_equal(np.asarray(a), np.asarray(b)))
    return bool(a == b)


__all__ = [
    "PORTABLE",
    "WORKLOADS",
    "Cell",
    "Target",
    "digest",
    "hdfsspec_method",
    "load_targets",
    "local_method",
    "lower_bound",
    "plain_method",
    "pydicom",
]
