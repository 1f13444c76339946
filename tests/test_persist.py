"""The persisted frame index: reopening is free, stale or damaged entries are never trusted."""

from __future__ import annotations

import os
import sys

import fsspec
import pytest
from oracle import reference_frames

from hdfsspec.cache.persist import IndexStore, default_store, object_identity
from hdfsspec.cache.whole_index import build_index
from hdfsspec.dicom.parse import parse_header
from hdfsspec.errors import ObjectChangedError
from hdfsspec.testing import CountingFileSystem, build_encapsulated, fake_jpeg_frames

FRAMES = fake_jpeg_frames(400, seed=9, min_size=800, max_size=1200)
BLOB = build_encapsulated(FRAMES, offset_table="empty")


def dicom_fs(target, store_dir, **kw):
    counting = CountingFileSystem(fs=target)
    fs = fsspec.filesystem(
        "dicom", fs=counting, skip_instance_cache=True, index_cache=str(store_dir), **kw
    )
    return fs, counting


def test_second_open_costs_no_header_or_index_request(backend, tmp_path):
    path = backend.put("persisted.dcm", BLOB)
    fs, counting = dicom_fs(backend.target, tmp_path, scan_window=64 * 1024)
    with fs.open(path) as f:
        assert f.read_frames([300]) == [FRAMES[300]]
        assert f.index.offset_table == "scan"
        first = counting.requests
    assert first >= 2  # header + scan windows
    fs2, counting2 = dicom_fs(backend.target, tmp_path)
    with fs2.open(path) as f:
        assert f.index.offset_table == "scan" and counting2.requests == 0
        assert f.read_frames([5, 300]) == [FRAMES[5], FRAMES[300]]
        assert counting2.requests == 1  # the two frames, in one round
        assert f.stats.phases["header"].requests == 0 and f.stats.phases["index"].requests == 0
        f.seek(0)
        assert f.read(2000) == BLOB[:2000]  # header bytes served from the entry
        assert counting2.requests == 1


def test_replaced_object_gets_a_new_index(tmp_path):
    target = fsspec.filesystem("memory")
    target.pipe("/rep/x.dcm", BLOB)
    fs, _ = dicom_fs(target, tmp_path)
    with fs.open("/rep/x.dcm") as f:
        f.index  # noqa: B018  (builds and saves the index)
    other = build_encapsulated(fake_jpeg_frames(30, seed=2), offset_table="bot")
    target.pipe("/rep/x.dcm", other)  # new content, new size, new 'created'
    fs2, counting = dicom_fs(target, tmp_path)
    with fs2.open("/rep/x.dcm") as f:
        assert f.read_frames([29]) == [reference_frames(other)[29]]
        assert counting.requests >= 1


def _saved_entry(tmp_path, path: str):
    """A memory target holding BLOB at ``path``, and the store entry its index was saved in."""
    target = fsspec.filesystem("memory")
    target.pipe(path, BLOB)
    fs, _ = dicom_fs(target, tmp_path)
    with fs.open(path) as f:
        f.index  # noqa: B018
    (entry,) = tmp_path.rglob("*.idx")
    return target, entry


def test_damaged_entry_is_removed_and_rebuilt(tmp_path):
    target, entry = _saved_entry(tmp_path, "/dmg/x.dcm")
    data = bytearray(entry.read_bytes())
    data[-10] ^= 0xFF  # flip a header byte: its checksum no longer matches
    entry.write_bytes(bytes(data))
    fs2, _ = dicom_fs(target, tmp_path)
    with fs2.open("/dmg/x.dcm") as f:
        assert f.read_frames([399]) == [FRAMES[399]]
        assert f.stats.phases["header"].requests == 1  # rebuilt from the object
    assert len(list(tmp_path.rglob("*.idx"))) == 1  # and saved again


