"""A short fuzz run of the checkpoint loader: mutated valid files and arbitrary metadata.

The loader may accept a mutated file (a flipped bit in a weight is still a checkpoint) or refuse
it with :class:`CheckpointError`; any other exception is a bug. ``bench/reliability.py --fuzz N``
runs the same mutations for longer.
"""

from __future__ import annotations

import json
import struct
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.checkpoint import CheckpointError, load_checkpoint, read_metadata, save_checkpoint

from .hostile import read_st, st_bytes, tiny_made

_DIR = Path(tempfile.mkdtemp(prefix="pixelchain-fuzz-"))
_GOOD = _DIR / "good.safetensors"
save_checkpoint(_GOOD, tiny_made(), {"name": "fuzz", "saved_at": "fixed"})  # the same bytes every run
GOOD = _GOOD.read_bytes()
HEADER, DATA = read_st(_GOOD)
HLEN = struct.unpack("<Q", GOOD[:8])[0]


def mutate(data: bytes, ops: list[tuple[str, int, int]]) -> bytes:
    """Apply byte-level mutations: flip, set, delete, insert, truncate; positions wrap."""
    b = bytearray(data)
    for op, pos, val in ops:
        if not b:
            b = bytearray(b"\x00")
        i = pos % len(b)
        if op == "flip":
            b[i] ^= 1 << (val % 8)
        elif op == "set":
            b[i] = val % 256
        elif op == "delete":
            del b[i : i + 1 + val % 16]
        elif op == "insert":
            b[i:i] = bytes([val % 256]) * (1 + val % 16)
        elif op == "truncate":
            del b[i:]
    return bytes(b)


ops = st.lists(
    st.tuples(st.sampled_from(["flip", "set", "delete", "insert", "truncate"]), st.integers(0, 10**6), st.integers(0, 255)),
    min_size=1,
    max_size=6,
)
# positions inside the header (where structure lives) are drawn more often than inside the data
header_ops = st.lists(
    st.tuples(st.sampled_from(["flip", "set", "delete", "insert"]), st.integers(0, 8 + HLEN - 1), st.integers(0, 255)),
    min_size=1,
    max_size=4,
)


def check_loader(content: bytes, path: Path) -> str:
    """'ok' or 'refused'; any other exception propagates (a fuzz failure)."""
    path.write_bytes(content)
    try:
        ck = load_checkpoint(path)
    except CheckpointError as exc:
        assert str(path) in str(exc)
        return "refused"
    assert ck.model.family
    return "ok"


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mut=ops)
def test_fuzz_mutated_bytes(tmp_path, mut):
    check_loader(mutate(GOOD, mut), tmp_path / "f.safetensors")


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mut=header_ops)
def test_fuzz_mutated_header(tmp_path, mut):
    check_loader(mutate(GOOD, mut), tmp_path / "h.safetensors")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
info_fields = st.fixed_dictionaries(
    {},
    optional={
        "family": st.sampled_from(["made", "nade", "fvsbn", "mlp", "x"]) | json_values,
        "config": st.fixed_dictionaries(
            {}, optional={"hidden": json_values, "height": json_values, "width": json_values, "order_agnostic": json_values}
        ) | json_values,
        "ordering": st.fixed_dictionaries(
            {},
            optional={
                "name": st.sampled_from(["raster", "random", "explicit"]) | json_values,
                "height": json_values, "width": json_values, "seed": json_values, "perm": json_values,
            },
        ) | json_values,
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(info=info_fields, version=st.sampled_from(["1", "2", "0", "-1", "1.5", "", "99999999999999999999"]))
def test_metadata_parsing_never_crashes(tmp_path, info, version):
    """Property: arbitrary JSON in the metadata gives a checkpoint or a CheckpointError."""
    h = json.loads(json.dumps(HEADER))
    h["__metadata__"]["pixelchain"] = json.dumps(info)
    h["__metadata__"]["format_version"] = version
    path = tmp_path / "m.safetensors"
    path.write_bytes(st_bytes(h, DATA))
    try:
        read_metadata(path)
    except CheckpointError:
        pass
    check_loader(path.read_bytes(), path)


spec_fields = st.fixed_dictionaries(
    {},
    optional={
        "dtype": st.sampled_from(["F32", "F16", "I64", "BOOL", "U8"]) | json_values,
        "shape": json_values | st.lists(st.integers(-3, 10**6), max_size=3),
        "data_offsets": json_values | st.lists(st.integers(-(2**63), 2**64), max_size=3),
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(sorted(k for k in HEADER if k != "__metadata__")),
       spec=st.sampled_from(["F32", "BOOL"]) | json_values | spec_fields)
def test_fuzz_tensor_descriptions(tmp_path, name, spec):
    """Property: any JSON in place of a tensor's description is loaded or refused, never a crash."""
    h = json.loads(json.dumps(HEADER))
    h[name] = spec
    check_loader(st_bytes(h, DATA), tmp_path / "t.safetensors")


def test_unmutated_file_loads():
    assert check_loader(GOOD, _DIR / "copy.safetensors") == "ok"
    with pytest.raises(CheckpointError):
        load_checkpoint(_DIR / "missing.safetensors")
