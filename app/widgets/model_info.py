"""A short description of the current model: family, size, ordering, what it can do, its metrics."""

from __future__ import annotations

import math
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFrame, QGroupBox, QLabel, QScrollArea, QVBoxLayout, QWidget

from engine.catalogue import ModelEntry
from engine.datasets import DEFAULT_DATASET, dataset_of, describe
from engine.errors import PixelchainError
from engine.figures import ensemble_kind
from engine.models.base import ARModel

from .text import rich

__all__ = ["ModelInfo", "trained_on", "head_name", "levels_text", "member_lines"]

#: what a grey model's output head is, in a few words
HEAD_NAMES = {"categorical": "softmax", "logistic-mixture": "mixture of logistics"}


def head_name(kind: str, components: int | None = None) -> str:
    """``softmax`` or ``mixture of 5 logistics`` (PixelCNN++'s discretized mixture)."""
    if kind == "logistic-mixture" and components:
        return f"mixture of {components} logistics"
    return HEAD_NAMES.get(kind, kind or "softmax")


def levels_text(model: ARModel, meta: dict) -> str | None:
    """"256 levels, softmax · trained on MNIST at 256 levels" for a grey model, None for a binary
    one of binarized MNIST (whose panel stays as it always was)."""
    try:
        dataset = dataset_of(meta)
    except PixelchainError:
        dataset = "mnist" if model.levels > 2 else DEFAULT_DATASET
    data = describe(dataset, model.levels)
    if model.binary:
        return None if dataset == DEFAULT_DATASET else f"binary pixels · trained on {data}"
    head = head_name(model.dist_head.kind, getattr(model.config, "components", None))
    return f"<b>{model.levels} levels</b>, {head} · trained on {data}"

#: how the orderings an order-agnostic model trained over are named
ORDER_SETS = {"random": "random orderings", "scans": "the 16 line scans", "rows": "random row scans"}


def trained_on(model: ARModel) -> str:
    """The orderings an order-agnostic model was trained over, in words ("random orderings",
    "the 16 line scans", "spiral-in, raster")."""
    names = getattr(model.config, "train_orderings", None)
    if isinstance(names, (list, tuple)) and names:
        return ", ".join("random orderings" if n == "random" else str(n) for n in names)
    order_set = getattr(model.config, "order_set", None)
    if isinstance(order_set, str):
        return ORDER_SETS.get(order_set, order_set)
    trained = model.trained_orderings()
    return ", ".join(o.label for o in trained) if trained else "random orderings"


def member_lines(meta: dict) -> list[str]:
    """An ensemble's members as its metadata names them, with the test figures each one recorded
    ("made2-c10 (MADE, test NLL 96.20, 98.34% correct)"); empty for a single model."""
    mix = meta.get("mixture")
    members = mix.get("members") if isinstance(mix, dict) else None
    if not isinstance(members, list):
        return []
    out = []
    for m in members[:16]:
        if not isinstance(m, dict):
            continue
        found = m.get("metrics")
        metrics: dict[str, Any] = found if isinstance(found, dict) else {}
        figures = [rich(str(m.get("family", "?")).upper())]
        nll, acc = metrics.get("test_nll"), metrics.get("test_accuracy")
        if isinstance(nll, (int, float)) and math.isfinite(nll):
            figures.append(f"test NLL {nll:.2f}")
        if isinstance(acc, (int, float)) and math.isfinite(acc):
            figures.append(f"{acc * 100:.2f}% correct")
        out.append(f"{rich(str(m.get('name', '?')))} ({', '.join(figures)})")
    return out