def _one_offset_changed(data: bytes, frame: int) -> bytes:
    """The entry with the start of ``frame`` in its JSON moved by 2 (still in order, in
    bounds): only a digest of the whole entry tells."""
    import json
    import re
    import struct

    (length,) = struct.unpack_from("<Q", data, 40)  # magic, SHA-256, the JSON's length
    start, meta_end = 48, 48 + length
    meta = json.loads(data[start:meta_end])
    starts = meta["index"]["starts"]
    old = str(starts[frame]).encode()
    new = str(starts[frame] + 2).encode()
    head = re.sub(rb"\b" + old + rb"\b", new, data[start:meta_end], count=1)
    assert head != data[start:meta_end] and len(head) == len(data[start:meta_end])
    return data[:start] + head + data[meta_end:]


def test_an_entry_with_an_index_value_changed_is_removed_and_rebuilt(tmp_path):
    target, entry = _saved_entry(tmp_path, "/dmg/y.dcm")
    entry.write_bytes(_one_offset_changed(entry.read_bytes(), 200))
    fs2, _ = dicom_fs(target, tmp_path)
    with fs2.open("/dmg/y.dcm") as f:
        assert f.read_frames([200, 199]) == [FRAMES[200], FRAMES[199]]  # not 2 bytes off
        assert f.stats.phases["header"].requests == 1  # rebuilt from the object


def test_a_local_copy_with_the_same_size_and_mtime_is_a_new_object(tmp_path):
    """``cp -p``, ``tar -x``, ``rsync -t`` keep the size and the modification time; the
    inode (and ctime) are new, and the entry of the file replaced is not used."""
    path = tmp_path / "data" / "x.dcm"
    path.parent.mkdir()
    path.write_bytes(BLOB)
    fs, _ = dicom_fs(fsspec.filesystem("file"), tmp_path / "store")
    with fs.open(str(path)) as f:
        f.index  # noqa: B018
    changed = bytearray(BLOB)  # the same layout (a new build has a new UID: another size)
    for frame in FRAMES:
        at = BLOB.index(frame)
        changed[at + 2 : at + len(frame) - 2] = bytes(b ^ 0x33 for b in frame[2:-2])
    other = bytes(changed)
    st = os.stat(path)
    (tmp_path / "data" / "new.dcm").write_bytes(other)
    os.utime(tmp_path / "data" / "new.dcm", ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tmp_path / "data" / "new.dcm", path)
    fs2, _ = dicom_fs(fsspec.filesystem("file"), tmp_path / "store")
    with fs2.open(str(path)) as f:
        assert f.read_frames([0, 399]) == [
            reference_frames(other)[0],
            reference_frames(other)[399],
        ]


@pytest.mark.parametrize("garbage", [b"", b"HDFSIDX2", b"HDFSIDX2" + b"\xff" * 40, b"junk" * 10])
def test_store_rejects_garbage(tmp_path, garbage):
    store = IndexStore(tmp_path)
    identity = {"protocol": "memory", "path": "/x", "size": 10, "version": "created=1"}
    entry = store._file(identity)
    entry.parent.mkdir(parents=True)
    entry.write_bytes(garbage)
    assert store.load(identity) is None and not entry.exists()


def test_identity_needs_a_version():
    assert object_identity("http", "u", {"size": 3}) is None
    ident = object_identity("s3", "b/k", {"size": 3, "ETag": '"abc"'})
    assert ident == {"protocol": "s3", "path": "b/k", "size": 3, "version": 'ETag="abc"'}


def test_store_can_be_disabled(tmp_path, monkeypatch):
    assert default_store(False) is None
    monkeypatch.setenv("HDFSSPEC_INDEX_CACHE", "off")
    assert default_store() is None
    monkeypatch.setenv("HDFSSPEC_INDEX_CACHE", str(tmp_path))
    assert default_store().directory == tmp_path
    target = fsspec.filesystem("memory")
    target.pipe("/off/x.dcm", BLOB)
    fs = fsspec.filesystem("dicom", fs=target, skip_instance_cache=True, index_cache=False)
    with fs.open("/off/x.dcm") as f:
        f.index  # noqa: B018
    assert not list(tmp_path.rglob("*.idx"))


