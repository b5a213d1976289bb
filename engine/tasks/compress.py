"""Lossless compression of images with a model's own conditionals (entropy coding).

An autoregressive model gives, pixel by pixel in its ordering, the probability
``q_t = p(x_{o_t} = 1 | x_{o_<t})``. An entropy coder turns those probabilities into a bit stream
whose length is within a few bits of the ideal ``-log2 p(x) = sum_t -log2 q_t(x_{o_t})``
(Shannon 1948; arithmetic/range coding: Rissanen & Langdon 1979, Martin 1979). The coder here is
the range coder of the maintained ``constriction`` library (Bamler 2022, "Understanding Entropy
Coding With Asymmetric Numeral Systems (ANS): a Statistician's Perspective"), used with its
``Bernoulli`` model family; we never write an arithmetic coder ourselves.

Grey images (a model with K > 2 levels) are coded the same way with K-ary symbols: the head's K
probabilities of each conditional are quantised to integer frequencies summing to ``2**24``
(:func:`quantise_frequencies`; every level keeps at least frequency 1, so any image can be coded,
however unlikely) and handed to the library's ``Categorical`` family as those exact dyadic
fractions. The symbols are coded step by step (one library call per step for the chunk, both
ways), since a chunk's K probabilities for every pixel would not fit in memory at K = 256.

Bit-exactness. The decoder only knows the pixels it has already decoded, so it must run the
model's incremental :meth:`~engine.models.base.ARModel.stepper` pixel by pixel; the encoder runs
the very same stepper on the same batch shape and feeds it the true values, so both sides compute
the probabilities with identical operations on identical inputs. To make this robust, coding runs
on a float64 CPU copy of the model and every probability is rounded to a fixed grid of
``2**-24`` steps and clamped to ``[2**-24, 1 - 2**-24]`` before it reaches the coder: a different
BLAS or CPU changes float64 results by ~1e-16, which moves a probability across a grid line with a
chance of about 1e-9 per pixel. A CRC32 of the images is stored in the file and checked after
decoding, so a mismatch is reported, never silently returned.

Streams. One range-coder stream per chunk of ``chunk_size`` images (default 500), the symbols
interleaved step-major (pixel ``o_t`` of every image of the chunk, then ``o_{t+1}``...). Encoding
is one library call per chunk and decoding one call per step for the whole chunk, so the Python
overhead is per step, not per pixel and image. Measured on MADE and 2000 test digits, a stream
costs about 17 bits to terminate plus ~1e-4 bit per coded pixel (the coder's own 24-bit
fixed-point probabilities), so chunks of 500 images land 0.11 bit per image (< 0.1%) above
``-log2 p(x)``; one stream per image would cost ~18 bits per image, ~13% of a digit's ~140 bits.
A single image is coded as a chunk of one.

Container (little-endian)::

    b"PXCZ"  u8 version  16 bytes model fingerprint  u16 height  u16 width  u32 images
    u32 chunk_size  u16 ordering-JSON length  [u16 levels: version 2 only]
    ordering JSON (empty: the model's own)  u32 CRC32
    per chunk: u32 number of 32-bit words, then the words

Version 1 holds binary images (its CRC32 is of the bit-packed images) and is what a binary model
has always written, byte for byte. Version 2 holds images of K > 2 levels, records K (4, 8, 16 or
256) and takes the CRC32 of one byte per pixel.

The fingerprint (:func:`model_fingerprint`) is the sha256 of the family, config, ordering and
every weight (as float64), so decoding with another model is refused with a clear message.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import struct
import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..errors import PixelchainError
from ..marginal import stepper_for
from ..models.base import ARModel
from ..models.heads import LEVELS
from ..ordering import Ordering, OrderingError

__all__ = [
    "CompressionError",
    "Codec",
    "CodeLength",
    "ContainerInfo",
    "MAGIC",
    "VERSION",
    "PROB_BITS",
    "model_fingerprint",
    "quantise_probabilities",
    "quantise_frequencies",
    "VERSION_LEVELS",
    "FREQ_BITS",
    "read_container_header",
    "png_size_bytes",
    "compress",
    "decompress",
]

MAGIC = b"PXCZ"
#: the format of a file of binary images (unchanged since the first release)
VERSION = 1
#: the format of a file of images with K > 2 levels: version 1 plus a u16 of K after the fixed header
VERSION_LEVELS = 2
PROB_BITS = 24
_GRID = float(1 << PROB_BITS)
#: K-ary conditionals are integer frequencies summing to ``2**FREQ_BITS`` (the coder's own precision)
FREQ_BITS = 24
_TOTAL = 1 << FREQ_BITS
_HEAD = struct.Struct("<4sB16sHHIIH")
_LEVELS = struct.Struct("<H")
#: the levels a version-2 file may record (a binary file is version 1)
GREY_LEVELS = tuple(k for k in LEVELS if k > 2)
MAX_IMAGES = 10_000_000
MAX_CHUNK = 65_536
#: a file may not claim more images per bit of coded data than this (refused before any allocation
#: or decoding step, so that the work a file asks for is proportional to its size). Each chunk's
#: stream holds at least one 32-bit word, so a model certain of every pixel codes 500 blank images
#: in 32 bits (15.6 per bit); real digits cost ~80 bits each. The encoder refuses to write a file
#: beyond it (a smaller chunk size codes such images)
MAX_IMAGES_PER_BIT = 16

Progress = Callable[[int, int], None]  # (images done, total)


class CompressionError(PixelchainError, ValueError):
    """A file that cannot be decoded (wrong model, corrupt, truncated) or images that cannot be coded."""


def model_fingerprint(model: ARModel) -> str:
    """Hex sha256 of what determines the model's probabilities: family, config, ordering, weights.

    Weights are hashed as float64, so a float32 model and its float64 copy share a fingerprint.
    """
    h = hashlib.sha256()
    head = {"family": model.family, "config": model.config.to_dict(), "ordering": model.ordering.to_dict()}
    h.update(json.dumps(head, sort_keys=True).encode())
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().to("cpu")
        t = t.to(torch.float64) if t.is_floating_point() else t.to(torch.int64)
        h.update(f"{name}:{tuple(t.shape)}".encode())
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


def quantise_probabilities(logits: torch.Tensor) -> np.ndarray:
    """(B,) float64 probabilities of a 1 on the ``2**-PROB_BITS`` grid, never 0 or 1."""
    z = logits.detach().to("cpu", torch.float64).numpy()
    if np.isnan(z).any():
        raise CompressionError("the model produced NaN probabilities; it cannot code these images")
    with np.errstate(over="ignore"):
        p = 1.0 / (1.0 + np.exp(-z))
    return np.clip(np.rint(p * _GRID), 1.0, _GRID - 1.0) / _GRID


def quantise_frequencies(log_probs: torch.Tensor) -> np.ndarray:
    """(B, K) int64 frequencies summing to ``2**FREQ_BITS`` from (B, K) log-probabilities.

    Each level gets ``1 + floor(p * (2**FREQ_BITS - K))`` and the few units left over go to the
    most probable level (the first of equals), so every level is codable and the mass lost to the
    floor is at most K units of ``2**-24``. Integer arithmetic after one float64 ``exp`` keeps the
    two passes identical: the encoder and the decoder round the same float64 numbers, which the
    float64 model computes with the same operations on the same batch shape."""
    lp = log_probs.detach().to("cpu", torch.float64).numpy()
    if lp.ndim != 2 or lp.shape[1] < 2:
        raise ValueError(f"expected (B, K) log-probabilities, got shape {lp.shape}")
    if np.isnan(lp).any() or (lp == np.inf).any():
        raise CompressionError("the model produced NaN probabilities; it cannot code these images")
    p = np.exp(lp)
    total = p.sum(axis=1, keepdims=True)
    if not (np.isfinite(total).all() and (total > 0).all()):
        raise CompressionError("the model produced probabilities that do not normalise; it cannot code these images")
    k = lp.shape[1]
    freq = np.floor(p / total * (_TOTAL - k)).astype(np.int64) + 1
    rows = np.arange(len(freq))
    freq[rows, np.argmax(p, axis=1)] += _TOTAL - freq.sum(axis=1)
    return freq


def png_size_bytes(image: np.ndarray, levels: int = 2) -> int:
    """Size in bytes of ``image`` (H, W) saved as an optimised PNG, for comparison: a 1-bit PNG for
    a binary image, an 8-bit grey one (level v at intensity ``round(v * 255 / (K - 1))``, white ink
    on black as MNIST is stored) for an image of ``levels`` K > 2."""
    from PIL import Image

    a = np.asarray(image, dtype=np.uint8).reshape(np.asarray(image).shape[-2:])
    buf = io.BytesIO()
    if levels == 2:
        Image.fromarray(((1 - a) * 255).astype(np.uint8), mode="L").convert("1").save(buf, format="PNG", optimize=True)
    else:
        grey = (a.astype(np.int64) * 255 + (levels - 1) // 2) // (levels - 1)
        Image.fromarray(grey.astype(np.uint8), mode="L").save(buf, format="PNG", optimize=True)
    return len(buf.getvalue())


@dataclass
class ContainerInfo:
    fingerprint: str  #: first 16 bytes of the model fingerprint, hex
    height: int
    width: int
    n_images: int
    chunk_size: int
    ordering_json: str  #: "" for the model's own ordering
    crc32: int
    chunks: list[tuple[int, int]]  #: (byte offset, number of 32-bit words) of each chunk's stream
    header_bytes: int
    total_bytes: int
    levels: int = 2  #: pixel levels of the images (2: a version-1 file)


@dataclass
class CodeLength:
    """What coding one image costs, for display."""

    bits: int  #: length of the image's own range-coder stream (incl. the coder's overhead)
    ideal_bits: float  #: sum of -log2 of the coded (quantised) conditionals
    model_bits: float  #: -log2 p(x) from the model's teacher-forced pass
    png_bytes: int  #: the same image as an optimised PNG (1-bit when binary, else 8-bit grey)
    file_bytes: int  #: a complete container file holding just this image


def read_container_header(data: bytes) -> ContainerInfo:
    """Parse and check the container's framing (no model needed); :class:`CompressionError` if bad."""
    data = bytes(data)
    if data[:4] != MAGIC[: len(data[:4])] or len(data) < 4:
        raise CompressionError("not a pixelchain compressed file (bad magic number)")
    if len(data) < _HEAD.size:
        raise CompressionError(f"truncated file: {len(data)} bytes, shorter than the header")
    magic, version, fp, h, w, n, chunk, olen = _HEAD.unpack_from(data, 0)
    if version not in (VERSION, VERSION_LEVELS):
        raise CompressionError(f"compressed file format version {version} is not supported (this pixelchain reads "
                               f"{VERSION} and {VERSION_LEVELS})")
    if h < 1 or w < 1 or not 1 <= chunk <= MAX_CHUNK or n > MAX_IMAGES:
        raise CompressionError(f"corrupt header: {h}x{w} images, {n} images, chunk size {chunk}")
    pos = _HEAD.size
    levels = 2
    if version == VERSION_LEVELS:
        if len(data) < pos + _LEVELS.size:
            raise CompressionError("truncated file: the header ends early")
        (levels,) = _LEVELS.unpack_from(data, pos)
        pos += _LEVELS.size
        if levels not in GREY_LEVELS:
            raise CompressionError(f"corrupt header: {levels} pixel levels (a file of grey images holds "
                                   f"{', '.join(map(str, GREY_LEVELS))})")
    if len(data) < pos + olen + 4:
        raise CompressionError("truncated file: the header ends early")
    try:
        ordering_json = data[pos : pos + olen].decode("utf-8")
    except UnicodeDecodeError:
        raise CompressionError("corrupt header: the ordering description is not text") from None
    pos += olen
    (crc,) = struct.unpack_from("<I", data, pos)
    pos += 4
    header_bytes = pos
    chunks: list[tuple[int, int]] = []
    for _ in range(-(-n // chunk)):
        if len(data) < pos + 4:
            raise CompressionError(f"truncated file: {len(chunks)} of {-(-n // chunk)} chunks present")
        (words,) = struct.unpack_from("<I", data, pos)
        pos += 4
        if len(data) < pos + 4 * words:
            raise CompressionError("truncated file: a chunk's data ends early")
        chunks.append((pos, words))
        pos += 4 * words
    if pos != len(data):
        raise CompressionError(f"corrupt file: {len(data) - pos} unexpected bytes after the last chunk")
    bits = 32 * sum(w for _, w in chunks)
    if n > MAX_IMAGES_PER_BIT * bits:
        raise CompressionError(f"corrupt header: {n:,} images cannot be held in {bits:,} bits of coded data "
                               f"(at most {MAX_IMAGES_PER_BIT} images a bit)")
    return ContainerInfo(fp.hex(), h, w, n, chunk, ordering_json, crc, chunks, header_bytes, len(data), levels)


def _crc(images: np.ndarray, levels: int = 2) -> int:
    """CRC32 of the images: bit-packed when binary (the version-1 format), a byte a pixel otherwise."""
    if levels == 2:
        return zlib.crc32(np.packbits(images.astype(np.uint8), axis=1).tobytes())
    return zlib.crc32(np.ascontiguousarray(images, dtype=np.uint8).tobytes())


class Codec:
    """Encode/decode images with one model. Keeps a float64 CPU copy of the model.

    Binary images for a binary model (a version-1 file); images of levels ``0 .. K-1`` for a model
    of K > 2 levels (a version-2 file). ``ordering`` (order-agnostic models only) codes in another
    ordering; it is stored in the file.
    """

    def __init__(self, model: ARModel, ordering: Ordering | None = None, chunk_size: int = 500):
        import constriction  # noqa: F401  (fail early with a clear ImportError)

        if not 1 <= chunk_size <= MAX_CHUNK:
            raise ValueError(f"chunk size must be between 1 and {MAX_CHUNK}")
        self.fingerprint = model_fingerprint(model)
        self.model = copy.deepcopy(model).to("cpu", torch.float64).eval()
        self.ordering = self.model.resolve_ordering(ordering)
        self.chunk_size = chunk_size
        self.height, self.width = model.config.height, model.config.width
        self.levels = model.levels
        self.binary = model.binary

    # -- the one loop both directions share ----------------------------------------------------
    @torch.no_grad()
    def _run(self, b: int, values: np.ndarray | None, decoder=None) -> tuple[np.ndarray, np.ndarray]:
        """Step through the ordering for a chunk of ``b`` images; returns (probs (D, b), x (b, D)).

        Encoding passes the true ``values`` (b, D); decoding passes a range decoder instead.
        """
        if (values is None) == (decoder is None):
            raise ValueError("_run takes either the values to encode or a decoder")
        import constriction

        family = constriction.stream.model.Bernoulli(perfect=False)
        d = self.model.size
        x = torch.zeros(b, d, dtype=torch.float64)
        stepper = stepper_for(self.model, x, self.ordering)
        probs = np.empty((d, b), dtype=np.float64)
        out = np.empty((b, d), dtype=np.uint8)
        for t, pixel in enumerate(self.ordering.perm.tolist()):
            q = quantise_probabilities(stepper.logits(pixel))
            probs[t] = q
            v = values[:, pixel] if values is not None else np.asarray(decoder.decode(family, q), dtype=np.uint8)
            out[:, pixel] = v
            vt = torch.as_tensor(v, dtype=torch.float64)
            stepper.observe(pixel, vt)
            x[:, pixel] = vt
        return probs, out

    @torch.no_grad()
    def _run_levels(self, b: int, values: np.ndarray | None, coder) -> tuple[np.ndarray, np.ndarray]:
        """The K-level loop for a chunk of ``b`` images: (ideal bits (b,), x (b, D)).

        ``coder`` is a range encoder when the true ``values`` (b, D) are given, else a range
        decoder; either way each step codes the chunk's pixel under the same integer frequencies,
        which the float64 stepper computes from the pixels coded so far."""
        import constriction

        family = constriction.stream.model.Categorical(perfect=False)
        head = self.model.dist_head
        d = self.model.size
        x = torch.zeros(b, d, dtype=torch.float64)
        stepper = stepper_for(self.model, x, self.ordering)
        ideal = np.zeros(b, dtype=np.float64)
        out = np.empty((b, d), dtype=np.uint8)
        rows = np.arange(b)
        for pixel in self.ordering.perm.tolist():
            freq = quantise_frequencies(head.log_probs(stepper.logits(pixel)))
            probs = freq / float(_TOTAL)  # exact dyadic fractions
            if values is not None:
                v = values[:, pixel]
                coder.encode(np.ascontiguousarray(v, dtype=np.int32), family, probs)
            else:
                v = np.asarray(coder.decode(family, probs), dtype=np.uint8)
            ideal += FREQ_BITS - np.log2(freq[rows, v.astype(np.int64)])
            out[:, pixel] = v
            vt = torch.as_tensor(v, dtype=torch.float64)
            stepper.observe(pixel, vt)
            x[:, pixel] = vt
        return ideal, out

    def _check_images(self, images: np.ndarray | torch.Tensor) -> np.ndarray:
        a = np.asarray(torch.as_tensor(images).cpu().numpy() if isinstance(images, torch.Tensor) else images)
        d = self.height * self.width
        if a.ndim == 2 and a.shape == (self.height, self.width) and a.shape[1] != d:
            a = a.reshape(1, d)
        elif a.ndim == 3 and a.shape[1:] == (self.height, self.width):
            a = a.reshape(len(a), d)
        elif a.ndim == 1 and a.shape[0] == d:
            a = a.reshape(1, d)
        if a.ndim != 2 or a.shape[1] != d:
            raise CompressionError(f"expected {self.height}x{self.width} images, got an array of shape {a.shape}")
        if self.levels == 2:
            if a.size and not np.isin(a, (0, 1)).all():
                raise CompressionError("only binary images (values 0 and 1) can be coded")
        elif a.size and not np.isin(a, np.arange(self.levels)).all():
            raise CompressionError(f"this model codes images of {self.levels} levels: only the whole values 0 to "
                                   f"{self.levels - 1} can be coded")
        if len(a) > MAX_IMAGES:
            raise CompressionError(f"at most {MAX_IMAGES} images per file")
        return a.astype(np.uint8)

    # -- public ----------------------------------------------------------------------------------
    def encode_chunk(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One stream for ``images`` (b, D): (compressed uint32 words, ideal bits per image)."""
        import constriction

        b = len(images)
        if not self.binary:
            enc = constriction.stream.queue.RangeEncoder()
            ideal, _ = self._run_levels(b, images, enc)
            return np.asarray(enc.get_compressed(), dtype=np.uint32), ideal
        probs, _ = self._run(b, images)
        sym = images[:, self.ordering.perm].T  # (D, b) step-major, like probs
        enc = constriction.stream.queue.RangeEncoder()
        enc.encode(np.ascontiguousarray(sym, dtype=np.int32).reshape(-1), constriction.stream.model.Bernoulli(perfect=False),
                   np.ascontiguousarray(probs).reshape(-1))
        ideal = -np.log2(np.where(sym == 1, probs, 1.0 - probs)).sum(axis=0)
        return np.asarray(enc.get_compressed(), dtype=np.uint32), ideal

    def encode(self, images: np.ndarray | torch.Tensor, progress: Progress | None = None) -> bytes:
        """The container for ``images`` ((N, D), (N, H, W) or one (H, W) image of levels 0 .. K-1)."""
        return self.encode_detailed(images, progress)[0]

    def encode_detailed(self, images: np.ndarray | torch.Tensor, progress: Progress | None = None) -> tuple[bytes, np.ndarray]:
        """(container, ideal bits per image under the quantised conditionals)."""
        x = self._check_images(images)
        own = self.ordering == self.model.ordering
        oj = b"" if own else self.ordering.to_json().encode()
        version = VERSION if self.levels == 2 else VERSION_LEVELS
        head = _HEAD.pack(MAGIC, version, bytes.fromhex(self.fingerprint)[:16], self.height, self.width, len(x), self.chunk_size, len(oj))
        if version == VERSION_LEVELS:
            head += _LEVELS.pack(self.levels)
        parts = [head, oj, struct.pack("<I", _crc(x, self.levels))]
        ideal = np.zeros(len(x))
        for i in range(0, len(x), self.chunk_size):
            words, ideal[i : i + self.chunk_size] = self.encode_chunk(x[i : i + self.chunk_size])
            parts += [struct.pack("<I", len(words)), words.astype("<u4").tobytes()]
            if progress is not None:
                progress(min(i + self.chunk_size, len(x)), len(x))
        bits = 8 * sum(len(p) for p in parts[4::2])  # the coded words (parts: header, ordering, CRC, then count and words)
        if len(x) > MAX_IMAGES_PER_BIT * bits:  # the decoder would refuse the file as implausible
            raise CompressionError(f"these images cost less than 1/{MAX_IMAGES_PER_BIT} bit each under this model, less than a "
                                   f"file may claim; code them with a smaller chunk size (now {self.chunk_size})")
        return b"".join(parts), ideal

    def decode(self, data: bytes, progress: Progress | None = None) -> np.ndarray:
        """(N, H, W) uint8 images from a container made with this model; refuses any other."""
        import constriction

        info = read_container_header(data)
        if info.fingerprint != self.fingerprint[:32]:
            raise CompressionError(
                f"this file was compressed with another model (fingerprint {info.fingerprint[:12]}...); the model given "
                f"is {self.fingerprint[:12]}...: decompress with the checkpoint used to compress"
            )
        if (info.height, info.width) != (self.height, self.width):
            raise CompressionError(f"the file holds {info.height}x{info.width} images, the model is for {self.height}x{self.width}")
        if info.levels != self.levels:
            raise CompressionError(f"the file holds images of {info.levels} levels, the model's pixels have {self.levels}")
        ordering = self.model.ordering
        if info.ordering_json:
            try:
                ordering = Ordering.from_json(info.ordering_json, self.height, self.width)  # checked before it is built
            except OrderingError as exc:
                raise CompressionError(f"corrupt header: {exc}") from None
        ok, why = self.model.supports(ordering)
        if not ok:
            raise CompressionError(f"the file was coded in an ordering this model cannot use: {why}")
        codec = self if ordering == self.ordering and info.chunk_size == self.chunk_size else self._with(ordering, info.chunk_size)
        d = self.height * self.width
        out = np.empty((info.n_images, d), dtype=np.uint8)
        raw = bytes(data)
        for k, (pos, words) in enumerate(info.chunks):
            start = k * info.chunk_size
            b = min(info.chunk_size, info.n_images - start)
            stream = np.frombuffer(raw, dtype="<u4", count=words, offset=pos).astype(np.uint32)
            try:
                dec = constriction.stream.queue.RangeDecoder(stream)
                if self.binary:
                    _, out[start : start + b] = codec._run(b, None, dec)
                else:
                    _, out[start : start + b] = codec._run_levels(b, None, dec)
            except CompressionError:
                raise
            except Exception as exc:  # the library rejects a stream it cannot decode
                raise CompressionError(f"corrupt data in chunk {k + 1}: {exc}") from None
            if not dec.maybe_exhausted():
                raise CompressionError(f"corrupt data in chunk {k + 1}: the stream holds more than its images")
            if progress is not None:
                progress(start + b, info.n_images)
        if _crc(out, self.levels) != info.crc32:
            raise CompressionError(
                "the decoded images fail the checksum: the file is corrupt, or the model's arithmetic differs on this "
                "machine from the one that compressed it"
            )
        return out.reshape(info.n_images, self.height, self.width)

    def _with(self, ordering: Ordering, chunk_size: int) -> "Codec":
        other = copy.copy(self)
        other.ordering, other.chunk_size = ordering, chunk_size
        return other

    def code_length(self, image: np.ndarray) -> CodeLength:
        """Actual and ideal code length of one (H, W) image, and its PNG size (for a panel)."""
        x = self._check_images(image)
        if len(x) != 1:
            raise CompressionError("code_length takes one image")
        data, ideal = self.encode_detailed(x)
        info = read_container_header(data)
        with torch.no_grad():
            lp = float(self.model.log_prob(torch.as_tensor(x, dtype=torch.float64), self.ordering)[0])
        return CodeLength(
            bits=32 * info.chunks[0][1],
            ideal_bits=float(ideal[0]),
            model_bits=float(-lp / np.log(2.0)),
            png_bytes=png_size_bytes(x.reshape(self.height, self.width), self.levels),
            file_bytes=len(data),
        )


def compress(model: ARModel, images: np.ndarray, ordering: Ordering | None = None, chunk_size: int = 500,
             progress: Progress | None = None) -> bytes:
    """Compress images (binary, or of the model's K levels) with ``model``; see :class:`Codec`."""
    return Codec(model, ordering, chunk_size).encode(images, progress)


def decompress(model: ARModel, data: bytes, progress: Progress | None = None) -> np.ndarray:
    """Decode a container made by :func:`compress` with the same model; (N, H, W) uint8."""
    return Codec(model).decode(data, progress)
