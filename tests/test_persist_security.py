"""The persisted index store cannot be turned against its user.

Private (0700 / 0600, refused with a warning when another user may write it, as ssh
refuses its keys), authenticated (HMAC-SHA256 under a key of the store), and checked
before use (strict parsing, structure, the header saved with it) and on use (an entry
the object contradicts is dropped at once). A damaged or forged entry means a rebuild
from the object: never another frame's bytes, never an untyped error.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import os
import stat
import struct
import uuid
from collections.abc import Callable
from typing import Any

import fsspec
import pytest

from hdfsspec.cache import private
from hdfsspec.cache.persist import IndexStore, IndexStoreWarning
from hdfsspec.cache.persist_entry import CONTRADICTED, check_index, vouch
from hdfsspec.cache.whole_index import build_index
from hdfsspec.dicom.parse import parse_header
from hdfsspec.errors import DicomFormatError
from hdfsspec.testing import CountingFileSystem, build_encapsulated, fake_jpeg_frames

FRAMES = fake_jpeg_frames(700, seed=11, min_size=200, max_size=300)
SCAN = build_encapsulated(FRAMES, offset_table="empty")  # indexed by a scan
BOT = build_encapsulated(FRAMES, offset_table="bot")
MAGIC = b"HDFSIDX3"


def dicom_fs(target: Any, store_dir: Any, **kw: Any) -> tuple[Any, CountingFileSystem]:
    counting = CountingFileSystem(fs=target)
    fs = fsspec.filesystem(
        "dicom", fs=counting, skip_instance_cache=True, index_cache=str(store_dir), **kw
    )
    return fs, counting


def put(blob: bytes) -> tuple[Any, str]:
    """A memory target holding ``blob`` at a path of its own."""
    target = fsspec.filesystem("memory")
    path = f"/security/{uuid.uuid4().hex}.dcm"
    target.pipe(path, blob)
    return target, path


def cold_requests(target: Any, path: str, frames: list[int]) -> int:
    """Requests of reading ``frames`` with no store at all: what a rebuild costs."""
    counting = CountingFileSystem(fs=target)
    fs = fsspec.filesystem("dicom", fs=counting, skip_instance_cache=True, index_cache=False)
    with fs.open(path) as f:
        f.read_frames(frames)
    return counting.requests


def saved(store_dir: Any, blob: bytes = SCAN) -> tuple[Any, str, Any]:
    """A target holding ``blob``, its path, and the store entry its index was saved in."""
    target, path = put(blob)
    fs, _ = dicom_fs(target, store_dir)
    with fs.open(path) as f:
        f.index  # noqa: B018  (built and saved)
    (entry,) = store_dir.rglob("*.idx")
    return target, path, entry


def parts(data: bytes) -> tuple[dict[str, Any], bytes]:
    """The JSON document and the header bytes of an entry (read as an attacker would)."""
    (length,) = struct.unpack_from("<Q", data, 40)
    return json.loads(data[48 : 48 + length]), data[48 + length :]


def forge(meta: dict[str, Any] | bytes, prefix: bytes, mac: Callable[[bytes], bytes]) -> bytes:
    """An entry of ``meta`` (a document, or raw bytes), sealed by ``mac(body)``."""
    doc = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
    body = struct.pack("<Q", len(doc)) + doc + prefix
    return MAGIC + mac(body) + body


def keyed(store_dir: Any) -> Callable[[bytes], bytes]:
    """The store's own seal: only someone who can read its key file forges with it."""
    key = (store_dir / "key").read_bytes()
    return lambda body: hmac.new(key, MAGIC + body, hashlib.sha256).digest()


def mode(path: Any) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def assert_rebuilt(target: Any, path: str, store_dir: Any, frames: list[int]) -> None:
    """Open with the store: the frames are right and cost what a cold open costs."""
    fs, counting = dicom_fs(target, store_dir)
    with fs.open(path) as f:
        assert f.read_frames(frames) == [FRAMES[i] for i in frames]
        assert f.stats.phases["header"].requests == 1  # from the object, not the entry
    assert counting.requests == cold_requests(target, path, frames)