class ModelInfo(QGroupBox):
    def __init__(self, parent: QWidget | None = None):
        super().__init__("Model", parent)
        lay = QVBoxLayout(self)
        self.text = QLabel("No model yet.")
        self.text.setWordWrap(True)
        self.text.setTextFormat(Qt.TextFormat.RichText)
        self.text.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        # the text scrolls within the box: a long description never makes the Inspect page taller
        self.text_area = QScrollArea()
        self.text_area.setWidget(self.text)
        self.text_area.setWidgetResizable(True)
        self.text_area.setFrameShape(QFrame.Shape.NoFrame)
        self.text_area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.text_area.setMinimumHeight(60)
        lay.addWidget(self.text_area, 1)

    def show_model(self, model: ARModel, entry: ModelEntry | None, meta: dict) -> None:
        rows = []
        # every string from the file is escaped and cut (widgets/text.py): a name holding HTML or
        # megabytes of text shows as a short line of its characters
        name = rich(entry.name) if entry else "untrained default"
        rows.append(f"<b style='font-size:14px'>{name}</b> &nbsp; <span style='color:#8b95a5'>{rich(model.family.upper())}</span>")
        if model.description:
            rows.append(f"<span style='color:#aab3c0'>{model.description}</span>")
        if model.any_order:  # its own ordering is only the default shown, not a limit
            rows.append(f"{model.num_parameters():,} parameters · any ordering (trained on {rich(trained_on(model))})")
        else:
            rows.append(f"{model.num_parameters():,} parameters · trained ordering: {rich(model.ordering.label)}")
        levels = levels_text(model, meta)
        if levels is not None:
            rows.append(levels)
        rows.extend(model.notes())
        members = member_lines(meta)
        if members:
            rows.append("Members: " + "; ".join(members) + ".")
        if model.any_order and getattr(model.config, "order_set", "random") == "scans":
            rows.append("Trained over the 16 line scans (raster, column, snake and column-snake from every corner): "
                        "every ordering is available and inpainting conditions exactly, but other orderings, including "
                        "the known-pixels-first orderings of inpainting, were never trained and fit less well.")
        elif model.any_order and getattr(model.config, "order_set", "random") == "rows":
            rows.append("Trained over row scans from the top, each row walked left or right at random "
                        "(random-rows): every ordering is available and inpainting conditions exactly, but only "
                        "top-down row orderings were trained; others, including the known-pixels-first orderings "
                        "of inpainting, fit less well.")
        elif model.any_order:
            rows.append("Order-agnostic: every ordering is available and inpainting is exact.")
        else:
            rows.append("Tied to its ordering: other orderings are disabled and inpainting is approximate "
                        "unless every known pixel comes first.")
            if ensemble_kind(model) == "masks":
                n = model.config.num_masks  # type: ignore[attr-defined]
                rows.append(f"Trained over {n if n > 1 else 'a fresh'} connectivity pattern{'s' if n > 1 else ' per batch'} "
                            "(masks) in this ordering: the read-out also gives log p under the mixture of its masks.")
        metrics: dict[str, Any] = meta["metrics"] if isinstance(meta.get("metrics"), dict) else {}
        tn, vn = metrics.get("test_nll"), metrics.get("valid_nll")
        if isinstance(tn, (int, float)):
            unit = "bits/pixel" if model.binary else "bits/dim"
            rows.append(f"test NLL <b>{tn:.2f}</b> nats/image ({tn / (model.size * 0.6931471805599453):.4f} {unit})")
        for key, val in sorted(metrics.items()):  # e.g. test_nll_ensemble32 of an order-agnostic MADE
            k = key.removeprefix("test_nll_ensemble")
            if key.startswith("test_nll_ensemble") and k.isdigit() and isinstance(val, (int, float)):
                kind = ensemble_kind(model) or "orderings"
                rows.append(f"test NLL of an ensemble of {k} {kind} <b>{val:.2f}</b> nats/image "
                            "(log-mean-exp of their joint likelihoods; the heatmaps show one "
                            + ("mask)" if kind == "masks" else "ordering)"))
        if model.classes:
            acc, cond = metrics.get("test_accuracy"), metrics.get("test_cond_nll")
            line = (f"Conditioned on {model.classes} digit classes: the NLL above is of the marginal "
                    "p(x) = Σ<sub>y</sub> p(y) p(x | y).")
            if isinstance(acc, (int, float)) and math.isfinite(acc):
                line += f" Read backwards by Bayes' rule it classifies the test digits: <b>{acc * 100:.2f}%</b> correct"
                known = isinstance(cond, (int, float)) and math.isfinite(cond)
                line += f", test NLL given the true digit {cond:.2f} nats." if known else "."
            rows.append(line)
        if isinstance(vn, (int, float)):
            rows.append(f"validation NLL {vn:.2f} nats/image")
        hist = meta.get("history")
        if isinstance(hist, list) and hist:
            rows.append(f"{len(hist)} epochs trained" + (f" on {rich(meta['device'])}" if isinstance(meta.get("device"), str) else ""))
        if entry is not None:
            rows.append(f"<span style='color:#8b95a5'>{rich(entry.path, 400)}</span>")
        self.text.setText("<br><br>".join(rows))
