"""Reading a provider's JSON answer in small steps, so that a worker thread doing it lets the
event loop run.

A worker thread only helps the loop if it gives the GIL back often, and ``json.loads`` and
``binascii.a2b_base64`` hold it for a whole call: 0.6 s for a 128 MB answer (four 24 MB PNGs
as base64), 150 ms for one 32 MB string. So ``parse`` finds the string literals itself with
``bytes.find`` (a few ms even across 32 MB), hands ``json.loads`` only the document's small
skeleton, and leaves every string longer than 64 kB where it is, as a ``LongText``: a span of
the body. ``decode_base64`` then decodes such a span 512 kB at a time. Each step holds the GIL
for a few milliseconds at most.

The skeleton (everything but the long strings) is at most 1 MB, and the scan at most
``_MAX_STEPS`` escaped quotes, so hostile JSON costs bounded work. Strings in the skeleton may
not contain ``\\u0000``: long strings are replaced there by ``"\\u0000<index>"`` markers.
"""

from __future__ import annotations

import binascii
import json
import mmap
from dataclasses import dataclass
from typing import Any

__all__ = ["LongText", "Text", "TooLargeError", "decode_base64", "parse"]

_LONG = 64 * 1024
_SKELETON_LIMIT = 1024 * 1024
_WINDOW = 524288
_MAX_STEPS = 100_000
_MARK = "\x00"
_BACKSLASH = 0x5C
_WHITESPACE = b" \t\r\n"

Text = bytes | bytearray | mmap.mmap  # what a JSON document is read from


class TooLargeError(ValueError):
    """Decoded data over the caller's limit; ``size`` is how much was decoded by then."""

    def __init__(self, size: int) -> None:
        super().__init__(f"more than {size} bytes")
        self.size = size


@dataclass(frozen=True, slots=True, eq=False)
class LongText:
    """A JSON string literal longer than 64 kB, left undecoded: ``body[start:end]`` is its
    text between the quotes, escapes included. Valid only while the body is."""

    body: Text
    start: int
    end: int

    def __len__(self) -> int:
        return self.end - self.start

    def startswith(self, prefix: str) -> bool:
        raw = prefix.encode()
        return self.body[self.start : self.start + len(raw)] == raw

    def after(self, separator: str, *, within: int = 1024) -> LongText:
        """The text after the first ``separator`` in its first ``within`` bytes (the payload
        of a ``data:`` URL); all of it if there is none."""
        found = self.body.find(separator.encode(), self.start, min(self.end, self.start + within))
        return self if found < 0 else LongText(self.body, found + len(separator), self.end)


def parse(body: Text) -> Any:
    """The JSON document in ``body`` with its long strings as ``LongText`` (keys stay ``str``).
    Raises ``ValueError`` if ``body`` is not JSON or not one that is cheap to read."""
    pieces: list[bytes] = []
    longs: list[LongText] = []
    size = 0
    pos = 0
    steps = [0]
    while True:
        quote = body.find(b'"', pos)
        gap_end = len(body) if quote < 0 else quote
        size += gap_end - pos
        if size > _SKELETON_LIMIT:
            break
        pieces.append(bytes(body[pos:gap_end]))
        if quote < 0:
            break
        close = _closing_quote(body, quote + 1, steps)
        if close - quote - 1 > _LONG:
            literal = b'"\\u0000%d"' % len(longs)
            longs.append(LongText(body, quote + 1, close))
        else:
            size += close + 1 - quote
            if size > _SKELETON_LIMIT:
                break
            literal = bytes(body[quote : close + 1])
            if b"\\u0000" in literal:
                raise ValueError("a string contains \\u0000")
        pieces.append(literal)
        pos = close + 1
    if size > _SKELETON_LIMIT:
        raise ValueError(f"the document without its long strings is over {_SKELETON_LIMIT} bytes")
    try:
        return _restore(json.loads(b"".join(pieces)), longs)
    except RecursionError as exc:
        raise ValueError("the document is nested too deeply") from exc


def decode_base64(text: str | LongText, *, limit: int) -> bytes:
    """Strict base64 (whitespace and JSON's ``\\/`` ``\\n`` ``\\r`` ``\\t`` escapes allowed),
    decoded in 512 kB steps. Raises ``TooLargeError`` past ``limit`` decoded bytes, and
    ``ValueError`` (``binascii.Error``) if it is not base64."""
    if isinstance(text, str):
        return _decode_str(text, limit)
    out = bytearray()
    carry = b""
    padded = False
    pos, end = text.start, text.end
    while pos < end:
        stop = min(pos + _WINDOW, end)
        chunk = bytes(text.body[pos:stop])
        if b"\\" in chunk:
            if stop < end and chunk.endswith(b"\\"):  # keep an escape in one window
                chunk, stop = chunk[:-1], stop - 1
            chunk = _unescape(chunk)
        pos = stop
        chunk = carry + chunk.translate(None, _WHITESPACE)
        cut = len(chunk) - len(chunk) % 4
        carry = chunk[cut:]
        if cut:
            if padded:
                raise binascii.Error("data after the padding")
            out += binascii.a2b_base64(chunk[:cut], strict_mode=True)
            padded = chunk[cut - 1] == ord("=")
        if len(out) > limit:
            raise TooLargeError(len(out))
    if carry:
        raise binascii.Error("the length is not a multiple of 4")
    return bytes(out)


def _decode_str(text: str, limit: int) -> bytes:
    compact = "".join(text.split())
    if len(compact) // 4 * 3 > limit + 2:
        raise TooLargeError(len(compact) // 4 * 3)
    blob = binascii.a2b_base64(compact, strict_mode=True)
    if len(blob) > limit:
        raise TooLargeError(len(blob))
    return blob


def _unescape(chunk: bytes) -> bytes:
    # Legitimate base64 needs no other escape; any other backslash stays and fails to decode.
    chunk = chunk.replace(b"\\/", b"/")
    for escape in (b"\\n", b"\\r", b"\\t"):
        chunk = chunk.replace(escape, b"")
    return chunk


def _closing_quote(body: Text, start: int, steps: list[int]) -> int:
    """The index of the quote that ends the string whose text starts at ``start``."""
    pos = start
    while True:
        quote = body.find(b'"', pos)
        if quote < 0:
            raise ValueError("a string is not terminated")
        if _backslashes_before(body, quote, start) % 2 == 0:
            return quote
        steps[0] += 1
        if steps[0] > _MAX_STEPS:
            raise ValueError("too many escaped quotes")
        pos = quote + 1


def _backslashes_before(body: Text, index: int, start: int) -> int:
    count = 0
    while index > start and body[index - 1] == _BACKSLASH:
        low = max(start, index - 4096)
        window = bytes(body[low:index])
        kept = window.rstrip(b"\\")
        count += len(window) - len(kept)
        if kept:
            break
        index = low
    return count


def _restore(value: Any, longs: list[LongText]) -> Any:
    if isinstance(value, str):
        if value.startswith(_MARK):
            return longs[int(value[1:])]
        return value
    if isinstance(value, list):
        return [_restore(item, longs) for item in value]
    if isinstance(value, dict):
        return {key: _restore(item, longs) for key, item in value.items()}
    return value
