"""``bot.provider.answer``: provider JSON read with its long strings left in place, and base64
decoded from them in steps, exactly as ``json`` and ``base64`` would have, and hostile documents
refused."""

from __future__ import annotations

import base64
import binascii
import json
import random

import pytest

from bot.provider.answer import LongText, TooLargeError, decode_base64, parse

IMAGE = random.Random(3).randbytes(1_500_000)  # 2 MB of base64: a long string, 4 steps
B64 = base64.b64encode(IMAGE).decode()


def _answer(**item: object) -> bytearray:
    return bytearray(json.dumps({"created": 1, "data": [item]}).encode())


def test_long_strings_are_left_in_the_body_and_decode_to_the_same_bytes() -> None:
    document = parse(_answer(b64_json=B64, revised_prompt='a "red" fox é 🦊'))

    item = document["data"][0]
    assert document["created"] == 1
    assert item["revised_prompt"] == 'a "red" fox é 🦊'
    assert isinstance(item["b64_json"], LongText) and len(item["b64_json"]) == len(B64)
    assert decode_base64(item["b64_json"], limit=len(IMAGE)) == IMAGE


def test_escapes_and_line_breaks_in_long_base64_are_read_as_json_means_them() -> None:
    wrapped = "\n".join(B64[i : i + 76] for i in range(0, len(B64), 76))
    escaped = json.dumps({"data": [{"b64_json": wrapped}]}).replace("/", "\\/")

    (item,) = parse(bytearray(escaped.encode()))["data"]

    assert "\\/" in escaped and "\\n" in escaped
    assert decode_base64(item["b64_json"], limit=len(IMAGE)) == IMAGE


def test_short_strings_decode_as_with_b64decode() -> None:
    assert decode_base64(" aGVs\nbG8= ", limit=5) == b"hello"


def test_the_payload_of_a_long_data_url() -> None:
    (item,) = parse(_answer(url="data:image/png;base64," + B64))["data"]

    assert item["url"].startswith("data:")
    assert decode_base64(item["url"].after(","), limit=len(IMAGE)) == IMAGE


@pytest.mark.parametrize(
    "text",
    [
        B64[:-4] + "!!!!",  # not the alphabet
        B64[:100_000] + "====" + B64[100_000:],  # data after padding
        B64[:-1],  # not a multiple of 4
        B64[:1_200_000] + "\\\\" + B64[1_200_000:],  # an escaped backslash
    ],
    ids=["alphabet", "padding", "length", "backslash"],
)
def test_long_strings_that_are_not_base64_are_refused(text: str) -> None:
    (item,) = parse(bytearray(b'{"data": [{"b64_json": "' + text.encode() + b'"}]}'))["data"]

    with pytest.raises(binascii.Error):
        decode_base64(item["b64_json"], limit=10**9)


def test_decoding_stops_past_the_limit() -> None:
    (item,) = parse(_answer(b64_json=B64))["data"]

    with pytest.raises(TooLargeError) as caught:
        decode_base64(item["b64_json"], limit=100_000)

    assert 100_000 < caught.value.size < len(IMAGE)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b'{"data": [{"b64_json": "' + B64.encode(), "not terminated"),
        (b'{"data": [' + b'"x",' * 300_000 + b'"x"]}', "over 1048576 bytes"),
        (b'{"data": ["' + b'\\"' * 120_000 + b'"]}', "too many escaped quotes"),
        (
            b'{"data": [{"revised_prompt": "\\u0000 0", "b64_json": "' + B64.encode() + b'"}]}',
            "\\u0000",
        ),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b"<html>502 Bad Gateway</html>", "Expecting value"),
    ],
    ids=["unterminated", "big-skeleton", "escaped-quotes", "nul", "deep", "html"],
)
def test_documents_that_are_not_json_or_not_cheap_to_read_are_refused(
    body: bytes, words: str
) -> None:
    with pytest.raises(ValueError, match=words.replace("\\", "\\\\")):
        parse(bytearray(body))


def test_short_documents_parse_like_json() -> None:
    document = {"error": {"message": "no", "type": None, "param": None, "code": 5}, "x": [1.5]}
    assert parse(json.dumps(document).encode()) == document
