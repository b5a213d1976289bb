"""Checkpoints: safetensors weights with JSON metadata in the same file. Never pickle.

A checkpoint holds the model's tensors under ``model.*`` (and, for a resumable training state,
the optimizer's under ``optim.*``), and in the safetensors header's ``__metadata__`` the keys
``format`` (``pixelchain``), ``format_version`` and ``pixelchain`` -- a JSON object with the family,
its config, the ordering, training history, data checksums and measured NLLs. The model is
rebuilt from the config and then receives the weights, so loading runs no code from the file.

The header is parsed and checked here before safetensors reads any tensor: a file that is too
large, truncated, not safetensors, from a newer format version, of an unknown family or with
tensors of the wrong shape or dtype gives a :class:`CheckpointError` naming the file and the
problem. Saving writes a temporary file in the same folder and renames it over the target, so a
crash or a full disk mid-save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save

from .atomic import atomic_write, check_writable
from .errors import PixelchainError
from .models import ARModel, UnknownFamily, build_model
from .ordering import Ordering

__all__ = [
    "CheckpointError",
    "Checkpoint",
    "FORMAT",
    "FORMAT_VERSION",
    "MAX_CHECKPOINT_BYTES",
    "MAX_WEIGHT",
    "save_checkpoint",
    "load_checkpoint",
    "read_metadata",
    "update_metadata",
    "check_can_save",
    "stored_dtype",
    "INT8",
    "quantize_int8",
    "dequantize_int8",
]

FORMAT = "pixelchain"
FORMAT_VERSION = 1
#: Files above this size are refused before anything is read (override per call).
MAX_CHECKPOINT_BYTES = 1 << 30
#: a safetensors header (tensor descriptions and metadata) beyond this is refused unread; the
#: bundled checkpoints' are below 40 KB
MAX_HEADER_BYTES = 8 << 20
#: most tensors a checkpoint may describe (the deepest bundled model has 144)
MAX_TENSORS = 10_000
#: longest metadata value other than the pixelchain JSON, and the pixelchain JSON itself
MAX_META_STRING = 4096
MAX_INFO_BYTES = 4 << 20
#: longest string inside the pixelchain JSON (the bundled ones are below 500 characters), and of
#: its ``name``, which the app shows
MAX_INFO_STRING = 65_536
MAX_NAME = 200
#: Largest image (height * width) a checkpoint may describe.
MAX_IMAGE_PIXELS = 4096
#: Largest magnitude of a stored weight (after int8 decoding): trained models stay below ~100 (the
#: bundled ones below 25); finite values far beyond, up to 3e38, make the model compute NaN
MAX_WEIGHT = 1e5
_ALLOWED_DTYPES = {
    "F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64,
    "I64": torch.int64, "U8": torch.uint8, "I8": torch.int8,
}
_DTYPE_SIZES = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8, "I64": 8, "U8": 1, "I8": 1}
_FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")
#: ``save_checkpoint(..., dtype=INT8)``: weight matrices as int8 with one float32 scale per group
#: of ``INT8_GROUP`` consecutive values of a row (``qscale.NAME``), everything else in float32
INT8 = "int8"
INT8_GROUP = 64
#: matrices smaller than this stay float32 under INT8 (their scales would cost more than they save)
_INT8_MIN_NUMEL = 4096


def _int8_rows(shape: tuple[int, ...]) -> tuple[int, int]:
    """A weight tensor seen as rows x columns: the first dimension against all the others."""
    rows = shape[0] if shape else 1
    cols = 1
    for n in shape[1:]:
        cols *= n
    return rows, cols


def quantize_int8(w: torch.Tensor, group: int = INT8_GROUP) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 codes of ``w`` (same shape) and float32 scales ``(rows, ceil(cols / group))``:
    each group of ``group`` consecutive values in a row maps its largest magnitude to 127."""
    rows, cols = _int8_rows(tuple(w.shape))
    flat = w.detach().to(torch.float32).reshape(rows, cols)
    pad = (-cols) % group
    grouped = torch.nn.functional.pad(flat, (0, pad)).view(rows, -1, group)
    scale = grouped.abs().amax(2) / 127.0
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(grouped / safe[..., None]).clamp_(-127, 127).to(torch.int8)
    return q.view(rows, -1)[:, :cols].reshape(w.shape).contiguous(), scale.contiguous()