def assert_served_from_store(target: Any, path: str, store_dir: Any, frames: list[int]) -> None:
    fs, counting = dicom_fs(target, store_dir)
    with fs.open(path) as f:
        assert f.read_frames(frames) == [FRAMES[i] for i in frames]
        assert f.stats.phases["header"].requests == 0 and f.stats.phases["index"].requests == 0
    assert counting.requests == 1  # the frames, in one round


# -- privacy -------------------------------------------------------------------------------
def test_the_store_is_private_whatever_the_umask(tmp_path):
    store_dir = tmp_path / "home" / "cache" / "index"  # the store makes the parents too
    old = os.umask(0)  # a umask that would leave everything open
    try:
        target, path, entry = saved(store_dir)
    finally:
        os.umask(old)
    for directory in (tmp_path / "home", tmp_path / "home" / "cache", store_dir):
        assert mode(directory) == 0o700
    assert mode(entry.parent) == 0o700 and mode(store_dir / "latest") == 0o700
    (pointer,) = (store_dir / "latest").glob("*.json")
    assert mode(entry) == mode(pointer) == mode(store_dir / "key") == 0o600
    assert len((store_dir / "key").read_bytes()) == 32
    assert not list(store_dir.rglob("*.tmp"))
    assert_served_from_store(target, path, store_dir, [3, 650])


@pytest.mark.parametrize("bits", [0o770, 0o707, 0o777])
def test_a_directory_others_may_write_is_refused(tmp_path, bits):
    store_dir = tmp_path / "shared"
    store_dir.mkdir()
    os.chmod(store_dir, bits)
    target, path = put(SCAN)
    for attempt in range(2):  # warned once in the process; not used either time
        fs, counting = dicom_fs(target, store_dir)
        if attempt == 0:
            with pytest.warns(
                IndexStoreWarning, match=f"{store_dir}: the directory has mode 0{bits:o}"
            ):
                f = fs.open(path)
        else:
            f = fs.open(path)
        with f:
            assert f.read_frames([0, 600]) == [FRAMES[0], FRAMES[600]]
            assert f.stats.phases["header"].requests == 1
        assert counting.requests == cold_requests(target, path, [0, 600])
        assert fs.index_store.usable is False
    assert not list(store_dir.iterdir())  # no key, no entry written
    assert mode(store_dir) == bits  # left as the user made it


def test_a_directory_of_another_user_is_refused(tmp_path, monkeypatch):
    store_dir = tmp_path / "theirs"
    store_dir.mkdir(mode=0o700)
    monkeypatch.setattr(private, "_uid", lambda: os.getuid() + 1)  # the files seem theirs
    target, path = put(SCAN)
    fs, counting = dicom_fs(target, store_dir)
    with pytest.warns(IndexStoreWarning, match=f"{store_dir}: the directory is owned by user"):
        f = fs.open(path)
    with f:
        assert f.read_frames([599]) == [FRAMES[599]]
    assert counting.requests == cold_requests(target, path, [599])
    assert not list(store_dir.iterdir())


def _chown_away(path: Any) -> None:
    if os.getuid() != 0:
        pytest.skip("giving a file to another user needs root")
    os.chown(path, 65534, 65534)


@pytest.mark.parametrize("how", ["group-writable", "other-writable", "another owner"])
def test_an_entry_others_may_write_is_refused(tmp_path, how):
    target, path, entry = saved(tmp_path)
    if how == "another owner":
        _chown_away(entry)
    else:
        os.chmod(entry, 0o620 if how == "group-writable" else 0o602)
    before = entry.read_bytes()
    fs, counting = dicom_fs(target, tmp_path)
    with pytest.warns(IndexStoreWarning, match=rf"{tmp_path}: {entry.parent.name}/{entry.name}"):
        f = fs.open(path)
    with f:
        assert f.read_frames([600]) == [FRAMES[600]]
        assert f.stats.phases["header"].requests == 1
    assert counting.requests == cold_requests(target, path, [600])
    assert entry.read_bytes() == before  # neither used, nor deleted, nor rewritten
    fs2, counting2 = dicom_fs(target, tmp_path)  # the store stays off in this process
    with fs2.open(path) as f:
        assert f.read_frames([600]) == [FRAMES[600]]
    assert counting2.requests == cold_requests(target, path, [600])


