"""Benchmark: a whole slide level reduced (its mean) with ``hdfsspec.to_dask``.

One process (dask's threaded scheduler) against a ``distributed.LocalCluster`` of two
worker processes of one thread each, with one tile a chunk and 4 x 4 tiles a chunk;
beside them hdfsspec's ``get_total_pixel_matrix().mean()`` without dask and highdicom on
the local copy. Requests and bytes are counted on the wire by the shaping proxy (every
process's: the workers' too), seconds from the call of ``to_dask`` to the mean. The
cluster is started and warmed (imports, first decode, on another object) before it
is timed, and its workers drop the images they opened between runs, so that every run
is cold: each worker reopens the object (the header's request) and reads the tiles of
its tasks. No persisted index.

    python benchmarks/dask_bench.py                 # the small slide (1,024 tiles)
    python benchmarks/dask_bench.py --repeat 3      # median of 3 runs a row
    python benchmarks/run.py --only dask            # the same rows, in RESULTS-dask.md
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")  # the workers inherit them
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

import numpy as np  # noqa: E402
from cells import Cell, Target, frozen_heap, load_targets, lower_bound, median_run  # noqa: E402
from data import FULL, SMALL_SLIDE, make_data  # noqa: E402
from servers import ServerProcess, settle  # noqa: E402
from usage import storage_options  # noqa: E402

import hdfsspec  # noqa: E402
from hdfsspec.testing import build_slide  # noqa: E402

WORKLOAD = "whole level mean (dask)"
BUCKET = "bench"
GROUPED = (4, 4)
"""Tiles a chunk of the grouped rows (rows, columns)."""
WORKERS = 2


def _drop_images() -> int:
    """In a worker: forget the images reopened for arrays (the next run is cold)."""
    from hdfsspec.dask import OPENED

    with OPENED.lock:
        n = len(OPENED.images)
        OPENED.images.clear()
    return n


def methods(url: str, options: dict[str, Any], client: Any) -> dict[str, Callable[[], float]]:
    """The rows by name: each a call returning the level's mean."""

    def array(group: Any) -> Any:
        return hdfsspec.to_dask(url, options, dtype=np.uint8, tiles_per_chunk=group)

    def on_cluster(group: Any) -> Callable[[], float]:
        def run() -> float:
            client.run(_drop_images)
            return float(client.compute(array(group).mean()).result())

        return run

    def whole() -> float:
        with hdfsspec.imread(url, options) as im:
            return float(im.get_total_pixel_matrix(dtype=np.uint8).mean())

    group = f"{GROUPED[0]}x{GROUPED[1]} tiles a chunk"
    return {
        "hdfsspec get_total_pixel_matrix().mean(), no dask": whole,
        "to_dask, 1 process (threads), 1 tile a chunk": lambda: float(
            array(1).mean().compute(scheduler="threads")
        ),
        f"to_dask, 1 process (threads), {group}": lambda: float(
            array(GROUPED).mean().compute(scheduler="threads")
        ),
        f"to_dask, {WORKERS} workers (processes), 1 tile a chunk": on_cluster(1),
        f"to_dask, {WORKERS} workers (processes), {group}": on_cluster(GROUPED),
    }


def local_mean(t: Target) -> tuple[float, float]:
    """highdicom on the local copy: the mean and its seconds (the reference)."""
    import highdicom as hd

    t0 = time.perf_counter()
    im = hd.imread(io.BytesIO(t.local), lazy_frame_retrieval=True)
    mean = float(im.get_total_pixel_matrix(dtype=np.uint8).mean())
    return mean, time.perf_counter() - t0


def measure(
    proxy: ServerProcess, t: Target, name: str, run: Callable[[], float], ref: float
) -> Cell:
    """One run of a row: the proxy's requests and bytes, the seconds, the value checked."""
    proxy.log.clear()
    note = ""
    with frozen_heap():
        t0 = time.perf_counter()
        try:
            value = run()
        except Exception as exc:  # reported in the row
            value, note = float("nan"), f"error: {type(exc).__name__}: {exc}"[:120]
        seconds = time.perf_counter() - t0
    entries = settle(proxy)
    if not note and not np.isclose(value, ref, rtol=1e-9):
        note = f"DIFFERENT VALUES ({value} != {ref})"
    nbytes = sum(e[4] for e in entries)
    return Cell(t.name, WORKLOAD, name, len(entries), nbytes, seconds, False, note)


