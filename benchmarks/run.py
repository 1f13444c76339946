"""Benchmark: requests, bytes and seconds per workload, hdfsspec beside the baselines.

Objects are served by moto's S3 (server mode) on loopback, behind the shaping proxy
(20 ms round trip, 200 MB/s by default), both in a process of their own (their CPU
is not the client's); large objects are read from their local files by the proxy for
ranged GETs (moto reads a whole object per ranged GET).
Every cell is stopped after ``--cap`` seconds and reported as "> cap".

    python benchmarks/run.py            # full run, writes benchmarks/RESULTS.md
    python benchmarks/run.py --quick    # small data, for a smoke test
    python benchmarks/run.py --only issue19   # issue 19's workloads only (a few minutes)
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

import fsspec  # noqa: E402
from cells import (  # noqa: E402
    PORTABLE,
    WORKLOADS,
    Cell,
    Target,
    digest,
    frames_match,
    frozen_heap,
    hdfsspec_method,
    load_targets,
    local_method,
    lower_bound,
    median_run,
    plain_method,
    region_frames,
)
from child import dicom_filesystem  # noqa: E402
from dask_bench import run_dask  # noqa: E402
from data import FULL, QUICK, SMALL_SLIDE, make_data  # noqa: E402
from fresh import (  # noqa: E402
    FIRST_REGION,
    FIRST_REGION_TARGETS,
    MEMORY_TARGETS,
    PERSISTED_TARGETS,
    Memory,
    first_region_cells,
    measure_memory,
    memory_section,
    persisted_cell,
)
from servers import ServerProcess, settle  # noqa: E402
from targets import check_targets, targets_section  # noqa: E402
from usage import (  # noqa: E402
    GROUPS,
    LOOP_TARGET,
    THREAD_TARGET,
    USAGE,
    Timed,
    openers,
    reference,
    same,
)

from hdfsspec import DicomFile  # noqa: E402

BUCKET = "bench"
EVERY_FRAME = "every frame in order"
WHOLE_GET = "one whole-object GET (s3fs cat_file)"
LOCAL = "local copy (highdicom, no network)"
REGION = "512x512 region"
PERSISTED_REPEAT = 5
"""Measured children per persisted-index row (the median is kept)."""
FIRST_REGION_REPEAT = 5
"""Children per method of the first-region rows (the median is kept)."""
SLOW = 10.0
"""A repeated method whose first run takes longer than this (s) is not run again: the
median of such runs decides no target, and ten of them would take minutes."""
MATRIX = "matrix"
ALL_GROUPS = (MATRIX, *GROUPS, "regions")
ON_DEMAND = ("dask",)
"""Groups run only when ``--only`` names them: ``dask`` (a whole level's mean with
``hdfsspec.to_dask``, one process and a two-worker cluster; ``dask_bench.py``)."""
ISSUE_19 = (*GROUPS, "regions")
"""``--only`` groups: ``matrix`` (issue 4's workloads, the persisted index, memory), issue
19's ``loops``, ``files``, ``threads`` and ``regions`` (the cold region of each slide, its
persisted-index row and the first region in a new process, hdfsspec and wsidicom);
``issue19`` names the last four."""


def run_cell(
    proxy: ServerProcess, opener: Any, work: Any, t: Target, cap: float
) -> tuple[Cell, Any]:
    """Open ``t`` and run ``work`` on it, stopped after ``cap`` s; count the proxy's log."""
    proxy.log.clear()
    deadline = proxy.deadline = time.monotonic() + cap
    result, note, capped, image = None, "", False, None
    with frozen_heap():  # no pass over earlier cells' objects inside this one's time
        t0 = time.perf_counter()
        try:
            image = opener(t)
            result = work(image, t)
        except Exception as exc:  # a capped baseline fails on the proxy's 403; others reported
            # the proxy's clock: the deadline was set before the collection of frozen_heap,
            # so a capped cell's own seconds fall a little short of the cap
            capped = time.monotonic() >= deadline
            note = "" if capped else f"error: {type(exc).__name__}: {exc}"[:120]
        finally:
            seconds = time.perf_counter() - t0
            proxy.deadline = None
            done = len(proxy.log.entries)
            # hdfsspec's own counts: of its file, or of the image's file
            file = image if isinstance(image, DicomFile) else getattr(image, "file", None)
            stats = file.stats if isinstance(file, DicomFile) else None
            close = getattr(image, "close", None)
            if callable(close):
                close()
    entries = settle(proxy)
    cell = Cell(t.name, "", "", len(entries), sum(e[4] for e in entries), seconds, capped, note)
    cell.after = len(entries) - done
    if stats is not None:
        cell.rounds = stats.rounds
        cell.scan_rate = scan_rate(stats.as_dict())
    return cell, result


