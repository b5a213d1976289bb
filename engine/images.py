"""Image files in and out (pillow, no Qt): MNIST-like import and PNG grids.

:func:`import_image` turns any picture pillow can read into a 28x28 binary digit the way MNIST
digits were made: the ink (dark on light or light on dark, detected) is cropped to its bounding
box, scaled to fit 20x20 keeping its aspect ratio, centred by its centre of mass in a 28x28 field
and thresholded; a picture that is already 28x28 is only thresholded (:func:`import_image` with
``fit="auto"``), so a binary 28x28 digit is coded exactly as it is drawn.

Files are checked before decoding: only regular files are opened (a FIFO would block the reader
for ever), pillow may only identify the formats in :data:`IMAGE_FORMATS` (a PostScript file never
reaches Ghostscript), a pixel count above :data:`MAX_PIXELS` (a decompression bomb) is refused from
the header alone, and large images are reduced while decoding. :func:`load_npy` reads a ``.npy``
array with the same care: a strict header check, a plain numeric dtype, a size that matches the bytes.
"""

from __future__ import annotations

import os
import stat
import tokenize
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from .atomic import atomic_file
from .errors import PixelchainError

__all__ = ["ImageError", "IMAGE_FORMATS", "INKS", "MAX_PIXELS", "as_is", "import_image", "load_npy", "open_regular", "to_digit",
           "save_png", "save_grid"]

#: the most pixels an image may have (width x height, from its header, before decoding): a 7000x7000
#: photo passes; a 124 KB PNG of 1 x 64M pixels, which would take 1.4 GB to decode, does not
MAX_PIXELS = 50_000_000
MAX_FILE_BYTES = 256 << 20
#: the formats pillow may identify a file as: those the app's import dialog offers (PNG, JPEG, BMP,
#: GIF, TIFF, WebP, PGM/PPM/PBM); nothing that hands the file to an outside program (PostScript/EPS)
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM")
#: the most elements a ``.npy`` of images may hold (a million 28x28 images is 784M)
MAX_NPY_ELEMENTS = 1 << 30


class ImageError(PixelchainError, ValueError):
    """An image file that cannot be imported; the message names the file and the problem."""


def _to_gray(img: Image.Image) -> np.ndarray:
    """Grey levels in [0, 1] where 1 is ink; transparency counts as background."""
    if img.mode.startswith("I") or img.mode == "F":  # 16/32-bit integer or float grey levels
        a = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        span = a.max() - a.min()
        g = (a - a.min()) / span if span > 0 else np.zeros_like(a)
        alpha = None
    else:
        if img.mode in ("P", "PA"):
            img = img.convert("RGBA")
        if img.mode not in ("1", "L", "LA", "RGB", "RGBA", "La", "RGBa"):
            img = img.convert("RGB")  # CMYK, YCbCr, LAB, HSV, ...
        alpha = np.asarray(img.getchannel("A"), dtype=np.float64) / 255 if "A" in img.getbands() else None
        g = np.asarray(img.convert("L"), dtype=np.float64) / 255
    if alpha is not None and alpha.min() < 0.99:
        # transparent background: ink is what is opaque, dark or light
        return alpha * (1 - g) if np.mean(g[alpha > 0.5]) < 0.5 else alpha * g
    # light background (the usual scan or drawing): invert so ink is high
    border = np.concatenate([g[0], g[-1], g[:, 0], g[:, -1]])
    return 1 - g if border.mean() > 0.5 else g