def dequantize_int8(q: torch.Tensor, scale: torch.Tensor, group: int = INT8_GROUP) -> torch.Tensor:
    """The float32 weights that :func:`quantize_int8` coded as ``q`` and ``scale``."""
    rows, cols = _int8_rows(tuple(q.shape))
    pad = (-cols) % group
    grouped = torch.nn.functional.pad(q.reshape(rows, cols).to(torch.float32), (0, pad)).view(rows, -1, group)
    return (grouped * scale.to(torch.float32)[..., None]).view(rows, -1)[:, :cols].reshape(q.shape)


class CheckpointError(PixelchainError, ValueError):
    """A checkpoint that cannot be loaded or saved; the message names the file and the problem."""


@dataclass
class Checkpoint:
    model: ARModel
    meta: dict[str, Any]
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # optimizer state etc.
    path: Path | None = None

    @property
    def name(self) -> str:
        n = self.meta.get("name")
        return n if isinstance(n, str) and n else (self.path.stem if self.path else self.model.family)

    @property
    def test_nll(self) -> float | None:
        metrics = self.meta.get("metrics")
        v = metrics.get("test_nll") if isinstance(metrics, dict) else None
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _atomic_write(path: Path, data: bytes) -> None:
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise CheckpointError(f"cannot save {path}: folder {directory} does not exist")
    try:
        atomic_write(path, data)
    except OSError as exc:
        raise CheckpointError(f"cannot save {path}: {exc.strerror or exc}; the previous file is unchanged") from None


