"""A differential mutation fuzzer: damaged objects read by hdfsspec and by pydicom.

Each mutant is a file of a small corpus (synthetic files of every layout, and the
files of ``pydicom-data`` where installed) damaged the way storage and uploads damage
objects: cut anywhere or at an item boundary, its Sequence Delimitation Item lost or
swallowed by the last item's length, an item or element length rewritten, bytes
flipped, zeroed, deleted or repeated, an offset table entry or Number of Frames
changed. Every frame is then read through :class:`~hdfsspec.cache.dicom_cache.DicomFrameCache`
(one frame a call, from bytes in memory) and compared with what pydicom extracts
from the same bytes (:func:`reference_frames`).

A mutant's outcome is one of:

* ``same``: every frame hdfsspec returned equals pydicom's (frames it refused with a
  typed error aside: refusing is allowed, serving other bytes is not);
* ``wrong``: a frame whose bytes differ from pydicom's, or bytes where pydicom reads
  no such frame (no Pixel Data, fewer frames, or no data set at all);
* ``untyped``: an exception that is not one of :mod:`hdfsspec.errors`;
* ``runaway``: a request outside the object, or more than a few times its bytes;
* ``hang``: a mutant that took longer than the time bound.

Run ``python -m hdfsspec.testing.fuzz --mutants 100000`` (the long form; ``--seconds``
bounds it in time instead); it prints the counts and exits non-zero on any outcome
but ``same``. The test suite runs a short form.
"""

from __future__ import annotations

import argparse
import io
import logging
import random
import signal
import struct
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "FuzzReport",
    "corpus",
    "expected_frames",
    "fuzz",
    "judge",
    "mutate",
    "read_with_hdfsspec",
    "reference_frames",
]

_ITEM = b"\xfe\xff\x00\xe0"
_DELIMITER = b"\xfe\xff\xdd\xe0"
_LENGTHS = (0xFFFFFFFF, 0xFFFFFFF0, 0x7FFFFFFF, 0x10000, 0xFFFF, 1, 0)
_PATH = "mem://fuzz.dcm"
Mutation = Callable[[bytearray, random.Random], bytearray]


# -- the corpus --------------------------------------------------------------------------
def corpus(pydicom_data: bool = True, max_size: int = 256 * 1024) -> dict[str, bytes]:
    """Synthetic files of every layout and, if installed, pydicom-data's small files."""
    from hdfsspec.testing.builders import build_encapsulated, build_native, fake_jpeg_frames

    frames = fake_jpeg_frames(6, seed=1, min_size=40, max_size=160)
    rng = np.random.default_rng(2)
    out = {
        f"{table}-{per}.dcm": build_encapsulated(
            frames, offset_table=table, fragments_per_frame=per
        )
        for table in ("bot", "empty")
        for per in (1, 3)
    }
    out["eot.dcm"] = build_encapsulated(frames, offset_table="eot")
    out["eot_nolen.dcm"] = build_encapsulated(frames, offset_table="eot-no-lengths")
    out["dual_tiff.dcm"] = build_encapsulated(frames, offset_table="empty", dual_tiff=True)
    out["single.dcm"] = build_encapsulated(frames[:1], offset_table="empty", fragments_per_frame=2)
    out["native.dcm"] = build_native(rng.integers(0, 4096, (4, 6, 5), dtype=np.uint16))
    out["native_bits.dcm"] = build_native(rng.integers(0, 2, (5, 5, 3)) > 0, bits=1)
    if pydicom_data:
        out.update(_pydicom_data(max_size))
    return out


def _pydicom_data(max_size: int) -> dict[str, bytes]:
    """Multi-frame or encapsulated files of pydicom-data of at most ``max_size`` bytes."""
    try:
        import data_store  # the pydicom-data package
    except ImportError:
        return {}
    from pathlib import Path

    out = {}
    for path in sorted(Path(data_store.__file__).parent.rglob("*.dcm")):
        blob = path.read_bytes()
        if len(blob) > max_size or blob[128:132] != b"DICM":
            continue
        try:
            frames = reference_frames(blob)
        except Exception:
            continue  # pydicom cannot read it undamaged: no oracle
        if frames and (len(frames) > 1 or _encapsulated(blob)):
            out[path.name] = blob
    return out


def _encapsulated(blob: bytes) -> bool:
    return b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff" in blob


