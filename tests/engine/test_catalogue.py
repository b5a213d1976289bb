"""The checkpoints the explorer lists (engine/catalogue.py): entries read from metadata, unreadable
files reported, ``--model`` resolved, the recorded ensemble in the label."""

from __future__ import annotations

import pytest

from engine.catalogue import ModelEntry, list_checkpoints, resolve_model_name
from engine.checkpoint import save_checkpoint
from engine.models import build_model


def test_listing_and_resolving_checkpoints(tmp_path):
    m = build_model("fvsbn")
    save_checkpoint(tmp_path / "a.safetensors", m, {"name": "alpha", "metrics": {"test_nll": 88.5}})
    save_checkpoint(tmp_path / "a.resume.safetensors", m, {})
    (tmp_path / "broken.safetensors").write_bytes(b"not a checkpoint at all")
    entries, errors = list_checkpoints(tmp_path)
    assert [e.name for e in entries] == ["alpha"] and len(errors) == 1 and "broken" in errors[0]
    assert "FVSBN" in entries[0].label and "88.50" in entries[0].label
    assert resolve_model_name("alpha", entries) == tmp_path / "a.safetensors"
    assert resolve_model_name(str(tmp_path / "a.resume.safetensors"), entries).name == "a.resume.safetensors"
    with pytest.raises(FileNotFoundError, match="alpha"):
        resolve_model_name("nope", entries)
    e = ModelEntry.from_file(tmp_path / "a.safetensors")
    assert e.family == "fvsbn" and e.ordering == "raster" and e.test_nll == 88.5
    assert e.ensemble is None and "ensemble" not in e.label


def test_the_label_shows_the_largest_recorded_ensemble(tmp_path):
    m = build_model("made", {"hidden": (8,), "order_agnostic": True, "num_masks": 4})
    metrics = {"test_nll": 93.15, "test_nll_ensemble16": 89.73, "test_nll_ensemble32": 89.5,
               "test_nll_ensemble32_stderr": 0.22, "test_nll_ensemble2048": 80.0, "test_nll_ensemble8": "x"}
    save_checkpoint(tmp_path / "s.safetensors", m, {"name": "scans", "metrics": metrics})
    e = ModelEntry.from_file(tmp_path / "s.safetensors")
    assert e.ensemble == (32, 89.5)  # the stderr, an absurd size and a non-number are not ensembles
    assert e.label.endswith("test NLL 93.15  ·  ensemble of 32: 89.50")
