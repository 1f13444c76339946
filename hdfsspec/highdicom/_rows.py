"""highdicom's frame-table rows, stored faster and the same: values as SQLite binds them,
many rows a statement.

highdicom builds a table of one row per frame (24,649 rows of 15 columns for a large
slide level) with ``executemany`` of one row a statement, binding pydicom's number types
(``DSfloat``, ``IS``) after a failed adapter lookup each. :func:`plain_columns` and
:func:`insert_rows` store the same rows, in the same order (``tests/test_tables.py``
compares them); :mod:`hdfsspec.highdicom._adapter` hands highdicom's rows to them. Pure
``sqlite3``: nothing of highdicom is used here.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from itertools import chain
from typing import Any

__all__ = ["ROWS_A_STATEMENT", "insert_rows", "plain", "plain_columns"]

_PLAIN = frozenset((int, float, str, bytes, type(None)))
"""The types Python's sqlite3 binds without looking for an adapter."""


_HELD: dict[type, Callable[[Any], Any]] = {
    int: int.__int__,
    float: float.__float__,
    str: str.__str__,
}
"""What sqlite3 binds a subclass of each as: the value it holds, not what ``int()``,
``float()`` or ``str()`` of it (which a subclass may redefine) gives."""


def plain(value: Any) -> Any:
    """``value`` as the plain value sqlite3 binds it as: a subclass of int, float or str
    with no adapter of its own (``sqlite3.register_adapter``, ``__conform__``) is bound
    as the number or text it holds; anything else is returned unchanged."""
    kind = type(value)
    if (
        kind in _PLAIN
        or (kind, sqlite3.PrepareProtocol) in sqlite3.adapters
        or hasattr(kind, "__conform__")
    ):
        return value
    for base, held in _HELD.items():
        if isinstance(value, base):
            return held(value)
    return value


def plain_columns(columns: list[list[Any]]) -> list[list[Any]]:
    """highdicom's frame-table columns with pydicom's number types as plain numbers.

    ``DSfloat`` and ``IS`` values (Pixel Spacing, repeated for every frame) are bound
    by ``sqlite3`` only after a failed adapter lookup each; the rows stored are the
    same as plain ``float`` and ``int`` values (60 ms of the 0.16 s a 24,649-frame
    slide's table took).

    Parameters
    ----------
    columns : list of list
        The columns (each a list of the frames' values).

    Returns
    -------
    list of list
        The columns, those holding a value of another type converted.
    """
    # a column is one attribute's values: its first value's type tells (a column left
    # as it is is stored the same, only bound slower)
    return [
        _plains(column) if column and type(column[0]) not in _PLAIN else column
        for column in columns
    ]


def _plains(column: list[Any]) -> list[Any]:
    """One column's values as :func:`plain` gives them."""
    held = _HELD.get(type(plain(column[0])))  # its base, when it is bound as one
    if held is not None and len(set(map(type, column))) == 1:  # one attribute repeated
        return list(map(held, column))  # converted at C speed
    return [plain(v) for v in column]


ROWS_A_STATEMENT = 64
"""Rows of one ``INSERT`` statement in :func:`insert_rows`."""


def insert_rows(connection: sqlite3.Connection, table: str, columns: list[list[Any]]) -> None:
    """Insert the rows of ``columns`` into ``table``, in order, many rows a statement.

    ``executemany`` of one row a statement spends half its time per row (24,649 rows of
    15 columns: 95 ms); statements of :data:`ROWS_A_STATEMENT` rows, their values sliced
    from one list of all values row by row, store the same rows, in the same order, in
    62 ms.

    Parameters
    ----------
    connection : sqlite3.Connection
        The database.
    table : str
        The table (its columns in the order of ``columns``).
    columns : list of list
        The values, a list a column, all of the same length.
    """
    if not columns or not columns[0]:
        return
    width = len(columns)
    getlimit = getattr(connection, "getlimit", None)  # Python 3.11+
    code = getattr(sqlite3, "SQLITE_LIMIT_VARIABLE_NUMBER", None)
    limit = 999 if getlimit is None or code is None else int(getlimit(code))  # 999: SQLite's
    # historical default, the least any build allows
    per = max(1, min(ROWS_A_STATEMENT, limit // width))
    values = list(chain.from_iterable(zip(*columns, strict=True)))  # row by row
    row = "(" + ", ".join("?" * width) + ")"
    step = per * width
    whole = len(values) - len(values) % step
    with connection:
        if whole:
            connection.executemany(
                f"INSERT INTO {table} VALUES {', '.join([row] * per)}",
                (values[k : k + step] for k in range(0, whole, step)),
            )
        if whole < len(values):
            rest = values[whole:]
            connection.execute(
                f"INSERT INTO {table} VALUES {', '.join([row] * (len(rest) // width))}", rest
            )
