"""Soak: hdfsspec and plain s3fs reading through a faulty proxy in front of moto's S3.

::

    python -m hdfsspec.testing.soak --seconds 120 --seed 1

Each scenario (a fault mix, see :data:`SCENARIOS`) runs for its share of the time.
Operations alternate between two clients, each reading through a
:class:`~hdfsspec.testing.ShapingProxy` of its own with the same seeded
:class:`~hdfsspec.testing.faults.FaultPlan`:

``hdfsspec``
    opens the object (``dicom`` filesystem over s3fs: one GET, then signed reads),
    reads a few random frames, then a few more;
``s3fs``
    plain ``S3FileSystem.cat_ranges`` of the same header range and frames, in the
    same two batches.

In the ``replaced`` scenario the object is overwritten by another of the same size
(the same layout, other frame bytes) between the two batches of every other
operation. An operation is a success when every byte equals one version of the
object, ``wrong`` when it returned other bytes, ``typed`` when it raised an error of
the client's own kinds (for hdfsspec: :class:`~hdfsspec.errors.TransportError`, the
DICOM errors among which :class:`~hdfsspec.errors.ObjectChangedError`,
``FileNotFoundError`` and ``PermissionError``; for s3fs: an ``OSError``), ``untyped``
for any other error, and a ``hang`` when it had not ended after ``deadline`` seconds.
The command prints a table and exits with 1 when hdfsspec had a wrong byte, an
untyped error or a hang, or fewer successes than s3fs where bodies were reset or cut.

It lives in :mod:`hdfsspec.testing` (not ``benchmarks/``) so that the test suite runs
a short form of it (``tests/test_faults.py``) and users can run it against their
installed version.
"""

from __future__ import annotations

import argparse
import functools
import logging
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

from hdfsspec.errors import DicomFormatError, TransportError
from hdfsspec.testing.builders import build_encapsulated, fake_jpeg_frames
from hdfsspec.testing.faults import Fault, FaultPlan
from hdfsspec.testing.proxy import ShapingProxy
from hdfsspec.testing.servers import moto_s3

__all__ = ["SCENARIOS", "Report", "Row", "main", "soak"]

BUCKET = "hdfsspec-soak"
KEY = f"{BUCKET}/slide.dcm"
FIRST = 4096  # the open's first request: the header and its offset table
STALL = 3.0  # a stall, longer than the clients' read timeout
TIMEOUT = 2.0  # the clients' connect and read timeouts

SCENARIOS: dict[str, dict[str, Any]] = {
    "5xx 10%": {"status": 0.1},
    "5xx 50%": {"status": 0.5},
    "resets 10%": {"reset": 0.1},
    "short 10%": {"short": 0.1},
    "truncated 10%": {"truncate": 0.1},
    "stall": {"stall": Fault(0.05, limit=2)},
    "403 once": {"forbid": Fault(1.0, limit=1, after=1)},
    "replaced": {},
}
"""The fault mixes: :class:`~hdfsspec.testing.faults.FaultPlan` arguments by name."""
CUT = ("resets 10%", "short 10%")
"""Scenarios where hdfsspec must succeed at least as often as s3fs."""
CLIENTS = ("hdfsspec", "s3fs")


@dataclass
class Row:
    """What one client met in one scenario."""

    scenario: str
    client: str
    operations: int = 0
    successes: int = 0
    typed: int = 0
    wrong: int = 0
    untyped: int = 0
    hangs: int = 0
    seconds: float = 0.0
    faults: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)


@dataclass
class Report:
    """The rows of a soak, by scenario and client."""

    rows: list[Row] = field(default_factory=list)

    def row(self, scenario: str, client: str) -> Row:
        """The row of ``client`` in ``scenario``."""
        return next(r for r in self.rows if (r.scenario, r.client) == (scenario, client))

    def problems(self) -> list[str]:
        """What makes the soak fail: hdfsspec's wrong bytes, untyped errors and hangs, and
        fewer successes than s3fs where bodies were reset or cut short."""
        out = []
        for r in self.rows:
            if r.client != "hdfsspec":
                continue
            for what in ("wrong", "untyped", "hangs"):
                if getattr(r, what):
                    out.append(f"{r.scenario}: hdfsspec had {getattr(r, what)} {what}")
            if r.scenario in CUT:
                other = self.row(r.scenario, "s3fs")
                if r.successes / max(1, r.operations) < other.successes / max(1, other.operations):
                    out.append(f"{r.scenario}: hdfsspec succeeded less often than s3fs")
        return out

    def table(self) -> str:
        """The report as a fixed-width table."""
        head = ("scenario", "client", "ops", "ok", "typed", "wrong", "untyped", "hangs", "s")
        lines = ["{:<14} {:<9} {:>5} {:>5} {:>6} {:>6} {:>8} {:>6} {:>6}  faults".format(*head)]
        for r in self.rows:
            faults = ", ".join(f"{k} {v}" for k, v in sorted(r.faults.items())) or "-"
            errors = ", ".join(f"{k} {v}" for k, v in sorted(r.errors.items()))
            lines.append(
                f"{r.scenario:<14} {r.client:<9} {r.operations:>5} {r.successes:>5} "
                f"{r.typed:>6} {r.wrong:>6} {r.untyped:>8} {r.hangs:>6} {r.seconds:>6.1f}  "
                f"{faults}" + (f"  [{errors}]" if errors else "")
            )
        return "\n".join(lines)