def scan_rate(stats: dict[str, Any]) -> float | None:
    """Bytes per second of a scan (index phase over 1 MB), from a file's ``stats.as_dict()``."""
    index = stats["index"]
    if index["bytes"] < 1e6 or index["seconds"] <= 0:
        return None
    return float(index["bytes"] / index["seconds"])


def warm_up(proxy: ServerProcess, methods: dict[str, Any], targets: list[Target]) -> None:
    """One unrecorded open per method and kind of object: imports and first-call costs."""
    for t in {t.is_seg: t for t in targets}.values():
        for name, opener in methods.items():
            if "no cache" not in name:  # slow by design; imports are warmed by the others
                run_cell(proxy, opener, WORKLOADS["open + metadata"][0], t, 30.0)


def whole_get(s3: Any) -> Any:
    def work(_: Any, t: Target) -> Any:
        return len(s3.cat_file(t.key))

    return work


def make_methods(s3: Any, dicom: Any) -> dict[str, Any]:
    """The in-process methods by name: openers of a target as a highdicom object."""
    return {
        LOCAL: local_method,
        "hdfsspec": hdfsspec_method(dicom),
        "highdicom + s3fs defaults": plain_method(s3),
        "highdicom + s3fs 500 kB readahead": plain_method(s3, block_size=500_000),
        "highdicom + fsspec blockcache 1 MiB": plain_method(
            s3, cache_type="blockcache", block_size=2**20
        ),
        "highdicom + s3fs no cache": plain_method(s3, cache_type="none"),
    }


def report(cell: Cell) -> Cell:
    """Print one cell as it is measured."""
    rate = f" {cell.rate:.0f} frames/s" if cell.rate else ""
    rate += f" ({cell.after} after the work)" if cell.after else ""
    print(
        f"{cell.target:12} {cell.workload:32} {cell.method:40} {cell.requests:7} "
        f"{cell.nbytes / 1e6:9.2f} MB {cell.seconds:7.2f} s{rate} "
        f"{'CAPPED' if cell.capped else ''}{cell.note}",
        flush=True,
    )
    return cell


@dataclass
class Matrix:
    """What the runs share: the proxy, the methods, the baselines' s3fs and the cap."""

    proxy: ServerProcess
    methods: dict[str, Any]
    s3: Any
    args: Any
    references: dict[tuple[str, str], Any] = field(default_factory=dict)
    """The first result of each (target, workload): the local copy's."""


def run_target(
    m: Matrix, t: Target, workloads: tuple[str, ...] | None = None, methods: Any = None
) -> list[Cell]:
    """Every workload of ``t`` (or of ``workloads``): the lower bound, each method (or each
    of ``methods``), the persisted index."""
    cells: list[Cell] = []
    opened_too_slow: set[str] = set()
    for wname, (_, frames_of) in WORKLOADS.items():
        if (wname.startswith("3 of")) != t.is_seg or (workloads and wname not in workloads):
            continue
        lb = lower_bound(t, frames_of(t), m.args.rtt, m.args.bandwidth)
        cells.append(Cell(t.name, wname, "lower bound", lb[0], lb[1], lb[2]))
        runs = {n: o for n, o in m.methods.items() if methods is None or n in methods}
        if wname == EVERY_FRAME:
            runs[WHOLE_GET] = None
        medians = run_interleaved(m, t, wname, {n: o for n, o in runs.items() if n in REPEATED})
        for mname, opener in runs.items():
            if mname in opened_too_slow:
                note = "open alone exceeds the cap"
                cells.append(report(Cell(t.name, wname, mname, 0, 0, m.args.cap, True, note)))
                continue
            cell = medians.get(mname) or median_cell(wname, mname, [run_once(m, t, wname, opener)])
            if cell.capped and wname == "open + metadata":
                opened_too_slow.add(mname)
            cells.append(report(cell))
        reference = m.references.get((t.name, wname))
        persisted = t.name in PERSISTED_TARGETS and wname in PORTABLE
        if persisted and reference is not None:
            repeat = min(PERSISTED_REPEAT, m.args.repeat)
            cell = persisted_cell(m.proxy, t, wname, digest(reference), m.args.cap, repeat)
            cells.append(report(cell))
    return cells


