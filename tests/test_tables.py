"""highdicom's frame tables, built faster and the same: pydicom's number types bound as
the plain numbers SQLite stores them as; byte reads' frame lookups by bisection.

The time saved is measured in ``benchmarks/`` (the first region of a new process)."""

from __future__ import annotations

import io
import pickle
import sqlite3

import highdicom as hd
import numpy as np
import pytest
from pydicom.valuerep import IS, DSfloat

import hdfsspec
from hdfsspec.dicom.index import UNKNOWN, FrameIndex
from hdfsspec.highdicom._rows import plain_columns
from hdfsspec.testing import build_slide

COLUMNS = "a INTEGER, b REAL, c INTEGER, d TEXT, e REAL, f TEXT"


def _stored(columns: list[list[object]]) -> list[tuple[object, ...]]:
    """The rows SQLite stores for ``columns``, with each value's storage class."""
    connection = sqlite3.connect(":memory:")
    connection.execute(f"CREATE TABLE t({COLUMNS})")
    connection.executemany("INSERT INTO t VALUES(?, ?, ?, ?, ?, ?)", zip(*columns, strict=True))
    names = [c.split()[0] for c in COLUMNS.split(", ")]
    query = ", ".join(f"{n}, typeof({n})" for n in names)
    return list(connection.execute(f"SELECT {query} FROM t"))


def _columns() -> list[list[object]]:
    return [
        [1, 2, 3],
        [DSfloat("0.00025"), DSfloat("0.5"), DSfloat("1e-3")],  # one repeated attribute
        [IS("3"), IS("4"), IS("-7")],
        ["x", "y", "z"],
        [DSfloat("1.5"), 2.0, IS("2")],  # mixed types in a column
        [1, 2, 3],  # an integer in a TEXT column: SQLite's affinity converts it
    ]


def test_plain_columns_are_stored_as_highdicom_s_columns_are():
    columns = _columns()
    plain = plain_columns(columns)
    assert [type(v) for v in plain[1]] == [float] * 3
    assert [type(v) for v in plain[2]] == [int] * 3
    assert [type(v) for v in plain[4]] == [float, float, int]
    assert plain[0] is columns[0] and plain[3] is columns[3]  # plain already: not copied
    assert _stored(plain) == _stored(columns)


def test_a_registered_adapter_is_left_to_sqlite():
    key = (DSfloat, sqlite3.PrepareProtocol)
    sqlite3.register_adapter(DSfloat, lambda v: f"DS {v}")
    try:
        columns = _columns()
        plain = plain_columns(columns)
        assert all(type(v) is DSfloat for v in plain[1])  # the user's adapter decides
        assert _stored(plain) == _stored(columns)
        assert _stored(plain)[0][2] == "DS 0.00025"
    finally:
        del sqlite3.adapters[key]


def test_a_value_that_conforms_itself_is_left_to_sqlite():
    class Conforming(float):
        def __conform__(self, protocol: object) -> str:
            return "conformed"

    columns = _columns()
    columns[1] = [Conforming(0.5)] * 3
    assert all(type(v) is Conforming for v in plain_columns(columns)[1])


@pytest.mark.parametrize("table", ["bot", "empty"])
def test_frame_tables_equal_highdicom_s(tmp_path, table):
    blob = build_slide(1100, 900, tile=128, offset_table=table)
    path = tmp_path / "slide.dcm"
    path.write_bytes(blob)
    theirs = hd.imread(io.BytesIO(blob), lazy_frame_retrieval=True)
    fs = hdfsspec.DicomFileSystem(index_cache=False)
    with hdfsspec.imread(fs.open(str(path))) as ours:
        assert list(ours._db_con.iterdump()) == list(theirs._db_con.iterdump())
        region = {"row_start": 100, "row_end": 700, "column_start": 33, "column_end": 801}
        np.testing.assert_array_equal(
            ours.get_total_pixel_matrix(**region), theirs.get_total_pixel_matrix(**region)
        )


def _index(starts: list[int], stops: list[int]) -> FrameIndex:
    return FrameIndex(
        size=10_000,
        transfer_syntax_uid="1.2.840.10008.1.2.4.50",
        header_end=100,
        offset_table="bot",
        starts=np.asarray(starts, dtype=np.int64),
        stops=np.asarray(stops, dtype=np.int64),
        encapsulated=True,
    )


def test_frame_at_finds_the_frame_of_an_offset():
    index = _index([100, 300, 700], [290, 650, UNKNOWN])
    expected = {0: -1, 99: -1, 100: 0, 289: 0, 290: -1, 299: -1, 300: 1, 649: 1, 650: -1}
    expected.update({700: 2, 9_999: 2})  # the last frame's end unknown: to the end
    assert {k: index.frame_at(k) for k in expected} == expected
    assert _index([], []).frame_at(5) == -1


def test_an_index_pickles_without_its_lists():
    index = _index([100, 300], [290, 650])
    assert index.frame_at(310) == 1  # makes the lists
    state = pickle.dumps(index)
    assert b"_lists" not in state
    again = pickle.loads(state)
    assert again.frame_at(310) == 1 and again.frame_at(295) == -1


@pytest.mark.parametrize("count", [0, 1, 63, 64, 65, 1000])
def test_rows_inserted_many_a_statement_are_the_rows_in_order(count):
    from hdfsspec.highdicom._rows import insert_rows

    columns = [
        list(range(1, count + 1)),
        [k * 0.5 for k in range(count)],
        [str(k) for k in range(count)],
    ]
    one, many = sqlite3.connect(":memory:"), sqlite3.connect(":memory:")
    for connection in (one, many):
        connection.execute("CREATE TABLE t(n INTEGER PRIMARY KEY, x REAL NOT NULL, s TEXT)")
    one.executemany("INSERT INTO t VALUES(?, ?, ?)", zip(*columns, strict=True))
    insert_rows(many, "t", columns)
    assert list(many.iterdump()) == list(one.iterdump())
    assert many.execute("SELECT count(*) FROM t").fetchone()[0] == count


@pytest.mark.parametrize("enabled", [True, False])
def test_the_collector_is_paused_while_highdicom_builds_its_tables(tmp_path, monkeypatch, enabled):
    import gc

    seen: list[bool] = []
    build = hd.Image._build_luts

    def watched(self: hd.Image) -> None:
        seen.append(gc.isenabled())
        build(self)

    monkeypatch.setattr(hd.Image, "_build_luts", watched)
    path = tmp_path / "slide.dcm"
    path.write_bytes(build_slide(600, 500, tile=128))
    fs = hdfsspec.DicomFileSystem(index_cache=False)
    was = gc.isenabled()
    try:
        gc.enable() if enabled else gc.disable()
        with hdfsspec.imread(fs.open(str(path))):
            assert seen == [False]
            assert gc.isenabled() is enabled  # as it was
    finally:
        gc.enable() if was else gc.disable()