def save_checkpoint(
    path: str | os.PathLike,
    model: ARModel,
    meta: dict[str, Any] | None = None,
    extra: dict[str, torch.Tensor] | None = None,
    dtype: torch.dtype | str | None = None,
    state: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Save ``model`` (weights optionally cast to ``dtype``, or coded as int8 with ``dtype=INT8``)
    with metadata, atomically; ``state``: weights to save instead of the model's own (a snapshot
    of its ``state_dict()`` taken earlier, same keys)."""
    path = Path(path)
    tensors = {}
    info = dict(meta or {})
    info.pop("quantization", None)
    own = model.state_dict()
    if state is not None and (set(state) != set(own) or any(state[k].shape != own[k].shape for k in own)):
        raise ValueError("save_checkpoint: the state given is not a snapshot of this model's weights")
    for k, v in (own if state is None else state).items():
        v = v.detach().to("cpu")
        if dtype == INT8:
            if v.is_floating_point() and v.dim() >= 2 and v.numel() >= _INT8_MIN_NUMEL:
                v, tensors[f"qscale.{k}"] = quantize_int8(v)
                info["quantization"] = {"scheme": "int8-groups", "group": INT8_GROUP}
            elif v.is_floating_point():
                v = v.to(torch.float32)
        elif dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        tensors[f"model.{k}"] = v.contiguous()
    for k, v in (extra or {}).items():
        tensors[f"extra.{k}"] = v.detach().to("cpu").contiguous()
    info.update(
        family=model.family,
        config=model.config.to_dict(),
        ordering=model.ordering.to_dict(),
        parameters=model.num_parameters(),
    )
    info.setdefault("saved_at", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    info.setdefault("torch_version", torch.__version__)
    metadata = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "pixelchain": json.dumps(info)}
    _atomic_write(path, save(tensors, metadata=metadata))
    return path


def update_metadata(path: str | os.PathLike, info: dict[str, Any], max_bytes: int = MAX_CHECKPOINT_BYTES) -> Path:
    """Replace the pixelchain metadata of the checkpoint at ``path`` by ``info`` (its family, config
    and ordering stay the file's), atomically, leaving every tensor's bytes exactly as they are: a
    float64 or int8 checkpoint is not re-coded (``eval --record`` once rounded float64 to float32)."""
    path = Path(path)
    header = _read_header(path, max_bytes)
    current = _metadata(path, header)
    new_info = dict(info, family=current["family"], config=current["config"], ordering=current["ordering"])
    header = dict(header, __metadata__=dict(header["__metadata__"], pixelchain=json.dumps(new_info)))
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            f.seek(8 + n)
            data = f.read()
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from None
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # safetensors pads its header to 8 bytes
    _atomic_write(path, struct.pack("<Q", len(text)) + text + data)
    return path


def check_can_save(path: str | os.PathLike) -> None:
    """Raise :class:`CheckpointError` unless a file can be saved at ``path`` (its folder exists and
    takes a new file), so that a long computation whose result goes there is not wasted."""
    try:
        check_writable(path)
    except OSError as exc:
        raise CheckpointError(f"cannot save {path}: {exc.strerror or exc}") from None


def _read_header(path: Path, max_bytes: int) -> dict[str, Any]:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise CheckpointError(f"cannot open {path}: {exc.strerror or exc}") from None
    if not path.is_file():
        raise CheckpointError(f"{path} is not a file")
    if size > max_bytes:
        raise CheckpointError(
            f"{path} is {size / 2**20:.0f} MiB, larger than the {max_bytes / 2**20:.0f} MiB a checkpoint may be; refused without reading it"
        )
    if size < 8:
        raise CheckpointError(f"{path} is not a pixelchain checkpoint: {'empty' if size == 0 else 'too short'} ({size} bytes)")
    with open(path, "rb") as f:
        first = f.read(8)
        (n,) = struct.unpack("<Q", first)
        if MAX_HEADER_BYTES < n <= size - 8:
            raise CheckpointError(f"{path}: its header is {n / 2**20:.1f} MiB, more than the {MAX_HEADER_BYTES / 2**20:.0f} MiB "
                                  f"a checkpoint's may be; refused without reading it")
        if n > min(MAX_HEADER_BYTES, size - 8):
            # A safetensors header length may well start with 0x80, so the pickle/zip magic is only
            # used to explain a file that is not safetensors anyway.
            if first[:1] == b"\x80" or first[:2] == b"PK":
                raise CheckpointError(
                    f"{path} looks like a pickle/torch.save file; pixelchain only loads safetensors checkpoints and never unpickles"
                )
            raise CheckpointError(
                f"{path} is not a safetensors checkpoint or is truncated (header length {n} does not fit in {size} bytes)"
            )
        raw = f.read(n)
    if len(raw) != n:
        raise CheckpointError(f"{path} is truncated: its header ends early")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise CheckpointError(f"{path} is not a safetensors checkpoint: its header is not JSON") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} is not a safetensors checkpoint: its header is not a JSON object")
    if len(header) > MAX_TENSORS + 1:
        raise CheckpointError(f"{path} describes {len(header) - 1:,} tensors, more than the {MAX_TENSORS:,} a checkpoint may hold")
    _check_metadata_strings(path, header.get("__metadata__"))
    spans: list[tuple[int, int, str]] = []
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(spec, dict):
            raise CheckpointError(f"{path}: tensor {name!r} has a malformed description")
        dt = spec.get("dtype")
        if not isinstance(dt, str) or dt not in _ALLOWED_DTYPES:
            raise CheckpointError(f"{path}: tensor {name!r} has unsupported dtype {dt!r}")
        shape, offs = spec.get("shape"), spec.get("data_offsets")
        if (
            not isinstance(shape, list)
            or not all(isinstance(s, int) and s >= 0 for s in shape)
            or not isinstance(offs, list)
            or len(offs) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offs)
        ):
            raise CheckpointError(f"{path}: tensor {name!r} has a malformed description")
        numel = 1
        for s in shape:
            numel *= s
        if offs[1] - offs[0] != numel * _DTYPE_SIZES[spec["dtype"]] or offs[0] < 0:
            raise CheckpointError(f"{path}: tensor {name!r} size does not match its shape")
        spans.append((offs[0], offs[1], name))
    end = max((stop for _, stop, _ in spans), default=0)
    if 8 + n + end != size:
        raise CheckpointError(f"{path} is truncated or has trailing data: expected {8 + n + end} bytes, found {size}")
    # The tensors must tile the data exactly, each byte one tensor's: with overlapping offsets a
    # small file could describe (and have the model built for) many times the values it holds.
    spans.sort()
    end = 0
    for start, stop, name in spans:
        if start != end:
            what = "overlaps another tensor's" if start < end else "leaves a gap before its"
            raise CheckpointError(f"{path}: tensor {name!r} {what} bytes (offset {start}, expected {end}); the file is damaged or crafted")
        end = stop
    return header


def _check_metadata_strings(path: Path, md: Any) -> None:
    """Bound what the metadata may make a reader process or show: the number of entries, each
    string's length, and the ``name`` the app shows (a 20 MB name froze the app for 105 s)."""
    if md is None:
        return
    if not isinstance(md, dict):
        raise CheckpointError(f"{path}: the safetensors metadata is not a JSON object")
    if len(md) > 64:
        raise CheckpointError(f"{path}: the metadata has {len(md):,} entries; a checkpoint has a handful")
    for key, value in md.items():
        limit = MAX_INFO_BYTES if key == "pixelchain" else MAX_META_STRING
        if isinstance(value, str) and len(value) > limit:
            raise CheckpointError(f"{path}: the metadata entry {key[:40]!r} is {len(value):,} characters long, "
                                  f"more than the {limit:,} allowed")


def read_metadata(path: str | os.PathLike, max_bytes: int = MAX_CHECKPOINT_BYTES) -> dict[str, Any]:
    """The checkpoint's metadata (family, config, ordering, metrics, ...), reading only the header."""
    path = Path(path)
    return _metadata(path, _read_header(path, max_bytes))


def stored_dtype(path: str | os.PathLike, max_bytes: int = MAX_CHECKPOINT_BYTES) -> torch.dtype | str | None:
    """How the file stores the model's floating-point weights, as ``save_checkpoint``'s ``dtype``
    takes it: :data:`INT8` for int8-coded weights, else the one float dtype of the weights (None
    when they mix several), so that saving a loaded checkpoint again keeps its size and precision."""
    header = _read_header(Path(path), max_bytes)
    if "quantization" in _metadata(Path(path), header):
        return INT8
    floats = {str(spec.get("dtype")) for k, spec in header.items() if k.startswith("model.") and isinstance(spec, dict)}
    floats &= set(_FLOAT_DTYPES)
    return _ALLOWED_DTYPES[floats.pop()] if len(floats) == 1 else None


def _metadata(path: Path, header: dict[str, Any]) -> dict[str, Any]:
    md = header.get("__metadata__")
    if not isinstance(md, dict) or md.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a safetensors file but not a pixelchain checkpoint (no pixelchain metadata)")
    try:
        version = int(md.get("format_version", ""))
    except (TypeError, ValueError):
        raise CheckpointError(f"{path}: format_version {md.get('format_version')!r} is not a number") from None
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} was written by a newer pixelchain (format {version}, this one reads up to {FORMAT_VERSION}); upgrade pixelchain"
        )
    if version < 1:
        raise CheckpointError(f"{path}: format_version {version} is not valid")
    try:
        info = json.loads(md.get("pixelchain", ""))
    except (TypeError, ValueError, RecursionError):
        raise CheckpointError(f"{path}: the pixelchain metadata is not valid JSON") from None
    if not isinstance(info, dict):
        raise CheckpointError(f"{path}: the pixelchain metadata is not a JSON object")
    name = info.get("name")
    if isinstance(name, str) and len(name) > MAX_NAME:
        raise CheckpointError(f"{path}: the checkpoint's name is {len(name):,} characters long, more than the {MAX_NAME} allowed")
    longest = _longest_string(info)
    if longest > MAX_INFO_STRING:
        raise CheckpointError(f"{path}: the pixelchain metadata holds a string of {longest:,} characters, more than the "
                              f"{MAX_INFO_STRING:,} allowed")
    for key, kind in (("family", str), ("config", dict), ("ordering", dict)):
        if not isinstance(info.get(key), kind):
            raise CheckpointError(f"{path}: metadata lacks a valid {key!r}")
    return info