REPEATED = (LOCAL, "hdfsspec", WHOLE_GET)
"""Methods measured ``--repeat`` times (the run of median seconds is kept): the targets
compare them with each other, so one noisy run must not decide. Their runs alternate
(local, hdfsspec, whole GET, local, ...), so that a slow spell of the machine falls on
all of them alike instead of on the one measured during it."""


def run_interleaved(m: Matrix, t: Target, wname: str, openers: dict[str, Any]) -> dict[str, Cell]:
    """The median cell of each method of ``openers``, their ``--repeat`` runs alternating."""
    runs: dict[str, list[Cell]] = {name: [] for name in openers}
    for _ in range(m.args.repeat):
        for name, opener in openers.items():
            done = runs[name]
            if not done or not (done[-1].capped or done[-1].note):  # a failed method stops
                done.append(run_once(m, t, wname, opener))
    return {name: median_cell(wname, name, cells) for name, cells in runs.items()}


def run_once(m: Matrix, t: Target, wname: str, opener: Any) -> Cell:
    """One run; its result is checked against the reference (the first one measured)."""
    if opener is None:  # the whole-object GET: bytes on the wire, no result to compare
        cell, _ = run_cell(m.proxy, lambda t: None, whole_get(m.s3), t, m.args.cap)
        return cell
    cell, result = run_cell(m.proxy, opener, WORKLOADS[wname][0], t, m.args.cap)
    if not cell.capped and not cell.note:
        reference = m.references.setdefault((t.name, wname), result)
        if reference is not result and not frames_match(result, reference):
            cell.note = "DIFFERENT VALUES"
    return cell


def run_usage(m: Matrix, t: Target, names: tuple[str, ...]) -> list[Cell]:
    """Issue 19's in-process workloads ``names`` on ``t``: the lower bound, then each method.

    The repeated methods of a workload run in turn, ``--repeat`` times (or the workload's
    own ``repeat``), the median kept; one whose first run exceeds ``SLOW`` seconds runs
    once. Every result is compared with the local copy's (computed unmeasured).
    """
    cells: list[Cell] = []
    ops = openers(m.proxy.url, m.s3)
    for wname in names:
        w = USAGE[wname]
        lb = lower_bound(t, w.frames(t), m.args.rtt, m.args.bandwidth)
        cells.append(report(Cell(t.name, wname, "lower bound", lb[0], lb[1], lb[2])))
        expected = reference(wname, t)
        methods: dict[str, Any] = {name: ops[w.kind][name] for name in w.methods}
        if w.whole_get:
            methods[WHOLE_GET] = None
        runs: dict[str, list[Cell]] = {name: [] for name in methods}
        repeat = min(m.args.repeat, w.repeat or m.args.repeat)
        for i in range(repeat):
            for name, opener in methods.items():
                if name not in w.repeated and name != WHOLE_GET:
                    continue
                done = runs[name]
                if i and (done[-1].capped or done[-1].note or done[0].seconds > SLOW):
                    continue
                done.append(usage_once(m, t, w, opener, expected))
        for name, opener in methods.items():
            if not runs[name]:
                runs[name].append(usage_once(m, t, w, opener, expected))
            cells.append(report(median_cell(wname, name, runs[name])))
    return cells


def usage_once(m: Matrix, t: Target, w: Any, opener: Any, expected: Any) -> Cell:
    """One run of an issue-19 workload, its result checked against ``expected``."""
    if opener is None:  # the whole-object GET
        cell, _ = run_cell(m.proxy, lambda t: None, whole_get(m.s3), t, m.args.cap)
        return cell
    cell, result = run_cell(m.proxy, opener, w.work, t, m.args.cap)
    if not cell.capped and not cell.note:
        if isinstance(result, Timed):
            cell.rate, result = result.rate, result.value
        if not same(result, expected):
            cell.note = "DIFFERENT VALUES"
    return cell


def warm_up_usage(m: Matrix, t: Target, names: tuple[str, ...]) -> None:
    """One unrecorded open (and a little work) per opener of ``names``: first-call costs."""
    ops = openers(m.proxy.url, m.s3)

    def little(opened: Any, t: Target) -> Any:
        if hasattr(opened, "get_frame"):
            return opened.get_frame(1)
        return opened.read(2**16)

    kinds = {USAGE[name].kind: USAGE[name].methods for name in names}
    for kind, methods in kinds.items():
        for name in methods:
            run_cell(m.proxy, ops[kind][name], little, t, 30.0)


