"""Where storage options go in a chain of filesystems (``dicom::simplecache::s3://...``).

fsspec's :func:`~fsspec.open` and :func:`~fsspec.core.url_to_fs` give each layer of a
chained URL the options under its protocol as the URL spells it (``s3=`` for
``s3://``), and every other key to the outermost layer. Under ``dicom::`` that layer
is the ``dicom`` filesystem: options spelled with another alias of the same storage
(``gcs=`` for a ``gs://`` URL) or given flat (``anon=True``) would stop there, and the
storage client would run with its defaults (the real cloud endpoint, the machine's
credentials). Here every key finds its layer, or a :class:`TypeError` names the keys
that would be taken, before any filesystem is made (no request is sent).

The rules, for the layers under ``dicom``:

* a key naming a protocol of the chain, or an alias of one (any protocol fsspec's
  registry maps to the same filesystem class: ``gs``/``gcs``, ``s3``/``s3a``,
  ``az``/``abfs``/``abfss``, ``http``/``https``, ``file``/``local``...), holds the
  options of that layer (the spelling of the URL wins over an alias on a clash);
* a key naming a protocol that is not in the chain is refused;
* any other key (``anon=True``) goes to the layer under ``dicom``, as
  ``fsspec.open`` gives flat keys to the first layer of a URL; when more layers
  follow it (``simplecache::s3://``), only if that layer's class names the key.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import fsspec
from fsspec.core import _un_chain
from fsspec.registry import available_protocols, known_implementations, registry

__all__ = ["GENERIC", "aliases", "chain_protocols", "claim", "lister", "nest", "place", "unnest"]

GENERIC = frozenset(
    {"use_listings_cache", "listings_expiry_time", "max_paths", "asynchronous", "loop"}
)
"""Options every fsspec filesystem takes (its listings cache, its event loop)."""


@functools.cache
def _class(protocol: str) -> type | None:
    try:
        cls: type = fsspec.get_filesystem_class(protocol)
    except (ImportError, ValueError):  # not installed, or no such protocol
        return None
    return cls


def aliases(protocol: str) -> tuple[str, ...]:
    """Every protocol fsspec's registry maps to the filesystem class of ``protocol``,
    ``protocol`` first (``aliases("gcs") == ("gcs", "gs")``).

    Candidates are the protocols registered with the same class, those
    ``known_implementations`` names with the same class path, and those the class
    declares; each is checked to resolve to the same class.
    """
    cls = _class(protocol)
    if cls is None:
        return (protocol,)
    spec = known_implementations.get(protocol, {}).get("class")
    own = getattr(cls, "protocol", ())
    declared = own if isinstance(own, tuple | list) else (own,)
    candidates = {p for p, c in registry.items() if c is cls}
    candidates |= {
        p for p, known in known_implementations.items() if spec and known["class"] == spec
    }
    candidates |= {p for p in declared if isinstance(p, str)}
    same = sorted(p for p in candidates - {protocol} if _class(p) is cls)
    return (protocol, *same)


def _is_protocol(key: str) -> bool:
    return key in registry or key in available_protocols()


def chain_protocols(url: str) -> list[str]:
    """The protocols of the layers of ``url``, outermost first, as fsspec splits it
    (the keys ``fsspec.open`` takes their options under)."""
    return [protocol for _, protocol, _ in _un_chain(url, {})]


def _named(protocol: str) -> frozenset[str]:
    """The parameters the filesystem class of ``protocol`` names (not ``**kwargs``)."""
    cls = _class(protocol)
    if cls is None:
        return frozenset()
    names: set[str] = set()
    for klass in cls.__mro__:  # a subclass's __init__ may pass **kwargs to its base's
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        params = inspect.signature(init).parameters.values()
        names |= {p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return frozenset(names - {"self"})


def place(
    layers: Sequence[str], options: Mapping[str, Any], own: frozenset[str], where: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Split ``options`` into the ``dicom`` layer's and those of each layer under it.

    Parameters
    ----------
    layers : sequence of str
        Protocols of the layers under ``dicom``, outermost first.
    options : mapping
        The options given (``storage_options``, or what fsspec left to ``dicom``).
    own : frozenset of str
        The keys the ``dicom`` layer takes.
    where : str
        The URL (or the layers) the options are for, named in errors.

    Returns
    -------
    (dict, list of dict)
        The options of the ``dicom`` layer, and of each layer of ``layers``.

    Raises
    ------
    TypeError
        A key that no layer takes, or a layer's options that are not a dict.
    """
    mine: dict[str, Any] = {}
    aliased: list[dict[str, Any]] = [{} for _ in layers]
    exact: list[dict[str, Any]] = [{} for _ in layers]
    flat: dict[str, Any] = {}
    for key, value in options.items():
        if key in own:
            mine[key] = value
            continue
        layer = next((k for k, p in enumerate(layers) if key in aliases(p)), None)
        if layer is None and not _is_protocol(key):
            flat[key] = value
            continue
        if layer is None:
            raise TypeError(
                f"storage_options key {key!r} names a protocol that is not in {where!r}: "
                f"{_valid(layers, own)}"
            )
        if not isinstance(value, Mapping):
            raise TypeError(
                f"storage_options[{key!r}] holds the options of the {layers[layer]!r} layer "
                f"of {where!r}: a dict, not {type(value).__name__}"
            )
        (exact if key == layers[layer] else aliased)[layer].update(value)
    out = [{**a, **e} for a, e in zip(aliased, exact, strict=True)]
    for key, value in flat.items():  # fsspec gives flat keys to the first layer
        named = bool(layers) and (key in GENERIC or key in _named(layers[0]))
        if not layers or (len(layers) > 1 and not named):
            raise TypeError(
                f"storage_options key {key!r} is taken by no layer of {where!r}: "
                f"{_valid(layers, own)}"
            )
        out[0] = {key: value, **out[0]}  # a layer's own key wins over a flat one
    return mine, out