class _Object:
    """The slide in two versions of the same size and layout, and its frames' ranges."""

    def __init__(self, seed: int) -> None:
        frames = fake_jpeg_frames(64, seed=seed, min_size=2000, max_size=4000)
        self.blobs = [build_encapsulated(frames, offset_table="bot")]
        changed = bytearray(self.blobs[0])
        self.ranges = []
        for frame in frames:
            at = self.blobs[0].index(frame)
            self.ranges.append((at, at + len(frame)))
            changed[at + 2 : at + len(frame) - 2] = bytes(b ^ 0x5A for b in frame[2:-2])
        self.blobs.append(bytes(changed))
        self.current = 0

    def frames(self, version: int, which: Sequence[int]) -> list[bytes]:
        blob = self.blobs[version]
        return [blob[a:b] for a, b in (self.ranges[i] for i in which)]

    def matches(self, got: list[bytes], which: Sequence[int], header: bytes | None) -> bool:
        """Whether ``got`` (and ``header``) are the bytes of one version."""
        return any(
            got == self.frames(v, which) and (header is None or header == self.blobs[v][:FIRST])
            for v in (0, 1)
        )


def _options(endpoint: str) -> dict[str, Any]:
    return {
        "endpoint_url": endpoint,
        "key": "testing",
        "secret": "testing",
        "skip_instance_cache": True,
        "use_listings_cache": False,
        "config_kwargs": {"connect_timeout": TIMEOUT, "read_timeout": TIMEOUT},
    }


def _hdfsspec_op(fs: Any, obj: _Object, first: list[int], then: list[int], hook: Any) -> Any:
    with fs.open(KEY) as f:
        got = f.read_frames(first)
        hook()
        return None, got + f.read_frames(then)


def _s3fs_op(fs: Any, obj: _Object, first: list[int], then: list[int], hook: Any) -> Any:
    def cat(which: list[int], header: bool) -> list[Any]:
        spans = ([(0, FIRST)] if header else []) + [obj.ranges[i] for i in which]
        out = fs.cat_ranges([KEY] * len(spans), [a for a, _ in spans], [b for _, b in spans])
        failed = [x for x in out if isinstance(x, BaseException)]
        if failed:
            raise failed[0]
        return list(out)

    head, *got = cat(first, True)
    hook()
    return head, got + cat(then, False)


def _nothing() -> None:
    pass


def _replacer(store: Any, obj: _Object, count: Counter[str], client: str) -> Callable[[], None]:
    """Write the other version of the object over it (directly, not through a proxy)."""

    def replace() -> None:
        obj.current = 1 - obj.current
        store.pipe_file(KEY, obj.blobs[obj.current])
        count[client] += 1

    return replace


_HDFSSPEC_TYPED = (TransportError, DicomFormatError, FileNotFoundError, PermissionError)


def _typed(client: str, error: BaseException) -> bool:
    if client == "s3fs":
        return isinstance(error, OSError)  # s3fs's translation of its errors
    return isinstance(error, _HDFSSPEC_TYPED)


def _run(op: Callable[[], Any], deadline: float) -> tuple[str, Any]:
    """Run ``op`` in a thread of its own: ``("done", result)``, ``("error", exc)`` or
    ``("hang", None)`` if it has not ended after ``deadline`` seconds (left running)."""
    box: list[tuple[str, Any]] = []

    def target() -> None:
        try:
            box.append(("done", op()))
        except Exception as exc:
            box.append(("error", exc))

    thread = threading.Thread(target=target, daemon=True, name="soak-op")
    thread.start()
    thread.join(deadline)
    return box[0] if box else ("hang", None)


@contextmanager
def _clients(endpoint: str) -> Iterator[dict[str, tuple[ShapingProxy, Any]]]:
    """Per client: a proxy of its own, and the filesystem reading through it (made once:
    an s3fs client costs a few tenths of a second)."""
    import fsspec

    with ExitStack() as stack:
        out: dict[str, tuple[ShapingProxy, Any]] = {}
        for client in CLIENTS:
            proxy = stack.enter_context(ShapingProxy(endpoint))
            options = _options(proxy.url)
            if client == "hdfsspec":
                fs = fsspec.filesystem(
                    "dicom",
                    target_protocol="s3",
                    target_options=options,
                    skip_instance_cache=True,
                    index_cache=False,
                    first_request=FIRST,
                )
            else:
                fs = fsspec.filesystem("s3", **options)
            out[client] = (proxy, fs)
        yield out


