"""Image import: hostile files, awkward-but-valid formats, MNIST-like results, and a property test."""

from __future__ import annotations

import io
import os
import re
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image, ImageDraw, ImageFile

from engine.data import load_split
from engine.images import IMAGE_FORMATS, ImageError, import_image, load_npy, save_grid, save_png, to_digit

from .hostile import digit_canvas, image_cases, png_bomb


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    d = tmp_path_factory.mktemp("images")
    return {c.name: c for c in image_cases(d, huge=4000)}, import_image(d / "ref.png")


def _names():
    import tempfile
    from pathlib import Path

    # names only: a tiny "huge" image keeps collection fast
    with tempfile.TemporaryDirectory() as d:
        return [c.name for c in image_cases(Path(d), huge=1100)]


@pytest.mark.parametrize("name", _names())
def test_image_case(cases, name, monkeypatch):
    by_name, ref = cases
    case = by_name[name]
    if case.expect is not None:
        if "bomb" in case.name:  # refused from the header: decoding must never start
            def no_decode(*a, **k):
                raise AssertionError("the bomb was decoded")

            monkeypatch.setattr(ImageFile.ImageFile, "load", no_decode)
        with pytest.raises(ImageError) as info:
            import_image(case.path)
        msg = str(info.value)
        assert str(case.path) in msg and re.search(case.expect, msg), msg
        return
    x = import_image(case.path)
    assert x.shape == (28, 28) and x.dtype == np.uint8 and set(np.unique(x)) <= {0, 1}
    if case.check is not None:
        assert case.check(x)
    else:  # the same digit, whatever the file format
        assert iou(x, ref) > 0.75, f"{name}: IoU {iou(x, ref):.2f} with the 8-bit PNG import"


def test_drawn_digit_looks_like_mnist(tmp_path, data_dir):
    test = load_split("test", data_dir)
    counts = test.sum(1)
    lo, hi = np.percentile(counts, [5, 95])
    for size in (90, 280, 1500):
        img = Image.new("L", (size, int(size * 0.8)), 255)  # not square, digit off-centre
        s = size / 280
        # a "7" whose stroke is about 12% of its height, as in MNIST (2.5 of 20 pixels)
        ImageDraw.Draw(img).line([(30 * s, 20 * s), (120 * s, 20 * s), (60 * s, 200 * s)], fill=0, width=round(22 * s))
        p = tmp_path / f"seven{size}.png"
        img.save(p)
        x = import_image(p)
        rows, cols = np.nonzero(x)
        cy, cx = rows.mean(), cols.mean()
        assert abs(cy - 13.5) <= 1.5 and abs(cx - 13.5) <= 1.5, (cy, cx)  # centred by mass
        assert rows.max() - rows.min() + 1 <= 21 and cols.max() - cols.min() + 1 <= 21  # fits 20x20
        assert lo <= x.sum() <= hi, f"{x.sum()} ink pixels, MNIST test digits have {lo:.0f}..{hi:.0f}"


def test_real_mnist_digits_survive_an_upscaled_round_trip(tmp_path, data_dir):
    """A real test digit drawn large (10x, black on white) imports back close to itself."""
    test = load_split("test", data_dir)
    scores = []
    for i in range(0, 10_000, 1000):  # one of each class (the test split is sorted by class)
        d = test[i].reshape(28, 28)
        big = Image.fromarray(((1 - d) * 255).astype(np.uint8)).resize((280, 280), Image.NEAREST)
        p = tmp_path / f"d{i}.png"
        big.save(p)
        x = import_image(p)
        # binarized MNIST is noisy, so the centre of mass may move a pixel: best over small shifts
        scores.append(max(iou(np.roll(x, (dy, dx), (0, 1)), d) for dy in range(-2, 3) for dx in range(-2, 3)))
    print("IoU of re-imported MNIST digits:", " ".join(f"{s:.2f}" for s in scores))
    assert np.median(scores) > 0.85 and min(scores) > 0.6


