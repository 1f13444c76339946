"""``DicomFileSystem``: the ``dicom::`` protocol, chained over any fsspec filesystem."""

from __future__ import annotations

import functools
import inspect
import pickle
import threading
from collections.abc import Callable
from typing import Any, ClassVar

import fsspec
from fsspec.implementations.chained import ChainedFileSystem

from hdfsspec._fork import renew_after_fork
from hdfsspec._types import DEFAULT_OPTIONS, ReadOptions
from hdfsspec.cache.persist import default_store
from hdfsspec.cache.progress import Progress
from hdfsspec.chain import GENERIC, claim, lister
from hdfsspec.dicom.tiff import tiff_ifd_offset
from hdfsspec.errors import ReadOnlyError
from hdfsspec.file import DicomFile
from hdfsspec.io.link import (
    DEFAULT_BANDWIDTH,
    DEFAULT_RTT,
    LinkModel,
)
from hdfsspec.io.redact import install as install_redaction
from hdfsspec.io.signed import (
    POOL,
    Fallback,
    SignedRanges,
    http_client,
    signable,
    signed_ranges,
    timeouts,
)
from hdfsspec.io.warm import warm_up
from hdfsspec.opening import opening

__all__ = ["DicomFileSystem"]

_PREFIXES = ("dicom::", "dicom://")
S3_POOL = 100
"""Connections of an S3 target created by the filesystem (s3fs's default is 10)."""
_AIOHTTP_LIMIT = 100  # connections of an aiohttp session (http, gcsfs, adlfs) by default


def target_concurrency(fs: fsspec.AbstractFileSystem) -> int:
    """Requests the target runs at once in ``cat_ranges``: its connection pool.

    Synchronous filesystems (local files, memory) fetch one range after the other.
    """
    if not getattr(fs, "async_impl", False):
        return 1
    config = getattr(fs, "config_kwargs", None)
    if isinstance(config, dict) and "s3" in str(fs.protocol):
        return int(config.get("max_pool_connections", 10))
    return _AIOHTTP_LIMIT


def _with_pool(protocol: str | None, options: dict[str, Any]) -> dict[str, Any]:
    """S3 targets get a pool large enough for a batch of frames, unless configured.

    They also validate response checksums only when the operation requires it:
    a ranged GET carries no checksum of its range (every frame read is one), and
    the validation machinery costs about a fifth of botocore's CPU per request.
    Lengths are still checked on every response. Either can be set in
    ``config_kwargs``.
    """
    if protocol not in ("s3", "s3a"):
        return options
    config = dict(options.get("config_kwargs") or {})
    config.setdefault("max_pool_connections", S3_POOL)
    if _botocore_knows("response_checksum_validation"):
        config.setdefault("response_checksum_validation", "when_required")
    return {**options, "config_kwargs": config}


def _botocore_knows(option: str) -> bool:
    """Whether the installed botocore's ``Config`` takes ``option`` (newer ones do)."""
    try:
        from botocore.config import Config
    except ImportError:  # pragma: no cover - the s3 extra is not installed
        return False
    return option in getattr(Config, "OPTION_DEFAULTS", {})


