"""Hostile input on the command line (issue 29): every crafted file or value is made inside its
test and ends in one line ``pixelchain: error: ...`` with status 2, quickly, with no traceback."""

from __future__ import annotations

import json
import os
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.checkpoint import save_checkpoint
from engine.cli import main
from engine.models import build_model
from engine.tasks.compress import _HEAD, Codec

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A tiny order-agnostic MADE (it may code in another ordering, so the header's ordering is read)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("hostile") / "made.safetensors"
    model = build_model("made", {"hidden": [16], "num_masks": 2, "order_agnostic": True})
    save_checkpoint(path, model)
    return path, model


def one_line(capsys, argv, match, seconds=60.0):
    t0 = time.perf_counter()
    assert main(argv) == 2
    took = time.perf_counter() - t0
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pixelchain: error: ") and match in lines[0], err
    assert took < seconds, f"{took:.1f}s"
    return lines[0]


def _with_ordering_json(data: bytes, text: bytes) -> bytes:
    """A compressed file with its header's ordering description replaced by ``text`` (the CRC
    covers the images, not the header, so the file is otherwise intact)."""
    fields = list(_HEAD.unpack_from(data, 0))
    olen = fields[-1]
    fields[-1] = len(text)
    return _HEAD.pack(*fields) + text + data[_HEAD.size + olen:]


@pytest.mark.parametrize("text, match", [
    (json.dumps({"name": "hilbert", "height": 1, "width": 1 << 20}).encode(), "the images here are 28x28"),
    (json.dumps({"name": "raster", "height": 60000, "width": 60000}).encode(), "the images here are 28x28"),
    (b'{"name": ' + b"[" * 30000 + b"]" * 30000 + b"}", "nests deeper than"),
])
def test_a_crafted_ordering_in_a_compressed_header(made, tmp_path, capsys, text, match):
    """An absurd shape or deeply nested JSON in a compressed file's header: refused before any work."""
    path, model = made
    x = (np.random.default_rng(0).random((2, 28, 28)) < 0.2).astype(np.uint8)
    data = Codec(model, None).encode(x)
    bad = tmp_path / "bad.pxc"
    bad.write_bytes(_with_ordering_json(data, text))
    one_line(capsys, ["decompress", str(path), str(bad), "--out", str(tmp_path / "o.npy")], match, seconds=20)


def _npy(header: str, data: bytes = b"") -> bytes:
    h = header.encode("latin1")
    h += b" " * ((-(10 + len(h) + 1)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h + data


@pytest.mark.parametrize("command", ["compress", "score"])
@pytest.mark.parametrize("content, match", [
    (_npy("{'descr': '|u1', 'fortran_order': False, 'shape': (1, 28, 28), 'x': '''"), "malformed header"),
    (_npy("{'descr': [('a', '|u1'), ('b', '<f4')], 'fortran_order': False, 'shape': (3,), }", bytes(15)), "expected numbers"),
])
def test_a_malformed_npy_given_to_compress_or_score(made, tmp_path, capsys, command, content, match):
    path, _ = made
    bad = tmp_path / "bad.npy"
    bad.write_bytes(content)
    argv = [command, str(path), str(bad)] + (["--out", str(tmp_path / "o.pxc")] if command == "compress" else [])
    line = one_line(capsys, argv, match)
    assert str(bad) in line


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
@pytest.mark.parametrize("name", ["digit.png", "digits.npy"])
def test_a_fifo_given_as_an_image(made, tmp_path, capsys, name):
    path, _ = made
    fifo = tmp_path / name
    os.mkfifo(fifo)
    one_line(capsys, ["compress", str(path), str(fifo), "--out", str(tmp_path / "o.pxc")], "not a regular file", seconds=20)


# ------------------------------------------------------------------ lossless means the same pixels
CRUDE_ONE = np.zeros((28, 28), np.uint8)
CRUDE_ONE[4:22, 6] = 1  # a crude "1" off to the left: MNIST-style import would centre and rescale it
CRUDE_ONE[4:6, 5] = 1


@pytest.mark.parametrize("ink, mode", [("white", "L"), ("white", "1"), ("black", "L")])
def test_compress_then_decompress_gives_back_the_same_png(made, tmp_path, capsys, ink, mode):
    """A 28x28 binary PNG comes back pixel for pixel: coded as it is, written in its own ink."""
    from PIL import Image

    path, _ = made
    grey = (CRUDE_ONE if ink == "white" else 1 - CRUDE_ONE) * 255
    src = tmp_path / "one.png"
    Image.fromarray(grey.astype(np.uint8)).convert(mode).save(src)
    packed, back = tmp_path / "one.pxcz", tmp_path / "back.png"
    assert main(["compress", str(path), str(src), "--out", str(packed)]) == 0
    argv = ["decompress", str(path), str(packed), "--out", str(back)] + (["--ink", ink] if ink != "white" else [])
    assert main(argv) == 0
    capsys.readouterr()
    with Image.open(src) as a, Image.open(back) as b:
        assert b.size == (28, 28)
        assert np.array_equal(np.asarray(a.convert("L")), np.asarray(b.convert("L")))
    npy = tmp_path / "back.npy"
    assert main(["decompress", str(path), str(packed), "--out", str(npy)]) == 0
    assert np.array_equal(np.load(npy)[0], CRUDE_ONE)
