"""Inpainting, measured: the conditional NLL of a hidden region given the rest of the image.

For a hidden set ``H`` and known set ``K`` the quantity is ``-log p(x_H | x_K)`` in nats per image,
averaged over the test split. How it is computed depends on what the model allows:

* ``exact``, order-agnostic model: an ordering with the known pixels first (:meth:`~engine.models.base.ARModel.known_first_ordering`)
  and sum the log-conditionals of the hidden pixels, ``sum_{h in H} log p(x_h | x_K, x_{H before h})``
  (the "known pixels first" ordering of Uria et al. 2014, "A Deep and Tractable Density Estimator").
* ``exact``, model tied to one ordering, when every known pixel precedes every hidden one (e.g. the
  bottom half given the top half in raster order): ``log p(x) - log p(x_K)`` where ``log p(x_K)`` is
  the sum of the first steps' conditionals -- the same sum over the hidden pixels.
* ``importance`` otherwise: ``p(x_K) = E_q[prod_{k in K} p(x_k | x_<k)]`` with the proposal ``q``
  drawing each hidden pixel from the model's own conditional in its ordering (known pixels held at
  their values) -- the hidden pixels' factors cancel in the weight. ``log p(x_K)`` is estimated by
  the log-mean-exp of ``S`` weights (for a grey model, a known pixel's factor is its level's
  probability under the head, and a hidden pixel is drawn from the head's K levels); the estimate
  is consistent as ``S`` grows but, by Jensen's
  inequality, biased towards a *lower* (optimistic) conditional NLL for finite ``S``. The mean
  effective sample size is reported so a weak estimate is visible.
* ``ignore-later``: ``sum_{h in H} log p(x_h | x_<h)`` in the model's ordering -- each hidden
  pixel ignores the known pixels that come after it. Cheap, but not the conditional; an
  approximation reported as such.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import PixelchainError
from ..marginal import stepper_for
from ..models.base import ARModel

__all__ = ["REGIONS", "region_mask", "InpaintError", "InpaintResult", "conditional_log_prob", "evaluate_inpainting",
           "exact_available"]


class InpaintError(PixelchainError, ValueError):
    """A region, method or sample count that cannot be measured for this model."""


REGIONS = ("top", "bottom", "left", "right", "centre", "random50")
METHODS = ("auto", "exact", "smc", "importance", "ignore-later")


def region_mask(region: str, height: int = 28, width: int = 28, seed: int = 0) -> np.ndarray:
    """(D,) bool, True for the hidden pixels of ``region`` (halves, the centre square of half the
    side, or a random half of the pixels drawn from ``seed`` -- the same for every image)."""
    rows, cols = np.divmod(np.arange(height * width), width)
    if region == "top":
        m = rows < height // 2
    elif region == "bottom":
        m = rows >= height // 2
    elif region == "left":
        m = cols < width // 2
    elif region == "right":
        m = cols >= width // 2
    elif region == "centre":
        m = (rows >= height // 4) & (rows < height - height // 4) & (cols >= width // 4) & (cols < width - width // 4)
    elif region == "random50":
        m = np.zeros(height * width, bool)
        m[np.random.default_rng(seed).permutation(height * width)[: height * width // 2]] = True
    else:
        raise InpaintError(f"unknown region {region!r}; choose one of {', '.join(REGIONS)}")
    return m


def exact_available(model: ARModel, hidden: np.ndarray) -> bool:
    """Whether the conditional of ``hidden`` given the rest is exact for ``model``."""
    return model.any_order or model.inpaint_is_exact(~np.asarray(hidden, bool))


@dataclass
class InpaintResult:
    nll: float  #: mean -log p(x_H | x_K) in nats per image
    stderr: float
    n_images: int
    hidden_pixels: int
    method: str
    exact: bool
    note: str
    samples: int | None = None
    mean_ess: float | None = None  #: importance sampling: mean effective sample size per image
    per_image: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"nll_nats": self.nll, "stderr_nats": self.stderr, "n_images": self.n_images,
                "hidden_pixels": self.hidden_pixels, "nll_per_hidden_pixel": self.nll / max(1, self.hidden_pixels),
                "method": self.method, "exact": self.exact, "note": self.note, "samples": self.samples,
                "mean_ess": self.mean_ess}


def _notes(model: ARModel, method: str, samples: int, hidden: np.ndarray) -> str:
    if method == "exact":
        if model.any_order:
            order = model.known_first_ordering(~np.asarray(hidden, bool).reshape(-1))
            if order in model.trained_orderings():
                return f"order-agnostic model: known pixels first, in the {order.label} ordering, one it trained on; hidden pixels summed"
            return (f"order-agnostic model: known pixels first, then the rest, each in the {model.ordering.label} ordering; "
                    "hidden pixels summed")
        return f"every known pixel precedes every hidden one in the {model.ordering.label} ordering: log p(x) - log p(known)"
    if method == "importance":
        return (f"importance sampling, {samples} samples per image from the model's own conditionals in the "
                f"{model.ordering.label} ordering; consistent, but biased towards a lower NLL for finite samples")
    if method == "smc":
        return (f"sequential Monte Carlo, {samples} particles per image drawn from the model's own conditionals in the "
                f"{model.ordering.label} ordering, reweighted at each known pixel and resampled when the effective "
                "sample size falls below half while hidden pixels remain; consistent, less biased than plain "
                "importance sampling where hidden and known pixels alternate, still towards a lower NLL for finite samples")
    return f"each hidden pixel ignores the known pixels after it in the {model.ordering.label} ordering (an approximation)"


@torch.no_grad()
def _importance(model: ARModel, x: torch.Tensor, hidden: np.ndarray, samples: int, gen: torch.Generator,
                resample: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p-hat(x_K), effective sample size), each (B,). Particles draw the hidden pixels from the
    model's conditionals and are weighted by the probability of each known pixel. With ``resample``
    (sequential Monte Carlo), an image whose effective sample size drops below half its particles
    is resampled (systematic resampling; the mean weight goes into its running estimate), which
    keeps the particles on histories that fit the known pixels before drawing the next hidden
    ones; after the last hidden pixel nothing is resampled (it would only add noise). The ESS
    returned is that of the final weights."""
    b, d = x.shape
    s = samples
    known_t = torch.as_tensor(~hidden, device=x.device)
    truth = x.repeat_interleave(s, 0)  # (B*S, D)
    work = torch.where(known_t, truth, torch.zeros_like(truth))
    stepper = stepper_for(model, work, model.ordering)  # a conditional model: its marginal over classes
    dev = x.device
    logw = torch.zeros(b, s, dtype=torch.float64, device=dev)
    log_z = torch.zeros(b, dtype=torch.float64, device=dev)
    first_hidden = int(np.argmax(hidden[model.ordering.perm]))
    last_hidden = d - 1 - int(np.argmax(hidden[model.ordering.perm][::-1]))
    base = torch.arange(b, device=dev)[:, None] * s  # (B, 1) first particle of each image
    head = None if model.binary else model.dist_head  # K > 2 levels: the stepper gives (B*S, P) head parameters
    for t, pixel in enumerate(model.ordering.perm.tolist()):
        logit = stepper.logits(pixel)
        if not hidden[pixel]:
            v = truth[:, pixel]
            if t > first_hidden:  # known pixels before the first hidden one: the same factor in every weight
                if head is None:
                    ll = -F.binary_cross_entropy_with_logits(logit.double(), v.double(), reduction="none")
                else:
                    ll = head.log_prob_of(logit.double(), v.double())
                logw += ll.view(b, s)
        else:
            u = torch.rand(b * s, generator=gen).to(x.device)
            if head is None:
                v = (u < torch.sigmoid(logit.float())).to(x.dtype)
            else:  # the level whose CDF interval holds u, as the model's own sampler draws it
                v = head.sample(logit.float(), u).to(x.dtype)
        stepper.observe(pixel, v)
        work[:, pixel] = v
        # resampling pays only while hidden pixels remain to be drawn afresh from the survivors
        if resample and not hidden[pixel] and first_hidden < t < last_hidden:
            lse = torch.logsumexp(logw, 1)
            ess = torch.exp(2 * lse - torch.logsumexp(2 * logw, 1))
            low = ess < s / 2
            if low.any():
                log_z[low] += lse[low] - math.log(s)
                w = torch.softmax(logw[low], 1)  # (n, S)
                u0 = torch.rand(int(low.sum()), 1, generator=gen, dtype=torch.float64).to(dev)
                pos = (torch.arange(s, dtype=torch.float64, device=dev)[None, :] + u0) / s
                anc = torch.searchsorted(torch.cumsum(w, 1).contiguous(), pos).clamp_(max=s - 1)  # (n, S)
                index = base + torch.arange(s, device=dev)[None, :]  # identity for the other images
                index[low] = base[low] + anc
                index = index.reshape(-1)
                logw[low] = 0.0
                stepper.select(index)
                work = work[index]
    lse = torch.logsumexp(logw, 1)
    log_mean = log_z + lse - math.log(s)
    ess = torch.exp(2 * lse - torch.logsumexp(2 * logw, 1))
    # add back the factors shared by every sample: the known pixels before the first hidden one
    lpp = model.log_prob_per_pixel(x).double()
    before = torch.zeros(d, dtype=torch.bool, device=dev)
    before[torch.as_tensor(np.array(model.ordering.perm[:first_hidden]), device=dev)] = True
    return log_mean + lpp[:, before].sum(1), ess