def _longest_string(value: Any) -> int:
    """The longest string (key or value) anywhere in parsed JSON, without recursion."""
    longest, todo = 0, [value]
    while todo:
        v = todo.pop()
        if isinstance(v, str):
            longest = max(longest, len(v))
        elif isinstance(v, dict):
            todo.extend(v.keys())
            todo.extend(v.values())
        elif isinstance(v, list):
            todo.extend(v)
    return longest


def _int_field(d: dict[str, Any], key: str, default: int) -> int:
    v = d.get(key, default)
    if not isinstance(v, int) or isinstance(v, bool):
        raise ValueError(f"{key} is {v!r}, not a whole number")
    return v


def _check_plausible_size(info: dict[str, Any], header: dict[str, Any]) -> None:
    """Refuse metadata that would build a model far larger than the file's tensors.

    The model is built (on the meta device, then for real) before any weight is read, so a small
    hostile file must not be able to ask for a gigantic ordering or network. Images are limited
    to ``MAX_IMAGE_PIXELS``, and the size hyperparameters of the config (their sum ``S``) must
    fit the number ``n`` of values the file stores: ``S**2 + S * pixels <= 16 * n + 2**20``. Every
    family stores at least that many weights for its hidden sizes, so real checkpoints pass,
    while the memory a constructor can ask for stays proportional to the file's size.
    """
    cfg, order = info["config"], info["ordering"]
    h, w = _int_field(cfg, "height", 28), _int_field(cfg, "width", 28)
    oh, ow = _int_field(order, "height", h), _int_field(order, "width", w)
    if (oh, ow) != (h, w):
        raise ValueError(f"the ordering is for {oh}x{ow} images but the model for {h}x{w}")
    if h < 1 or w < 1 or h * w > MAX_IMAGE_PIXELS:
        raise ValueError(f"an image size of {h}x{w} is not plausible (at most {MAX_IMAGE_PIXELS} pixels)")
    total = _config_total(cfg)
    numel = 0
    for name, spec in header.items():
        if name != "__metadata__":
            n = 1
            for s in spec["shape"]:
                n *= s
            numel += n
    if total * total + total * h * w > 16 * numel + (1 << 20):
        raise ValueError(f"the config asks for a model far larger than the {numel:,} values stored in the file")