class DicomFileSystem(ChainedFileSystem):
    """Read DICOM objects of any fsspec filesystem through a frame-aware cache.

    Usually created by a chained URL::

        fsspec.open("dicom::s3://bucket/slide.dcm", s3={"anon": True})

    or directly::

        fsspec.filesystem("dicom", target_protocol="s3", target_options={"anon": True})

    Listing, ``info``, ``glob``, ``find``, ``exists``, ``size``, ``cat_file`` and the
    other methods named in ``TARGET_METHODS`` are those of the target, called on the
    path without ``dicom::``. Files are read-only. The target filesystem is never closed.

    Parameters
    ----------
    target_protocol : str, optional
        Protocol of the target filesystem (``"file"`` when neither this nor
        ``fs`` is given).
    target_options : dict, optional
        Options of the target filesystem.
    fs : fsspec.AbstractFileSystem, optional
        A target filesystem instance, instead of ``target_protocol``.
    fo : str, optional
        Path passed by fsspec's URL chaining; unused.
    max_cache_bytes, first_request, tail_request, scan_window : int, optional
        Read policy (see :class:`~hdfsspec.ReadOptions` for the defaults).
    scan_concurrency, max_gap, max_block : int, optional
        Read policy (see :class:`~hdfsspec.ReadOptions` for the defaults).
    readahead : bool, optional
        Fetch frames ahead of reads that walk the frames in order or with a stride
        (default True; see :class:`~hdfsspec.ReadOptions`).
    index_cache : str, bool or None, optional
        Directory of the persisted frame indexes; ``False`` disables them; by default
        ``$HDFSSPEC_INDEX_CACHE`` (``off`` disables), else ``index`` in the user's cache
        directory for hdfsspec (``$XDG_CACHE_HOME/hdfsspec/index`` or
        ``~/.cache/hdfsspec/index`` on Linux; see :func:`platformdirs.user_cache_dir`).
    index_cache_bytes : int, optional
        Bound of the persisted indexes (1 GiB by default): the least recently used
        entries go beyond it.
    rtt, bandwidth : float, optional
        Round-trip time (s) and bandwidth (bytes/s) of the target for the cost model
        that plans frame fetches. When both are given they are used as they are;
        otherwise they are learnt from the requests made (:class:`~hdfsspec.io.link.LinkModel`).
    concurrency : int, optional
        Requests the target runs at once; by default its connection pool. An S3
        target created by this filesystem gets ``max_pool_connections=100`` unless
        ``config_kwargs`` says otherwise; signed reads have 256 connections, or as
        many as ``max_pool_connections`` when it is set.
    progress : bool or fsspec.callbacks.Callback, optional
        Progress of the scan of files without offset table: by default a bar on
        stderr once a scan has run for two seconds; ``True`` always, ``False`` never,
        or a :class:`fsspec.callbacks.Callback` (see :mod:`hdfsspec.cache.progress`).
    signed_urls : bool, optional
        S3: read ranges through a URL signed once by the target's client (default
        True; see the README's options).
    warm : bool, optional
        S3: set up the target's client and HTTP sessions in a background thread now,
        not in the first request (default True; :mod:`hdfsspec.io.warm`). Nothing is
        sent.
    """

    protocol: ClassVar[str] = "dicom"
    root_marker = ""
    _strip_tokenize_options = ("fo",)

    def __init__(
        self,
        target_protocol: str | None = None,
        target_options: dict[str, Any] | None = None,
        fs: fsspec.AbstractFileSystem | None = None,
        fo: str | None = None,
        *,
        max_cache_bytes: int | None = None,
        first_request: int | None = None,
        tail_request: int | None = None,
        scan_window: int | None = None,
        scan_concurrency: int | None = None,
        max_gap: int | None = None,
        max_block: int | None = None,
        readahead: bool | None = None,
        index_cache: str | bool | None = None,
        index_cache_bytes: int | None = None,
        rtt: float | None = None,
        bandwidth: float | None = None,
        concurrency: int | None = None,
        progress: Progress = None,
        signed_urls: bool = True,
        warm: bool = True,
        **kwargs: Any,
    ) -> None:
        if fs is not None and target_protocol is not None:
            raise ValueError("give either fs or target_protocol, not both")
        if fs is None:  # options fsspec left to this layer go to the layers under it
            target_options = claim(target_protocol, target_options, kwargs, DICOM_OPTIONS)
            kwargs = {}
        elif set(kwargs) - GENERIC:
            raise TypeError(
                f"options {sorted(set(kwargs) - GENERIC)} of the dicom filesystem: it takes "
                f"{', '.join(sorted(DICOM_OPTIONS))} (the target given as fs has its own)"
            )
        super().__init__(**kwargs)
        self.index_store = default_store(index_cache, index_cache_bytes)
        if fs is None:
            options = _with_pool(target_protocol, dict(target_options or {}))
            config = (target_options or {}).get("config_kwargs") or {}
            pool = config.get("max_pool_connections")
            fs = fsspec.filesystem(target_protocol or "file", **options)
        else:
            pool = (getattr(fs, "config_kwargs", None) or {}).get("max_pool_connections")
        self.fs = fs  # the target (rebuilt in a forked child: see ``fs``)
        self._signed_pool = int(pool or POOL)  # the user's pool, if they set one
        self.progress = progress
        self.signed_urls = signed_urls
        self._http: fsspec.AbstractFileSystem | None = None
        self._http_lock = threading.Lock()
        signs = signed_urls and signable(fs)
        if concurrency is None:  # signed reads have a pool of their own
            concurrency = self._signed_pool if signs else target_concurrency(fs)
        self.link = LinkModel(
            concurrency,
            rtt=DEFAULT_RTT if rtt is None else rtt,
            bandwidth=bandwidth or DEFAULT_BANDWIDTH,
            learn=rtt is None or bandwidth is None,
        )
        self.target_protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        if self.target_protocol in ("http", "https"):  # a presigned URL, logged by fsspec.http
            install_redaction()
        self.options: ReadOptions = DEFAULT_OPTIONS.updated(
            max_cache_bytes=max_cache_bytes,
            first_request=first_request,
            tail_request=tail_request,
            scan_window=scan_window,
            scan_concurrency=scan_concurrency,
            max_gap=max_gap,
            max_block=max_block,
            readahead=readahead,
        )
        # the last object opened was a dual DICOM-TIFF file: so may the next be (a bucket of
        # slides), whose tile table is at its end (see ``tail_request``)
        self._dual_tiff = False
        renew_after_fork(self)
        if warm:  # the client and sessions of the first read, made while the caller goes on
            warm_up(fs, *([self._http_fs] if signs else []), requests=not signs)

    # -- the target ---------------------------------------------------------------------------
    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        """The target filesystem; in a forked child (a PyTorch or multiprocessing worker),
        a new instance of it.

        fsspec's async filesystems (s3fs, gcsfs, adlfs, HTTP) keep the event loop and
        sessions of the process that made them and refuse to run in a fork ("not
        fork-safe"). Files and images opened before the fork then go on in the child
        through a target rebuilt from its storage options, as pickling would rebuild it.
        """
        if self._forked:
            self._rebuild_target()
        return self._fs

    @fs.setter
    def fs(self, value: fsspec.AbstractFileSystem) -> None:
        self._fs, self._forked = value, False

    def _after_fork(self) -> None:
        """In a forked child: a new lock; the target is rebuilt when next used."""
        self._forked = True
        self._http = None  # the parent's HTTP session of signed reads
        self._http_lock = threading.Lock()

    def _rebuild_target(self) -> None:
        try:
            target = pickle.loads(pickle.dumps(self._fs))
        except Exception:  # a target that cannot be rebuilt is used as it is
            target = self._fs
        self.fs = target

    # -- paths ------------------------------------------------------------------------------
    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        path = str(path)
        for prefix in _PREFIXES:
            if path.startswith(prefix):
                path = path[len(prefix) :]
        return path

    def _target(self, path: Any) -> Any:
        """Path (or list of paths) on the target filesystem."""
        if isinstance(path, list | tuple):
            return [self._target(p) for p in path]
        return self.fs._strip_protocol(self._strip_protocol(path))

    def unstrip_protocol(self, name: str) -> str:
        return "dicom::" + self.fs.unstrip_protocol(name)

    # -- reading --------------------------------------------------------------------------
    def _open(
        self,
        path: str,
        mode: str = "rb",
        block_size: Any = None,
        autocommit: bool = True,
        cache_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> DicomFile:
        path = self._target(path)
        if mode != "rb":
            raise ReadOnlyError(
                f"the dicom filesystem is read-only: cannot open {path!r} in mode {mode!r}"
            )
        opened = self.opening(path, kwargs, cache_options)
        return DicomFile(self, path, block_size=block_size or "default", **opened, **kwargs)

    def opening(
        self,
        path: str,
        kwargs: dict[str, Any] | None = None,
        cache_options: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """What :class:`~hdfsspec.file.DicomFile` is opened with: see
        :func:`hdfsspec.opening.opening`."""
        return opening(self, path, kwargs, cache_options)

    def saw_prefix(self, prefix: bytes) -> None:
        """The first bytes of an object this filesystem opened: whether it was a dual
        DICOM-TIFF file (a TIFF header in its preamble) decides the next open's tail."""
        self._dual_tiff = tiff_ifd_offset(prefix[:16]) is not None

    def signed_reader(
        self, path: str, etag: str | None, fallback: Fallback
    ) -> SignedRanges | None:
        """Ranged reads of ``path`` through a signed URL, or None (see ``signed_urls``)."""
        if not self.signed_urls:
            return None
        return signed_ranges(lambda: self.fs, path, etag, self._http_fs, fallback)

    def signed_http(self) -> Callable[[], fsspec.AbstractFileSystem] | None:
        """The factory of signed reads' HTTP filesystem, or None where reads are not signed."""
        return self._http_fs if self.signed_urls and signable(self.fs) else None

    def _http_fs(self) -> fsspec.AbstractFileSystem:
        """The HTTP filesystem of signed reads (one session for every file, made once)."""
        with self._http_lock:
            if self._http is None:
                self._http = fsspec.filesystem(
                    "http",
                    encoded=True,  # a presigned URL is used exactly as signed
                    get_client=functools.partial(
                        http_client, self._signed_pool, *timeouts(self.fs)
                    ),
                    skip_instance_cache=True,
                )
            return self._http

    def read_frames(self, path: str, frames: list[int]) -> list[bytes]:
        """Return the encoded bytes of ``frames`` (0-based) of one object, in one round."""
        with self.open(path) as f:
            assert isinstance(f, DicomFile)
            return f.read_frames(frames)

    def cat_ranges(
        self,
        paths: list[str],
        starts: int | list[int],
        ends: int | list[int],
        max_gap: int | None = None,
        on_error: str = "return",
        **kwargs: Any,
    ) -> list[Any]:
        """The target's ``cat_ranges`` (one concurrent round on s3fs, gcsfs, adlfs, HTTP)."""
        kwargs.update(max_gap=max_gap, on_error=on_error)
        return list(self.fs.cat_ranges(self._target(list(paths)), starts, ends, **kwargs))

    # -- read-only ----------------------------------------------------------------------------
    def _read_only(self, *args: Any, **kwargs: Any) -> None:
        raise ReadOnlyError("the dicom filesystem is read-only")

    mkdir = makedirs = rmdir = _rm = rm = rm_file = _read_only
    pipe_file = put_file = cp_file = mv = touch = _read_only


def _delegated(name: str, **defaults: Any) -> Callable[..., Any]:
    """The method ``name`` of the filesystem: the target's, on the path without ``dicom::``.

    Arguments are bound to the parameters of fsspec's ``AbstractFileSystem.<name>`` and
    passed by name, so that a target whose own method orders them otherwise (gcsfs's
    ``find`` takes ``withdirs`` second) gets them as fsspec documents them; ``defaults``
    are fsspec's defaults that targets do not share.
    """
    signature = inspect.signature(getattr(fsspec.AbstractFileSystem, name))

    def method(self: DicomFileSystem, *args: Any, **kwargs: Any) -> Any:
        arguments = signature.bind(self, *args, **kwargs).arguments
        named = {k: v for k, v in arguments.items() if k not in ("self", "path", "kwargs")}
        path = self._target(arguments["path"])
        fs = self.fs if name == "cat_file" else lister(self.fs)  # metadata: see ``lister``
        return getattr(fs, name)(path, **{**defaults, **named, **arguments.get("kwargs", {})})

    method.__name__, method.__qualname__ = name, f"DicomFileSystem.{name}"
    method.__doc__ = f"The target filesystem's ``{name}``, on the path without ``dicom::``."
    return method


TARGET_METHODS = (
    *("ls", "info", "glob", "find", "walk", "expand_path", "exists", "isdir", "isfile"),
    *("size", "ukey", "modified", "created", "checksum", "sign", "cat_file"),
)
"""What the ``dicom`` filesystem answers with its target's methods (see ``_delegated``)."""
_DEFAULTS: dict[str, dict[str, Any]] = {
    "ls": {"detail": True},  # the local, S3, GCS and Azure filesystems list names by default
}
for _name in TARGET_METHODS:
    setattr(DicomFileSystem, _name, _delegated(_name, **_DEFAULTS.get(_name, {})))
del _name

_PARAMETERS = set(inspect.signature(DicomFileSystem.__init__).parameters) - {"self", "kwargs"}
DICOM_OPTIONS = frozenset(_PARAMETERS | {"skip_instance_cache"})
"""The keys the ``dicom`` layer takes (its parameters, and fsspec's instance cache switch)."""
