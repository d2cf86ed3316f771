"""load_json: JSON from outside is parsed only within a size and a nesting depth, refused in one line otherwise."""

from __future__ import annotations

import json
import time

import pytest

from ingestion_factory import documents
from ingestion_factory.documents import MAX_BYTES, MAX_DEPTH, DocumentError, load_json


def nested(depth: int, inner: bytes = b"1") -> bytes:
    return b"[" * depth + inner + b"]" * depth


def test_a_document_within_bounds_is_parsed():
    assert load_json(b'{"a": [1, {"b": "c"}]}', what="doc") == {"a": [1, {"b": "c"}]}
    assert load_json('{"text": "é"}', what="doc") == {"text": "é"}
    assert load_json(nested(MAX_DEPTH), what="doc") is not None


@pytest.mark.parametrize("data", [b"[" * 200_000, nested(200_000), b"[" * MAX_BYTES, nested(MAX_DEPTH + 1),
                                  b'{"a":' * 5000 + b"1" + b"}" * 5000, b"[{" * 1000 + b"}]" * 1000],
                         ids=["200000 [", "200000 levels", "4 MiB of [", "one level too many", "objects",
                              "mixed"])
def test_deep_nesting_is_refused_in_one_line_quickly_and_without_recursion_error(data):
    started = time.monotonic()
    with pytest.raises(DocumentError) as refused:
        load_json(data, what="the manifest r/x:1")
    assert time.monotonic() - started < 2
    assert str(refused.value) == f"the manifest r/x:1 is nested deeper than {MAX_DEPTH} levels"
    assert isinstance(refused.value, ValueError)  # callers that catch ValueError already refuse it


def test_brackets_inside_strings_do_not_count_and_escapes_are_read_as_json_reads_them():
    deep_text = json.dumps({"text": "[" * 1000 + "{" * 1000, "quote": '\\"[[[[', "slash": "\\"})
    assert load_json(deep_text, what="doc")["text"].startswith("[[[")
    # An escaped backslash before the closing quote ends the string: what follows is structure again.
    closes = b'["\\\\", ' + nested(MAX_DEPTH + 1) + b"]"
    with pytest.raises(DocumentError, match="nested deeper"):
        load_json(closes, what="doc")


def test_a_document_over_the_limit_is_refused_before_parsing():
    with pytest.raises(DocumentError) as refused:
        load_json(b" " * (MAX_BYTES + 1), what="the answer")
    assert str(refused.value) == "the answer is larger than 4 MiB, the most that is read of it"
    assert load_json(b'"' + b"a" * 998 + b'"', what="doc", limit=1000) == "a" * 998  # the limit itself is read
    with pytest.raises(DocumentError, match="larger than 1,000 bytes"):
        load_json(b'"' + b"a" * 999 + b'"', what="doc", limit=1000)


@pytest.mark.parametrize("data", [b"not json", b'{"a": ', b"\xff\xfe\x00", b"1" * 5000, b'["a"'])
def test_what_is_not_json_is_one_line_saying_so(data):
    with pytest.raises(DocumentError) as refused:
        load_json(data, what="doc")
    assert str(refused.value).startswith("doc is not JSON (") and "\n" not in str(refused.value)


def test_a_wide_shallow_document_of_the_full_size_is_read():
    items = b",".join([b'{"a":[1]}'] * 50_000)  # 200,000 brackets to count, three levels deep
    wide = b'{"items":[' + items + b'],"pad":"' + b"[" * (MAX_BYTES - len(items) - 21) + b'"}'
    assert len(wide) == MAX_BYTES and len(load_json(wide, what="doc")["items"]) == 50_000


def test_sizes_are_named_in_mib_or_bytes():
    assert documents.size_text(4 * documents.MiB) == "4 MiB"
    assert documents.size_text(32 * documents.MiB) == "32 MiB"
    assert documents.size_text(1000) == "1,000 bytes"
