"""Pixel orderings for the chain rule.

An :class:`Ordering` is a permutation of the ``height * width`` pixels of an image: ``perm[t]`` is
the raster index (``row * width + col``) of the pixel generated at step ``t``, and ``inverse[p]`` is
the step at which pixel ``p`` is generated. Every ordering has a name and a JSON form, so a
checkpoint can record the ordering it was trained with and rebuild it exactly (random orderings
are rebuilt from their seed, explicit ones are stored in full).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from . import jsonsafe
from .errors import PixelchainError

__all__ = [
    "Ordering",
    "OrderingError",
    "ORDERING_NAMES",
    "ORDERING_DESCRIPTIONS",
    "make_ordering",
    "parse_ordering",
    "known_first",
    "puts_first",
    "scan_orderings",
    "SCAN_VARIANT_NAMES",
]


class OrderingError(PixelchainError, ValueError):
    """An ordering that cannot be built or is not a valid permutation."""


def _raster(h: int, w: int) -> np.ndarray:
    return np.arange(h * w)


def _column(h: int, w: int) -> np.ndarray:
    return np.arange(h * w).reshape(h, w).T.reshape(-1)


def _snake(h: int, w: int) -> np.ndarray:
    grid = np.arange(h * w).reshape(h, w).copy()
    grid[1::2] = grid[1::2, ::-1]
    return grid.reshape(-1)


def _column_snake(h: int, w: int) -> np.ndarray:
    grid = np.arange(h * w).reshape(h, w).T.copy()
    grid[1::2] = grid[1::2, ::-1]
    return grid.reshape(-1)


def _diagonal(h: int, w: int) -> np.ndarray:
    # Anti-diagonals from the top-left corner, each from top-right to bottom-left.
    rows, cols = np.divmod(np.arange(h * w), w)
    return np.lexsort((rows, rows + cols))


def _spiral_in(h: int, w: int) -> np.ndarray:
    out: list[int] = []
    top, bottom, left, right = 0, h - 1, 0, w - 1
    while top <= bottom and left <= right:
        out.extend(top * w + c for c in range(left, right + 1))
        out.extend(r * w + right for r in range(top + 1, bottom + 1))
        if top < bottom:
            out.extend(bottom * w + c for c in range(right - 1, left - 1, -1))
        if left < right:
            out.extend(r * w + left for r in range(bottom - 1, top, -1))
        top, bottom, left, right = top + 1, bottom - 1, left + 1, right - 1
    return np.asarray(out, dtype=np.int64)


def _spiral_out(h: int, w: int) -> np.ndarray:
    return _spiral_in(h, w)[::-1].copy()


def _hilbert_d2xy(order: int, d: int) -> tuple[int, int]:
    """Position of step ``d`` on a Hilbert curve filling a ``2**order`` square."""
    x = y = 0
    t = d
    s = 1
    while s < (1 << order):
        rx = 1 & (t // 2)
        ry = 1 & (t ^ rx)
        if ry == 0:
            if rx == 1:
                x, y = s - 1 - x, s - 1 - y
            x, y = y, x
        x += s * rx
        y += s * ry
        t //= 4
        s *= 2
    return x, y


def _hilbert(h: int, w: int) -> np.ndarray:
    """A Hilbert curve on the smallest power-of-two square covering the grid, cropped to it.

    Inside the grid the path moves between neighbouring pixels except where the full curve
    leaves the grid and comes back, which is why it is "Hilbert-like" for 28x28.

    The position of every pixel along the curve is computed directly (work proportional to the
    pixels of the image, not to the covering square: a 1 x 2**20 strip would need 2**40 steps of
    :func:`_hilbert_d2xy`), and the pixels are sorted by it.
    """
    order = max(1, int(np.ceil(np.log2(max(h, w)))))
    n = 1 << order
    y, x = np.divmod(np.arange(h * w, dtype=np.int64), w)
    d = np.zeros(h * w, dtype=np.int64)
    s = n // 2
    while s > 0:  # the inverse of _hilbert_d2xy, one bit of the curve per round, for all pixels at once
        rx = (x & s) > 0
        ry = (y & s) > 0
        d += s * s * ((3 * rx.astype(np.int64)) ^ ry.astype(np.int64))
        flip = ~ry & rx
        x = np.where(flip, s - 1 - x, x)  # equals n - 1 - x modulo s, and only the bits below s matter from here on
        y = np.where(flip, s - 1 - y, y)
        x, y = np.where(~ry, y, x), np.where(~ry, x, y)
        x &= s - 1
        y &= s - 1
        s //= 2
    return np.argsort(d, kind="stable")


def _hilbert_by_walking(h: int, w: int) -> np.ndarray:
    """The reference :func:`_hilbert`: walk the whole covering square (tests compare the two)."""
    order = max(1, int(np.ceil(np.log2(max(h, w)))))
    out = []
    for d in range(1 << (2 * order)):
        x, y = _hilbert_d2xy(order, d)
        if y < h and x < w:
            out.append(y * w + x)
    return np.asarray(out, dtype=np.int64)


def _random(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(h * w)


def _random_rows(h: int, w: int, seed: int) -> np.ndarray:
    """Rows from top to bottom, each walked left-to-right or right-to-left as the seed draws."""
    grid = np.arange(h * w).reshape(h, w)
    flip = np.random.default_rng(seed).random(h) < 0.5
    return np.where(flip[:, None], grid[:, ::-1], grid).reshape(-1)


#: Orderings rebuilt from a seed (``NAME:SEED``).
_SEEDED: dict[str, Callable[[int, int, int], np.ndarray]] = {"random": _random, "random-rows": _random_rows}
SEEDED_NAMES: tuple[str, ...] = tuple(_SEEDED)


_BUILDERS: dict[str, Callable[[int, int], np.ndarray]] = {
    "raster": _raster,
    "column": _column,
    "snake": _snake,
    "column-snake": _column_snake,
    "diagonal": _diagonal,
    "spiral-in": _spiral_in,
    "spiral-out": _spiral_out,
    "hilbert": _hilbert,
}

ORDERING_DESCRIPTIONS: dict[str, str] = {
    "raster": "row by row, left to right (the usual order)",
    "column": "column by column, top to bottom",
    "snake": "rows, alternating direction (boustrophedon)",
    "column-snake": "columns, alternating direction",
    "diagonal": "anti-diagonals from the top-left corner",
    "spiral-in": "a spiral from the border to the centre",
    "spiral-out": "a spiral from the centre to the border",
    "hilbert": "a Hilbert curve (cropped to the image)",
    "random": "a random permutation, rebuilt from its seed",
    "random-rows": "rows top to bottom, each row's direction drawn from the seed",
    "explicit": "an explicit permutation",
}

#: Names accepted by :func:`make_ordering` (``explicit`` needs a permutation).
ORDERING_NAMES: tuple[str, ...] = tuple(_BUILDERS) + SEEDED_NAMES

#: The line scans and the ways of starting them from another corner (see :func:`scan_orderings`).
SCAN_BASES = ("raster", "column", "snake", "column-snake")
SCAN_CORNERS = ("mirror", "flip", "turn")  # left-right, top-bottom, half a turn
_CORNER_WORDS = {"mirror": "top-right", "flip": "bottom-left", "turn": "bottom-right"}
#: The corner variants of the line scans, ``raster/mirror`` ... ``column-snake/turn``.
SCAN_VARIANT_NAMES: tuple[str, ...] = tuple(f"{b}/{c}" for b in SCAN_BASES for c in SCAN_CORNERS)
ORDERING_DESCRIPTIONS.update(
    {f"{b}/{c}": f"{b}, started from the {_CORNER_WORDS[c]} corner" for b in SCAN_BASES for c in SCAN_CORNERS}
)


def _builder(name: str) -> Callable[[int, int], np.ndarray] | None:
    """The builder of a named ordering, including corner variants such as ``snake/turn``."""
    if name in _BUILDERS:
        return _BUILDERS[name]
    base, _, corner = name.partition("/")
    if base not in SCAN_BASES or corner not in SCAN_CORNERS:
        return None

    def build(h: int, w: int) -> np.ndarray:
        grid = np.arange(h * w).reshape(h, w)
        grid = {"mirror": grid[:, ::-1], "flip": grid[::-1, :], "turn": grid[::-1, ::-1]}[corner]
        return grid.reshape(-1)[_BUILDERS[base](h, w)]  # the base scan walked over the turned grid

    return build


@dataclass(frozen=True, eq=False)
class Ordering:
    """A permutation of the pixels of a ``height x width`` image (step -> raster index)."""

    name: str
    height: int
    width: int
    perm: np.ndarray = field(repr=False)
    seed: int | None = None

    def __post_init__(self) -> None:
        perm = np.asarray(self.perm)
        n = self.height * self.width
        if self.height < 1 or self.width < 1:
            raise OrderingError(f"image size must be positive, got {self.height}x{self.width}")
        if perm.ndim != 1 or perm.shape[0] != n:
            raise OrderingError(f"an ordering of {self.height}x{self.width} pixels needs {n} entries, got shape {perm.shape}")
        if perm.dtype.kind not in "biuf":
            raise OrderingError(f"ordering entries must be whole numbers, got {perm.dtype} values")
        if not np.issubdtype(perm.dtype, np.integer):
            if perm.size and not np.all(np.equal(np.mod(perm, 1), 0)):
                raise OrderingError("ordering entries must be whole numbers")
        perm = perm.astype(np.int64)
        if perm.size and (perm.min() < 0 or perm.max() >= n):
            raise OrderingError(f"ordering entries must lie in [0, {n - 1}]")
        if np.unique(perm).size != n:
            raise OrderingError("ordering is not a permutation: some pixels repeat and others are missing")
        perm.setflags(write=False)
        object.__setattr__(self, "perm", perm)
        inv = np.empty(n, dtype=np.int64)
        inv[perm] = np.arange(n)
        inv.setflags(write=False)
        object.__setattr__(self, "_inverse", inv)

    # -- views ---------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        return self.height * self.width

    @property
    def inverse(self) -> np.ndarray:
        """``inverse[p]`` is the step at which raster pixel ``p`` is generated."""
        return self._inverse  # type: ignore[attr-defined]

    def step_grid(self) -> np.ndarray:
        """The step number of every pixel, shaped ``(height, width)``."""
        return self.inverse.reshape(self.height, self.width)

    def predecessors(self, pixel: int) -> np.ndarray:
        """Raster indices of the pixels generated before ``pixel``, in generation order."""
        return self.perm[: self.inverse[pixel]]

    @property
    def label(self) -> str:
        return f"{self.name} (seed {self.seed})" if self._seeded else self.name

    @property
    def _seeded(self) -> bool:
        return self.name in _SEEDED and self.seed is not None

    @property
    def spec(self) -> str:
        """Short string that :func:`parse_ordering` turns back into this ordering."""
        return f"{self.name}:{self.seed}" if self._seeded else self.name

    # -- comparison and serialisation --------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Ordering):
            return NotImplemented
        return (self.height, self.width) == (other.height, other.width) and np.array_equal(self.perm, other.perm)

    def __hash__(self) -> int:
        return hash((self.height, self.width, self.perm.tobytes()))

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "height": self.height, "width": self.width}
        if self.name in _SEEDED and self.seed is not None and self.seed >= 0:
            d["seed"] = self.seed
            rebuilt = _SEEDED[self.name](self.height, self.width, int(self.seed))
        elif _builder(self.name) is not None:
            rebuilt = _builder(self.name)(self.height, self.width)  # type: ignore[misc]
        else:
            rebuilt = None
        # an ordering made by hand under a builder's name keeps its own permutation
        if rebuilt is None or not np.array_equal(rebuilt, self.perm):
            d.pop("seed", None)
            d["perm"] = self.perm.tolist()
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any], height: int | None = None, width: int | None = None) -> "Ordering":
        """The ordering a :meth:`to_dict` describes; with ``height`` and ``width`` (the image size it
        is for) a description of another size is refused before anything is built."""
        if not isinstance(d, dict):
            raise OrderingError(f"an ordering is described by a JSON object, got {type(d).__name__}")
        try:
            name, h, w = d["name"], int(d["height"]), int(d["width"])
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise OrderingError(f"ordering description lacks a valid name/height/width: {exc}") from None
        if height is not None and width is not None and (h, w) != (height, width):
            raise OrderingError(f"the ordering describes a {h}x{w} image; the images here are {height}x{width}")
        if h < 1 or w < 1:
            raise OrderingError(f"image size must be positive, got {h}x{w}")
        if h * w > MAX_ORDERING_PIXELS:
            raise OrderingError(f"an image of {h}x{w} pixels is larger than an ordering may be")
        if "perm" in d:
            try:
                perm = np.asarray(d["perm"], dtype=np.int64)
            except (TypeError, ValueError, OverflowError):
                raise OrderingError("ordering 'perm' must be a list of integers") from None
            return cls(str(name), h, w, perm)
        if not isinstance(name, str):
            raise OrderingError(f"ordering name must be a string, got {name!r}")
        return make_ordering(name, h, w, seed=d.get("seed"))

    @classmethod
    def from_json(cls, text: str, height: int | None = None, width: int | None = None) -> "Ordering":
        """:meth:`from_dict` of JSON text, parsed with a size and depth limit (:mod:`engine.jsonsafe`)."""
        try:
            d = jsonsafe.loads(text, what="the ordering description", max_bytes=64 << 20)
        except jsonsafe.JSONError as exc:
            raise OrderingError(str(exc)) from None
        return cls.from_dict(d, height, width)


#: Largest number of pixels an ordering may have (a description asking for more is refused).
MAX_ORDERING_PIXELS = 1 << 20


def make_ordering(name: str, height: int = 28, width: int = 28, seed: int | None = None) -> Ordering:
    """Build a named ordering (see :data:`ORDERING_NAMES`) for a ``height x width`` image."""
    if height < 1 or width < 1:
        raise OrderingError(f"image size must be positive, got {height}x{width}")
    if height * width > MAX_ORDERING_PIXELS:
        raise OrderingError(f"an image of {height}x{width} pixels is larger than an ordering may be")
    if name in _SEEDED:
        try:
            seed = 0 if seed is None else int(seed)
        except (TypeError, ValueError, OverflowError):
            raise OrderingError(f"{name} ordering seed must be an integer, got {seed!r}") from None
        if seed < 0:
            raise OrderingError(f"{name} ordering seed must be non-negative")
        return Ordering(name, height, width, _SEEDED[name](height, width, seed), seed=seed)
    build = _builder(name) if isinstance(name, str) else None
    if build is None:
        raise OrderingError(
            f"unknown ordering {name!r}; choose one of: {', '.join(ORDERING_NAMES)}; or one of "
            f"{', '.join(SCAN_BASES)} followed by /{', /'.join(SCAN_CORNERS)} for that scan from another corner"
        )
    return Ordering(name, height, width, build(height, width))


def parse_ordering(spec: str, height: int = 28, width: int = 28) -> Ordering:
    """Parse ``raster``, ``random:SEED`` or the name of any ordering, or a JSON description."""
    spec = spec.strip()
    if spec.startswith("{"):
        return Ordering.from_json(spec, height, width)  # another image size is refused before any work
    name, _, arg = spec.partition(":")
    if name in _SEEDED:
        try:
            seed = int(arg) if arg else 0
        except ValueError:
            raise OrderingError(f"{name} ordering seed must be an integer, got {arg!r}") from None
        return make_ordering(name, height, width, seed=seed)
    if arg:
        raise OrderingError(f"ordering {name!r} takes no argument")
    return make_ordering(name, height, width)


def scan_orderings(height: int = 28, width: int = 28) -> list[Ordering]:
    """The 16 line scans of an image: raster, column, snake and column-snake, each started from
    every corner (as is, mirrored left-right, mirrored top-bottom, turned half a turn).

    They are the orderings a "scans" order-agnostic MADE trains over; the first is ``raster``.
    """
    return [make_ordering(name, height, width) for base in SCAN_BASES for name in (base, *(f"{base}/{c}" for c in SCAN_CORNERS))]


def puts_first(ordering: Ordering, known: np.ndarray) -> bool:
    """Whether every ``known`` pixel comes before every other pixel in ``ordering``."""
    in_order = np.asarray(known, dtype=bool).reshape(-1)[ordering.perm]
    if in_order.all():
        return True
    first_other = int(np.argmin(in_order))
    return not in_order[first_other:].any()


def known_first(ordering: Ordering, known: np.ndarray) -> Ordering:
    """The ordering with all ``known`` pixels first, each group keeping its order in ``ordering``.

    For a model that accepts any ordering this makes inpainting exact: every unknown pixel is
    conditioned on all known pixels and on the unknown pixels generated before it.
    """
    known = np.asarray(known, dtype=bool).reshape(-1)
    if known.shape[0] != ordering.size:
        raise OrderingError(f"known mask has {known.shape[0]} pixels, ordering has {ordering.size}")
    in_order = known[ordering.perm]
    perm = np.concatenate([ordering.perm[in_order], ordering.perm[~in_order]])
    return Ordering(f"{ordering.spec}+known-first", ordering.height, ordering.width, perm)