# -- the oracle --------------------------------------------------------------------------
def _frames_source(blob: bytes) -> tuple[Any, int, bool, Any]:
    """pydicom's data set of ``blob``: the pixel value, Number of Frames, whether it is
    encapsulated, and its Extended Offset Table (or None)."""
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(blob), force=True)
    n = int(ds.get("NumberOfFrames", 1) or 1)
    keyword = next(k for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData") if k in ds)
    if not ds.file_meta.TransferSyntaxUID.is_encapsulated:
        samples = 2 if ds.PhotometricInterpretation == "YBR_FULL_422" else ds.SamplesPerPixel
        bits = ds.Rows * ds.Columns * samples * ds.BitsAllocated
        return (getattr(ds, keyword), bits), n, False, None
    eot = None
    if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
        eot = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
    return getattr(ds, keyword), n, True, eot


def reference_frames(blob: bytes) -> list[bytes]:
    """Encoded frames as pydicom extracts them from ``blob`` (its Extended Offset Table
    used where it has one, as pydicom's pixel decoding does)."""
    from pydicom.encaps import generate_frames

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value, n, encapsulated, eot = _frames_source(blob)
        if encapsulated:
            return list(generate_frames(value, number_of_frames=n, extended_offsets=eot))
        value, bits = value
        return [value[(i * bits) // 8 : ((i + 1) * bits + 7) // 8] for i in range(n)]


def expected_frames(blob: bytes, count: int) -> list[bytes | None]:
    """pydicom's frame ``k`` of ``blob`` for ``k < count``, None where it reads none.

    All frames at once when pydicom finds as many as Number of Frames; otherwise (a
    fragment or table entry damaged) each frame by itself with ``get_frame``, which
    reads one frame through the Basic Offset Table where there is one.
    """
    from pydicom.encaps import get_frame

    out: list[bytes | None] = [None] * count
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            value, n, encapsulated, eot = _frames_source(blob)
        except Exception:
            return out  # no data set, no pixels, an unknown transfer syntax
        try:
            every = reference_frames(blob)
        except Exception:
            every = []
        if len(every) == n or not encapsulated:
            return [every[k] if k < len(every) else None for k in range(count)]
        for k in range(min(count, n)):
            try:
                out[k] = get_frame(value, k, number_of_frames=n, extended_offsets=eot)
            except Exception:
                out[k] = None
    return out


def read_with_hdfsspec(blob: bytes) -> tuple[list[bytes | Exception], list[tuple[int, int]]]:
    """Every frame of ``blob`` through the frame cache, one a call: bytes or the error."""
    from hdfsspec.cache.dicom_cache import DicomFrameCache
    from hdfsspec.errors import DicomFormatError

    log: list[tuple[int, int]] = []

    def fetch(start: int, stop: int) -> bytes:
        log.append((start, stop))
        if not 0 <= start <= stop <= len(blob):
            raise _Runaway(f"request {start}-{stop} outside the {len(blob)}-byte object")
        return blob[start:stop]

    def fetch_ranges(ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        return [fetch(a, b) for a, b in ranges]

    cache = DicomFrameCache(0, fetch, len(blob), fetch_ranges=fetch_ranges, path=_PATH)
    out: list[bytes | Exception] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                n = cache.index.number_of_frames
            except DicomFormatError as exc:
                return [exc], log
            for k in range(n):
                try:
                    out.append(cache.read_frames([k])[0])
                except DicomFormatError as exc:
                    out.append(exc)
    finally:
        cache.close()
    return out, log


class _Runaway(AssertionError):
    """A request outside the object."""


class _Hang(BaseException):
    """The time bound of one mutant ran out."""


# -- mutations ---------------------------------------------------------------------------
def _positions(data: bytearray, what: bytes) -> list[int]:
    out, at = [], data.find(what)
    while at >= 0:
        out.append(at)
        at = data.find(what, at + 1)
    return out


def _cut(data: bytearray, rng: random.Random) -> bytearray:
    return data[: rng.randrange(1, len(data))]


def _cut_at_item(data: bytearray, rng: random.Random) -> bytearray:
    """Cut just before an item header or the delimiter (an interrupted upload)."""
    items = _positions(data, _ITEM) + _positions(data, _DELIMITER)
    return data[: rng.choice(items)] if items else _cut(data, rng)


def _swallow_delimiter(data: bytearray, rng: random.Random) -> bytearray:
    """The last item's length grown over the delimiter (or by a few bytes)."""
    items = _positions(data, _ITEM)
    if not items:
        return _flip(data, rng)
    at = items[-1] + 4
    (length,) = struct.unpack_from("<L", data, at)
    struct.pack_into("<L", data, at, (length + rng.choice((8, 2, 4, 16, -2, -8))) & 0xFFFFFFFF)
    return data


def _item_length(data: bytearray, rng: random.Random) -> bytearray:
    items = _positions(data, _ITEM)
    if not items:
        return _length(data, rng)
    at = rng.choice(items) + 4
    (length,) = struct.unpack_from("<L", data, at)
    value = rng.choice((length + rng.choice((-8, -2, 2, 8)), rng.choice(_LENGTHS)))
    struct.pack_into("<L", data, at, value & 0xFFFFFFFF)
    return data


def _length(data: bytearray, rng: random.Random) -> bytearray:
    pos = rng.randrange(132, max(133, min(len(data), 2048) - 4))
    fmt = rng.choice(("<L", "<H"))
    value = rng.choice(_LENGTHS) & (0xFFFF if fmt == "<H" else 0xFFFFFFFF)
    if pos + struct.calcsize(fmt) <= len(data):
        struct.pack_into(fmt, data, pos, value)
    return data


def _flip(data: bytearray, rng: random.Random) -> bytearray:
    hot = min(len(data), rng.choice((512, 2048, len(data))))
    for _ in range(rng.randint(1, 8)):
        data[rng.randrange(0 if rng.random() < 0.2 else 132, hot)] = rng.randrange(256)
    return data


def _zero(data: bytearray, rng: random.Random) -> bytearray:
    start = rng.randrange(132, len(data)) if len(data) > 133 else 0
    data[start : start + rng.randint(1, 64)] = bytes(min(64, len(data) - start))
    return data


def _delete(data: bytearray, rng: random.Random) -> bytearray:
    start = rng.randrange(132, len(data)) if len(data) > 133 else 0
    del data[start : start + rng.randint(1, 32)]
    return data


def _repeat(data: bytearray, rng: random.Random) -> bytearray:
    start = rng.randrange(132, len(data)) if len(data) > 133 else 0
    piece = data[start : start + rng.randint(1, 32)]
    data[start:start] = piece
    return data


def _table_entry(data: bytearray, rng: random.Random) -> bytearray:
    """A Basic or Extended Offset Table entry (or Length) rewritten."""
    for head in (b"\xe0\x7f\x01\x00OV", b"\xe0\x7f\x02\x00OV"):  # EOT, EOT Lengths
        at = data.find(head)
        if at >= 0 and rng.random() < 0.5:
            (length,) = struct.unpack_from("<L", data, at + 8)
            if length >= 8:
                pos = at + 12 + 8 * rng.randrange(length // 8)
                (value,) = struct.unpack_from("<Q", data, pos)
                struct.pack_into("<Q", data, pos, max(0, value + rng.choice((-8, -2, 2, 8, 256))))
                return data
    items = _positions(data, _ITEM)
    if items and struct.unpack_from("<L", data, items[0] + 4)[0] >= 4:  # a Basic Offset Table
        (length,) = struct.unpack_from("<L", data, items[0] + 4)
        pos = items[0] + 8 + 4 * rng.randrange(length // 4)
        if pos + 4 <= len(data):
            (value,) = struct.unpack_from("<L", data, pos)
            struct.pack_into("<L", data, pos, (value + rng.choice((-8, -2, 2, 8))) & 0xFFFFFFFF)
            return data
    return _item_length(data, rng)


def _frames_count(data: bytearray, rng: random.Random) -> bytearray:
    """Number of Frames (0028,0008) IS value changed, keeping its length."""
    at = data.find(b"\x28\x00\x08\x00IS")
    if at < 0:
        return _flip(data, rng)
    (length,) = struct.unpack_from("<H", data, at + 6)
    old = bytes(data[at + 8 : at + 8 + length]).strip(b" \x00") or b"1"
    value = max(0, int(old) + rng.choice((-2, -1, 1, 2, 10))) if old.isdigit() else 1
    text = str(value).encode().ljust(length)[:length]
    data[at + 8 : at + 8 + length] = text
    return data


MUTATIONS: dict[str, Mutation] = {
    "cut": _cut,
    "cut_at_item": _cut_at_item,
    "swallow_delimiter": _swallow_delimiter,
    "item_length": _item_length,
    "length": _length,
    "flip": _flip,
    "zero": _zero,
    "delete": _delete,
    "repeat": _repeat,
    "table_entry": _table_entry,
    "frames_count": _frames_count,
}


def mutate(blob: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One random kind of damage to ``blob``: ``(kind, damaged bytes)``."""
    kind = rng.choice(sorted(MUTATIONS))
    return kind, bytes(MUTATIONS[kind](bytearray(blob), rng))


# -- one mutant, many ----------------------------------------------------------------------
def judge(blob: bytes, original: bytes | None = None) -> tuple[str, str]:
    """Outcome of reading ``blob`` both ways, and a detail naming what went wrong.

    A frame pydicom reads must be returned as pydicom reads it, or refused. A frame
    pydicom cannot read from ``blob`` (a damaged item or table elsewhere) must be
    refused, unless hdfsspec returns exactly that frame of the undamaged ``original``
    (the outcome is then ``recovered``: the true bytes, vouched for by the tables).
    So may a frame pydicom reads otherwise, when pydicom's is not that frame and
    hdfsspec's is (pydicom groups fragments by a damaged Basic Offset Table).
    """
    from hdfsspec.errors import DicomFormatError

    try:
        got, log = read_with_hdfsspec(blob)
    except _Runaway as exc:
        return "runaway", str(exc)
    except DicomFormatError as exc:  # pragma: no cover - read_with_hdfsspec catches them
        return "same", type(exc).__name__
    except Exception as exc:
        return "untyped", f"{type(exc).__name__}: {exc}"
    fetched = sum(b - a for a, b in log)
    if fetched > 4 * len(blob) + 256 * 1024 or len(log) > 64 * max(1, len(got)):
        return "runaway", f"{len(log)} requests, {fetched} bytes"
    expected = expected_frames(blob, len(got))
    truth: list[tuple[bytes, ...]] | None = None
    outcome = "same"
    for k, frame in enumerate(got):
        if isinstance(frame, Exception):
            continue
        if expected[k] is not None:
            if frame == expected[k]:
                continue
            if truth is None and original is not None:
                truth = _truth(original, blob)
            if (
                truth is None
                or k >= len(truth)
                or frame not in truth[k]
                or expected[k] in truth[k]
            ):
                return "wrong", f"frame {k}: {len(frame)} bytes, pydicom {len(expected[k] or b'')}"
            outcome = "recovered"  # pydicom mis-groups (a damaged table): hdfsspec's is true
            continue
        if truth is None and original is not None:
            truth = _truth(original, blob)
        if truth is None or k >= len(truth) or frame not in truth[k]:
            return "wrong", f"frame {k}: {len(frame)} bytes where pydicom reads none"
        outcome = "recovered"
    return outcome, ""


def _truth(original: bytes, blob: bytes) -> list[tuple[bytes, ...]]:
    """What frame ``k`` of a damaged ``blob`` may be where pydicom reads none of it: the
    undamaged frame, or (damage that moved no byte) the bytes now at its place, since
    damage inside a frame's value is in the file for any reader to find."""
    from hdfsspec.cache.dicom_cache import DicomFrameCache

    frames = reference_frames(original)
    if len(blob) != len(original):
        return [(f,) for f in frames]
    fetch = lambda a, b: original[a:b]  # noqa: E731
    cache = DicomFrameCache(
        0, fetch, len(original), fetch_ranges=lambda r: [fetch(a, b) for a, b in r]
    )
    try:
        cache.read_frames(range(len(frames)))  # the last frame's end, where a BOT lacks it
        index = cache.index
        out: list[tuple[bytes, ...]] = []
        for k, frame in enumerate(frames):
            start, stop = index.frame_range(k)
            here = b"".join(blob[a:b] for a, b in _value_ranges(original, index, start, stop))
            out.append((frame, here[: len(frame)]))
        return out
    finally:
        cache.close()


def _value_ranges(blob: bytes, index: Any, start: int, stop: int) -> list[tuple[int, int]]:
    """The byte ranges of a frame's value: its fragments' values, or its native bytes."""
    if not index.encapsulated:
        return [(start, stop)]
    out, pos = [], start
    while pos < stop:
        (length,) = struct.unpack_from("<L", blob, pos + 4)
        out.append((pos + 8, pos + 8 + length))
        pos += 8 + length
    return out


@dataclass
class FuzzReport:
    """Counts of outcomes, and the first mutants of each bad outcome."""

    mutants: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    examples: list[tuple[str, str, int, str, str]] = field(default_factory=list)

    @property
    def bad(self) -> int:
        """Mutants whose outcome is not ``same`` or ``recovered``."""
        return self.mutants - self.outcomes["same"] - self.outcomes["recovered"]

    def table(self) -> str:
        """A plain-text summary."""
        rows = [f"mutants: {self.mutants} in {self.seconds:.1f} s"]
        rows += [
            f"  {k}: {self.outcomes[k]}" for k in ("same", "wrong", "untyped", "runaway", "hang")
        ]
        rows += ["by damage: " + ", ".join(f"{k} {v}" for k, v in sorted(self.kinds.items()))]
        rows += [f"  {o} {name} seed {s} ({kind}): {d}" for o, name, s, kind, d in self.examples]
        return "\n".join(rows)


def _mutants(files: dict[str, bytes], seed: int) -> Iterator[tuple[str, int, str, bytes]]:
    names, k = sorted(files), 0
    while True:
        name = names[k % len(names)]
        rng = random.Random(f"{seed}-{k}")
        kind, blob = mutate(files[name], rng)
        yield name, k, kind, blob
        k += 1


def fuzz(
    mutants: int | None = 2000,
    seconds: float | None = None,
    seed: int = 0,
    files: dict[str, bytes] | None = None,
    per_mutant: float = 10.0,
) -> FuzzReport:
    """Judge mutants of ``files`` (default :func:`corpus`) until a count or a time runs out.

    ``per_mutant`` bounds one mutant in seconds (SIGALRM, main thread only; elsewhere
    a slow mutant is judged after the fact).
    """
    files = corpus() if files is None else files
    report, began = FuzzReport(), time.monotonic()
    quiet = logging.getLogger("pydicom")  # its warnings on every damaged value
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    alarm = hasattr(signal, "SIGALRM") and _main_thread()
    previous = signal.signal(signal.SIGALRM, _on_alarm) if alarm else None
    try:
        for name, k, kind, blob in _mutants(files, seed):
            if mutants is not None and report.mutants >= mutants:
                break
            if seconds is not None and time.monotonic() - began >= seconds:
                break
            outcome, detail = _judge_bounded(blob, files[name], per_mutant, alarm)
            report.mutants += 1
            report.kinds[kind] += 1
            report.outcomes[outcome] += 1
            if outcome not in ("same", "recovered") and len(report.examples) < 20:
                report.examples.append((outcome, name, k, kind, detail))
    finally:
        quiet.setLevel(level)
        if alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        report.seconds = time.monotonic() - began
    return report


def _judge_bounded(blob: bytes, original: bytes, bound: float, alarm: bool) -> tuple[str, str]:
    began = time.monotonic()
    if alarm:
        signal.setitimer(signal.ITIMER_REAL, bound)
    try:
        outcome = judge(blob, original)
    except _Hang:
        return "hang", f"over {bound} s"
    finally:
        if alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
    if time.monotonic() - began > bound:
        return "hang", f"{time.monotonic() - began:.1f} s"
    return outcome


def _on_alarm(signum: int, frame: Any) -> None:
    raise _Hang()


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: run the fuzzer, print the table, exit 1 on any bad outcome."""
    parser = argparse.ArgumentParser(
        prog="python -m hdfsspec.testing.fuzz", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--mutants", type=int, default=100_000, help="how many (default: %(default)s)"
    )
    parser.add_argument("--seconds", type=float, default=None, help="stop after this long")
    parser.add_argument("--seed", type=int, default=0, help="seed of the mutations (default: 0)")
    parser.add_argument("--synthetic-only", action="store_true", help="leave pydicom-data out")
    args = parser.parse_args(argv)
    report = fuzz(args.mutants, args.seconds, args.seed, corpus(not args.synthetic_only))
    print(report.table())
    return 1 if report.bad else 0


if __name__ == "__main__":
    sys.exit(main())
