"""A class-conditional model read backwards: the Bayes classifier p(y | x) ~ p(x | y) p(y).

:func:`classify_steps` runs a conditional model over labelled images in chunks. Per chunk it makes
ONE batched pass over the classes (:meth:`~engine.models.base.ARModel.class_log_probs`, the
(C, B, D) per-pixel log p(x_i | x_<i, y = c)); everything else follows from the C sums
``log p(x | y = c)``:

* the posterior ``p(y | x)`` (its argmax is the prediction; an ensemble that classifies by its
  members' vote averages their posteriors instead, :meth:`ARModel.classify_batch`),
* the marginal ``log p(x) = logsumexp_c (log p(y = c) + log p(x | y = c))``, the NLL ``eval``
  reports for a conditional model,
* the conditional ``log p(x | true y)``, what training minimised.

It is a generator that yields the number of images done after each chunk and returns a
:class:`ClassifyResult` (so the command line shows progress and the app can stop it between
chunks). Float32 (or the model's dtype), eval mode, no gradients.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Generator

import numpy as np
import torch

from .errors import PixelchainError
from .models.base import ARModel, nats_to_bits_per_dim

__all__ = ["ClassifyError", "ClassifyResult", "classify", "classify_steps", "default_chunk"]

#: head numbers (C * B * D * P) one chunk may hold: about 256 MiB of float32 at C = 10
CHUNK_NUMBERS = 1 << 26
#: the most images in one chunk (a binary model's chunks are capped here, not by memory)
MAX_CHUNK = 500


class ClassifyError(PixelchainError, ValueError):
    """A model without classes, or labels that do not fit the images or the model."""


def default_chunk(model: ARModel) -> int:
    """Images per chunk: as many as keep the chunk's (C, B, D, P) head numbers near
    :data:`CHUNK_NUMBERS` (a 256-level model's are 256 times a binary one's), at most :data:`MAX_CHUNK`."""
    per_image = max(1, model.classes) * model.size * model.out_params
    return int(max(1, min(MAX_CHUNK, CHUNK_NUMBERS // per_image)))


@dataclass
class ClassifyResult:
    """What :func:`classify_steps` measured over ``n_images`` labelled images."""

    n_images: int
    classes: int
    pixels: int  #: D, for bits per dimension
    accuracy: float  #: fraction of images whose most probable class is the label
    nll_nats: float  #: mean -log p(x), the marginal over classes
    stderr_nats: float  #: its standard error
    cond_nll_nats: float  #: mean -log p(x | true y)
    cond_stderr_nats: float
    mean_true_posterior: float  #: mean p(y = label | x)
    confusion: np.ndarray  #: (C, C) int64 counts, row = true class, column = predicted class
    predictions: np.ndarray = field(repr=False)  #: (N,) int64 argmax_y p(y | x)
    log_px: np.ndarray = field(repr=False)  #: (N,) float64 log p(x)
    log_posterior: np.ndarray = field(repr=False)  #: (N, C) float64 log p(y | x)

    @property
    def bits_per_dim(self) -> float:
        return nats_to_bits_per_dim(self.nll_nats, self.pixels)

    @property
    def cond_bits_per_dim(self) -> float:
        return nats_to_bits_per_dim(self.cond_nll_nats, self.pixels)

    @property
    def per_class_accuracy(self) -> list[float | None]:
        """Accuracy among the images of each true class (None for a class with no image)."""
        totals = self.confusion.sum(1)
        return [float(self.confusion[c, c] / t) if t else None for c, t in enumerate(totals)]

    def to_dict(self) -> dict[str, Any]:
        """The figures as JSON-ready values (a standard error of one image, not defined, is None)."""
        def num(v: float) -> float | None:
            return v if math.isfinite(v) else None

        return {
            "n_images": self.n_images, "classes": self.classes, "accuracy": self.accuracy, "errors": int(round(
                self.n_images * (1 - self.accuracy))),
            "nll_nats": self.nll_nats, "stderr_nats": num(self.stderr_nats), "bits_per_dim": self.bits_per_dim,
            "cond_nll_nats": self.cond_nll_nats, "cond_stderr_nats": num(self.cond_stderr_nats),
            "cond_bits_per_dim": self.cond_bits_per_dim, "mean_true_posterior": self.mean_true_posterior,
            "per_class_accuracy": self.per_class_accuracy, "confusion": self.confusion.tolist(),
        }


def _check(model: ARModel, x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor) -> np.ndarray:
    if not model.classes:
        raise ClassifyError(f"this {model.family} model has no classes: it models p(x) alone and cannot classify; "
                            "train one with --classes 10")
    labels = np.asarray(torch.as_tensor(np.asarray(y)).cpu(), dtype=np.int64).reshape(-1)
    if len(labels) != len(x):
        raise ClassifyError(f"{len(labels)} labels for {len(x)} images")
    if len(labels) and (labels.min() < 0 or labels.max() >= model.classes):
        raise ClassifyError(f"a label is outside the model's classes 0..{model.classes - 1}")
    return labels


def classify_steps(model: ARModel, x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor,
                   chunk: int | None = None) -> Generator[int, None, ClassifyResult]:
    """Classify the (N, D) images ``x`` (levels 0 .. K-1) with labels ``y`` (N,) by Bayes' rule
    under the conditional ``model``; yields the images done after each chunk of ``chunk`` images
    (default :func:`default_chunk`), returns the :class:`ClassifyResult`."""
    labels = _check(model, x, y)
    n, c = len(labels), model.classes
    if n == 0:
        raise ClassifyError("no images to classify")
    chunk = default_chunk(model) if chunk is None else int(chunk)
    if chunk < 1:
        raise ClassifyError(f"a chunk needs at least one image, got {chunk}")
    was_training = model.training
    model.eval()
    prior = model.class_log_prior.detach().double().cpu()  # (C,)
    log_post, log_px, log_cond = [], [], []
    try:
        for i in range(0, n, chunk):
            xb = torch.as_tensor(np.asarray(x[i : i + chunk]), dtype=torch.float32)
            with torch.no_grad():
                ll, post_b = model.classify_batch(xb)  # (C, B) log p(x | y = c), (B, C) log p(y | x)
            ll, post_b = ll.cpu(), post_b.cpu()
            lpx = torch.logsumexp(prior[:, None] + ll, 0)  # (B,)
            log_post.append(post_b)
            log_px.append(lpx)
            yb = torch.as_tensor(labels[i : i + len(xb)])
            log_cond.append(ll[yb, torch.arange(len(xb))])
            yield i + len(xb)
    finally:
        model.train(was_training)
    post = torch.cat(log_post).numpy()
    lpx_all, cond = torch.cat(log_px).numpy(), torch.cat(log_cond).numpy()
    pred = post.argmax(1).astype(np.int64)
    confusion = np.zeros((c, c), np.int64)
    np.add.at(confusion, (labels, pred), 1)

    def mean_se(v: np.ndarray) -> tuple[float, float]:
        return float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")

    nll, se = mean_se(-lpx_all)
    cnll, cse = mean_se(-cond)
    return ClassifyResult(
        n_images=n, classes=c, pixels=model.size, accuracy=float((pred == labels).mean()), nll_nats=nll, stderr_nats=se,
        cond_nll_nats=cnll, cond_stderr_nats=cse, mean_true_posterior=float(np.exp(post[np.arange(n), labels]).mean()),
        confusion=confusion, predictions=pred, log_px=lpx_all, log_posterior=post,
    )


def classify(model: ARModel, x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, chunk: int | None = None) -> ClassifyResult:
    """:func:`classify_steps` run to the end."""
    from .steps import drain

    return drain(classify_steps(model, x, y, chunk))[1]
