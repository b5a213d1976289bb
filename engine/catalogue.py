"""The checkpoints the explorer lists, without Qt: one :class:`ModelEntry` per file, read from its
metadata alone (the weights load when the model is chosen), and ``--model`` resolved to a file.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .figures import recorded_ensemble
from .ordering import SEEDED_NAMES

__all__ = ["ModelEntry", "list_checkpoints", "resolve_model_name"]


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
    levels: int = 2  #: pixel levels K of the model (2: binary)
    head: str = ""  #: its output head for K > 2 (categorical, logistic-mixture)
    dataset: str = ""  #: the data set it was trained on (engine.datasets), when the file says or implies it

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
            **_levels_of(info.get("config")),
            dataset=_dataset_of(info),
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
        grey = f"  ·  {self.levels} levels" if self.levels > 2 else ""
        return f"{self.name}  ·  {self.family.upper()}{grey}  ·  {nll}"


def _dataset_of(info: dict[str, Any]) -> str:
    from .datasets import dataset_of
    from .errors import PixelchainError

    try:
        return dataset_of(info)
    except PixelchainError:
        return ""


def _levels_of(config: Any) -> dict[str, Any]:
    """``levels`` and ``head`` of a checkpoint's config (absent from binary models' older files)."""
    if not isinstance(config, dict):
        return {}
    k = config.get("levels", 2)
    head = config.get("output", "")
    return {"levels": k if isinstance(k, int) and not isinstance(k, bool) and k >= 2 else 2,
            "head": head if isinstance(head, str) else ""}


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