def _valid(layers: Sequence[str], own: frozenset[str]) -> str:
    keyed = ", ".join("/".join(repr(a) for a in aliases(p)) for p in layers)
    text = f"valid keys are the protocols of its layers ({keyed or 'none'})"
    if len(layers) == 1:
        text += f", options of the {layers[0]!r} layer given flat"
    elif layers:
        text += f", options {layers[0]!r} names, given flat"
    read = sorted(own - {"fo", "fs", "target_protocol", "target_options"})
    return text + f", and the options of the dicom layer ({', '.join(read)})"


def unnest(protocol: str | None, options: Mapping[str, Any] | None) -> list[str]:
    """The protocols of a target given as ``target_protocol``/``target_options``,
    outermost first (``["simplecache", "s3"]``)."""
    layers: list[str] = []
    while protocol is not None:
        layers.append(protocol)
        inner = options or {}
        protocol, options = inner.get("target_protocol"), inner.get("target_options")
    return layers


def nest(options: Mapping[str, Any] | None, more: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``target_options`` with ``more[0]`` added (its own keys win), ``more[1]`` to its
    ``target_options``, and so on down the chain."""
    out = {**(more[0] if more else {}), **(options or {})}
    if len(more) > 1:
        out["target_options"] = nest(out.get("target_options"), more[1:])
    return out


def claim(
    protocol: str | None,
    options: dict[str, Any] | None,
    extra: Mapping[str, Any],
    own: frozenset[str],
) -> dict[str, Any] | None:
    """``target_options`` of a ``dicom`` filesystem made by fsspec, with the options
    fsspec left to it (``extra``: ``fsspec.open("dicom::gs://...", gcs={...})``) placed in
    the layers under it (see :func:`place`)."""
    if not extra:
        return options
    layers = unnest(protocol or "file", options)
    _, more = place(layers, extra, own, "dicom::" + "::".join(layers) + "://")
    return nest(options, more)


def lister(fs: fsspec.AbstractFileSystem) -> fsspec.AbstractFileSystem:
    """The filesystem that answers ``info``, ``ls``, ``exists``... for ``fs``.

    fsspec's block and whole-file caches (``blockcache::``, ``filecache::``) answer
    ``info`` by listing the parent directory, which an HTTP server does not have: their
    target answers instead (the caches hold bytes, not metadata). ``fs`` otherwise.
    """
    from fsspec.implementations.cached import CachingFileSystem

    while isinstance(fs, CachingFileSystem) and type(fs).info is fsspec.AbstractFileSystem.info:
        fs = fs.fs
    return fs
