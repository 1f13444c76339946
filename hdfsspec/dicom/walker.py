"""Bytes of an object's prefix, and the element walker that reads them.

:class:`PrefixBuffer` holds the bytes ``[0, n)`` of an object and grows them through
a ``fetch(start, stop)`` callable (never past the object's size); :class:`Walker`
reads element headers at explicit positions of it, with pydicom's rules for VR
encodings (implicit items in explicit data sets, UN sequences, elements without a
VR) and its own stack for nested sequences. No fsspec here.
"""

from __future__ import annotations

import struct

from hdfsspec._types import Fetch
from hdfsspec.errors import NotDicomError, TruncatedDicomError

__all__ = [
    "ITEM",
    "ITEM_DELIMITER",
    "MAX_GUESS",
    "SEQUENCE_DELIMITER",
    "UNDEFINED",
    "PrefixBuffer",
    "Walker",
    "looks_like_vr",
]

ITEM = 0xFFFEE000
ITEM_DELIMITER = 0xFFFEE00D
SEQUENCE_DELIMITER = 0xFFFEE0DD
UNDEFINED = 0xFFFFFFFF
_LONG_VRS = {
    b"OB",
    b"OD",
    b"OF",
    b"OL",
    b"OV",
    b"OW",
    b"SQ",
    b"SV",
    b"UC",
    b"UN",
    b"UR",
    b"UT",
    b"UV",
}


MAX_GUESS = 64 * 2**20
"""At most this many bytes are read at once towards :attr:`PrefixBuffer.expected_end`
(elements after the Pixel Data would be read with the header: a bound on the waste)."""


class PrefixBuffer:
    """The bytes ``[0, n)`` of an object, grown on demand through ``fetch``.

    Parameters
    ----------
    fetch : callable
        ``fetch(start, stop) -> bytes``.
    size : int
        Object size in bytes.
    first_request : int
        Size of the first request.
    path : str, optional
        Name of the object, for error messages.
    """

    def __init__(self, fetch: Fetch, size: int, first_request: int, path: str | None) -> None:
        self._fetch = fetch
        self.size = size
        self.path = path
        self.first_request = first_request
        self.data = bytearray()
        self.requests = 0
        self.expected_end: int | None = None  # where the header is expected to end, if known
        self.sequence_end: int | None = None  # where a long sequence is expected to end

    def ensure(
        self,
        stop: int,
        *,
        tag: int | None = None,
        what: str = "element",
        at: int | None = None,
        fetch: bool = True,
        margin: int | None = None,
    ) -> None:
        """Make sure ``[0, stop)`` is buffered; raise if ``stop`` is past the end.

        ``at`` is the offset of the element being read, for the error message.
        With ``fetch=False`` only the bound is checked. A fetch reads ``margin``
        bytes past ``stop`` when the caller knows what follows; by default up to
        :attr:`expected_end` when it is known, not passed and at most
        :data:`MAX_GUESS` bytes away (the header of native Pixel Data, read at once),
        else up to one first request past :attr:`sequence_end` under the same terms
        (a sequence of as many items as frames), else one first request more, or
        double the buffer.
        """
        if stop > self.size:
            raise TruncatedDicomError(
                f"{what} ends at byte {stop}, beyond the end of the object ({self.size} bytes)",
                path=self.path,
                offset=min(self.size, stop if at is None else at),  # within the object
                tag=tag,
            )
        have = len(self.data)
        if stop <= have or not fetch:
            return
        # the needed end plus one first-request of margin (what follows a large value is
        # usually small: the next elements, the Pixel Data and BOT headers), or double
        expected = self.expected_end
        if margin is not None:
            grown = stop + margin
        elif expected is not None and have < stop <= expected <= have + MAX_GUESS:
            grown = expected
        elif (end := self.sequence_end) is not None and have < stop <= end <= have + MAX_GUESS:
            grown = end + self.first_request  # what follows it: a few elements, the pixels
        else:
            grown = max(stop + self.first_request, 2 * have) if have else self.first_request
        want = min(self.size, max(stop, grown))
        chunk = self._fetch(have, want)
        self.requests += 1
        if len(chunk) == self.size and want - have != self.size:
            self.data = bytearray(chunk)  # the server ignored Range: keep the whole object
            return
        if len(chunk) != want - have:
            raise TruncatedDicomError(
                f"asked for bytes {have}-{want} but received {len(chunk)} bytes; "
                "the object is shorter than its reported size or changed while being read",
                path=self.path,
                offset=have + len(chunk),
                tag=tag,
            )
        self.data += chunk

    def read(
        self, start: int, length: int, *, tag: int | None = None, what: str = "element"
    ) -> bytes:
        """Return ``length`` bytes at ``start``, growing the buffer if needed."""
        self.ensure(start + length, tag=tag, what=what, at=start)
        return bytes(self.data[start : start + length])