MODES = ["L", "RGB", "RGBA", "P", "1", "I;16", "LA", "CMYK"]
FORMATS = {"L": ["PNG", "BMP", "GIF", "TIFF"], "RGB": ["PNG", "JPEG", "BMP", "TIFF"], "RGBA": ["PNG", "TIFF"],
           "P": ["PNG", "GIF", "BMP"], "1": ["PNG", "BMP", "TIFF"], "I;16": ["PNG", "TIFF"], "LA": ["PNG"], "CMYK": ["JPEG", "TIFF"]}


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    arr=hnp.arrays(np.uint8, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=40)),
    mode=st.sampled_from(MODES),
    data=st.data(),
)
def test_importer_on_random_small_images(tmp_path, arr, mode, data):
    """Property: any small image in any mode and format imports to a 28x28 0/1 array."""
    fmt = data.draw(st.sampled_from(FORMATS[mode]))
    img = Image.fromarray(arr)
    if mode == "I;16":
        img = Image.fromarray(arr.astype(np.uint16) * 257)
    elif mode != "L":
        img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    p = tmp_path / f"rand.{fmt.lower()}"
    p.write_bytes(buf.getvalue())
    x = import_image(p)
    assert x.shape == (28, 28) and x.dtype == np.uint8 and set(np.unique(x)) <= {0, 1}


@settings(max_examples=100, deadline=None)
@given(g=hnp.arrays(np.float64, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=60),
                   elements=st.floats(allow_nan=True, allow_infinity=True, width=32)))
def test_to_digit_never_fails(g):
    x = to_digit(g)
    assert x.shape == (28, 28) and x.dtype == np.uint8 and set(np.unique(x)) <= {0, 1}


def test_save_png_and_grid_round_trip(tmp_path, data_dir):
    x = load_split("test", data_dir)[:6].reshape(6, 28, 28)
    save_png(x[0], tmp_path / "one.png", scale=2)
    with Image.open(tmp_path / "one.png") as im:
        back = np.asarray(im.convert("L"))
    assert back.shape == (56, 56) and np.array_equal(back[::2, ::2] < 128, x[0] == 1)
    save_grid(x, tmp_path / "grid.png", scale=1, pad=2, cols=3)
    with Image.open(tmp_path / "grid.png") as im:
        g = np.asarray(im)
    assert g.shape == (2 * 30 + 2, 3 * 30 + 2)
    assert np.array_equal(g[32:60, 62:90] == 0, x[5] == 1)
    assert import_image(tmp_path / "one.png").sum() > 0