def test_a_key_others_may_read_is_refused(tmp_path):
    target, path, entry = saved(tmp_path)
    os.chmod(tmp_path / "key", 0o640)
    fs, counting = dicom_fs(target, tmp_path)
    with pytest.warns(IndexStoreWarning, match="key file 'key' has mode 0640"):
        f = fs.open(path)
    with f:
        assert f.read_frames([10]) == [FRAMES[10]]
    assert counting.requests == cold_requests(target, path, [10])
    assert entry.exists()


# -- forged entries --------------------------------------------------------------------------
def swap(meta: dict[str, Any], a: int = 600, b: int = 601) -> None:
    """Frame ``a`` at frame ``b``'s bytes and back: the offsets exchanged."""
    index = meta["index"]
    for name in ("starts", "stops"):
        index[name][a], index[name][b] = index[name][b], index[name][a]


def alias(meta: dict[str, Any], a: int = 600, b: int = 601) -> None:
    """Frame ``a`` served from frame ``b``'s bytes; the starts stay in order."""
    index = meta["index"]
    index["starts"][a], index["stops"][a] = index["starts"][b], index["stops"][b]


def fewer(meta: dict[str, Any]) -> None:
    """The last frame gone: every frame left is where it is, the count is wrong."""
    meta["index"]["starts"].pop()
    meta["index"]["stops"].pop()


def sha256_seal(body: bytes) -> bytes:
    return hashlib.sha256(body).digest()


def guessed_key_seal(body: bytes) -> bytes:
    return hmac.new(b"\0" * 32, MAGIC + body, hashlib.sha256).digest()


@pytest.mark.parametrize("tamper", [swap, alias])
@pytest.mark.parametrize("seal", ["sha256", "previous format", "guessed key"])
def test_a_forged_entry_is_rebuilt_never_served(tmp_path, tamper, seal):
    """What someone who can write the entry but not read the key can do."""
    target, path, entry = saved(tmp_path)
    meta, prefix = parts(entry.read_bytes())
    tamper(meta)
    if seal == "previous format":  # what the store wrote and trusted before: a SHA-256
        body = forge(meta, prefix, sha256_seal)[40:]
        forged = b"HDFSIDX2" + hashlib.sha256(body).digest() + body
    else:
        forged = forge(meta, prefix, sha256_seal if seal == "sha256" else guessed_key_seal)
    entry.write_bytes(forged)
    assert_rebuilt(target, path, tmp_path, [600, 601])
    assert parts(entry.read_bytes())[0] != meta  # saved again, from the object
    assert_served_from_store(target, path, tmp_path, [600, 601])


@pytest.mark.parametrize("tamper", [swap, alias, fewer])
def test_a_tampered_entry_sealed_with_the_key_is_still_refused(tmp_path, tamper):
    """The second line: frames in file order, back to back, as many as the header says."""
    target, path, entry = saved(tmp_path)
    meta, prefix = parts(entry.read_bytes())
    tamper(meta)
    entry.write_bytes(forge(meta, prefix, keyed(tmp_path)))
    assert_rebuilt(target, path, tmp_path, [600, 601])
    assert_served_from_store(target, path, tmp_path, [600, 601])


def shift(meta: dict[str, Any], frame: int, by: int) -> None:
    """Move the boundary before ``frame``: both frames still back to back, in order."""
    index = meta["index"]
    index["starts"][frame] += by
    index["stops"][frame - 1] += by


@pytest.mark.parametrize("first", ["index", "read_frames"])
def test_the_header_vouches_for_a_table_index(tmp_path, first):
    """A Basic Offset Table index is checked against the table the entry holds, before use."""
    target, path, entry = saved(tmp_path, BOT)
    meta, prefix = parts(entry.read_bytes())
    assert meta["index"]["offset_table"] == "bot"
    true_index = copy.deepcopy(meta["index"])
    shift(meta, 600, 8)
    entry.write_bytes(forge(meta, prefix, keyed(tmp_path)))
    fs, counting = dicom_fs(target, tmp_path)
    with fs.open(path) as f:
        if first == "index":
            assert f.index.to_dict() == true_index  # not the one the entry held
        assert f.read_frames([599, 600]) == [FRAMES[599], FRAMES[600]]
        assert f.stats.phases["header"].requests == 1
    assert counting.requests == cold_requests(target, path, [599, 600])
    assert parts(entry.read_bytes())[0]["index"] == true_index
    assert_served_from_store(target, path, tmp_path, [599, 600])


