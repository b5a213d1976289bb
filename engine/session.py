"""The explorer's document, without Qt: the drawn digit, the inpainting mask, undo/redo, and the
per-pixel figures the app shows (conditionals, NLL, log p, its percentile among test digits).

The desktop app (``app/``) holds one :class:`Session` and only translates mouse events into
:meth:`Session.paint` calls; everything here can be driven and tested by a plain script.

Figures follow the chain rule ``log p(x) = sum_t log p(x_{o_t} | x_{o_<t})`` of the model's
ordering ``o`` (see :mod:`engine.models.base`): :func:`pixel_figures` returns, per raster pixel,
``p(x_i = 1 | x_<i)`` and the negative log-likelihood ``-log p(x_i | x_<i)`` of the drawn value in
nats, their sum ``log p(x)`` and the bits per pixel ``-log2 p(x) / D``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .models.base import ARModel
from .ordering import SEEDED_NAMES, Ordering

__all__ = [
    "Session",
    "PixelFigures",
    "pixel_figures",
    "conditionals_csv",
    "PixelInfluence",
    "pixel_influence_steps",
    "reference_log_probs",
    "percentile",
    "EnsembleFigures",
    "ensemble_size",
    "ensemble_figures_steps",
    "brush_offsets",
    "ModelEntry",
    "list_checkpoints",
    "resolve_model_name",
]

LOG2 = math.log(2.0)


def brush_offsets(size: int) -> list[tuple[int, int]]:
    """Offsets (dr, dc) covered by a round brush of ``size`` pixels across (1 = one pixel)."""
    size = max(1, int(size))
    r = (size - 1) / 2
    lo, hi = -int(math.floor(r)), int(math.ceil(r))
    out = []
    for dr in range(lo, hi + 1):
        for dc in range(lo, hi + 1):
            cy, cx = dr - (hi + lo) / 2, dc - (hi + lo) / 2
            if cy * cy + cx * cx <= r * r + 0.5:
                out.append((dr, dc))
    return out


class Session:
    """A binary ``height x width`` canvas with a mask of pixels to regenerate and an undo history.

    ``canvas`` is uint8 0/1 (1 = ink). ``mask`` is bool (True = unknown, to be inpainted). Every
    user action that changes the canvas is one undo step: call :meth:`begin_stroke` when the mouse
    button goes down and paint as the mouse moves; :meth:`set_canvas`, :meth:`clear` and
    :meth:`invert` record their own step.
    """

    def __init__(self, height: int = 28, width: int = 28, max_history: int = 200):
        self.height, self.width = height, width
        self.canvas = np.zeros((height, width), np.uint8)
        self.mask = np.zeros((height, width), bool)
        self._undo: list[tuple[np.ndarray, np.ndarray]] = []
        self._redo: list[tuple[np.ndarray, np.ndarray]] = []
        self.max_history = max_history
        self.version = 0  #: bumps on every change of the canvas (what heatmap requests carry)

    # -- history -------------------------------------------------------------------------------
    def _snapshot(self) -> tuple[np.ndarray, np.ndarray]:
        return self.canvas.copy(), self.mask.copy()

    def _record(self) -> None:
        self._undo.append(self._snapshot())
        del self._undo[: -self.max_history]
        self._redo.clear()

    def begin_stroke(self) -> None:
        """Start an undo step (call before painting a stroke)."""
        self._record()

    def end_stroke(self) -> None:
        """Drop the undo step of a stroke that changed nothing."""
        if self._undo and np.array_equal(self._undo[-1][0], self.canvas) and np.array_equal(self._undo[-1][1], self.mask):
            self._undo.pop()

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    def undo(self) -> bool:
        if not self._undo:
            return False
        self._redo.append(self._snapshot())
        self.canvas, self.mask = self._undo.pop()
        self.version += 1
        return True

    def redo(self) -> bool:
        if not self._redo:
            return False
        self._undo.append(self._snapshot())
        self.canvas, self.mask = self._redo.pop()
        self.version += 1
        return True

    # -- editing -------------------------------------------------------------------------------
    def _stamp(self, target: np.ndarray, row: int, col: int, value: Any, brush: int) -> bool:
        changed = False
        for dr, dc in brush_offsets(brush):
            r, c = row + dr, col + dc
            if 0 <= r < self.height and 0 <= c < self.width and target[r, c] != value:
                target[r, c] = value
                changed = True
        return changed

    def paint(self, row: int, col: int, value: int = 1, brush: int = 1, *, mask: bool = False,
              from_point: tuple[int, int] | None = None) -> bool:
        """Set pixels under a brush (on the canvas, or on the mask if ``mask``) along the segment
        from ``from_point`` to ``(row, col)``; True when something changed."""
        target = self.mask if mask else self.canvas
        val = bool(value) if mask else int(bool(value))
        points = [(row, col)] if from_point is None else _segment(from_point, (row, col))
        changed = False
        for r, c in points:
            changed |= self._stamp(target, r, c, val, brush)
        if changed and not mask:
            self.version += 1
        return changed

    def set_canvas(self, image: np.ndarray, record: bool = True) -> None:
        img = np.asarray(image).reshape(self.height, self.width)
        if record:
            self._record()
        self.canvas = (img > 0.5).astype(np.uint8)
        self.version += 1

    def clear(self) -> None:
        self.set_canvas(np.zeros_like(self.canvas))

    def invert(self) -> None:
        self.set_canvas(1 - self.canvas)

    def set_mask(self, mask: np.ndarray, record: bool = True) -> None:
        if record:
            self._record()
        self.mask = np.asarray(mask, dtype=bool).reshape(self.height, self.width).copy()

    def clear_mask(self) -> None:
        self.set_mask(np.zeros_like(self.mask))

    @property
    def known(self) -> np.ndarray:
        """(D,) bool: pixels kept when inpainting (everything not masked)."""
        return ~self.mask.reshape(-1)

    def flat(self) -> np.ndarray:
        return self.canvas.reshape(-1).astype(np.float32)


def _segment(a: tuple[int, int], b: tuple[int, int]) -> list[tuple[int, int]]:
    """Grid points on the segment from ``a`` to ``b`` (so fast mouse moves leave no gaps)."""
    (r0, c0), (r1, c1) = a, b
    n = max(abs(r1 - r0), abs(c1 - c0))
    if n == 0:
        return [(r1, c1)]
    return [(round(r0 + (r1 - r0) * t / n), round(c0 + (c1 - c0) * t / n)) for t in range(n + 1)]


@dataclass
class PixelFigures:
    """What the heatmaps and the status area show for one image."""

    prob: np.ndarray  #: (H, W) p(x_i = 1 | x_<i)
    nll: np.ndarray  #: (H, W) -log p(x_i | x_<i) of the drawn value, nats
    log_p: float  #: log p(x), nats
    ordering: Ordering
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def bits_per_pixel(self) -> float:
        return -self.log_p / (self.prob.size * LOG2)


@torch.no_grad()
def pixel_figures(model: ARModel, image: np.ndarray, ordering: Ordering | None = None) -> PixelFigures:
    """Conditionals and per-pixel NLL of ``image`` ((H, W) or (D,) 0/1) in one teacher-forced pass."""
    model.eval()
    c = model.config
    x = torch.as_tensor(np.asarray(image, dtype=np.float32).reshape(1, -1))
    order = model.resolve_ordering(ordering)
    logits = model.logits(x, order).float().cpu()
    xt = x.to(logits.dtype)
    nll = torch.nn.functional.binary_cross_entropy_with_logits(logits, xt, reduction="none")
    prob = torch.sigmoid(logits)
    return PixelFigures(
        prob=prob.reshape(c.height, c.width).numpy(),
        nll=nll.reshape(c.height, c.width).numpy(),
        log_p=-float(nll.double().sum()),
        ordering=order,
    )


def conditionals_csv(figures: PixelFigures, image: np.ndarray, model_label: str = "") -> str:
    """The figures of ``image`` as a CSV table, one row per pixel in the order the chain rule
    visits them: step (1-based), row, col, raster index, the drawn value, p(x_i = 1 | x_<i), the
    NLL of the drawn value in nats and bits, and the running total of log p. Comment lines (``#``)
    first say which model and ordering, and the total log p(x)."""
    h, w = figures.prob.shape
    values = np.asarray(image).reshape(-1).astype(np.int64)
    prob = figures.prob.reshape(-1).astype(np.float64)
    nll = figures.nll.reshape(-1).astype(np.float64)
    order = figures.ordering
    lines = []
    if model_label:
        lines.append(f"# model: {model_label}")
    lines.append(f"# ordering: {order.label}")
    lines.append(f"# log p(x) = {figures.log_p:.6f} nats = {figures.log_p / LOG2:.6f} bits; {figures.bits_per_pixel:.6f} bits/pixel")
    lines.append("step,row,col,raster_index,value,p_one,nll_nats,nll_bits,log_p_so_far_nats")
    total = 0.0
    for t in range(h * w):
        i = int(order.perm[t])
        total -= nll[i]
        r, c = divmod(i, w)
        lines.append(f"{t + 1},{r},{c},{i},{values[i]},{prob[i]:.6g},{nll[i]:.6g},{nll[i] / LOG2:.6g},{total:.6f}")
    return "\n".join(lines) + "\n"


@torch.no_grad()
def reference_log_probs(model: ARModel, images: np.ndarray, ordering: Ordering | None = None, batch_size: int = 1000):
    """Generator over batches of ``images`` yielding the fraction done; returns (N,) log p in nats
    (as the generator's return value) -- so a worker can stop it between batches."""
    model.eval()
    order = model.resolve_ordering(ordering)
    out = []
    n = len(images)
    for i in range(0, n, batch_size):
        xb = torch.as_tensor(np.asarray(images[i : i + batch_size], dtype=np.float32))
        out.append(model.log_prob(xb, order).double().cpu().numpy())
        yield min(1.0, (i + batch_size) / n)
    return np.concatenate(out) if out else np.zeros(0)


@dataclass
class PixelInfluence:
    """How each pixel's drawn value moves one pixel's conditional: ``delta[j]`` is
    ``p(x_i = 1 | x_<i)`` as drawn minus the same with pixel ``j`` flipped -- positive where the
    value of ``j`` as drawn makes the model expect more ink at ``i``. NaN at ``i`` and at every
    pixel after it in the ordering: those cannot move it (the autoregressive property)."""

    pixel: int  #: raster index of pixel i
    step: int  #: its 0-based step in the ordering (how many pixels it is conditioned on)
    p: float  #: p(x_i = 1 | x_<i) as drawn
    delta: np.ndarray  #: (H, W)
    ordering: Ordering

    def strongest(self, n: int = 3) -> list[tuple[int, float]]:
        """The ``n`` pixels (raster index, delta) that move it most, largest |delta| first."""
        d = self.delta.reshape(-1)
        idx = np.flatnonzero(np.isfinite(d))
        top = idx[np.argsort(-np.abs(d[idx]), kind="stable")][:n]
        return [(int(j), float(d[j])) for j in top]


@torch.no_grad()
def pixel_influence_steps(model: ARModel, image: np.ndarray, pixel: int, ordering: Ordering | None = None,
                          batch_size: int = 256):
    """Generator yielding the fraction done; returns the :class:`PixelInfluence` of every pixel
    before ``pixel`` in the ordering on its conditional. Exact counterfactuals, not gradients: one
    teacher-forced pass per earlier pixel, each with that pixel flipped, in batches (so a worker
    can stop it between batches)."""
    model.eval()
    c = model.config
    d = c.height * c.width
    if not 0 <= int(pixel) < d:
        raise ValueError(f"pixel must be a raster index in 0..{d - 1}, got {pixel}")
    order = model.resolve_ordering(ordering)
    dtype = next(model.parameters()).dtype
    x = torch.as_tensor(np.asarray(image, dtype=np.float64).reshape(1, -1)).to(dtype)
    step = int(order.inverse[pixel])
    p = float(torch.sigmoid(model.pixel_logit(x, pixel, order)[0]))
    delta = np.full(d, np.nan)
    before = np.array(order.perm[:step], dtype=np.int64)  # a writable copy (the ordering is frozen)
    for start in range(0, len(before), batch_size):
        js = torch.as_tensor(before[start : start + batch_size])
        xb = x.repeat(len(js), 1)
        rows = torch.arange(len(js))
        xb[rows, js] = 1 - xb[rows, js]
        flipped = torch.sigmoid(model.pixel_logit(xb, pixel, order)).double().cpu().numpy()
        delta[js.numpy()] = p - flipped
        yield min(1.0, (start + len(js)) / len(before))
    return PixelInfluence(int(pixel), step, p, delta.reshape(c.height, c.width), order)


def percentile(value: float, reference: np.ndarray) -> float:
    """Percent of ``reference`` values strictly below ``value`` (ties count half)."""
    ref = np.asarray(reference, dtype=np.float64)
    if ref.size == 0:
        return float("nan")
    below = np.count_nonzero(ref < value)
    ties = np.count_nonzero(ref == value)
    return 100.0 * (below + 0.5 * ties) / ref.size


@dataclass
class EnsembleFigures:
    """log p(x) of one image under an ensemble of orderings (and masks) of an order-agnostic model,
    or of the masks of a connectivity-agnostic one."""

    log_p: float  #: log of the mean probability over the members (log-mean-exp), nats
    members: list[tuple[str, float]]  #: (label, log p) of each member, member 0 first

    @property
    def best(self) -> tuple[str, float]:
        return max(self.members, key=lambda m: m[1])

    @property
    def worst(self) -> tuple[str, float]:
        return min(self.members, key=lambda m: m[1])


def ensemble_size(model: ARModel, meta: dict | None = None) -> int:
    """How many members the app's ensemble read-out uses: the size of the largest ensemble whose
    test NLL the checkpoint records, else a MADE's cycled mask count, else 8; 0 for a model tied to
    one ordering (it has no ensemble) unless it was trained over several connectivity patterns
    (a connectivity-agnostic MADE: an ensemble of its masks in its one ordering)."""
    if not model.any_order and ensemble_kind(model) != "masks":
        return 0
    recorded = recorded_ensemble((meta or {}).get("metrics"))
    if recorded:
        return recorded[0]
    masks = getattr(model.config, "num_masks", 0)
    return int(masks) if isinstance(masks, int) and masks > 1 else 8


def recorded_ensemble(metrics: Any) -> tuple[int, float] | None:
    """(K, test NLL) of the largest ensemble whose test NLL a checkpoint's metrics record
    (``test_nll_ensembleK``, 1 < K <= 1024), or None."""
    best = None
    if isinstance(metrics, dict):
        for key, v in metrics.items():
            k = str(key).removeprefix("test_nll_ensemble")
            if (str(key).startswith("test_nll_ensemble") and k.isdigit() and 1 < int(k) <= 1024
                    and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                    and (best is None or int(k) > best[0])):
                best = (int(k), float(v))
    return best


def ensemble_kind(model: ARModel) -> str:
    """What the members of ``model``'s ensemble differ in: "orderings" (an order-agnostic model,
    whose members may also differ in masks), "masks" (a MADE tied to one ordering but trained over
    several connectivity patterns), or "" (no ensemble)."""
    if model.any_order:
        return "orderings"
    masks = getattr(model.config, "num_masks", 1)
    return "masks" if isinstance(masks, int) and masks != 1 else ""  # 0: a fresh pattern per minibatch


@torch.no_grad()
def ensemble_figures_steps(model: ARModel, image: np.ndarray, n: int):
    """Generator yielding the fraction of members done; returns :class:`EnsembleFigures` of
    ``image`` under members ``0..n-1`` (so a worker can stop it between members)."""
    from .models.base import log_mean_exp

    if n < 1:
        raise ValueError("an ensemble needs at least one member")
    model.eval()
    x = torch.as_tensor(np.asarray(image, dtype=np.float32).reshape(1, -1))
    members, logps = [], []
    multi_mask = getattr(model.config, "num_masks", 1) != 1  # MADE: members differ in connectivity too
    for k in range(n):
        order, conn = model.member(k)
        lp = model.member_log_prob(x, k).double()
        logps.append(lp)
        label = order.label + (f" · mask {conn}" if multi_mask else "")
        members.append((label, float(lp[0])))
        yield (k + 1) / n
    return EnsembleFigures(float(log_mean_exp(torch.stack(logps), 0)[0]), members)


# -- checkpoints the app lists -------------------------------------------------------------------
@dataclass
class ModelEntry:
    """A checkpoint the model picker lists (from its metadata only; weights load on demand)."""

    name: str
    path: Path
    family: str
    test_nll: float | None = None
    valid_nll: float | None = None
    ordering: str = ""
    source: str = "bundled"  #: bundled, opened or trained
    #: (K, test NLL) of the largest ensemble of orderings or masks the checkpoint records
    ensemble: tuple[int, float] | None = None

    @classmethod
    def from_file(cls, path: str | os.PathLike, source: str = "opened") -> "ModelEntry":
        from .checkpoint import read_metadata

        path = Path(path)
        info = read_metadata(path)
        metrics: dict[str, Any] = info["metrics"] if isinstance(info.get("metrics"), dict) else {}

        def num(v: Any) -> float | None:
            return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None

        o = info.get("ordering", {})
        label = f"{o.get('name')}:{o.get('seed')}" if o.get("name") in SEEDED_NAMES and "seed" in o else str(o.get("name", ""))
        return cls(
            name=str(info.get("name") or path.stem),
            path=path,
            family=str(info["family"]),
            test_nll=num(metrics.get("test_nll")),
            valid_nll=num(metrics.get("valid_nll")),
            ordering=label,
            source=source,
            ensemble=recorded_ensemble(metrics),
        )

    @property
    def label(self) -> str:
        if self.test_nll is not None:
            nll = f"test NLL {self.test_nll:.2f}"
        elif self.valid_nll is not None:
            nll = f"valid NLL {self.valid_nll:.2f}"
        else:
            nll = "NLL not measured"
        if self.ensemble is not None:
            nll += f"  ·  ensemble of {self.ensemble[0]}: {self.ensemble[1]:.2f}"
        return f"{self.name}  ·  {self.family.upper()}  ·  {nll}"


def list_checkpoints(folder: str | os.PathLike, source: str = "bundled") -> tuple[list[ModelEntry], list[str]]:
    """Entries for every readable ``*.safetensors`` in ``folder`` (resume files skipped), sorted by
    name, and one error line for each file that could not be read."""
    folder = Path(folder)
    entries: list[ModelEntry] = []
    errors: list[str] = []
    if not folder.is_dir():
        return entries, errors
    for p in sorted(folder.glob("*.safetensors")):
        if p.name.endswith(".resume.safetensors"):
            continue
        try:
            entries.append(ModelEntry.from_file(p, source))
        except Exception as exc:  # noqa: BLE001 -- any unreadable file is reported, never fatal
            errors.append(str(exc))
    return entries, errors


def resolve_model_name(name: str, entries: list[ModelEntry]) -> Path:
    """A checkpoint path from ``--model``: a bundled entry's name or file stem, or a file path."""
    for e in entries:
        if name in (e.name, e.path.stem, e.path.name):
            return e.path
    p = Path(name).expanduser()
    if p.is_file():
        return p
    known = ", ".join(e.name for e in entries) or "none bundled"
    raise FileNotFoundError(f"no model named {name!r} (bundled: {known}) and no such file")