@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="XDG_CACHE_HOME is the Linux convention"
)
def test_default_store_follows_xdg_cache_home(tmp_path, monkeypatch):
    """Without HDFSSPEC_INDEX_CACHE the store is in the user's cache directory, as
    platformdirs gives it: $XDG_CACHE_HOME, else ~/.cache (no real home is touched)."""
    monkeypatch.delenv("HDFSSPEC_INDEX_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert default_store().directory == tmp_path / "home" / ".cache" / "hdfsspec" / "index"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    store = default_store()
    assert store.directory == tmp_path / "xdg" / "hdfsspec" / "index"
    assert not list(tmp_path.iterdir())  # nothing made before the store is used
    assert store.usable and (os.stat(store.directory).st_mode & 0o777) == 0o700
    monkeypatch.setenv("HDFSSPEC_INDEX_CACHE", str(tmp_path / "mine"))
    assert default_store().directory == tmp_path / "mine"  # the variable of ours comes first
    assert not (tmp_path / "home").exists()


def test_s3_reopen_with_a_persisted_index_costs_one_round_trip(s3_endpoint, tmp_path):
    from conftest import BUCKET, _s3_options

    from hdfsspec.testing import ShapingProxy

    target = fsspec.filesystem("s3", **_s3_options(s3_endpoint))
    key = f"{BUCKET}/reopened.dcm"
    target.pipe_file(key, BLOB)
    with ShapingProxy(s3_endpoint) as proxy:

        def dicom():
            return fsspec.filesystem(
                "dicom",
                target_protocol="s3",
                target_options=_s3_options(proxy.url),
                skip_instance_cache=True,
                index_cache=str(tmp_path),
            )

        with dicom().open(key) as f:
            assert f.read_frames([350]) == [FRAMES[350]]
            f.index  # noqa: B018  (walked to the end and saved)
        proxy.log.clear()
        with dicom().open(key) as f:
            assert proxy.log.entries == []  # the entry has the header, the index, the size
            assert f.read_frames([3, 350]) == [FRAMES[3], FRAMES[350]]
            # the frames' GETs are conditional on the saved ETag: they check the version
            assert f.stats.rounds == 1 and f.stats.phases["header"].requests == 0
            assert all(e[0] == "GET" for e in proxy.log.entries)
            f.seek(0)
            assert f.read(1000) == BLOB[:1000]  # header bytes from the entry
        assert len(proxy.log.entries) == f.stats.requests <= 2  # one round, no more at close

        backwards = FRAMES[::-1][:380]
        other = build_encapsulated(backwards, offset_table="empty")
        target.pipe_file(key, other)  # replaced: a new ETag and size
        proxy.log.clear()
        with dicom().open(key) as f:  # nothing served from the stale entry yet
            # frame 350 lies beyond the entry's header bytes: its GET is the first request
            assert f.read_frames([350]) == [backwards[350]]  # opened again from the object
            assert f.index.number_of_frames == 380
        assert f.stats.phases["header"].requests == 1  # the new open's, after the refusal
        assert sum(e[4] for e in proxy.log.entries) <= len(other) + 4096


def _saved_then_replaced(s3_endpoint, tmp_path, name):
    """A dicom filesystem over S3 with a saved entry for ``name``, whose object was then
    replaced by another of the same size (the entry's ETag no longer matches)."""
    from conftest import BUCKET, _s3_options

    target = fsspec.filesystem("s3", **_s3_options(s3_endpoint))
    key = f"{BUCKET}/{name}"
    target.pipe_file(key, BLOB)

    def dicom():
        return fsspec.filesystem(
            "dicom",
            target_protocol="s3",
            target_options=_s3_options(s3_endpoint),
            skip_instance_cache=True,
            index_cache=str(tmp_path),
        )

    with dicom().open(key) as f:
        f.index  # noqa: B018  (saved)
    changed = bytearray(BLOB)
    changed[-20] ^= 0xFF  # same size, other content: a new ETag
    target.pipe_file(key, bytes(changed))
    return dicom, key


def test_a_file_that_served_a_stale_header_says_so_at_its_first_read(s3_endpoint, tmp_path):
    dicom, key = _saved_then_replaced(s3_endpoint, tmp_path, "stale-header.dcm")
    with dicom().open(key) as f:
        assert f.header.dataset.NumberOfFrames == len(FRAMES)  # from the entry
        with pytest.raises(ObjectChangedError, match="replaced since its frame index was saved"):
            f.read_frames([350])  # beyond the entry's header bytes: a request, refused
    with dicom().open(key) as f:  # the entry is gone: opened from the object
        assert f.read_frames([350]) == [FRAMES[350]] and f.stats.phases["header"].requests == 1


def test_threads_first_reading_a_replaced_object_all_read_the_new_one(s3_endpoint, tmp_path):
    import threading

    dicom, key = _saved_then_replaced(s3_endpoint, tmp_path, "stale-threads.dcm")
    wanted = [100, 200, 300, 350]  # the replacement changed only the last frame
    with dicom().open(key) as f:  # nothing served from the stale entry yet
        start = threading.Barrier(len(wanted))
        got: dict[int, object] = {}

        def read(k: int) -> None:
            start.wait()
            try:
                got[k] = f.read_frames([k])
            except Exception as error:  # what a thread met, for the assertion below
                got[k] = error

        threads = [threading.Thread(target=read, args=(k,)) for k in wanted]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # one thread met the refusal and opened the file again from the object; the
        # others waited for it, none failed with the file reopened under it
        assert got == {k: [FRAMES[k]] for k in wanted}
        assert f.stats.phases["header"].requests == 1  # the one reopen


def test_a_file_that_only_served_its_header_checks_the_version_at_close(s3_endpoint, tmp_path):
    dicom, key = _saved_then_replaced(s3_endpoint, tmp_path, "stale-close.dcm")
    f = dicom().open(key)
    assert f.header.dataset.NumberOfFrames == len(FRAMES)
    with pytest.raises(ObjectChangedError, match="open it again"):
        f.close()  # one byte, conditional on the saved version: refused
    assert f.closed
    with dicom().open(key) as f:  # the entry is gone: opened from the object, and saved
        assert f.stats.phases["header"].requests == 1
        f.index  # noqa: B018
    with dicom().open(key) as f:  # unchanged since: the header from the entry, no request
        assert f.header.dataset.NumberOfFrames == len(FRAMES) and f.stats.requests == 0
    assert f.stats.requests == 1 and f.stats.bytes == 1  # the check at close


def test_a_basic_offset_table_beyond_the_first_request_is_persisted_with_the_header(tmp_path):
    frames = fake_jpeg_frames(3000, seed=3, min_size=200, max_size=300)
    blob = build_encapsulated(frames, offset_table="bot")  # a 12 KB table
    target = fsspec.filesystem("memory")
    target.pipe("/bot/x.dcm", blob)
    fs, _ = dicom_fs(target, tmp_path, first_request=4096)
    with fs.open("/bot/x.dcm") as f:
        assert f.read_frames([2999]) == [frames[2999]]
        assert f.index.offset_table == "bot" and f.index.header_end > 4096
    fs2, counting2 = dicom_fs(target, tmp_path, first_request=4096)
    with fs2.open("/bot/x.dcm") as f:
        assert f.read_frames([7, 2999]) == [frames[7], frames[2999]]
        assert f.stats.phases["header"].requests == 0 and f.stats.phases["index"].requests == 0
        assert counting2.requests == 1  # the two frames; the entry held header and table
        f.seek(0)
        assert f.read(f.index.header_end) == blob[: f.index.header_end]
        assert counting2.requests == 1
    assert len(list(tmp_path.rglob("*.idx"))) == 1


def _index_of(blob: bytes):
    parsed = parse_header(lambda a, b: blob[a:b], len(blob))
    return build_index(parsed, lambda r: [blob[a:b] for a, b in r])[0]


def _entry(store: IndexStore, name: str, size: int = 10_000):
    """Save an index of a small object under path ``name``; return its identity and file."""
    blob = build_encapsulated(fake_jpeg_frames(3, seed=len(name)), offset_table="bot")
    index = _index_of(blob)
    identity = {"protocol": "memory", "path": name, "size": len(blob), "version": "v1"}
    store.save(identity, index, blob[: index.header_end] + b"\0" * size)
    return identity, store._file(identity)


def test_the_store_evicts_the_least_recently_used_beyond_its_bound(tmp_path):
    store = IndexStore(tmp_path, max_bytes=10**9)
    saved = [_entry(store, f"/o{i}") for i in range(5)]
    size = saved[0][1].stat().st_size
    for k, (_, file) in enumerate(saved):  # last used: o0 oldest ... o4 newest
        os.utime(file, (1000 + k, 1000 + k))
    assert store.load(saved[0][0]) is not None  # o0 used now: the newest
    store.max_bytes = int(4.5 * size)  # room for 4; evicted down to 0.9 x: 4 stay
    assert store.evict() == 1
    kept = {str(e[0]) for e in store.entries()}
    assert str(saved[1][1]) not in kept  # o1: least recently used
    assert {str(f) for _, f in saved} - kept == {str(saved[1][1])}
    assert store.latest("memory", "/o1") is None
    assert not any(p.read_text().count('"/o1"') for p in (tmp_path / "latest").glob("*.json"))
    assert store.latest("memory", "/o0") == saved[0][0]
    assert store.evict() == 0  # within the bound now
    _entry(store, "/o5")  # a save beyond the bound evicts by itself
    assert sum(e[1] for e in store.entries()) <= 0.9 * store.max_bytes + size


def test_a_new_version_replaces_the_old_entry(tmp_path):
    store = IndexStore(tmp_path)
    old, old_file = _entry(store, "/v")
    blob = build_encapsulated(fake_jpeg_frames(4, seed=1), offset_table="bot")
    index = _index_of(blob)
    new = {"protocol": "memory", "path": "/v", "size": len(blob), "version": "v2"}
    store.save(new, index, blob[: index.header_end])
    assert not old_file.exists() and store.load(old) is None
    assert store.latest("memory", "/v") == new and store.load(new) is not None
    assert len(store.entries()) == 1


def test_store_bound_from_the_filesystem(tmp_path):
    fs = fsspec.filesystem(
        "dicom", index_cache=str(tmp_path), index_cache_bytes=12345, skip_instance_cache=True
    )
    assert fs.index_store.max_bytes == 12345
    with pytest.raises(ValueError, match="positive"):
        IndexStore(tmp_path, max_bytes=0)


def test_http_reopen_with_a_persisted_index_checks_the_etag_with_the_frames(http_server, tmp_path):
    url = http_server.put("persisted/reopen.dcm", BLOB)

    def dicom():
        return fsspec.filesystem(
            "dicom", target_protocol="http", skip_instance_cache=True, index_cache=str(tmp_path)
        )

    with dicom().open(url) as f:
        f.index  # noqa: B018  (walked and saved)
    before = http_server.conditional
    with dicom().open(url) as f:
        assert f.stats.requests == 0  # no HEAD, no GET: the entry has size and ETag
        assert f.read_frames([350]) == [FRAMES[350]]
        assert f.stats.requests == f.stats.rounds == 1
    assert http_server.conditional - before == 1  # the frame's GET carried If-Match
    backwards = FRAMES[::-1]
    http_server.put("persisted/reopen.dcm", build_encapsulated(backwards, offset_table="empty"))
    refused = http_server.refused
    with dicom().open(url) as f:  # replaced: the frame's GET is refused, the file reopened
        assert f.read_frames([350]) == [backwards[350]]
    assert http_server.refused == refused + 1


def test_the_garbage_collector_closes_without_a_request(s3_endpoint, tmp_path):
    import gc

    dicom, key = _saved_then_replaced(s3_endpoint, tmp_path, "stale-gc.dcm")
    f = dicom().open(key)
    assert f.header.dataset.NumberOfFrames == len(FRAMES)  # served from the entry
    stats = f.stats
    del f
    gc.collect()  # closed by __del__: no version check from the collector
    assert stats.requests == 0
