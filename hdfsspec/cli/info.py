"""``hdfsspec info URL``: what the object is, and what reading it would cost.

It reads the header (and the offset tables an open reads), then plans, without
fetching a frame, a region at the top left of the image (512 x 512 pixels, or the
whole image if smaller; the first frame of an image that is not tiled) and every
frame. Without an offset table the frames a walk of the items has not reached are
not located: the plans count them apart (``hdfsspec index`` locates them all, once).
The last line says what ``info`` itself fetched.
"""

from __future__ import annotations

import argparse
import json
from typing import IO, Any

from hdfsspec.cli.options import positive_int, source_options
from hdfsspec.cli.report import count, fetched, plain, plural, uid_name
from hdfsspec.dicom.parse import ParsedHeader, number_of_frames
from hdfsspec.file import DicomFile
from hdfsspec.io.planning import FetchPlan
from hdfsspec.io.redact import redact_url
from hdfsspec.sources import open_dicom

__all__ = ["add_parser", "describe_object", "run"]

TABLES = {
    "bot": "Basic Offset Table",
    "eot": "Extended Offset Table",
    "tiff": "TIFF tile table (a dual DICOM-TIFF file)",
    "scan": "none (the frames are located by walking the items of the Pixel Data)",
    "native": "none needed (native pixels: every frame at a known offset)",
    "none": "none (no Pixel Data)",
}
"""What each kind of frame index says of the object's offset table."""


def add_parser(sub: Any, parents: list[argparse.ArgumentParser], **kwargs: Any) -> None:
    """Add the ``info`` subcommand to ``sub``."""
    parser = sub.add_parser(
        "info",
        parents=parents,
        help="what the object is, and what reading a region or every frame costs",
        description=plain(__doc__),
        **kwargs,
    )
    parser.add_argument("--json", action="store_true", help="print the facts as JSON")
    parser.add_argument(
        "--region",
        type=positive_int,
        default=512,
        metavar="PIXELS",
        help="side of the square region at the top left whose cost is planned",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, out: IO[str]) -> int:
    """Print the facts of ``args.url``."""
    facts = describe_object(args.url, source_options(args), args.region)
    if args.json:
        json.dump(facts, out, indent=2)
        out.write("\n")
    else:
        out.write(as_text(facts))
    return 0


def describe_object(url: str, storage_options: dict[str, Any], side: int = 512) -> dict[str, Any]:
    """The facts ``info`` prints, as plain values (see :func:`as_text`)."""
    f = open_dicom(url, storage_options)
    try:
        parsed = f.header
        facts = _facts(url, f, parsed)
        pixels = parsed.header.pixel_data_offset is not None
        if pixels:
            facts["every_frame"] = _cost(f.plan(range(number_of_frames(parsed))))
        layout = f.cache.layout  # after a plan: it reads the offset tables
        known = layout.known()
        kind = "scan" if layout.scan is not None else known.offset_table if known else "none"
        facts["offset_table"] = kind
        facts["index_from_store"] = bool(layout.stored)
        if pixels:  # last: a failed imread closes f
            facts["region"] = _region_cost(f, facts, side)
    finally:
        f.close()
    facts["fetched"] = f.stats.as_dict()  # after the close, which may check the version
    return facts


def _facts(url: str, f: DicomFile, parsed: ParsedHeader) -> dict[str, Any]:
    ds = parsed.dataset
    meta = getattr(ds, "file_meta", None)
    sop = ds.get("SOPClassUID") or (meta.get("MediaStorageSOPClassUID") if meta else None)
    syntax = parsed.header.transfer_syntax_uid
    pixels = parsed.header.pixel_data_offset is not None
    total = [ds.get("TotalPixelMatrixRows"), ds.get("TotalPixelMatrixColumns")]
    return {
        "url": redact_url(url),
        "size": f.size,
        "sop_class_uid": str(sop or ""),
        "sop_class": uid_name(sop),
        "modality": str(ds.get("Modality", "")),
        "transfer_syntax_uid": syntax,
        "transfer_syntax": uid_name(syntax),
        "encapsulated": bool(parsed.header.encapsulated) if pixels else False,
        "pixel_data": pixels,
        "rows": int(ds.get("Rows", 0) or 0),
        "columns": int(ds.get("Columns", 0) or 0),
        "frames": number_of_frames(parsed) if pixels else 0,
        "samples_per_pixel": int(ds.get("SamplesPerPixel", 1) or 1),
        "bits_allocated": int(ds.get("BitsAllocated", 0) or 0),
        "photometric_interpretation": str(ds.get("PhotometricInterpretation", "")),
        "tiled": None not in total,
        "dimension_organization": str(ds.get("DimensionOrganizationType", "")),
        "total_pixel_matrix": [int(t) for t in total] if None not in total else None,
        "header_bytes": parsed.header_end,
        "pixel_data_offset": parsed.header.pixel_data_offset,
        "header_requests": parsed.requests,
    }


