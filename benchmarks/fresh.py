"""Rows measured in new processes: a persisted index reopened, and resident memory.

Each measurement runs ``child.py`` with ``sys.executable``; the child inherits the
environment (the AWS variables set by ``run.py``) and talks to the shaping proxy, which
counts its requests and bytes as it does for the in-process cells.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cells import PORTABLE, Cell, Target, median_run

from hdfsspec import DEFAULT_OPTIONS

HERE = Path(__file__).parent
CHILD = HERE / "child.py"
PERSISTED = "hdfsspec, persisted index (new process)"
PERSISTED_TARGETS = ("slide_bot", "slide_eot", "slide_empty", "slide_tiff")
STARTUP = 30.0
"""Seconds a child may take beyond the cap (interpreter start and imports)."""


class ChildError(RuntimeError):
    """A child process failed; the message is the last line of its stderr."""


def run_child(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run ``child.py`` with ``spec`` and return the JSON line it prints."""
    proc = subprocess.run(
        [sys.executable, str(CHILD), json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"]
        raise ChildError(lines[-1])
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- persisted index, second open in a new process ----------------------------------------
def persisted_cell(
    proxy: Any, t: Target, workload: str, expected: str, cap: float, repeat: int = 3
) -> Cell:
    """Requests, bytes and seconds of a second cold process reusing a persisted index.

    In a fresh index store, a first child runs the workload and completes the index
    (not recorded); then ``repeat`` children run it again, each measured, each timing
    the local copy too. The row is the child of median seconds, held against the median
    of the local times. Every result's digest must equal ``expected`` (the digest of
    the reference result).
    """
    spec = {
        "mode": "workload",
        "endpoint": proxy.url,
        "key": t.key,
        "workload": workload,
        "params": PORTABLE[workload][1](t),
    }
    measured = {**spec, "local": t.path}  # the local copy, in the measured process only
    cell = Cell(t.name, workload, PERSISTED, 0, 0, 0.0)
    with tempfile.TemporaryDirectory(prefix="hdfsspec-index-") as store:
        spec["index_cache"] = store
        try:
            run_child({**spec, "complete": True}, timeout=max(cap, 60.0) + STARTUP)
        except (ChildError, subprocess.TimeoutExpired) as exc:
            cell.note = f"error building the index: {exc}"[:120]
            return cell
        saved = any(Path(store).rglob("*.idx"))
        runs = []
        for _ in range(max(1, repeat)):
            run = Cell(t.name, workload, PERSISTED, 0, 0, 0.0)
            out = measured_child(proxy, {**measured, "index_cache": store}, cap, run)
            runs.append(_persisted_run(run, out, expected))
            if run.note or run.capped:
                break
    cell = median_run(runs, failed=lambda c: bool(c.note) or c.capped)
    locals_ = sorted(c.local_seconds for c in runs if c.local_seconds is not None)
    cell.local_seconds = locals_[len(locals_) // 2] if locals_ else None
    if not saved and not cell.note:
        cell.note = "no index saved"
    return cell


def _persisted_run(cell: Cell, out: Any, expected: str) -> Cell:
    """Fill one measured run of a persisted-index row from the child's output."""
    if out is None:
        return cell
    cell.seconds = out["seconds"]
    cell.rounds = out["stats"]["rounds"]
    cell.local_seconds = out.get("local_seconds")
    if out["digest"] != expected:
        cell.note = "DIFFERENT VALUES"
    elif out["stats"]["index"]["requests"] or out["stats"]["header"]["requests"] > 1:
        # the open's one GET (size, ETag and the first bytes) is all the header may cost
        cell.note = "header or index fetched again: the persisted index was not used"
    return cell


def measured_child(proxy: Any, spec: dict[str, Any], cap: float, cell: Cell) -> Any:
    """Run a child as a capped cell: fill ``cell`` from the proxy's log; return its output."""
    proxy.log.clear()
    proxy.deadline = time.monotonic() + cap
    t0 = time.perf_counter()
    out = None
    try:
        out = run_child(spec, timeout=cap + STARTUP)
    except subprocess.TimeoutExpired:
        cell.capped = True
    except ChildError as exc:  # a capped child fails on the proxy's 403
        cell.capped = time.monotonic() >= proxy.deadline
        cell.note = "" if cell.capped else f"error: {exc}"[:120]
    finally:
        proxy.deadline = None
    cell.seconds = time.perf_counter() - t0
    entries = list(proxy.log.entries)
    cell.requests, cell.nbytes = len(entries), sum(e[4] for e in entries)
    return out


# -- first region in a new process (issue 19) ----------------------------------------------
FIRST_REGION = "first 512x512 region in a new process"
FIRST_REGION_METHODS = {
    "hdfsspec": "hdfsspec (new process)",
    "wsidicom": "wsidicom + fsspec blockcache 1 MiB (new process)",
}
"""The methods of the first-region rows: the child's ``method`` -> the row's name."""
FIRST_REGION_TARGETS = ("slide_bot", "slide_eot", "slide_tiff", "slide_empty")
REGION_TOLERANCE = 4.0
"""Mean absolute difference (0-255) allowed between the means of 16 x 16 blocks of
wsidicom's region and of the local copy's. wsidicom decodes with Pillow and converts the
colour itself: pixel by pixel its region differs by 1.8 (large slides) to 6 (small) on
average, 1.3 and 0.7 over blocks; the region one tile off differs by 37 to 98 over
blocks. hdfsspec's region must equal the local copy's to the byte."""


def first_region_cells(
    proxy: Any, t: Target, params: dict[str, int], expected: Any, cap: float, repeat: int
) -> list[Cell]:
    """hdfsspec and wsidicom, each reading one 512 x 512 region in new processes.

    ``repeat`` children of each method, in turn (hdfsspec, wsidicom, hdfsspec, ...); the
    row of each method is its child of median seconds (seconds measured inside the child,
    from before the open; requests and bytes counted by the proxy). ``expected`` is the
    local copy's region (an array): hdfsspec's must equal it, wsidicom's be within
    :data:`REGION_TOLERANCE`.
    """
    import numpy as np

    runs: dict[str, list[Cell]] = {m: [] for m in FIRST_REGION_METHODS}
    with tempfile.TemporaryDirectory(prefix="hdfsspec-region-") as tmp:
        for _ in range(max(1, repeat)):
            for method, name in FIRST_REGION_METHODS.items():
                done = runs[method]
                if done and (done[-1].note or done[-1].capped):
                    continue  # a failed method stops
                out_path = str(Path(tmp, f"{method}.npy"))
                spec = {
                    "mode": "region",
                    "method": method,
                    "endpoint": proxy.url,
                    "key": t.key,
                    "params": params,
                    "out": out_path,
                }
                cell = Cell(t.name, FIRST_REGION, name, 0, 0, 0.0)
                out = measured_child(proxy, spec, cap, cell)
                if out is not None:
                    cell.seconds = out["seconds"]
                    cell.rounds = (out["stats"] or {}).get("rounds")
                    got = np.load(out_path)
                    cell.note = _region_note(method, got, expected)
                done.append(cell)
    return [
        median_run(cells, failed=lambda c: bool(c.note) or c.capped) for cells in runs.values()
    ]


def _region_note(method: str, got: Any, expected: Any) -> str:
    """An empty note if the child's region is right, else why not."""
    import numpy as np

    if got.shape != expected.shape:
        return f"DIFFERENT VALUES (shape {got.shape}, expected {expected.shape})"
    if method == "hdfsspec":
        return "" if np.array_equal(got, expected) else "DIFFERENT VALUES"
    diff = float(np.abs(_blocks(got) - _blocks(expected)).mean())
    return "" if diff <= REGION_TOLERANCE else f"DIFFERENT VALUES (block difference {diff:.1f})"


def _blocks(image: Any, size: int = 16) -> Any:
    """Means of the ``size`` x ``size`` blocks of an (H, W, C) image (H, W multiples of it)."""
    h, w, c = image.shape
    return image.reshape(h // size, size, w // size, size, c).mean(axis=(1, 3))


# -- memory ---------------------------------------------------------------------------------
MEMORY_TARGETS = ("slide_bot", "slide_empty")
"""With an offset table, and without (a walk of the items: its windows count too)."""
MEMORY_BOUNDS = (None, 32 * 2**20)
"""Cache bounds measured: the default (256 MiB) and 32 MiB."""
MEMORY_SLACK = 32 * 2**20
"""The target: peak resident memory growth within the cache bound plus this many bytes."""


@dataclass
class Memory:
    """Resident memory of a child reading every frame in order under one cache bound."""

    target: str
    bound: int
    baseline_kib: int
    peak_kib: int
    seconds: float
    note: str = ""

    @property
    def baseline_mb(self) -> float:
        return self.baseline_kib * 1024 / 1e6

    @property
    def peak_mb(self) -> float:
        return self.peak_kib * 1024 / 1e6

    @property
    def growth_mb(self) -> float:
        return self.peak_mb - self.baseline_mb

    @property
    def target_mb(self) -> float:
        """The most the pass may add to the resident memory: the bound + 32 MiB."""
        return (self.bound + MEMORY_SLACK) / 1e6

    @property
    def passed(self) -> bool:
        return not self.note and self.growth_mb <= self.target_mb

    def summary(self) -> str:
        """One line for the console."""
        return (
            f"{self.target}, cache bound {self.bound / 2**20:.0f} MiB: baseline RSS "
            f"{self.baseline_mb:.1f} MB, peak {self.peak_mb:.1f} MB, growth "
            f"{self.growth_mb:.1f} MB; target {self.target_mb:.0f} MB: "
            f"{'pass' if self.passed else 'FAIL'} {self.note}"
        )


def measure_memory(proxy: Any, t: Target, expected_nbytes: int, cap: float) -> list[Memory]:
    """Baseline and peak RSS of a new process reading every frame of ``t``, per cache bound."""
    rows = []
    for bound in MEMORY_BOUNDS:
        spec = {"mode": "memory", "endpoint": proxy.url, "key": t.key, "max_cache_bytes": bound}
        try:
            out = run_child(spec, timeout=cap + STARTUP)
        except (ChildError, subprocess.TimeoutExpired) as exc:
            default = DEFAULT_OPTIONS.max_cache_bytes
            rows.append(Memory(t.name, bound or default, 0, 0, 0.0, f"error: {exc}"[:120]))
            continue
        note = "" if out["nbytes"] == expected_nbytes else "DIFFERENT VALUES"
        rows.append(
            Memory(
                t.name,
                out["max_cache_bytes"],
                out["baseline_kib"],
                out["peak_kib"],
                out["seconds"],
                note,
            )
        )
    return rows


def memory_section(rows: list[Memory], sizes: dict[str, float]) -> list[str]:
    """The "Memory" section of RESULTS.md (``sizes``: MB of each object measured)."""
    objects = ", ".join(f"`{name}` ({mb:.1f} MB)" for name, mb in sizes.items())
    lines = [
        "## Memory",
        "",
        f"A new process opens {objects} through the dicom filesystem and reads every frame "
        "in order with `iter_frames()`, keeping none. Baseline: resident memory (VmRSS) "
        "after the imports and the open; peak: its high-water mark (VmHWM) after the "
        "pass. Target: peak RSS growth within the cache bound (`max_cache_bytes`) + "
        f"{MEMORY_SLACK / 2**20:.0f} MiB, with or without an offset table.",
        "",
        "| object | cache bound | baseline RSS (MB) | peak RSS (MB) | growth (MB) | seconds "
        "| target |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for m in rows:
        note = f" ({m.note})" if m.note else ""
        lines.append(
            f"| {m.target} | {m.bound / 2**20:.0f} MiB{note} | {m.baseline_mb:.1f} | "
            f"{m.peak_mb:.1f} | {m.growth_mb:.1f} | {m.seconds:.2f} | "
            f"{m.target_mb:.0f} MB: {'pass' if m.passed else 'FAIL'} |"
        )
    return lines