DEEP = b"[" * 10_000 + b"]" * 10_000


def _set(field: str, value: Any) -> Callable[[dict[str, Any]], Any]:
    def change(meta: dict[str, Any]) -> None:
        meta["index"][field] = value

    return change


def _set_frame(value: Any) -> Callable[[dict[str, Any]], Any]:
    def change(meta: dict[str, Any]) -> None:
        meta["index"]["starts"][5] = value

    return change


DAMAGE: dict[str, Any] = {
    "huge integer offset": _set_frame(10**400),
    "huge integer size": _set("size", 10**400),
    "int64 overflow": _set_frame(2**63),
    "negative offset": _set_frame(-5),
    "float offset": _set_frame(1234.0),
    "NaN offset": lambda meta: json.dumps(meta).replace('"starts": [', '"starts": [NaN, ', 1),
    "string offset": _set_frame("1234"),
    "boolean size": _set("size", True),
    "nested offsets": _set("starts", [[1, 2], [3, 4]]),
    "ragged offsets": _set("starts", [[1], 2]),
    "offsets not a list": _set("starts", {"0": 1}),
    "unknown kind": _set("offset_table", "magic"),
    "not a UID": _set("transfer_syntax_uid", "1.2.840.10008.1.2.4.50 ; rm"),
    "missing field": lambda meta: meta["index"].pop("stops"),
    "extra field": _set("evil", 1),
    "other version": _set("version", 2),
    "index nested 10,000 deep": lambda meta: (
        json.dumps(meta).encode().replace(b'"index": {', b'"index": ' + DEEP + b', "x": {', 1)
    ),
    "document nested 10,000 deep": lambda meta: DEEP,
    "not JSON": lambda meta: b"\xff\xfe{not json",
    "header end past the header bytes": _set("header_end", 10**9),
}


@pytest.mark.parametrize("damage", list(DAMAGE), ids=list(DAMAGE))
def test_a_damaged_document_is_rebuilt_without_untyped_errors(tmp_path, damage):
    """Sealed with the key, so that the parser itself is what is tested."""
    target, path, entry = saved(tmp_path)
    meta, prefix = parts(entry.read_bytes())
    changed = DAMAGE[damage](meta)
    doc = changed if isinstance(changed, bytes | str) else meta
    doc = doc.encode() if isinstance(doc, str) else doc
    entry.write_bytes(forge(doc, prefix, keyed(tmp_path)))
    assert_rebuilt(target, path, tmp_path, [5, 600])
    assert_served_from_store(target, path, tmp_path, [5, 600])


def test_a_length_past_the_entry_is_damage(tmp_path):
    target, path, entry = saved(tmp_path)
    data = bytearray(entry.read_bytes())
    struct.pack_into("<Q", data, 40, 2**63)  # the document's length, then sealed again
    entry.write_bytes(MAGIC + keyed(tmp_path)(bytes(data[40:])) + bytes(data[40:]))
    assert_rebuilt(target, path, tmp_path, [1])


def test_a_damaged_pointer_is_only_a_missed_hint(tmp_path):
    target, path, _ = saved(tmp_path)
    (pointer,) = (tmp_path / "latest").glob("*.json")
    pointer.write_bytes(DEEP)
    store = IndexStore(tmp_path)
    assert store.latest("counting", path) is None
    fs, counting = dicom_fs(target, tmp_path)
    with fs.open(path) as f:  # the entry is still found by the object's identity
        assert f.read_frames([650]) == [FRAMES[650]]
        assert f.stats.phases["header"].requests == 0
    assert counting.requests == 1


