"""An ensemble of trained checkpoints written as one checkpoint (``pixelchain mix``, the app's File ▸
Make Ensemble…): the members' mixture (:mod:`engine.models.mixture`), with the data set and the
members' names and recorded figures in its metadata."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from .checkpoint import check_can_save, load_checkpoint, save_checkpoint
from .datasets import dataset_of, describe
from .errors import PixelchainError
from .models.mixture import CLASSIFIERS, MAX_MEMBERS, Mixture

__all__ = ["EnsembleError", "write_ensemble"]


class EnsembleError(PixelchainError, ValueError):
    """Checkpoints that cannot be members of one ensemble, or an ensemble that cannot be written."""


def write_ensemble(paths: Sequence[str | os.PathLike], out: str | os.PathLike, name: str | None = None,
                   classifier: str = "bayes") -> tuple[Path, Mixture, dict[str, Any]]:
    """Load the checkpoints at ``paths`` (2 to :data:`MAX_MEMBERS`, one data set) and save their
    mixture at ``out``, named ``name`` (default: ``out``'s stem), classifying by ``classifier``
    (class-conditional members: "bayes" or "vote", :attr:`MixtureConfig.classifier`); returns (out,
    the mixture, its metadata). Raises :class:`EnsembleError` (or the checkpoint's own error) with
    one line."""
    if classifier not in CLASSIFIERS:
        raise EnsembleError(f"classifier must be one of {', '.join(CLASSIFIERS)}, got {classifier!r}")
    files = [Path(p) for p in paths]
    target = Path(out)
    if not 2 <= len(files) <= MAX_MEMBERS:
        raise EnsembleError(f"an ensemble takes 2 to {MAX_MEMBERS} checkpoints, got {len(files)}")
    if target.exists() and any(p.exists() and target.resolve() == p.resolve() for p in files):
        raise EnsembleError(f"{target} is one of the members: write the ensemble to a new file")
    check_can_save(target)
    cks = [load_checkpoint(p) for p in files]
    for p, ck in zip(files, cks, strict=True):
        if ck.model.family == Mixture.family:
            raise EnsembleError(f"{p} is itself an ensemble: list its members' checkpoints instead")
    datasets = [dataset_of(ck.meta) for ck in cks]
    for p, ck, ds in zip(files[1:], cks[1:], datasets[1:], strict=True):
        if ds != datasets[0]:
            raise EnsembleError(f"{p.name} was trained on {describe(ds, ck.model.levels)}, {files[0].name} on "
                                f"{describe(datasets[0], cks[0].model.levels)}: the members must model the same data")
    try:
        mix = Mixture.of([ck.model for ck in cks], classifier)
    except ValueError as exc:
        raise EnsembleError(str(exc)) from None
    members = [{"file": p.name, "name": ck.name, "family": ck.model.family, "metrics": ck.meta.get("metrics", {})}
               for p, ck in zip(files, cks, strict=True)]
    meta: dict[str, Any] = {"name": name or target.stem, "dataset": datasets[0], "mixture": {"members": members}}
    if "data" in cks[0].meta:
        meta["data"] = cks[0].meta["data"]
    save_checkpoint(target, mix, meta)
    return target, mix, meta