# ------------------------------------------------------------------ hostile files, each made here
def _in_thread(fn, timeout=60.0):
    """Run ``fn`` in a thread: (finished, its exception); a call that blocks does not hang the test."""
    import threading

    box: dict = {}

    def run():
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 -- handed back to the test
            box["exc"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    return not t.is_alive(), box.get("exc")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
@pytest.mark.parametrize("name, read", [("pipe.png", import_image), ("pipe.npy", load_npy)])
def test_a_fifo_is_refused_at_once(tmp_path, name, read):
    """A FIFO named like an image or an array: refused, never opened for a read that waits for a writer."""
    fifo = tmp_path / name
    os.mkfifo(fifo)
    finished, exc = _in_thread(lambda: read(fifo))
    if not finished:  # unblock the reader so the thread ends
        with open(fifo, "wb"):
            pass
    assert finished, "the read blocked on the FIFO"
    assert isinstance(exc, ImageError) and "not a regular file" in str(exc) and str(fifo) in str(exc), exc


def test_a_folder_is_refused(tmp_path):
    with pytest.raises(ImageError, match="not a regular file"):
        import_image(tmp_path)


def test_postscript_never_reaches_ghostscript(tmp_path, monkeypatch):
    """An EPS file named .png: pillow would hand it to Ghostscript where one is installed."""
    from PIL import EpsImagePlugin

    p = tmp_path / "digit.png"
    p.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 28 28\n%%EndComments\n0 0 moveto 28 28 lineto stroke\nshowpage\n")
    with Image.open(p) as im:  # the file is one pillow identifies when every format is allowed
        assert im.format == "EPS"

    def no_ghostscript(*a, **k):
        raise AssertionError("Ghostscript was run")

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", no_ghostscript)
    with pytest.raises(ImageError, match="not an image pillow can read"):
        import_image(p)
    assert "EPS" not in IMAGE_FORMATS and {"PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP"} <= set(IMAGE_FORMATS)


def test_a_strip_of_64m_pixels_is_refused_from_its_header(tmp_path, monkeypatch):
    """A ~100 KB PNG of 1 x 64M pixels (1.4 GB to decode): refused before any decoding."""
    p = tmp_path / "strip.png"
    png_bomb(p, 64_000_000, 1)
    assert p.stat().st_size < 200_000

    def no_decode(*a, **k):
        raise AssertionError("the strip was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decode)
    with pytest.raises(ImageError, match="64000000x1 pixels, more than the 50,000,000 allowed"):
        import_image(p)


def test_a_5000x5000_16_bit_png_is_a_digit_not_damage(tmp_path):
    """Within the pixel bound, a 16-bit grey PNG imports (it was refused as damaged: wrong mode)."""
    ref = tmp_path / "ref.png"
    digit_canvas().save(ref)
    p = tmp_path / "big16.png"
    Image.fromarray(np.asarray(digit_canvas(5000), np.uint16) * 257).save(p, compress_level=1)
    with Image.open(p) as im:
        assert im.size == (5000, 5000) and im.mode.startswith("I;16")
    x = import_image(p)
    assert iou(x, import_image(ref)) > 0.75


CRUDE_ONE = np.zeros((28, 28), np.uint8)
CRUDE_ONE[3:20, 5] = 1  # a stroke near the left edge: MNIST-style import would move and rescale it
CRUDE_ONE[3, 4] = 1


@pytest.mark.parametrize("ink", ["white", "black"])
def test_a_28x28_binary_image_is_imported_as_it_is(tmp_path, ink):
    p = tmp_path / f"one-{ink}.png"
    Image.fromarray((CRUDE_ONE if ink == "white" else 1 - CRUDE_ONE) * 255).convert("1").save(p)
    assert np.array_equal(import_image(p), CRUDE_ONE)
    moved = import_image(p, fit="mnist")  # asked for, the MNIST normalisation still applies
    assert moved.shape == (28, 28) and not np.array_equal(moved, CRUDE_ONE)
    with pytest.raises(ImageError, match="not 28x28"):
        digit_canvas(56).save(tmp_path / "big.png")
        import_image(tmp_path / "big.png", fit="none")


def _npy(header: str, data: bytes = b"", version: bytes = b"\x01\x00") -> bytes:
    """A .npy file with the header text given as it is (padded as numpy pads it)."""
    h = header.encode("latin1")
    h += b" " * ((-(10 + len(h) + 1)) % 64) + b"\n"
    return b"\x93NUMPY" + version + struct.pack("<H", len(h)) + h + data


NPY_CASES = {
    "unterminated string in the header": (_npy("{'descr': '|u1', 'fortran_order': False, 'shape': (1, 28, 28), 'x': '''"),
                                          "malformed header"),
    "header that is not a dict": (_npy("[1, 2, 3]"), "malformed header"),
    "header with code": (_npy("{'descr': __import__('os').getcwd(), 'fortran_order': False, 'shape': (1,)}"), "malformed header"),
    "unknown version": (_npy("{'descr': '|u1', 'fortran_order': False, 'shape': (1, 28, 28), }", bytes(784), b"\x09\x00"),
                        "malformed header"),
    "structured dtype": (_npy("{'descr': [('a', '|u1'), ('b', '<f4')], 'fortran_order': False, 'shape': (3,), }", bytes(15)),
                         "expected numbers"),
    "object dtype (a pickle)": (_npy("{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", b"\x80\x04N."), "expected numbers"),
    "data shorter than the shape": (_npy("{'descr': '|u1', 'fortran_order': False, 'shape': (2, 28, 28), }", bytes(784)),
                                    "truncated or altered"),
    "a shape of 10**12 images": (_npy("{'descr': '|u1', 'fortran_order': False, 'shape': (1000000000000, 28, 28), }"),
                                 "more than the"),
    "negative shape": (_npy("{'descr': '|u1', 'fortran_order': False, 'shape': (-1, 28, 28), }"), "malformed header|invalid shape"),
}


@pytest.mark.parametrize("name", list(NPY_CASES))
def test_a_malformed_npy_is_one_clear_error(tmp_path, name):
    data, match = NPY_CASES[name]
    p = tmp_path / "x.npy"
    p.write_bytes(data)
    with pytest.raises(ImageError, match=match) as info:
        load_npy(p)
    assert str(p) in str(info.value) and "\n" not in str(info.value)


def test_a_well_formed_npy_reads_as_numpy_wrote_it(tmp_path):
    for a in (np.arange(2 * 28 * 28, dtype=np.int64).reshape(2, 28, 28) % 2, np.asfortranarray(np.eye(28, dtype=np.uint8)),
              np.zeros((0, 784), bool)):
        np.save(tmp_path / "a.npy", a)
        b = load_npy(tmp_path / "a.npy")
        assert b.dtype == a.dtype and np.array_equal(a, b)
