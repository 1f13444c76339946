"""One cold open in a new interpreter, for the benchmark's rows that need a fresh process.

    python benchmarks/child.py '<JSON spec>'

The spec names the ``mode``, the S3 ``endpoint`` (the shaping proxy) and the object's
``key`` (``bucket/name``); credentials come from the environment. The child prints
one JSON line. Its ``seconds`` are measured here, around the open and the work:
interpreter start and imports are left out, and so are (in ``setup``) the first-call
costs of highdicom and the decoders (see :func:`warm_up`) and the creation of the
S3 client.

Modes:

``workload``
    Open the object through the dicom filesystem with ``index_cache`` (a directory),
    run the workload ``workload`` of :data:`cells.PORTABLE` with ``params`` and print
    the result's digest and the file's stats. With ``complete``, the frame index is
    then completed (an object without offset table is walked to its end), so that
    the store holds the whole index.
``memory``
    Open the object (no index store; ``max_cache_bytes`` if given), note the resident
    memory, read every frame in order with ``iter_frames`` keeping none, then print
    the baseline and the peak resident memory (KiB, see :func:`status_kib`) and the
    bytes read.
``region``
    The first region of a new process (issue 19): open the object with ``method``
    (``hdfsspec``: the dicom filesystem, no index store; ``wsidicom``: ``WsiDicom.open``
    of its URL, its s3fs files with fsspec's block cache of 1 MiB blocks, see
    :func:`wsidicom_options`) and read the 512 x 512 region ``params``; print the seconds
    (from before the open), the result's digest, and save the pixels to ``out``
    (``.npy``) for the parent to compare with the local copy's.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import fsspec

import hdfsspec  # registers the dicom protocol


def dicom_filesystem(endpoint: str, **options: Any) -> Any:
    """The dicom filesystem over S3 as a user builds it, its S3 client created up front."""
    fs = fsspec.filesystem(
        "dicom",
        target_protocol="s3",
        target_options={
            "endpoint_url": endpoint,
            "skip_instance_cache": True,
            "use_listings_cache": False,
        },
        skip_instance_cache=True,
        **options,
    )
    fs.fs.connect()  # the client (botocore's service model): no request
    return fs


def status_kib(field: str) -> int:
    """A memory field of ``/proc/self/status`` in KiB (Linux): ``VmRSS`` now, ``VmHWM`` peak.

    The peak is ``VmHWM``, not ``ru_maxrss``: Linux carries ``ru_maxrss`` across
    ``fork`` and ``exec``, so a child's reads the parent's resident memory (the whole
    benchmark's) when that is larger; ``VmHWM`` is this process image's own.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def warm_up() -> None:
    """Pay the first-call costs of highdicom and the decoders on a tiny local slide.

    A new process parses highdicom's tables of the standard on its first open (about
    0.3 s) and loads the JPEG decoder on its first frame. The cells of ``run.py`` have
    paid both in its warm-up; the child pays them here, unmeasured and off the network.
    """
    from cells import read_metadata, read_region, read_stored_frames

    from hdfsspec.testing import build_slide

    with tempfile.TemporaryDirectory(prefix="hdfsspec-warm-") as tmp:
        path = Path(tmp, "warm.dcm")
        path.write_bytes(build_slide(512, 512, tile=256))
        fs = fsspec.filesystem("dicom", index_cache=False, skip_instance_cache=True)
        with hdfsspec.imread(fs.open(str(path))) as image:
            read_metadata(image)
            read_region(
                image, {"row_start": 7, "row_end": 300, "column_start": 5, "column_end": 400}
            )
            read_stored_frames(image, [0, 3])


def run_workload(spec: dict[str, Any]) -> dict[str, Any]:
    """Open, run one workload, digest its result (and complete the index if asked).

    With ``local`` (the object's local file), the same workload also runs on a local
    copy with highdicom: once before (unmeasured, so that both pay the same first-call
    costs of this process), once after, measured as ``local_seconds``.
    """
    from cells import PORTABLE, digest, frozen_heap  # imports highdicom

    read, _ = PORTABLE[spec["workload"]]
    began = time.perf_counter()
    warm_up()
    local = Path(spec["local"]).read_bytes() if spec.get("local") else None
    if local is not None:
        run_local(local, read, spec["params"])
    fs = dicom_filesystem(spec["endpoint"], index_cache=spec["index_cache"])
    with frozen_heap():
        t0 = time.perf_counter()
        with hdfsspec.imread(fs.open(spec["key"])) as image:
            result = read(image, spec["params"])
            seconds = time.perf_counter() - t0
            if spec.get("complete"):
                image.file.index  # noqa: B018  (walks an object without offset table to its end)
            stats = image.file.stats.as_dict()
    out = {"seconds": seconds, "setup": t0 - began, "digest": digest(result), "stats": stats}
    if local is not None:
        out["local_seconds"] = run_local(local, read, spec["params"])
    return out


def run_local(blob: bytes, read: Any, params: Any) -> float:
    """Seconds of the workload on a local copy (highdicom over an in-memory file)."""
    import io

    import highdicom as hd
    from cells import frozen_heap

    with frozen_heap():
        t0 = time.perf_counter()
        read(hd.imread(io.BytesIO(blob), lazy_frame_retrieval=True), params)
        return time.perf_counter() - t0


def run_memory(spec: dict[str, Any]) -> dict[str, Any]:
    """Baseline and peak resident memory around reading every frame in order."""
    options = {"index_cache": False}
    if spec.get("max_cache_bytes") is not None:
        options["max_cache_bytes"] = spec["max_cache_bytes"]
    fs = dicom_filesystem(spec["endpoint"], **options)
    with fs.open(spec["key"]) as f:
        baseline = status_kib("VmRSS")
        t0 = time.perf_counter()
        nbytes = sum(len(data) for _, data in f.iter_frames())
        seconds = time.perf_counter() - t0
        bound = f.cache.options.max_cache_bytes
    peak = status_kib("VmHWM")
    return {
        "baseline_kib": baseline,
        "peak_kib": peak,
        "nbytes": nbytes,
        "seconds": seconds,
        "max_cache_bytes": bound,
    }


def warm_up_wsidicom() -> None:
    """wsidicom's first-call costs (its decoder, its metadata models), on a tiny local slide."""
    from data import smooth_tiles, wsi_slide  # the slides wsidicom opens (Imaged Volume size)
    from wsidicom import WsiDicom

    with tempfile.TemporaryDirectory(prefix="hdfsspec-warm-") as tmp:
        path = Path(tmp, "warm.dcm")
        path.write_bytes(wsi_slide(512, 512, tile=256, tiles=smooth_tiles(2, 256)))
        with WsiDicom.open(path) as slide:
            slide.read_region((5, 7), 0, (395, 293))


WSIDICOM_BLOCK = 2**20
"""fsspec's block cache under wsidicom: 1 MiB blocks."""


def wsidicom_options(endpoint: str) -> dict[str, Any]:
    """wsidicom's ``file_options`` (the s3fs filesystem's): files opened with fsspec's
    ``blockcache`` of 1 MiB blocks.

    wsidicom 0.36 opens a URL through universal-pathlib (``UPath(url, **file_options)``)
    and its filesystem's ``open(path, "rb")``; s3fs takes the cache of those files as
    ``default_cache_type`` and ``default_block_size``.
    """
    return {
        "endpoint_url": endpoint,
        "use_listings_cache": False,
        "default_cache_type": "blockcache",
        "default_block_size": WSIDICOM_BLOCK,
    }


def run_region(spec: dict[str, Any]) -> dict[str, Any]:
    """The first 512 x 512 region of this process, by hdfsspec or by wsidicom."""
    import numpy as np
    from cells import digest, frozen_heap, read_region

    params, method = spec["params"], spec["method"]
    began = time.perf_counter()
    if method == "hdfsspec":
        warm_up()
        fs = dicom_filesystem(spec["endpoint"], index_cache=False)
    else:
        from wsidicom import WsiDicom

        warm_up_wsidicom()
        options = wsidicom_options(spec["endpoint"])
        # the client, as dicom_filesystem makes it (no request); wsidicom's UPath gets
        # this instance from fsspec's instance cache (the same options)
        fs = fsspec.filesystem("s3", **options)
        fs.connect()
    stats = None
    with frozen_heap():
        t0 = time.perf_counter()
        if method == "hdfsspec":
            with hdfsspec.imread(fs.open(spec["key"])) as image:
                result = read_region(image, params)
                seconds = time.perf_counter() - t0
                stats = image.file.stats.as_dict()
        else:
            with WsiDicom.open(f"s3://{spec['key']}", file_options=options) as slide:
                location = (params["column_start"], params["row_start"])
                size = (
                    params["column_end"] - params["column_start"],
                    params["row_end"] - params["row_start"],
                )
                result = np.asarray(slide.read_region(location, 0, size).convert("RGB"))
                seconds = time.perf_counter() - t0
    np.save(spec["out"], result)
    return {"seconds": seconds, "setup": t0 - began, "digest": digest(result), "stats": stats}


MODES = {"workload": run_workload, "memory": run_memory, "region": run_region}


def main(argv: list[str]) -> int:
    spec = json.loads(argv[1])
    print(json.dumps(MODES[spec["mode"]](spec)), flush=True)
    return 0


if __name__ == "__main__":  # the script's directory is on sys.path: cells imports
    sys.exit(main(sys.argv))