def _scenario(
    name: str,
    clients: dict[str, tuple[ShapingProxy, Any]],
    store: Any,
    obj: _Object,
    seconds: float,
    seed: int,
    frames: int,
    deadline: float,
) -> list[Row]:
    """Run one scenario for ``seconds``: operations of the clients in turn."""
    obj.current = 0
    store.pipe_file(KEY, obj.blobs[0])
    rows = {c: Row(name, c) for c in CLIENTS}
    replaced: Counter[str] = Counter()
    rng = random.Random(seed)
    for proxy, _ in clients.values():
        proxy.log.clear()
        proxy.faults = FaultPlan(seed, stall_seconds=STALL, **SCENARIOS[name])
    began, n = time.monotonic(), 0
    while n == 0 or time.monotonic() - began < seconds:
        which = rng.sample(range(len(obj.ranges)), 2 * frames)
        first, then = which[:frames], which[frames:]
        swap = name == "replaced" and n % 2 == 0  # the other version, same size, mid-op
        for client in CLIENTS:
            hook = _replacer(store, obj, replaced, client) if swap else _nothing
            read = _hdfsspec_op if client == "hdfsspec" else _s3fs_op
            t0 = time.monotonic()
            op = functools.partial(read, clients[client][1], obj, first, then, hook)
            state, value = _run(op, deadline)
            row = rows[client]
            row.seconds += time.monotonic() - t0
            row.operations += 1
            if state == "hang":
                row.hangs += 1
            elif state == "error":
                row.errors[type(value).__name__] += 1
                row.typed += _typed(client, value)
                row.untyped += not _typed(client, value)
            elif obj.matches(value[1], first + then, value[0]):
                row.successes += 1
            else:
                row.wrong += 1
        n += 1
    for client in CLIENTS:
        proxy = clients[client][0]
        proxy.faults = None
        rows[client].faults = Counter(proxy.log.faults) + Counter(replaced=replaced[client])
    return [rows[c] for c in CLIENTS]


def soak(
    seconds: float,
    seed: int = 0,
    scenarios: Sequence[str] | None = None,
    endpoint: str | None = None,
    frames: int = 4,
    deadline: float = 60.0,
) -> Report:
    """Run the scenarios for ``seconds`` in all (an equal share each); see the module.

    Parameters
    ----------
    seconds : float
        The soak's length (each scenario runs at least one operation per client).
    seed : int
        Seed of the fault plans and of the frames read.
    scenarios : sequence of str, optional
        Names of :data:`SCENARIOS` (all by default).
    endpoint : str, optional
        A moto S3 server's URL on loopback (one is started when None).
    frames : int
        Frames an operation reads in each of its two batches.
    deadline : float
        Seconds after which an operation counts as a hang.
    """
    import fsspec

    names = list(scenarios or SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise ValueError(f"unknown scenarios {unknown}: choose among {list(SCENARIOS)}")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    obj = _Object(seed)
    report = Report()
    with ExitStack() as stack:
        if endpoint is None:
            endpoint = stack.enter_context(moto_s3())
        store = fsspec.filesystem("s3", **_options(endpoint))  # writes: not through a proxy
        if not store.exists(BUCKET):
            store.mkdir(BUCKET)
        store.pipe_file(KEY, obj.blobs[0])
        clients = stack.enter_context(_clients(endpoint))
        for client in CLIENTS:  # warm: the clients' sessions are made outside the timing
            read = _hdfsspec_op if client == "hdfsspec" else _s3fs_op
            read(clients[client][1], obj, [0], [1], _nothing)
        share = seconds / len(names)
        for name in names:
            report.rows.extend(_scenario(name, clients, store, obj, share, seed, frames, deadline))
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: run the soak, print the table, 1 on a problem."""
    parser = argparse.ArgumentParser(
        prog="python -m hdfsspec.testing.soak",
        description=(__doc__ or "").split("\n", 1)[0],
        epilog="Exits with 1 on a wrong byte, an untyped error or a hang of hdfsspec, or "
        "fewer successes than plain s3fs where bodies are reset or cut short.",
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the soak")
    parser.add_argument("--seed", type=int, default=0, help="seed of the faults and reads")
    parser.add_argument(
        "--scenario", action="append", choices=list(SCENARIOS), help="run only these"
    )
    args = parser.parse_args(argv)
    import os

    os.environ.setdefault("HDFSSPEC_INDEX_CACHE", "off")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(name, "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    report = soak(args.seconds, args.seed, args.scenario)
    print(report.table())
    problems = report.problems()
    for problem in problems:
        print("FAIL:", problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