def _config_total(cfg: dict[str, Any], depth: int = 0) -> int:
    """The sum of a config's size hyperparameters (its whole numbers but seeds and the image size),
    those of a mixture's member configs (``{"family": ..., "config": {...}}`` items) included."""
    total = 0
    for key, v in cfg.items():
        if "seed" in key or key in ("height", "width"):
            continue
        for item in v if isinstance(v, (list, tuple)) else [v]:
            if isinstance(item, dict) and isinstance(item.get("config"), dict):
                if depth:
                    raise ValueError("a mixture's member holds members of its own")
                total += _config_total(item["config"], depth + 1)
            elif isinstance(item, int) and not isinstance(item, bool):
                if abs(item) > 1 << 31:  # torch would say "Overflow when unpacking long"
                    raise ValueError(f"config value {key}={item} is out of range")
                total += abs(item)
    return total


def _check_int8(path: Path, k: str, spec: dict[str, Any], header: dict[str, Any], info: dict[str, Any]) -> None:
    """An int8-coded weight needs the file to say how it was coded and its scales of the right shape."""
    q = info.get("quantization")
    group = q.get("group") if isinstance(q, dict) else None
    if not (isinstance(q, dict) and q.get("scheme") == "int8-groups" and isinstance(group, int)
            and not isinstance(group, bool) and 1 <= group <= 1 << 16):
        raise CheckpointError(f"{path}: tensor {k!r} is int8 but the metadata does not say how it was coded")
    sc = header.get(f"qscale.{k}")
    rows, cols = _int8_rows(tuple(spec["shape"]))
    want = [rows, -(-cols // group)]
    if not isinstance(sc, dict) or sc.get("dtype") not in _FLOAT_DTYPES or sc.get("shape") != want:
        raise CheckpointError(f"{path}: tensor {k!r} is int8 but its scales (qscale.{k}) are missing or not of shape {tuple(want)}")


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu", max_bytes: int = MAX_CHECKPOINT_BYTES) -> Checkpoint:
    """Rebuild the model from the file's config and load its weights (on any device)."""
    path = Path(path)
    header = _read_header(path, max_bytes)
    info = _metadata(path, header)
    model = None
    try:
        _check_plausible_size(info, header)
        ordering = Ordering.from_dict(info["ordering"])
        try:
            with torch.device("meta"):  # shapes only: nothing is allocated yet
                probe = build_model(info["family"], info["config"], ordering)
        except UnknownFamily:
            raise
        except Exception:  # a constructor that needs real tensors (the size is plausible)
            probe = model = build_model(info["family"], info["config"], ordering)
    except UnknownFamily as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    except Exception as exc:  # anything the config makes our own constructors raise
        raise CheckpointError(f"{path}: cannot rebuild the model from its metadata: {exc}") from None
    probe_state = probe.state_dict()
    expected = {k: tuple(v.shape) for k, v in probe_state.items()}
    stored = {k[len("model."):]: spec for k, spec in header.items() if k.startswith("model.")}
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:5])}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:5])}")
        raise CheckpointError(f"{path}: the tensors do not match a {info['family']} model ({'; '.join(parts)})")
    for k, spec in stored.items():
        if tuple(spec["shape"]) != expected[k]:
            raise CheckpointError(f"{path}: tensor {k!r} has shape {tuple(spec['shape'])}, the config implies {expected[k]}")
        if spec["dtype"] == "I8" and probe_state[k].is_floating_point():
            _check_int8(path, k, spec, header, info)
            continue
        is_float = spec["dtype"] in _FLOAT_DTYPES
        if is_float != probe_state[k].is_floating_point() or spec["dtype"] == "I8":
            raise CheckpointError(f"{path}: tensor {k!r} has dtype {spec['dtype']}, expected {probe_state[k].dtype}")
    del probe, probe_state
    if model is None:
        try:
            model = build_model(info["family"], info["config"], ordering)
        except Exception as exc:
            raise CheckpointError(f"{path}: cannot rebuild the model from its metadata: {exc}") from None
    try:
        tensors = load_file(str(path), device="cpu")
    except Exception as exc:  # SafetensorError, OSError, ...: the file is damaged
        raise CheckpointError(f"{path}: cannot read the tensors: {exc}") from None
    state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    extra = {k[len("extra."):]: v for k, v in tensors.items() if k.startswith("extra.")}
    target = model.state_dict()
    for k, v in list(state.items()):
        scale = tensors.get(f"qscale.{k}") if v.dtype == torch.int8 else None
        if scale is not None:
            if not bool(torch.isfinite(scale).all()) or bool((scale < 0).any()):
                raise CheckpointError(f"{path}: the int8 scales of {k!r} are negative, NaN or infinite")
            if scale.numel() and float(scale.max()) * 127 > MAX_WEIGHT:
                raise CheckpointError(f"{path}: the int8 scales of {k!r} code weights as large as {float(scale.max()) * 127:.3g}, "
                                      f"far beyond the {MAX_WEIGHT:.0e} a trained model has; the file is damaged or altered")
            state[k] = dequantize_int8(v, scale, info["quantization"]["group"])
        elif v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise CheckpointError(f"{path}: tensor {k!r} holds NaN or infinite values")
        elif v.is_floating_point() and v.numel() and float(v.abs().max()) > MAX_WEIGHT:
            raise CheckpointError(f"{path}: tensor {k!r} holds values as large as {float(v.abs().max()):.3g}, far beyond the "
                                  f"{MAX_WEIGHT:.0e} a trained model has; the file is damaged or comes from a diverged run")
    try:
        model.load_state_dict({k: v.to(target[k].dtype) for k, v in state.items()})
    except (RuntimeError, KeyError) as exc:
        raise CheckpointError(f"{path}: the tensors do not fit the model: {exc}") from None
    model.to(device)
    model.eval()
    _probe(model, path)
    return Checkpoint(model=model, meta=info, extra=extra, path=path)


def _probe(model: ARModel, path: Path) -> None:
    """Refuse weights that compute NaN or infinity: the log-likelihoods of a small probe batch (a
    blank image, a full one and a checkerboard; a few milliseconds to ~0.1 s on the deepest bundled
    model) must be finite, so that no figure of this model is ever NaN."""
    param = next(iter(model.parameters()), None)
    kw: dict[str, Any] = {"device": param.device, "dtype": param.dtype} if param is not None else {}
    d = model.size
    x = torch.zeros(3, d, **kw)
    x[1] = 1
    x[2, ::2] = 1
    with torch.no_grad():
        lp = model.log_prob(x)
    if not bool(torch.isfinite(lp).all()):
        raise CheckpointError(f"{path}: the weights compute NaN or infinite log-likelihoods (on a probe batch of 3 images); "
                              f"the file is damaged or comes from a diverged run")