# -- entries the object contradicts ---------------------------------------------------------
def test_an_entry_that_fails_when_read_is_dropped_at_once(tmp_path, monkeypatch):
    """Authentic and consistent, but no item where it puts frame 600 (as after a bug, or
    an object replaced under the same identity): dropped on that first failure, and the
    read answered from the object."""
    target, path, entry = saved(tmp_path)
    meta, prefix = parts(entry.read_bytes())
    true_index = copy.deepcopy(meta["index"])
    shift(meta, 600, 8)  # a scan's index: only the items can tell
    entry.write_bytes(forge(meta, prefix, keyed(tmp_path)))
    discarded = []
    discard = IndexStore.discard
    monkeypatch.setattr(
        IndexStore, "discard", lambda self, ident: (discarded.append(ident), discard(self, ident))
    )
    fs, counting = dicom_fs(target, tmp_path)
    with fs.open(path) as f:
        assert f.index.to_dict() == meta["index"]  # the header cannot tell a scan's index
        assert counting.requests == 0
        assert f.read_frames([600, 601]) == [FRAMES[600], FRAMES[601]]
        assert len(discarded) == 1  # the first failure drops it
        assert f.index.to_dict() == true_index
        # one round of frames under the entry's index, then what a cold open costs
        assert f.stats.phases["header"].requests == 1
        assert counting.requests == 1 + cold_requests(target, path, [600, 601])
        assert f.read_frames([10]) == [FRAMES[10]]
    assert parts(entry.read_bytes())[0]["index"] == true_index  # rebuilt, saved again
    assert_served_from_store(target, path, tmp_path, [600, 601])
    assert len(discarded) == 1


def test_an_object_changed_under_the_same_identity_fails_typed_and_loses_its_entry(tmp_path):
    """Bytes rewritten in place, the identity kept: the entry goes at the first failure,
    and the object's own damage is reported as such, open after open."""
    target, path, _ = saved(tmp_path)
    at = SCAN.index(FRAMES[600]) - 8  # frame 600's item header
    memory_file = target.store[path]
    memory_file.getbuffer()[at : at + 4] = b"\x00\x00\x00\x00"  # same object, same size
    for _attempt in range(2):
        fs, _ = dicom_fs(target, tmp_path)
        with fs.open(path) as f, pytest.raises(CONTRADICTED) as raised:
            f.read_frames([600])
        assert isinstance(raised.value, DicomFormatError)
        assert not list(tmp_path.rglob("*.idx"))  # dropped, and not saved again
    assert (tmp_path / "key").exists()


# -- no false refusals -----------------------------------------------------------------------
def test_every_index_the_locators_build_passes_the_checks(corpus):
    """A check that refused a true index would make its object rebuild on every open."""
    for blob in [*corpus.values(), SCAN, BOT]:
        parsed = parse_header(lambda a, b, blob=blob: blob[a:b], len(blob))
        index = build_index(parsed, lambda r, blob=blob: [blob[a:b] for a, b in r])[0]
        check_index(index)
        vouch(index, parsed, blob[: max(index.header_end, len(parsed.prefix))])
        vouch(index, parsed, parsed.prefix)  # a table beyond the bytes held: fields only


def test_threads_meeting_a_failing_entry_all_get_the_right_frames(tmp_path, monkeypatch):
    """The entry is dropped once; reads in flight under it are read again, and blocks
    kept under it are not served under the index built from the object."""
    from concurrent.futures import ThreadPoolExecutor

    target, path, entry = saved(tmp_path)
    meta, prefix = parts(entry.read_bytes())
    shift(meta, 600, 8)
    entry.write_bytes(forge(meta, prefix, keyed(tmp_path)))
    discarded = []
    discard = IndexStore.discard
    monkeypatch.setattr(
        IndexStore, "discard", lambda self, ident: (discarded.append(ident), discard(self, ident))
    )
    fs, _ = dicom_fs(target, tmp_path, max_gap=0)
    sets = [[f, 600] if k % 2 else [f] for k, f in enumerate(range(560, 640, 2))]
    with fs.open(path) as f, ThreadPoolExecutor(8) as pool:
        got = list(pool.map(f.read_frames, sets))
        assert got == [[FRAMES[i] for i in frames] for frames in sets]
        assert f.read_frames(range(550, 650)) == FRAMES[550:650]
    assert len(discarded) == 1
    assert_served_from_store(target, path, tmp_path, [600, 601])


def test_a_pickled_store_carries_no_key(tmp_path):
    import pickle

    _, path, _ = saved(tmp_path)
    store = IndexStore(tmp_path)
    assert store.usable
    key = (tmp_path / "key").read_bytes()
    data = pickle.dumps(store)
    assert key not in data
    again = pickle.loads(data)
    assert again.usable and again.latest("counting", path) is not None