def to_digit(gray: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """A (28, 28) uint8 0/1 digit from a grey array with ink high, MNIST-style."""
    return (mnist_field(gray, threshold) > 0.5).astype(np.uint8)


def mnist_field(gray: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """The (28, 28) float grey digit (0..1, ink high) of :func:`to_digit` before its threshold:
    what a grey model's canvas imports (``threshold`` only finds the ink's bounding box)."""
    g = np.asarray(gray, dtype=np.float64)
    g = np.where(np.isfinite(g), g, 0.0).clip(0.0, None)  # no NaN, infinity or negative ink
    ink = g > threshold * g.max() if g.max() > 0 else np.zeros(g.shape, bool)
    if not ink.any():
        return np.zeros((28, 28))
    rows, cols = np.nonzero(ink)
    crop = g[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    h, w = crop.shape
    s = 20.0 / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    resized = Image.fromarray((crop / crop.max() * 255).astype(np.uint8)).resize((nw, nh), Image.Resampling.LANCZOS)
    small = np.asarray(resized, np.float64) / 255
    field = np.zeros((28, 28))
    total = small.sum()
    if total > 0:
        cy = (small.sum(1) * np.arange(nh)).sum() / total
        cx = (small.sum(0) * np.arange(nw)).sum() / total
    else:
        cy, cx = (nh - 1) / 2, (nw - 1) / 2
    top = int(np.clip(round(13.5 - cy), 0, 28 - nh))
    left = int(np.clip(round(13.5 - cx), 0, 28 - nw))
    field[top : top + nh, left : left + nw] = small
    return field


def open_regular(path: str | os.PathLike, max_bytes: int = MAX_FILE_BYTES) -> BinaryIO:
    """Open ``path`` for reading if it is a regular file of at most ``max_bytes``; else :class:`ImageError`.

    The file is opened without blocking and checked through its descriptor, so a FIFO, a device or a
    folder is refused at once (opening a FIFO normally waits for a writer for ever) and nothing can
    be swapped in between the check and the read."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        raise ImageError(f"cannot open {path}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ImageError(f"{path} is not a regular file (a folder, a FIFO or a device): only files are read")
        if st.st_size > max_bytes:
            raise ImageError(f"{path} is {st.st_size / 2**20:.0f} MiB, too large to import")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def import_image(path: str | os.PathLike, threshold: float = 0.5, fit: str = "auto", grey: bool = False) -> np.ndarray:
    """Read an image file into a (28, 28) uint8 0/1 digit; :class:`ImageError` if it cannot be.
    ``grey``: a (28, 28) uint8 digit of intensities 0-255 instead (ink high, brightest ink 255),
    not thresholded, for a model of grey levels.

    ``fit``: ``"auto"`` takes a 28x28 picture as it is (only thresholded, ink detected as for any
    picture) and makes any other size MNIST-like (:func:`to_digit`); ``"mnist"`` always does the
    latter; ``"none"`` refuses a picture that is not 28x28."""
    if fit not in ("auto", "mnist", "none"):
        raise ValueError(f"fit must be auto, mnist or none, not {fit!r}")
    path = Path(path)
    try:
        with open_regular(path) as f, warnings.catch_warnings():
            # pillow only warns about images between its own two bomb limits; refuse them too
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(f, formats=IMAGE_FORMATS) as img:
                w, h = img.size
                if w * h > MAX_PIXELS:
                    raise ImageError(f"{path} is {w}x{h} pixels, more than the {MAX_PIXELS:,} allowed (a decompression bomb?)")
                if getattr(img, "n_frames", 1) > 1:
                    img.seek(0)  # animations: the first frame
                if max(w, h) > 1024 and img.format == "JPEG":
                    img.draft("L", (1024, 1024))  # JPEG decodes at reduced size directly
                img.load()
                if max(img.size) > 1024:
                    # reduce() makes a small new image, so only one full-size copy is ever held
                    factor = max(1, max(img.size) // 1024)
                    if img.mode.startswith("I;16"):  # 16-bit grey: neither reduce() nor thumbnail() take it
                        img = img.convert("I")
                    try:
                        if img.mode in ("P", "PA"):  # averaging palette indices would be wrong
                            raise ValueError(img.mode)
                        img = img.reduce(factor)
                    except ValueError:  # a mode reduce() does not handle: resample a copy
                        img = img.copy()
                    img.thumbnail((1024, 1024))
                gray = _to_gray(img)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{path} was refused as a decompression bomb: {exc}") from None
    except MemoryError:
        raise ImageError(f"{path} is too large to import with the memory available") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path} is not an image pillow can read") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageError(f"{path} is damaged or truncated: {exc}") from None
    if gray.shape == (28, 28) and fit != "mnist":
        return _intensities(gray) if grey else as_is(gray, threshold)
    if fit == "none":
        raise ImageError(f"{path} is {gray.shape[1]}x{gray.shape[0]} pixels, not 28x28")
    return _intensities(mnist_field(gray, threshold)) if grey else to_digit(gray, threshold)


def _intensities(gray: np.ndarray) -> np.ndarray:
    """uint8 0-255 of a grey array with ink high, its brightest ink at 255."""
    g = np.asarray(gray, dtype=np.float64)
    g = np.where(np.isfinite(g), g, 0.0).clip(0.0, None)
    top = g.max()
    return np.zeros(g.shape, np.uint8) if top <= 0 else np.rint(g / top * 255).astype(np.uint8)


def as_is(gray: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """A (28, 28) uint8 0/1 digit from a 28x28 grey array with ink high, pixel for pixel: ink is
    what exceeds ``threshold`` of the brightest ink (a binary picture comes back unchanged)."""
    g = np.asarray(gray, dtype=np.float64)
    g = np.where(np.isfinite(g), g, 0.0).clip(0.0, None)
    top = g.max()
    return (g > threshold * top).astype(np.uint8) if top > 0 else np.zeros(g.shape, np.uint8)


def load_npy(path: str | os.PathLike) -> np.ndarray:
    """The array of a ``.npy`` file, read with a strict check of its header: a version numpy
    writes, a header that parses as numpy's dictionary, a plain numeric dtype (no structured or
    object dtypes), at most :data:`MAX_NPY_ELEMENTS` elements and exactly the bytes the header
    promises. Any other file is an :class:`ImageError` naming it; pickles are never loaded."""
    from numpy.lib import format as npformat

    path = Path(path)
    with open_regular(path, max_bytes=MAX_FILE_BYTES) as f:
        try:
            version = npformat.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = npformat.read_array_header_1_0(f, max_header_size=10000)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = npformat.read_array_header_2_0(f, max_header_size=10000)
            else:
                raise ValueError(f"version {version[0]}.{version[1]}")
        except (ValueError, SyntaxError, TypeError, KeyError, OverflowError, MemoryError, RecursionError, EOFError,
                tokenize.TokenError) as exc:
            text = str(exc.args[0]) if isinstance(exc, tokenize.TokenError) and exc.args else str(exc)
            first = text.splitlines()[0][:120] if text else type(exc).__name__
            raise ImageError(f"{path} is not a .npy array numpy writes (a malformed header: {first})") from None
        if dtype.fields is not None or dtype.subdtype is not None or dtype.kind not in "biuf" or dtype.hasobject:
            raise ImageError(f"{path} holds {dtype} values; expected numbers (0/1 images)")
        if not isinstance(shape, tuple) or not all(isinstance(n, int) and n >= 0 for n in shape):
            raise ImageError(f"{path} has an invalid shape in its header: {shape!r}")
        count = 1
        for n in shape:
            count *= n
        if count > MAX_NPY_ELEMENTS:
            raise ImageError(f"{path} claims {count:,} elements, more than the {MAX_NPY_ELEMENTS:,} allowed")
        need = count * dtype.itemsize
        data = f.read(need + 1)
    if len(data) != need:
        raise ImageError(f"{path} holds {len(data):,} bytes of data where its header promises {need:,}: truncated or altered")
    a = np.frombuffer(data, dtype=dtype)
    return a.reshape(shape[::-1]).T if fortran else a.reshape(shape)


#: the ways a binary image is drawn in a PNG: ``black`` ink on white paper (a drawing, the app's
#: exports) or ``white`` ink on black (MNIST's own pictures: the value 1 is 255)
INKS = ("black", "white")


def _grey_of(image: np.ndarray, ink: str, levels: int = 2) -> np.ndarray:
    """0-255 grey levels of an image of pixel levels 0 .. ``levels``-1 drawn in ``ink``: level v has
    the intensity ``round(v * 255 / (levels - 1))`` (0/255 for a 0/1 image), ink where it is high."""
    if ink not in INKS:
        raise ValueError(f"ink must be one of {', '.join(INKS)}, not {ink!r}")
    if levels == 2:
        on = np.asarray(image, dtype=np.uint8).clip(0, 1)
        return ((on if ink == "white" else 1 - on) * 255).astype(np.uint8)
    if levels < 2:
        raise ValueError(f"an image needs at least 2 pixel levels, not {levels}")
    v = np.asarray(image).astype(np.int64).clip(0, levels - 1)
    grey = (v * 255 + (levels - 1) // 2) // (levels - 1)  # round(v * 255 / (K-1)); K-1 odd: never a tie
    return (grey if ink == "white" else 255 - grey).astype(np.uint8)


def save_png(image: np.ndarray, path: str | os.PathLike, scale: int = 1, ink: str = "black", levels: int = 2) -> None:
    """Save a binary (H, W) image as a 1-bit PNG (``ink`` black on white, or white on black),
    optionally enlarged; written atomically (:mod:`engine.atomic`). With ``levels`` K > 2 the
    image holds levels 0 .. K-1 and is saved as an 8-bit grey PNG (see :func:`_grey_of`)."""
    a = _grey_of(image, ink, levels)
    img = Image.fromarray(a.astype(np.uint8), mode="L")
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    with atomic_file(path) as f:
        (img.convert("1") if levels == 2 else img).save(f, format="PNG")


def save_grid(images: np.ndarray, path: str | os.PathLike, scale: int = 4, pad: int = 2, cols: int | None = None,
              ink: str = "black", levels: int = 2) -> None:
    """Save (N, H, W) binary images as one PNG grid with a grey gap between images (``ink`` as in
    :func:`save_png`); written atomically. ``levels`` K > 2: images of levels 0 .. K-1, drawn in
    grey."""
    images = np.asarray(images)
    n, h, w = images.shape
    cols = cols or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    canvas = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad), 128, np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        canvas[y : y + h, x : x + w] = _grey_of(images[i], ink, levels)
    img = Image.fromarray(canvas, mode="L")
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    with atomic_file(path) as f:
        img.save(f, format="PNG")