def _cost(plan: FetchPlan) -> dict[str, Any]:
    return {
        "frames": len(plan.frames),
        "requests": plan.requests,
        "bytes": plan.nbytes,
        "unknown": len(plan.unknown),
    }


def _region_cost(f: DicomFile, facts: dict[str, Any], side: int) -> dict[str, Any]:
    """The plan of a ``side`` x ``side`` region at the top left (the first frame of an
    image that is not tiled), through highdicom's own pixel call."""
    from hdfsspec.highdicom.readers import imread

    try:
        im = imread(f)  # the image reads through f, which is closed by the caller
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        return {"error": " ".join(redact_url(str(error)).split())[:300]}
    if im.is_tiled:
        rows, columns = facts["total_pixel_matrix"]
        window = {"row_start": 1, "row_end": min(rows, side) + 1}
        window.update(column_start=1, column_end=min(columns, side) + 1)
        plan = im.plan("get_total_pixel_matrix", **window)
        last = [window["row_end"] - 1, window["column_end"] - 1]
        return {**_cost(plan), "rows": [1, last[0]], "columns": [1, last[1]]}
    plan = im.plan("get_frame", 1)
    return {**_cost(plan), "frame": 1}


def as_text(facts: dict[str, Any]) -> str:
    """The facts, one per line."""
    lines = [("object", f"{facts['url']} ({count(facts['size'])} bytes)")]
    lines.append(("SOP class", facts["sop_class"]))
    lines.append(("transfer syntax", _syntax(facts)))
    if facts["pixel_data"]:
        lines.append(("frames", _frames(facts)))
        tiled = facts["total_pixel_matrix"]
        lines.append(
            (
                "tiled",
                f"yes ({facts['dimension_organization'] or 'tiles'}): total pixel matrix "
                f"{tiled[0]:,} x {tiled[1]:,} px"
                if tiled
                else "no",
            )
        )
    lines.append(("offset table", _table(facts)))
    offset = facts["pixel_data_offset"]
    where = f", Pixel Data at byte {count(offset)}" if offset is not None else ""
    lines.append(
        (
            "header",
            f"{count(facts['header_bytes'])} bytes{where}; "
            f"read in {plural(facts['header_requests'], 'request')}",
        )
    )
    if "region" in facts:
        lines.append(("region", _region(facts["region"])))
        lines.append(("every frame", _plan(facts["every_frame"])))
    lines.append(("info fetched", fetched(facts["fetched"])))
    return "".join(f"{label + ':':<17}{value}\n" for label, value in lines)


def _syntax(facts: dict[str, Any]) -> str:
    if not facts["pixel_data"]:
        return facts["transfer_syntax"]
    how = "encapsulated frames" if facts["encapsulated"] else "native pixels"
    return f"{facts['transfer_syntax']}, {how}"


def _frames(facts: dict[str, Any]) -> str:
    bits, samples = facts["bits_allocated"], facts["samples_per_pixel"]
    return (
        f"{facts['frames']:,} of {facts['rows']:,} x {facts['columns']:,} px (rows x columns), "
        f"{plural(samples, 'sample')} of {bits} bits ({facts['photometric_interpretation']})"
    )


def _table(facts: dict[str, Any]) -> str:
    text = TABLES.get(facts["offset_table"], facts["offset_table"])
    return text + (" (index from the index store)" if facts["index_from_store"] else "")


def _plan(cost: dict[str, Any]) -> str:
    text = (
        f"{plural(cost['frames'], 'frame')}: {plural(cost['requests'], 'request')}, "
        f"{count(cost['bytes'])} bytes"
    )
    if cost["unknown"]:
        text += (
            f"; {cost['unknown']:,} of them not located yet (no offset table: a walk of the "
            "items up to them comes first; 'hdfsspec index' locates every frame once)"
        )
    return text


def _region(cost: dict[str, Any]) -> str:
    if "error" in cost:
        return f"not planned: {cost['error']}"
    if "frame" in cost:
        return f"frame {cost['frame']}: {_plan(cost)}"
    (r0, r1), (c0, c1) = cost["rows"], cost["columns"]
    size = f"{r1 - r0 + 1:,} x {c1 - c0 + 1:,} px (rows {r0}-{r1}, columns {c0}-{c1})"
    return f"{size}: {_plan(cost)}"
