"""The parser of the ``hdfsspec`` command, and its entry point :func:`main`.

Every error reaches the user as one line on stderr: ``hdfsspec: error: ...`` with exit
status 1 (a missing object, a file that is not DICOM, a failed transfer...), or 2 for
arguments that cannot be right (as argparse's own errors). ``--debug`` prints the
traceback too (secrets redacted). ``-v`` writes the ``hdfsspec`` logger's records of
INFO and above to stderr, ``-vv`` those of DEBUG.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import traceback
from collections.abc import Iterator, Sequence
from typing import IO, NoReturn

from hdfsspec import __version__
from hdfsspec._log import ROOT, to_stream
from hdfsspec.cli import demo, frames, index, info, region
from hdfsspec.cli.options import CommandError, UsageError, add_storage_options
from hdfsspec.io.redact import RedactingFilter, redact_url

__all__ = ["build_parser", "main"]

EXAMPLES = """\
examples:
  hdfsspec info s3://bucket/slide.dcm -s anon=true
  hdfsspec region gs://bucket/slide.dcm --x 20000 --y 15000 -o region.png -s token=anon
  hdfsspec frames https://example.org/slide.dcm 1 2 100-110 -o frames/
  hdfsspec index s3://bucket/slide.dcm -s profile=research
  hdfsspec demo
"""

INTERRUPTED = 130


class ArgumentError(Exception):
    """What argparse would print before exiting with status 2 (see :class:`Parser`)."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (no usage block), raised to :func:`main`."""

    def error(self, message: str) -> NoReturn:
        raise ArgumentError(f"{self.prog}: error: {message} (see '{self.prog} --help')")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the help (those that say something), descriptions and examples as written."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, [], False):
            return action.help
        return super()._get_help_string(action)


def _verbosity(subcommand: bool) -> argparse.ArgumentParser:
    """``-v`` and ``--debug``: before or after the subcommand (a subcommand's parser would
    reset what was given before it to its defaults: there, they have none)."""
    parent = Parser(add_help=False)
    verbose, debug = (argparse.SUPPRESS, argparse.SUPPRESS) if subcommand else (0, False)
    parent.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=verbose,
        help="log to stderr: -v what hdfsspec does (scans, index builds), -vv every request",
    )
    parent.add_argument(
        "--debug",
        action="store_true",
        default=debug,
        help="on an error, print the traceback too",
    )
    return parent


def _source() -> argparse.ArgumentParser:
    """The object and how to reach it."""
    parent = Parser(add_help=False)
    parent.add_argument(
        "url", help="the object: s3://bucket/key, gs://..., az://..., https://..., a local path"
    )
    add_storage_options(
        parent,
        "an option of the URL's filesystem (s3fs, gcsfs, adlfs...), repeatable: "
        "anon=true, profile=NAME, endpoint_url=URL, token=anon, "
        "config_kwargs.max_pool_connections=50; VALUE is read as JSON where it parses",
    )
    parent.add_argument(
        "--index-cache",
        metavar="DIR",
        help="directory of the persisted frame indexes ('off': none); by default "
        "$HDFSSPEC_INDEX_CACHE, else hdfsspec's directory in the user's cache",
    )
    return parent


def build_parser() -> Parser:
    """The parser of every subcommand."""
    parser = Parser(
        prog="hdfsspec",
        description="Read DICOM objects (whole-slide images, SEG, enhanced CT/MR) from object "
        "storage frame by frame, fetching only the bytes of the frames asked for.",
        epilog=EXAMPLES,
        formatter_class=HelpFormatter,
        parents=[_verbosity(subcommand=False)],
    )
    parser.add_argument("--version", action="version", version=f"hdfsspec {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = {"formatter_class": HelpFormatter}
    verbosity, source = _verbosity(subcommand=True), _source()
    for module in (info, region, frames, index):
        module.add_parser(sub, [verbosity, source], **common)
    demo.add_parser(sub, [verbosity], **common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hdfsspec`` command; returns its exit status.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments (``sys.argv[1:]`` by default).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except ArgumentError as error:
        print(error, file=sys.stderr)
        return 2
    except SystemExit as done:  # --help, --version
        return done.code if isinstance(done.code, int) else 0
    with _logging(args.verbose):
        return _run(args, sys.stdout)


def _run(args: argparse.Namespace, out: IO[str]) -> int:
    """Run the subcommand; its errors become one line on stderr and an exit status."""
    prog = f"hdfsspec {args.command}"
    try:
        status: int = args.run(args, out)
        return status
    except UsageError as error:
        print(f"{prog}: error: {_one_line(str(error))} (see '{prog} --help')", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hdfsspec: interrupted", file=sys.stderr)
        return INTERRUPTED
    except Exception as error:
        if args.debug:
            sys.stderr.write(redact_url(traceback.format_exc()))
        hint = "" if args.debug or isinstance(error, CommandError) else " (--debug shows why)"
        print(f"hdfsspec: error: {describe(error)}{hint}", file=sys.stderr)
        return 1


def describe(error: BaseException) -> str:
    """An error in one line, without secrets: ``TypeName: message``."""
    if isinstance(error, CommandError):
        return _one_line(str(error))
    message = str(error)
    text = f"{type(error).__name__}: {message}" if message else type(error).__name__
    return _one_line(text)


def _one_line(text: str) -> str:
    return " ".join(redact_url(text).split())


@contextlib.contextmanager
def _logging(verbose: int) -> Iterator[None]:
    """The ``hdfsspec`` records on stderr while a command runs (``-v``: INFO, ``-vv``:
    DEBUG); highdicom's notices (a missing ICC profile...) only with ``-vv``."""
    package, hd = logging.getLogger(ROOT), logging.getLogger("highdicom")
    levels = package.level, hd.level
    handler = None
    if verbose:
        level = logging.DEBUG if verbose > 1 else logging.INFO
        handler = to_stream(sys.stderr, level, (RedactingFilter(),))
    if verbose < 2:
        hd.setLevel(logging.ERROR)
    try:
        yield
    finally:
        if handler is not None:
            package.removeHandler(handler)
        package.setLevel(levels[0])
        hd.setLevel(levels[1])
