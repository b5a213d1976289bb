"""JSON from users and files: depth and size limits checked before parsing, one error class."""

import pytest

from engine.errors import PixelchainError
from engine.jsonsafe import JSONError, loads, nesting_depth


def test_parses_ordinary_json():
    assert loads('{"a": [1, {"b": "]]]"}]}') == {"a": [1, {"b": "]]]"}]}


def test_depth_ignores_brackets_inside_strings():
    assert nesting_depth('["[[[[", {"x": "\\"{{{"}]') == 2


def test_deep_nesting_is_refused_without_recursion_error():
    text = "[" * 100_000 + "]" * 100_000
    with pytest.raises(JSONError, match="nests deeper than 32"):
        loads(text, what="--config")


def test_size_limit_and_bad_text_are_one_line_errors():
    with pytest.raises(JSONError, match="too large"):
        loads("[" + "1," * 1000 + "1]", max_bytes=100)
    with pytest.raises(JSONError, match="not valid JSON") as info:
        loads("{'a': 1}", what="metadata")
    assert "\n" not in str(info.value) and isinstance(info.value, PixelchainError)
    with pytest.raises(JSONError, match="not UTF-8"):
        loads(b"\xff\xfe{}")