def supports_resampling(model: ARModel) -> bool:
    """Whether the model's fast stepper can reorder its particles (sequential Monte Carlo)."""
    p = next(model.parameters())
    st = stepper_for(model, torch.zeros(1, model.size, dtype=p.dtype, device=p.device), model.ordering)
    try:
        st.select(torch.zeros(1, dtype=torch.long))
    except NotImplementedError:
        return False
    return True


@torch.no_grad()
def conditional_log_prob(model: ARModel, x: np.ndarray | torch.Tensor, hidden: np.ndarray, method: str = "auto",
                         samples: int = 64, generator: torch.Generator | None = None) -> tuple[torch.Tensor, str, torch.Tensor | None]:
    """(B,) log p(x_H | x_K) in nats (float64), the method used, and the ESS for importance sampling."""
    if method not in METHODS:
        raise InpaintError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    hidden = np.asarray(hidden, bool).reshape(-1)
    if hidden.shape[0] != model.size:
        raise InpaintError(f"the hidden mask has {hidden.shape[0]} pixels, the model {model.size}")
    if not hidden.any():
        raise InpaintError("the hidden region is empty")
    xb = model._as_batch(x)
    h = torch.as_tensor(hidden, device=xb.device)
    exact = exact_available(model, hidden)
    if method == "auto":
        method = "exact" if exact else "smc"
    if method == "smc" and not supports_resampling(model):
        method = "importance"  # this family's sampler cannot reorder its particles
    if method == "exact":
        if not exact:
            raise InpaintError(f"the conditional is not exact for this {model.family} in the {model.ordering.label} ordering: "
                             "some known pixels come after hidden ones; use importance or ignore-later")
        order = model.known_first_ordering(~hidden) if model.any_order else model.ordering
        return model.log_prob_per_pixel(xb, order).double()[:, h].sum(1), method, None
    if method == "ignore-later":
        return model.log_prob_per_pixel(xb).double()[:, h].sum(1), method, None
    if samples < 1:
        raise InpaintError("importance sampling needs at least one sample")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    log_known, ess = _importance(model, xb, hidden, samples, gen, resample=method == "smc")
    return model.log_prob(xb).double() - log_known, method, ess