def warm_up(proxy: ServerProcess, client: Any, options: dict[str, Any]) -> None:
    """Imports and first calls in this process and the workers, on another object."""
    import fsspec

    s3 = fsspec.filesystem("s3", endpoint_url=proxy.endpoint, skip_instance_cache=True)
    s3.pipe_file(f"{BUCKET}/warm.dcm", build_slide(512, 512, tile=256))
    url = f"s3://{BUCKET}/warm.dcm"
    for run in methods(url, options, client).values():
        run()
    client.run(_drop_images)


def run_dask(
    proxy: ServerProcess, t: Target, rtt: float, bandwidth: float, repeat: int
) -> list[Cell]:
    """The rows of ``t`` (uploaded): the lower bound, the local copy, then each method."""
    import distributed

    options = storage_options(proxy.url)
    url = f"s3://{t.key}"
    lb = lower_bound(t, list(range(t.index.number_of_frames)), rtt, bandwidth)
    cells = [Cell(t.name, WORKLOAD, "lower bound", lb[0], lb[1], lb[2])]
    ref, seconds = local_mean(t)
    cells.append(Cell(t.name, WORKLOAD, "local copy (highdicom, no network)", 0, 0, seconds))
    report(cells[-2]), report(cells[-1])
    with (
        distributed.LocalCluster(
            n_workers=WORKERS,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as cluster,
        distributed.Client(cluster, set_as_default=False) as client,
    ):
        warm_up(proxy, client, options)
        for name, run in methods(url, options, client).items():
            runs = [measure(proxy, t, name, run, ref) for _ in range(repeat)]
            cell = median_run(runs)
            cells.append(report(cell))
    return cells


def report(cell: Cell) -> Cell:
    print(
        f"{cell.target:12} {cell.method:58} {cell.requests:6} {cell.nbytes / 1e6:8.2f} MB "
        f"{cell.seconds:7.2f} s {cell.note}",
        flush=True,
    )
    return cell


def table(cells: list[Cell]) -> list[str]:
    """The rows as a markdown table."""
    lines = [
        "| object | workload | method | requests | MB | seconds |",
        "| --- | --- | --- | ---: | ---: | ---: |",
    ]
    for c in cells:
        note = f" ({c.note})" if c.note else ""
        lines.append(
            f"| {c.target} | {c.workload} | {c.method}{note} | {c.requests} | "
            f"{c.nbytes / 1e6:.2f} | {c.seconds:.2f} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--object", default=SMALL_SLIDE, help="slide_small (default), slide_bot..."
    )
    parser.add_argument("--rtt", type=float, default=0.020)
    parser.add_argument("--bandwidth", type=float, default=200e6)
    parser.add_argument("--repeat", type=int, default=1, help="runs a row (the median kept)")
    parser.add_argument("--out", type=Path, default=HERE / "data" / "RESULTS-dask.md")
    args = parser.parse_args(argv)
    logging.getLogger("highdicom").setLevel(logging.ERROR)
    files = make_data(FULL)
    (t,) = load_targets(files, BUCKET, [args.object])
    with ServerProcess(args.rtt, args.bandwidth, {f"/{t.key}": t.path}) as proxy:
        import fsspec

        direct = fsspec.filesystem("s3", endpoint_url=proxy.endpoint, skip_instance_cache=True)
        direct.mkdir(BUCKET)
        direct.pipe_file(t.key, t.local)
        cells = run_dask(proxy, t, args.rtt, args.bandwidth, args.repeat)
    lines = [
        "# hdfsspec.to_dask: a whole level's mean",
        "",
        f"Generated by `python benchmarks/dask_bench.py` (2 cores). S3: moto behind the shaping "
        f"proxy, {args.rtt * 1000:.0f} ms round trip, {args.bandwidth / 1e6:.0f} MB/s; "
        f"`{t.name}`: {t.index.number_of_frames} tiles, {len(t.local) / 1e6:.1f} MB.",
        "",
        *table(cells),
    ]
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 1 if any(c.note for c in cells) else 0


if __name__ == "__main__":
    sys.exit(main())
