"""Hostile and broken inputs, shared by the reliability tests and ``bench/reliability.py``.

Each ``*_cases`` function writes its files into a folder and returns :class:`Case` objects: a
name, the path and what must happen (``expect`` is a regular expression the error message must
match; ``None`` means the input is valid and must load). The HTTP helper :func:`serve` runs a
loopback server that can cut a download off half-way.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import pickle
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from engine.checkpoint import save_checkpoint
from engine.models import build_model
from engine.ordering import make_ordering


@dataclass
class Case:
    kind: str
    name: str
    path: Path
    expect: str | None  # regex the error must match; None: must succeed
    check: Callable | None = None  # extra check of a successful result


# --------------------------------------------------------------------------- safetensors bytes
def read_st(path: Path) -> tuple[dict, bytes]:
    raw = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def st_bytes(header: dict | str, data: bytes, length: int | None = None) -> bytes:
    hb = (header if isinstance(header, str) else json.dumps(header)).encode()
    hb += b" " * (-len(hb) % 8)
    return struct.pack("<Q", len(hb) if length is None else length) + hb + data


def tiny_made(seed: int = 0):
    torch.manual_seed(seed)
    return build_model("made", {"hidden": (7, 6), "height": 2, "width": 4}, make_ordering("raster", 2, 4))


class RunsCode:
    """Unpickling this calls ``open(marker, 'w')``: proof that code from the file ran."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def checkpoint_cases(d: Path, marker: Path, big_gb: int = 5) -> list[Case]:
    d = Path(d)
    good = d / "good.safetensors"
    model = tiny_made()
    save_checkpoint(good, model, {"name": "good"})
    header, data = read_st(good)
    raw = good.read_bytes()
    info = json.loads(header["__metadata__"]["pixelchain"])
    cases: list[Case] = []

    def add(name: str, content: bytes, expect: str) -> None:
        p = d / (name.replace(" ", "_").replace("/", "_") + ".safetensors")
        p.write_bytes(content)
        cases.append(Case("checkpoint", name, p, expect))

    def with_meta(**changes) -> bytes:
        h = json.loads(json.dumps(header))
        for k, v in changes.items():
            if v is None:
                h["__metadata__"].pop(k, None)
            else:
                h["__metadata__"][k] = v
        return st_bytes(h, data)

    def with_info(**changes) -> bytes:
        i = dict(info)
        for k, v in changes.items():
            if v is None:
                i.pop(k, None)
            else:
                i[k] = v
        return with_meta(pixelchain=json.dumps(i))

    def with_tensor(name: str, **spec) -> bytes:
        h = json.loads(json.dumps(header))
        h[name].update(spec)
        return st_bytes(h, data)

    from safetensors.torch import save as st_save

    state = {f"model.{k}": v.contiguous() for k, v in model.state_dict().items()}
    meta = header["__metadata__"]
    cases.append(Case("checkpoint", "valid checkpoint", good, None))
    # pickles: torch.save, one crafted to run code, a protocol-0 text pickle
    p = d / "torch_save.pt"
    torch.save(model.state_dict(), p)
    cases.append(Case("checkpoint", "torch.save file (zip + pickle)", p, "pickle"))
    add("pickle that runs code when unpickled", pickle.dumps(RunsCode(str(marker)), protocol=4), "pickle")
    add("protocol-0 pickle that runs code", pickle.dumps(RunsCode(str(marker)), protocol=0), "not a safetensors")
    add("legacy torch pickle", pickle.dumps({"w": [1.0, 2.0]}, protocol=2), "pickle")
    # damaged files
    add("truncated to half", raw[: len(raw) // 2], "truncated")
    add("truncated inside the header", raw[:40], "truncated|does not fit")
    add("last byte missing", raw[:-1], "truncated")
    add("random bytes", np.random.default_rng(1).bytes(4096), "not a safetensors|pickle|truncated")
    add("zero-byte file", b"", "empty")
    add("five-byte file", b"\x00" * 5, "too short")
    add("trailing garbage", raw + b"garbage!", "trailing data")
    add("header length larger than the file", st_bytes(header, data, length=10**12), "does not fit")
    add("header length cuts the JSON", struct.pack("<Q", 16) + raw[8:], "not JSON")
    add("header is a JSON list", st_bytes("[1, 2, 3]", b""), "not a JSON object")
    add("header nested 100000 deep", st_bytes("[" * 100_000 + "]" * 100_000, b""), "not JSON")
    add("header is not UTF-8", struct.pack("<Q", 8) + b"\xff\xfe" * 4, "not JSON")
    # metadata
    add("safetensors without metadata", st_save(state), "not a pixelchain checkpoint")
    add("metadata of another program", st_save(state, metadata={"format": "pt"}), "not a pixelchain checkpoint")
    add("pixelchain metadata not JSON", with_meta(pixelchain="{'family': made"), "not valid JSON")
    add("pixelchain metadata a JSON list", with_meta(pixelchain="[]"), "not a JSON object")
    add("pixelchain metadata missing", with_meta(pixelchain=None), "not valid JSON")
    add("metadata value not a string", st_bytes(dict(header, __metadata__=dict(meta, pixelchain={"a": 1})), data), "not valid JSON")
    add("no family", with_info(family=None), "'family'")
    add("config is a list", with_info(config=[1, 2]), "'config'")
    add("no ordering", with_info(ordering=None), "'ordering'")
    add("unknown family", with_info(family="resnet-9000"), "unknown model family 'resnet-9000'")
    add("unknown config field", with_info(config=dict(info["config"], dropout_rate=0.5)), "cannot rebuild.*dropout_rate")
    add("config value of the wrong type", with_info(config=dict(info["config"], hidden="many")), "cannot rebuild")
    add("negative hidden size", with_info(config=dict(info["config"], hidden=[-7, 6])), "cannot rebuild")
    add("config value beyond 64 bits", with_info(config=dict(info["config"], hidden=[2**70, 6])),
        r"hidden=1180591620717411303424 is out of range")
    add("config asks for a gigantic model", with_info(config=dict(info["config"], hidden=[10**7, 10**7])), "far larger")
    add("ordering for a 100000x100000 image", with_info(ordering={"name": "raster", "height": 100000, "width": 100000}), "ordering is for")
    huge = with_info(config=dict(info["config"], height=100000, width=100000),
                     ordering={"name": "raster", "height": 100000, "width": 100000})
    add("model for a 100000x100000 image", huge, "not plausible")
    add("ordering not a permutation", with_info(ordering={"name": "explicit", "height": 2, "width": 4, "perm": [0] * 8}),
        "not a permutation")
    add("format version from the future", with_meta(format_version="99"), "newer pixelchain")
    add("format version not a number", with_meta(format_version="one"), "not a number")
    add("format version zero", with_meta(format_version="0"), "not valid")
    # tensors
    add("wrong shape (transposed)", with_tensor("model.layers.0.weight", shape=[8, 7]), "shape")
    add("wrong shape (other hidden size)", with_info(config=dict(info["config"], hidden=[6, 7])), "shape")
    wrong_dtype = dict(state)
    wrong_dtype["model.layers.0.weight"] = torch.zeros(7, 8, dtype=torch.int64)
    add("wrong dtype (int64 weights)", st_save(wrong_dtype, metadata=meta), "dtype I64")
    boolean = dict(state)
    boolean["model.out.bias"] = torch.zeros(8, dtype=torch.bool)
    add("unsupported dtype (bool)", st_save(boolean, metadata=meta), "unsupported dtype 'BOOL'")
    add("dtype field is a list", with_tensor("model.out.bias", dtype=["F32"]), "unsupported dtype")
    add("shape field is a string", with_tensor("model.out.bias", shape="8"), "malformed")
    h = json.loads(json.dumps(header))
    h["model.out.bias"] = "F32"  # found by the long fuzz run: once an AttributeError
    add("tensor description is a dtype string", st_bytes(h, data), "malformed")
    add("negative data offsets", with_tensor("model.out.bias", data_offsets=[-32, 0]), "size does not match|malformed")
    add("offsets past the end", with_tensor("model.out.bias", data_offsets=[len(data), len(data) + 32]), "truncated")
    missing = {k: v for k, v in state.items() if k != "model.out.bias"}
    add("a tensor missing", st_save(missing, metadata=meta), "missing out.bias")
    add("an unexpected tensor", st_save(dict(state, **{"model.evil": torch.zeros(3)}), metadata=meta), "unexpected evil")
    for name, value in (("NaN weights", float("nan")), ("infinite weights", float("inf"))):
        bad = dict(state)
        bad["model.out.weight"] = state["model.out.weight"].clone()
        bad["model.out.weight"][0, 0] = value
        add(name, st_save(bad, metadata=meta), "NaN or infinite")
    # finite but huge: the model would compute NaN from them (the 3e38)
    huge_w = dict(state)
    huge_w["model.out.weight"] = state["model.out.weight"].clone()
    huge_w["model.out.weight"][0, 0] = 3e38
    add("finite but huge weights (3e38)", st_save(huge_w, metadata=meta), r"as large as 3e\+38")
    from safetensors.torch import load_file

    big_made = build_model("made", {"hidden": (64,), "height": 8, "width": 8}, make_ordering("raster", 8, 8))
    q8 = d / "int8.tmp.safetensors"
    save_checkpoint(q8, big_made, {"name": "int8"}, dtype="int8")
    q8_tensors = load_file(str(q8))
    q8_meta = read_st(q8)[0]["__metadata__"]
    q8.unlink()
    scale_key = next(k for k in q8_tensors if k.startswith("qscale."))
    q8_tensors[scale_key] = torch.full_like(q8_tensors[scale_key], 3e38)
    add("finite but huge int8 scales (3e38)", st_save(q8_tensors, metadata=q8_meta), "int8 scales .* as large as")
    # overlapping tensors: shapes and sizes are right, but out.bias reuses bytes of out.weight
    h = json.loads(json.dumps(header))
    start = h["model.out.weight"]["data_offsets"][0]
    h["model.out.bias"]["data_offsets"] = [start, start + 32]
    add("overlapping tensors", st_bytes(h, data), "overlaps another tensor|leaves a gap|trailing")
    # not a file, missing, too large (sparse: nothing is written)
    sub = d / "a_folder.safetensors"
    sub.mkdir(exist_ok=True)
    cases.append(Case("checkpoint", "a folder", sub, "not a file"))
    cases.append(Case("checkpoint", "missing file", d / "missing.safetensors", "cannot open"))
    big = d / "huge.safetensors"
    with open(big, "wb") as f:
        f.truncate(big_gb << 30)
    cases.append(Case("checkpoint", "file of several GB (sparse)", big, "refused without reading"))
    return cases


# --------------------------------------------------------------------------------- images
def digit_canvas(size: int = 280, mode: str = "L"):
    """A drawn zero-like ring (dark ink on white) with a stroke, roughly centred."""
    from PIL import Image, ImageDraw

    img = Image.new("L", (size, size), 255)
    dr = ImageDraw.Draw(img)
    s = size / 280
    dr.ellipse([90 * s, 50 * s, 200 * s, 230 * s], outline=0, width=max(1, int(22 * s)))
    return img if mode == "L" else img.convert(mode)


def png_bomb(path: Path, w: int, h: int) -> None:
    """A real 1-bit PNG of w x h white pixels: a few KB on disk, w*h pixels decoded."""
    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    comp = zlib.compressobj(9)
    row = b"\x00" + b"\xff" * ((w + 7) // 8)
    parts = []
    block = row * max(1, (1 << 22) // len(row))
    rows_per_block = len(block) // len(row)
    left = h
    while left > 0:
        n = min(left, rows_per_block)
        parts.append(comp.compress(block[: n * len(row)]))
        left -= n
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b""))


def image_cases(d: Path, huge: int = 6000) -> list[Case]:
    from PIL import Image

    d = Path(d)
    cases: list[Case] = []
    ref = digit_canvas()

    def add(name: str, fname: str, expect: str | None, check=None) -> Path:
        p = d / fname
        cases.append(Case("image", name, p, expect, check))
        return p

    (add("text file", "notes.png", "not an image")).write_text("this is not an image\n")
    add("zero-byte file", "empty.png", "not an image").write_bytes(b"")
    ref.save(d / "ref.png")
    full = (d / "ref.png").read_bytes()
    add("truncated PNG", "truncated.png", "damaged or truncated").write_bytes(full[: len(full) // 2])
    bad = bytearray(full)
    mid = len(bad) // 2
    bad[mid : mid + 64] = bytes(64)
    add("PNG with corrupted data", "corrupt.png", "damaged or truncated|not an image").write_bytes(bytes(bad))
    png_bomb(add("PNG bomb 20000x20000", "bomb20k.png", "decompression bomb"), 20000, 20000)
    png_bomb(add("PNG bomb 10000x10000 (pillow only warns)", "bomb10k.png", "decompression bomb"), 10000, 10000)
    png_bomb(add("PNG bomb 9000x8000 (our limit)", "bomb9k.png", "more than the"), 9000, 8000)
    add("missing file", "missing.png", "cannot open")
    # valid images in awkward forms: all must import to the same digit
    ok = None
    ref.save(add("8-bit grey PNG", "grey.png", ok))
    a16 = (np.asarray(ref, np.uint16) * 257).astype(np.uint16)
    Image.fromarray(a16).save(add("16-bit grey PNG", "grey16.png", ok))
    ref.convert("P").save(add("palette PNG", "palette.png", ok))
    ref.convert("1").save(add("1-bit PNG", "bilevel.png", ok))
    rgba = Image.new("RGBA", ref.size, (0, 0, 0, 0))
    rgba.putalpha(Image.eval(ref, lambda v: 255 - v))  # opaque black ink, transparent paper
    rgba.save(add("RGBA, transparent background", "rgba.png", ok))
    ref.convert("RGB").save(add("RGB JPEG", "rgb.jpg", ok), quality=90)
    ref.convert("CMYK").save(add("CMYK JPEG", "cmyk.jpg", ok), quality=90)
    ref.convert("LA").save(add("grey + alpha PNG", "la.png", ok))
    Image.fromarray(255 - np.asarray(ref)).save(add("white ink on black", "inverted.png", ok))
    Image.fromarray(np.asarray(ref, np.float32) / 255).save(add("32-bit float TIFF", "float.tif", ok))
    Image.fromarray(np.asarray(ref, np.int32) * 1000).save(add("32-bit integer TIFF", "int32.tif", ok))
    ref.convert("RGB").save(add("BMP", "ref.bmp", ok))
    frames = [ref.convert("P"), Image.new("L", ref.size, 255).convert("P"), Image.new("L", ref.size, 0).convert("P")]
    frames[0].save(add("animated GIF (first frame)", "anim.gif", ok), save_all=True, append_images=frames[1:], duration=100, loop=0)
    digit_canvas(huge).save(add("huge valid PNG", "huge.png", ok))
    digit_canvas(huge).convert("RGB").save(add("huge valid JPEG", "huge.jpg", ok), quality=80)
    blank = lambda x: x.sum() == 0  # noqa: E731
    Image.new("L", (64, 64), 255).save(add("blank white image", "blank.png", ok, blank))
    Image.new("L", (1, 1), 0).save(add("one pixel", "one.png", ok, lambda x: x.shape == (28, 28)))
    return cases


# ----------------------------------------------------------------------------------- HTTP
@contextlib.contextmanager
def serve(files: dict[str, bytes], drop_after: int | None = None, status: int = 200) -> Iterator[str]:
    """Serve ``files`` on 127.0.0.1; with ``drop_after`` the connection is cut after that many bytes."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            name = self.path.rsplit("/", 1)[-1]
            body = files.get(name)
            if body is None or status != 200:
                self.send_error(404 if body is None else status)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if drop_after is None:
                self.wfile.write(body)
            else:
                self.wfile.write(body[:drop_after])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)

        def log_message(self, *args):  # keep test output clean
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        t.join(5)


def amat_bytes(x: np.ndarray, sep: str = " ", eol: str = "\n") -> bytes:
    return "".join(sep.join(map(str, row)) + eol for row in np.asarray(x, np.uint8)).encode()