def evaluate_inpainting(model: ARModel, x: np.ndarray, hidden: np.ndarray, method: str = "auto", samples: int = 64,
                        seed: int = 0, batch_size: int = 500,
                        progress: Callable[[int, int], None] | None = None) -> InpaintResult:
    """Mean conditional NLL of the hidden pixels given the rest over the images ``x`` (N, D);
    ``progress(images done, images)`` is called after each batch."""
    was_training = model.training
    model.eval()
    x = np.asarray(x).reshape(len(x), -1)
    if len(x) == 0:
        raise InpaintError("no images to evaluate")
    gen = torch.Generator().manual_seed(seed)
    rows = max(1, min(batch_size, 16384 // max(1, samples)))  # bound the replicated batch of importance sampling
    vals, esss, used = [], [], method
    try:
        step = batch_size if method in ("exact", "ignore-later") or (method == "auto" and exact_available(model, hidden)) else rows
        for i in range(0, len(x), step):
            lp, used, ess = conditional_log_prob(model, torch.as_tensor(x[i : i + step], dtype=torch.float32), hidden, method, samples, gen)
            vals.append(-lp.cpu())
            if ess is not None:
                esss.append(ess.cpu())
            if progress is not None:
                progress(min(i + step, len(x)), len(x))
    finally:
        model.train(was_training)
    v = torch.cat(vals).numpy()
    se = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")
    return InpaintResult(
        nll=float(v.mean()), stderr=se, n_images=len(v), hidden_pixels=int(np.sum(hidden)), method=used,
        exact=used == "exact", note=_notes(model, used, samples, hidden), samples=samples if used in ("importance", "smc") else None,
        mean_ess=float(torch.cat(esss).mean()) if esss else None, per_image=v,
    )