def run_regions(m: Matrix, targets: list[Target], with_matrix: bool) -> list[Cell]:
    """Issue 19's regions: the cold region and its persisted-index row (unless the matrix
    has them), then the first region in a new process by hdfsspec and by wsidicom."""
    cells: list[Cell] = []
    for t in targets:
        if t.name not in FIRST_REGION_TARGETS:
            continue
        if not with_matrix:
            cells += run_target(m, t, (REGION,), (LOCAL, "hdfsspec"))
        expected = m.references.get((t.name, REGION))
        if expected is None:
            expected = WORKLOADS[REGION][0](local_method(t), t)
        lb = lower_bound(t, region_frames(t), m.args.rtt, m.args.bandwidth)
        cells.append(report(Cell(t.name, FIRST_REGION, "lower bound", lb[0], lb[1], lb[2])))
        repeat = min(FIRST_REGION_REPEAT, m.args.repeat)
        params = PORTABLE[REGION][1](t)
        for cell in first_region_cells(m.proxy, t, params, expected, m.args.cap, repeat):
            cells.append(report(cell))
    return cells


def median_cell(wname: str, mname: str, runs: list[Cell]) -> Cell:
    """The run of median seconds (or the failed run, if one failed), named for its row."""
    cell = median_run(runs)
    cell.workload, cell.method = wname, mname
    return cell


def run_memory(m: Matrix, targets: list[Target]) -> list[Memory]:
    """The memory rows (new processes reading every frame of each memory target)."""
    rows = []
    for t in targets:
        if t.name not in MEMORY_TARGETS:
            continue
        expected = m.references.get((t.name, EVERY_FRAME))
        if expected is None:
            expected = WORKLOADS[EVERY_FRAME][0](local_method(t), t)
        for row in measure_memory(m.proxy, t, expected, m.args.cap):
            print(f"memory: {row.summary()}", flush=True)
            rows.append(row)
    return rows


def parse_groups(parser: Any, only: str) -> tuple[str, ...]:
    """The groups ``--only`` names (``issue19``: its four), in run order."""
    named = {g.strip() for g in only.split(",") if g.strip()}
    if "issue19" in named:
        named = (named - {"issue19"}) | set(ISSUE_19)
    known = (*ALL_GROUPS, *ON_DEMAND)
    unknown = named - set(known)
    if unknown or not named:
        parser.error(f"--only: unknown group(s) {sorted(unknown)}; choose from {known}")
    return tuple(g for g in known if g in named)


def target_names(groups: tuple[str, ...], files: dict[str, Any]) -> set[str]:
    """The objects the groups read (only those are loaded and uploaded)."""
    names: set[str] = set()
    if MATRIX in groups:
        names |= set(files) - {SMALL_SLIDE}
    if "loops" in groups or "files" in groups:
        names.add(LOOP_TARGET)
    if "threads" in groups:
        names.add(THREAD_TARGET)
    if "regions" in groups:
        names |= set(FIRST_REGION_TARGETS)
    if "dask" in groups:
        names.add(SMALL_SLIDE)
    return names & set(files)


