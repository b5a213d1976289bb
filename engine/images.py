"""Image files in and out (pillow, no Qt): MNIST-like import and PNG grids.

:func:`import_image` turns any picture pillow can read into a 28x28 binary digit the way MNIST
digits were made: the ink (dark on light or light on dark, detected) is cropped to its bounding
box, scaled to fit 20x20 keeping its aspect ratio, centred by its centre of mass in a 28x28 field
and thresholded. Files are checked before decoding: a pixel count above ``MAX_PIXELS`` (a
decompression bomb) is refused from the header alone, and large images are reduced while decoding.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .atomic import atomic_file
from .errors import PixelchainError

__all__ = ["ImageError", "import_image", "to_digit", "save_png", "save_grid", "MAX_PIXELS"]

MAX_PIXELS = 64_000_000
MAX_FILE_BYTES = 256 << 20


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
    g = np.asarray(gray, dtype=np.float64)
    g = np.where(np.isfinite(g), g, 0.0).clip(0.0, None)  # no NaN, infinity or negative ink
    ink = g > threshold * g.max() if g.max() > 0 else np.zeros(g.shape, bool)
    if not ink.any():
        return np.zeros((28, 28), np.uint8)
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
    return (field > 0.5).astype(np.uint8)


def import_image(path: str | os.PathLike, threshold: float = 0.5) -> np.ndarray:
    """Read an image file into a (28, 28) uint8 0/1 digit; :class:`ImageError` if it cannot be."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageError(f"cannot open {path}: {exc.strerror or exc}") from None
    if size > MAX_FILE_BYTES:
        raise ImageError(f"{path} is {size / 2**20:.0f} MiB, too large to import")
    try:
        with warnings.catch_warnings():
            # pillow only warns about images between its own two bomb limits; refuse them too
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
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
    return to_digit(gray, threshold)


def save_png(image: np.ndarray, path: str | os.PathLike, scale: int = 1) -> None:
    """Save a binary (H, W) image as a 1-bit PNG (ink black on white), optionally enlarged;
    written atomically (:mod:`engine.atomic`)."""
    a = (1 - np.asarray(image, dtype=np.uint8).clip(0, 1)) * 255
    img = Image.fromarray(a.astype(np.uint8), mode="L")
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    with atomic_file(path) as f:
        img.convert("1").save(f, format="PNG")


def save_grid(images: np.ndarray, path: str | os.PathLike, scale: int = 4, pad: int = 2, cols: int | None = None) -> None:
    """Save (N, H, W) binary images as one PNG grid with a grey gap between images; written
    atomically."""
    images = np.asarray(images)
    n, h, w = images.shape
    cols = cols or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    canvas = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad), 128, np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        canvas[y : y + h, x : x + w] = (1 - images[i].clip(0, 1)) * 255
    img = Image.fromarray(canvas, mode="L")
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    with atomic_file(path) as f:
        img.save(f, format="PNG")