class Walker:
    """Reads element headers at explicit positions of a :class:`PrefixBuffer`."""

    def __init__(self, buf: PrefixBuffer, implicit: bool, little: bool) -> None:
        self.buf = buf
        self.implicit = implicit
        self.end = "<" if little else ">"
        self.deepest = (0, 0, 0)  # (depth, offset, tag) of the deepest nesting walked

    def tag(self, pos: int) -> int:
        group, elem = struct.unpack(self.end + "HH", self.buf.read(pos, 4, what="element tag"))
        return group << 16 | elem

    def element(self, pos: int) -> tuple[int, int, int]:
        """Return ``(tag, value_offset, length)`` of the element at ``pos``."""
        tag, _, value, length = self.entry(pos, self.implicit)
        return tag, value, length

    def entry(self, pos: int, implicit: bool) -> tuple[int, bytes, int, int]:
        """Return ``(tag, vr, value_offset, length)``; ``vr`` is empty when implicit."""
        tag = self.tag(pos)
        if tag in (ITEM, ITEM_DELIMITER, SEQUENCE_DELIMITER) or implicit:
            (length,) = struct.unpack(self.end + "L", self.buf.read(pos + 4, 4, tag=tag))
            return tag, b"", pos + 8, length
        vr = self.buf.read(pos + 4, 2, tag=tag)
        if vr in _LONG_VRS:
            (length,) = struct.unpack(self.end + "L", self.buf.read(pos + 8, 4, tag=tag))
            return tag, vr, pos + 12, length
        if not b"AA" <= vr <= b"ZZ":
            # not a VR: pydicom (assume_implicit_vr_switch, its default) reads this one
            # element as implicit VR and goes on in explicit VR; a garbage length that
            # results is caught as a truncation, like any other
            (length,) = struct.unpack(self.end + "L", self.buf.read(pos + 4, 4, tag=tag))
            return tag, b"", pos + 8, length
        (length,) = struct.unpack(self.end + "H", self.buf.read(pos + 6, 2, tag=tag))
        return tag, vr, pos + 8, length

    def found_implicit(self, pos: int, assumed: bool) -> bool:
        """Whether the data set starting at ``pos`` is in implicit VR, as pydicom decides.

        pydicom reads the two bytes after the first tag: letters are a VR (explicit),
        anything else is the start of a length (implicit). Files written with the
        other encoding than their transfer syntax says exist, and pydicom reads them.
        """
        if pos + 6 > self.buf.size:
            return assumed
        return not looks_like_vr(self.buf.read(pos + 4, 2, what="element VR"))

    def skip_undefined(
        self,
        pos: int,
        tag: int,
        at: int | None = None,
        *,
        implicit: bool | None = None,
        items: int | None = None,
    ) -> int:
        """Skip an undefined-length value starting at ``pos``; return the offset after it.

        Nested sequences and items are walked with a stack of their own, not by
        recursion: how deep they nest is bounded by the object's size, not by Python's.
        ``at`` is the offset of the element (for :attr:`deepest`; default ``pos``);
        ``implicit`` is the encoding of the value's items (default: the walker's).
        ``items``, the number of items the sequence should hold (Number of Frames, for
        the Per-Frame Functional Groups), lets the buffer grow at once to where the
        items walked so far say the sequence ends (:attr:`PrefixBuffer.sequence_end`).
        An item of an explicit-VR sequence may be encoded in implicit VR (PS3.5
        7.5), as pydicom reads it, and a UN element of undefined length holds an
        implicit-VR sequence (PS3.5 6.2.2).
        """
        # per open level: (a sequence, not an item?, its tag, its encoding)
        stack = [(True, tag, self.implicit if implicit is None else implicit)]
        start, depth, first, walked = pos if at is None else at, 1, pos, 0
        while stack:
            in_sequence, owner, level_implicit = stack[-1]
            elem_tag, vr, value, length = self.entry(pos, level_implicit)
            if elem_tag == (SEQUENCE_DELIMITER if in_sequence else ITEM_DELIMITER):
                stack.pop()
                pos = value
                if items and len(stack) == 1:  # an item of the sequence ended
                    walked += 1
                    self._expect_sequence_end(first, pos, walked, items)
                continue
            if in_sequence and elem_tag != ITEM:
                raise NotDicomError(
                    f"expected an item or a sequence delimiter in {owner:08X}, "
                    f"found {elem_tag:08X}",
                    path=self.buf.path,
                    offset=pos,
                    tag=elem_tag,
                )
            if length == UNDEFINED:  # an item's data set, or a sequence inside one
                if in_sequence:  # an item: its data set may be implicit in an explicit file
                    inner = level_implicit or self.found_implicit(value, level_implicit)
                else:
                    inner = level_implicit or vr == b"UN"
                stack.append((not in_sequence, elem_tag, inner))
                depth = max(depth, len(stack))
                pos = value
            else:
                what = "item" if in_sequence else "element"
                self.buf.ensure(value + length, tag=elem_tag, what=what, at=pos)
                pos = value + length
                if items and in_sequence and len(stack) == 1:
                    walked += 1
                    self._expect_sequence_end(first, pos, walked, items)
        if depth > self.deepest[0]:
            self.deepest = (depth, start, tag)
        self.buf.sequence_end = None
        return pos

    def _expect_sequence_end(self, first: int, pos: int, walked: int, items: int) -> None:
        """After ``walked`` of ``items`` items from ``first`` to ``pos``: the sequence
        ends about where as many items more of their mean size end."""
        if walked >= items:
            self.buf.sequence_end = None
        elif walked >= 2:
            estimate = first + (pos - first) * items // walked + 8  # and its delimiter
            self.buf.sequence_end = min(self.buf.size, estimate)


def looks_like_vr(vr: bytes) -> bool:
    """Two upper-case ASCII letters (pydicom's test for an explicit VR)."""
    return len(vr) == 2 and 0x40 < vr[0] < 0x5B and 0x40 < vr[1] < 0x5B