def run_issue_19(m: Matrix, targets: list[Target], groups: tuple[str, ...]) -> list[Cell]:
    """Issue 19's groups of ``groups``: loops and files on the small slide, threads on the
    large one, then the regions."""
    by_name = {t.name: t for t in targets}
    cells: list[Cell] = []
    for group, target in (
        ("loops", LOOP_TARGET),
        ("files", LOOP_TARGET),
        ("threads", THREAD_TARGET),
    ):
        if group in groups:
            warm_up_usage(m, by_name[target], GROUPS[group])
            cells += run_usage(m, by_name[target], GROUPS[group])
    if "regions" in groups:
        cells += run_regions(m, targets, MATRIX in groups)
    return cells


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data (about 2 minutes)")
    parser.add_argument(
        "--cap", type=float, default=None, help="seconds per cell (default 60; 5 with --quick)"
    )
    parser.add_argument("--rtt", type=float, default=0.020, help="round trip, s (default 0.020)")
    parser.add_argument("--bandwidth", type=float, default=200e6, help="bytes/s (default 200e6)")
    parser.add_argument(
        "--repeat", type=int, default=9, help=f"runs of {', '.join(REPEATED)} (median kept)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="results file (default: benchmarks/RESULTS.md for a full run; with --only, "
        "benchmarks/data/RESULTS-<groups>.md, out of git)",
    )
    parser.add_argument(
        "--readme", action="store_true", help="also rewrite the summary table of the README"
    )
    parser.add_argument(
        "--only",
        default=",".join(ALL_GROUPS),
        help=f"comma-separated groups of workloads: {', '.join(ALL_GROUPS)}, or issue19 "
        f"({', '.join(ISSUE_19)}); default: all of these; on demand: {', '.join(ON_DEMAND)}",
    )
    args = parser.parse_args(argv)
    groups = parse_groups(parser, args.only)
    if args.readme and MATRIX not in groups:
        parser.error("--readme needs the matrix group")
    args.groups = groups
    if args.out is None:
        partial = HERE / "data" / f"RESULTS-{'-'.join(groups)}.md"
        args.out = HERE / "RESULTS.md" if groups == ALL_GROUPS else partial
    logging.getLogger("highdicom").setLevel(logging.ERROR)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request log
    sizes = QUICK if args.quick else FULL
    if args.cap is None:
        args.cap = 5.0 if args.quick else 60.0
    t_start = time.perf_counter()
    files = make_data(sizes)
    targets = load_targets(files, BUCKET, target_names(groups, files))
    matrix_targets = [t for t in targets if t.name != SMALL_SLIDE] if MATRIX in groups else []
    cells: list[Cell] = []
    local_objects = {f"/{t.key}": str(files[t.name]) for t in targets}
    with ServerProcess(args.rtt, args.bandwidth, local_objects) as proxy:
        direct = fsspec.filesystem("s3", endpoint_url=proxy.endpoint, skip_instance_cache=True)
        direct.mkdir(BUCKET)
        for t in targets:
            direct.pipe_file(t.key, t.local)
        s3 = fsspec.filesystem(  # the baselines' s3fs (its default 10-connection pool)
            "s3", endpoint_url=proxy.url, skip_instance_cache=True, use_listings_cache=False
        )
        dicom = dicom_filesystem(proxy.url, index_cache=False)  # as users build it; cold
        m = Matrix(proxy, make_methods(s3, dicom), s3, args)
        if MATRIX in groups:
            warm_up(proxy, m.methods, matrix_targets)
        elif "regions" in groups:
            region_methods = {n: o for n, o in m.methods.items() if n in (LOCAL, "hdfsspec")}
            warm_up(proxy, region_methods, [t for t in targets if t.name in FIRST_REGION_TARGETS])
        for t in matrix_targets:
            cells += run_target(m, t)
        memory = run_memory(m, matrix_targets)
        cells += run_issue_19(m, targets, groups)
        if "dask" in groups:
            small = next(t for t in targets if t.name == SMALL_SLIDE)
            cells += run_dask(proxy, small, args.rtt, args.bandwidth, min(3, args.repeat))
    checks = check_targets(cells, targets, memory, args.rtt, args.bandwidth)
    for check in checks:
        print(
            f"target {'pass' if check.passed else 'FAIL'}: {check.target} {check.workload}: "
            f"{check.asked}: {check.measured}"
        )
    write_results(args, sizes, targets, cells, memory, time.perf_counter() - t_start, checks)
    if args.readme:
        write_readme_table(cells, args.cap)
    failed = any("DIFFERENT" in c.note or c.note.startswith("error") for c in cells)
    return 1 if failed or any(row.note for row in memory) else 0


README_METHODS = ("lower bound", "hdfsspec", "highdicom + s3fs defaults")
README_WORKLOADS = (
    "open + metadata",
    "512x512 region",
    "every frame in order",
    "3 of 50 segments (get_volume)",
)
"""The README's short table: these rows only; RESULTS.md has every row."""
README_TARGETS = ("slide_bot", "slide_empty", "seg")
MARKERS = ("<!-- benchmark-table:start -->", "<!-- benchmark-table:end -->")


def write_readme_table(cells: list[Cell], cap: float) -> None:
    """Rewrite the README's summary table (between its markers) from ``cells``."""
    rows = [
        "| object | workload | method | requests | MB | seconds |",
        "| --- | --- | --- | ---: | ---: | ---: |",
    ]
    for c in cells:
        chosen = c.target in README_TARGETS and c.workload in README_WORKLOADS
        if chosen and c.method in README_METHODS:
            secs = f"> {cap:.0f}" if c.capped else f"{c.seconds:.2f}"
            rows.append(
                f"| {c.target} | {c.workload} | {c.method} | {c.requests} | "
                f"{c.nbytes / 1e6:.2f} | {secs} |"
            )
    readme = HERE.parent / "README.md"
    text = readme.read_text()
    start, end = text.index(MARKERS[0]) + len(MARKERS[0]), text.index(MARKERS[1])
    readme.write_text(text[:start] + "\n" + "\n".join(rows) + "\n" + text[end:])
    print(f"updated {readme}")


def spread_section(cells: list[Cell]) -> list[str]:
    """The fastest, median and slowest of the repeated runs of each row that has them."""
    lines = [
        "## Spread of the repeated runs",
        "",
        "Seconds of the fastest, median and slowest run of each repeated row: how much "
        "one run moves on this machine, by the same code on the same bytes.",
        "",
        "| object | workload | method | fastest | median | slowest |",
        "| --- | --- | --- | ---: | ---: | ---: |",
    ]
    for c in cells:
        if c.spread is not None:
            lines.append(
                f"| {c.target} | {c.workload} | {c.method} | {c.spread[0]:.2f} | "
                f"{c.seconds:.2f} | {c.spread[1]:.2f} |"
            )
    return lines


def _ratio(value: float, bound: float) -> str:
    return f"{value / bound:.2f}" if bound > 0 else "-"


def write_results(
    args: Any,
    sizes: Any,
    targets: list[Target],
    cells: list[Cell],
    memory: list[Memory],
    total: float,
    checks: list[Any],
) -> None:
    """Write the results (the matrix, then the memory section) to ``args.out``."""
    flags = " --quick" if args.quick else ""
    if args.groups != ALL_GROUPS:
        flags += f" --only {','.join(args.groups)}"
    lines = [
        "# Benchmark results",
        "",
        f"Generated by `python benchmarks/run.py{flags}` in "
        f"{total:.0f} s (2 cores). S3: moto server mode behind the shaping proxy, "
        f"{args.rtt * 1000:.0f} ms round trip, {args.bandwidth / 1e6:.0f} MB/s. "
        f"Cells are stopped after {args.cap:.0f} s.",
        "Requests and bytes are counted on the wire by the proxy (HEAD included); the lower bound "
        "is the header plus the exact bytes of the frames needed, in two round trips.",
        'hdfsspec builds its S3 target itself (`target_protocol="s3"`, 100 connections), '
        'with no persisted index. The rows "persisted index (new process)" are a second '
        "cold process reusing the index a first one saved: requests and bytes of that "
        "process, seconds measured inside it around the open and the workload (see "
        "benchmarks/README.md). Issue 19's rows open hdfsspec by URL, as its documentation "
        'shows (`hdfsspec.imread(url, storage_options=...)`, `fsspec.open("dicom::...")`); '
        "their thread rows give the frames per second of the frames alone, and the rows "
        '"first 512x512 region in a new process" are seconds inside a new child from before '
        "the open (see benchmarks/README.md).",
        "",
        "Objects: "
        + "; ".join(
            f"`{t.name}` {t.index.number_of_frames} frames, {len(t.local) / 1e6:.1f} MB, "
            f"offset table: {t.index.offset_table}"
            for t in targets
        )
        + ".",
        "",
        "| object | workload | method | requests | MB | seconds | req / LB | MB / LB | s / LB |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    bounds = {(c.target, c.workload): c for c in cells if c.method == "lower bound"}
    for c in cells:
        lb = bounds[(c.target, c.workload)]
        secs = f"> {args.cap:.0f}" if c.capped else f"{c.seconds:.2f}"
        note = f" ({c.note})" if c.note else ""
        note += f", {c.rate:.0f} frames/s" if c.rate else ""
        note += f" ({c.after} requests after the work)" if c.after else ""
        lines.append(
            f"| {c.target} | {c.workload} | {c.method}{note} | {c.requests} | {c.nbytes / 1e6:.2f}"
            f" | {secs} | {_ratio(c.requests, lb.requests)} | {_ratio(c.nbytes, lb.nbytes)} | "
            f"{'-' if c.capped else _ratio(c.seconds, lb.seconds)} |"
        )
    persisted = min(PERSISTED_REPEAT, args.repeat)
    lines += ["", *targets_section(checks, args.repeat, persisted), "", *spread_section(cells)]
    if memory:
        sizes_mb = {t.name: len(t.local) / 1e6 for t in targets if t.name in MEMORY_TARGETS}
        lines += ["", *memory_section(memory, sizes_mb)]
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
