"""Image import: hostile files, awkward-but-valid formats, MNIST-like results, and a property test."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image, ImageDraw, ImageFile

from engine.data import load_split
from engine.images import ImageError, import_image, save_grid, save_png, to_digit

from .hostile import image_cases


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
