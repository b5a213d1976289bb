"""Lossless compression of binary images with a model's own conditionals (entropy coding).

An autoregressive model gives, pixel by pixel in its ordering, the probability
``q_t = p(x_{o_t} = 1 | x_{o_<t})``. An entropy coder turns those probabilities into a bit stream
whose length is within a few bits of the ideal ``-log2 p(x) = sum_t -log2 q_t(x_{o_t})``
(Shannon 1948; arithmetic/range coding: Rissanen & Langdon 1979, Martin 1979). The coder here is
the range coder of the maintained ``constriction`` library (Bamler 2022, "Understanding Entropy
Coding With Asymmetric Numeral Systems (ANS): a Statistician's Perspective"), used with its
``Bernoulli`` model family; we never write an arithmetic coder ourselves.

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
    u32 chunk_size  u16 ordering-JSON length  ordering JSON (empty: the model's own)  u32 CRC32
    per chunk: u32 number of 32-bit words, then the words

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
from ..models.base import ARModel
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
    "read_container_header",
    "png_size_bytes",
    "compress",
    "decompress",
]

MAGIC = b"PXCZ"
VERSION = 1
PROB_BITS = 24
_GRID = float(1 << PROB_BITS)
_HEAD = struct.Struct("<4sB16sHHIIH")
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


def png_size_bytes(image: np.ndarray) -> int:
    """Size in bytes of ``image`` (H, W) saved as an optimised 1-bit PNG, for comparison."""
    from PIL import Image

    a = np.asarray(image, dtype=np.uint8).reshape(np.asarray(image).shape[-2:])
    buf = io.BytesIO()
    Image.fromarray(((1 - a) * 255).astype(np.uint8), mode="L").convert("1").save(buf, format="PNG", optimize=True)
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


@dataclass
class CodeLength:
    """What coding one image costs, for display."""

    bits: int  #: length of the image's own range-coder stream (incl. the coder's overhead)
    ideal_bits: float  #: sum of -log2 of the coded (quantised) conditionals
    model_bits: float  #: -log2 p(x) from the model's teacher-forced pass
    png_bytes: int  #: the same image as an optimised 1-bit PNG
    file_bytes: int  #: a complete container file holding just this image


def read_container_header(data: bytes) -> ContainerInfo:
    """Parse and check the container's framing (no model needed); :class:`CompressionError` if bad."""
    data = bytes(data)
    if data[:4] != MAGIC[: len(data[:4])] or len(data) < 4:
        raise CompressionError("not a pixelchain compressed file (bad magic number)")
    if len(data) < _HEAD.size:
        raise CompressionError(f"truncated file: {len(data)} bytes, shorter than the header")
    magic, version, fp, h, w, n, chunk, olen = _HEAD.unpack_from(data, 0)
    if version != VERSION:
        raise CompressionError(f"compressed file format version {version} is not supported (this pixelchain reads {VERSION})")
    if h < 1 or w < 1 or not 1 <= chunk <= MAX_CHUNK or n > MAX_IMAGES:
        raise CompressionError(f"corrupt header: {h}x{w} images, {n} images, chunk size {chunk}")
    pos = _HEAD.size
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
    return ContainerInfo(fp.hex(), h, w, n, chunk, ordering_json, crc, chunks, header_bytes, len(data))


def _crc(images: np.ndarray) -> int:
    return zlib.crc32(np.packbits(images.astype(np.uint8), axis=1).tobytes())


class Codec:
    """Encode/decode binary images with one model. Keeps a float64 CPU copy of the model.

    ``ordering`` (order-agnostic models only) codes in another ordering; it is stored in the file.
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
        stepper = self.model.stepper(x, self.ordering)
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
        if a.size and not np.isin(a, (0, 1)).all():
            raise CompressionError("only binary images (values 0 and 1) can be coded")
        if len(a) > MAX_IMAGES:
            raise CompressionError(f"at most {MAX_IMAGES} images per file")
        return a.astype(np.uint8)

    # -- public ----------------------------------------------------------------------------------
    def encode_chunk(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One stream for ``images`` (b, D): (compressed uint32 words, ideal bits per image)."""
        import constriction

        b = len(images)
        probs, _ = self._run(b, images)
        sym = images[:, self.ordering.perm].T  # (D, b) step-major, like probs
        enc = constriction.stream.queue.RangeEncoder()
        enc.encode(np.ascontiguousarray(sym, dtype=np.int32).reshape(-1), constriction.stream.model.Bernoulli(perfect=False),
                   np.ascontiguousarray(probs).reshape(-1))
        ideal = -np.log2(np.where(sym == 1, probs, 1.0 - probs)).sum(axis=0)
        return np.asarray(enc.get_compressed(), dtype=np.uint32), ideal

    def encode(self, images: np.ndarray | torch.Tensor, progress: Progress | None = None) -> bytes:
        """The container for ``images`` ((N, D), (N, H, W) or one (H, W) image of 0/1)."""
        return self.encode_detailed(images, progress)[0]

    def encode_detailed(self, images: np.ndarray | torch.Tensor, progress: Progress | None = None) -> tuple[bytes, np.ndarray]:
        """(container, ideal bits per image under the quantised conditionals)."""
        x = self._check_images(images)
        own = self.ordering == self.model.ordering
        oj = b"" if own else self.ordering.to_json().encode()
        parts = [_HEAD.pack(MAGIC, VERSION, bytes.fromhex(self.fingerprint)[:16], self.height, self.width, len(x),
                            self.chunk_size, len(oj)), oj, struct.pack("<I", _crc(x))]
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
                _, out[start : start + b] = codec._run(b, None, dec)
            except CompressionError:
                raise
            except Exception as exc:  # the library rejects a stream it cannot decode
                raise CompressionError(f"corrupt data in chunk {k + 1}: {exc}") from None
            if not dec.maybe_exhausted():
                raise CompressionError(f"corrupt data in chunk {k + 1}: the stream holds more than its images")
            if progress is not None:
                progress(start + b, info.n_images)
        if _crc(out) != info.crc32:
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
        """Actual and ideal code length of one (H, W) image, and its 1-bit PNG size (for a panel)."""
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
            png_bytes=png_size_bytes(x.reshape(self.height, self.width)),
            file_bytes=len(data),
        )


def compress(model: ARModel, images: np.ndarray, ordering: Ordering | None = None, chunk_size: int = 500,
             progress: Progress | None = None) -> bytes:
    """Compress binary images with ``model``; see :class:`Codec`."""
    return Codec(model, ordering, chunk_size).encode(images, progress)


def decompress(model: ARModel, data: bytes, progress: Progress | None = None) -> np.ndarray:
    """Decode a container made by :func:`compress` with the same model; (N, H, W) uint8."""
    return Codec(model).decode(data, progress)
