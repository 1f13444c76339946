"""``hdfsspec index URL``: locate every frame once, and keep the index for later opens.

The frame index is built as a read would build it (from the Basic or Extended Offset
Table, the TIFF tile table of a dual DICOM-TIFF file, or a walk of the items of the
Pixel Data, shown with a progress bar on stderr), the end of the last frame included,
and saved in the index store keyed by the object's identity (size and ETag,
generation or modification time). Every later open of the same version of the object,
by this command line or by Python, costs no index request.
"""

from __future__ import annotations

import argparse
from typing import IO, Any

from hdfsspec.cli.info import TABLES
from hdfsspec.cli.options import CommandError, source_options
from hdfsspec.cli.report import count, fetched, plain, plural
from hdfsspec.sources import open_dicom

__all__ = ["add_parser", "run"]


def add_parser(sub: Any, parents: list[argparse.ArgumentParser], **kwargs: Any) -> None:
    """Add the ``index`` subcommand to ``sub``."""
    parser = sub.add_parser(
        "index",
        parents=parents,
        help="build the frame index once and keep it in the index store",
        description=plain(__doc__),
        **kwargs,
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="a progress bar on stderr while the items are walked",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, out: IO[str]) -> int:
    """Build and save the index of ``args.url``."""
    options = source_options(args, progress=args.progress)
    with open_dicom(args.url, options) as f:
        store = f.fs.index_store
        if store is None:
            raise CommandError(
                "the index store is off (HDFSSPEC_INDEX_CACHE=off, or --index-cache off): "
                "give --index-cache DIR to keep the index"
            )
        stored = f.cache.layout.stored  # the open found it in the store
        index = f.index
        if index.number_of_frames:
            index = f.cache.layout.resolve_last()  # the end of the last frame too
        saved = store.latest(f.fs.target_protocol, f.path) is not None
    stats = f.stats.as_dict()  # after the close, which may check the object's version
    kind = TABLES.get(index.offset_table, index.offset_table)
    out.write(f"{plural(index.number_of_frames, 'frame')} located; offset table: {kind}\n")
    if stored:
        out.write(f"the index was in the store already ({store.directory})\n")
    elif saved:
        out.write(f"index saved in {store.directory}\n")
    else:
        raise CommandError(
            "the index was built but not saved: the object has no version to key it by "
            "(no ETag, generation or modification time), or the store refused it"
        )
    out.write(f"fetched: {fetched(stats)}; object size {count(f.size)} bytes\n")
    return 0
