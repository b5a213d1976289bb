"""The one interface every autoregressive family answers.

Images are float tensors of shape ``(B, D)`` with ``D = height * width`` pixels in raster order and
values the pixel levels ``0 .. K-1`` (``K = config.levels``: 2 for the binary models, whose values are
0 or 1; up to 256 for grey digits); ``(B, H, W)`` is accepted and flattened. A pixel's conditional is
a distribution over its K levels, which the model's :mod:`output head <engine.models.heads>` forms
from the numbers the family computes for it. A model factorises

    log p(x) = sum_t log p(x_{o_t} | x_{o_<t})

along an :class:`~engine.ordering.Ordering` ``o``. What the app and the command line use:

* :meth:`ARModel.logits` -- the head's numbers for every pixel of a batch of complete images, in
  one teacher-forced pass, indexed by raster position: for a binary model the logit of
  ``p(x_i = 1 | x_<i)``, (B, D); for K > 2, (B, D, P) with ``P = head.params``;
* :meth:`ARModel.level_log_probs` -- the whole conditional of every pixel, (B, D, K);
* :meth:`ARModel.log_prob` / :meth:`ARModel.log_prob_per_pixel` -- the log-likelihood in nats;
* :meth:`ARModel.supports` -- whether an ordering can be used, and why not;
* :meth:`ARModel.sample_steps` -- sampling and inpainting as a generator of steps that the caller
  may stop between any two steps; ``fast=False`` runs the reference sampler (one full pass per
  pixel) against which each family's fast :class:`Stepper` is tested.

A family subclasses :class:`ARModel`, implements :meth:`ARModel._logits` and optionally
:meth:`ARModel.stepper` (its fast incremental sampler).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Generator, Iterator, Sequence, TypeVar, cast, overload

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import PixelchainError
from ..ordering import Ordering, known_first, make_ordering, puts_first
from .heads import Head, make_head

__all__ = [
    "ARModel",
    "ModelConfig",
    "SampleStep",
    "Stepper",
    "ReferenceStepper",
    "UnsupportedOrdering",
    "draw_steps",
]

LOG2 = math.log(2.0)
#: the most classes a model may be conditioned on
MAX_CLASSES = 1000
#: images per piece of the marginal over classes (:meth:`ARModel._marginal_params`)
MARGINAL_CHUNK = 16
#: a class argument: None (the marginal over classes, or an unconditional model), an int for every image, or one per image
ClassArg = Tensor | np.ndarray | int | Sequence[int] | None

#: every family by name, filled by :mod:`engine.models` (an ensemble builds its members through it)
REGISTRY: dict[str, type["ARModel"]] = {}

M = TypeVar("M", bound=nn.Module)


def typed(modules: nn.ModuleList, kind: type[M]) -> Sequence[M]:
    """``modules`` as a sequence of ``kind`` for the type checker, which sees an ``nn.ModuleList``
    yield plain ``Module``s (whose attributes are all ``Tensor | Module``). No copy, no check."""
    return cast("Sequence[M]", modules)


class UnsupportedOrdering(PixelchainError, ValueError):
    """The model cannot compute conditionals in the requested ordering."""


@dataclass
class ModelConfig:
    """Fields every family shares; each family adds its own in a subclass."""

    height: int = 28
    width: int = 28
    # keyword-only, so that the families' own fields keep their positions
    #: values a pixel takes (2: binary; 4, 8, 16 or 256: grey levels)
    levels: int = dataclasses.field(default=2, kw_only=True)
    #: how the family's outputs become a distribution over the levels (engine.models.heads)
    output: str = dataclasses.field(default="bernoulli", kw_only=True)
    #: logistics in a ``logistic-mixture`` head
    components: int = dataclasses.field(default=5, kw_only=True)
    #: classes the model is conditioned on (10 for the digits' labels); 0: an unconditional model
    classes: int = dataclasses.field(default=0, kw_only=True)

    @property
    def size(self) -> int:
        return self.height * self.width

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ValueError(f"unknown {cls.__name__} field(s): {', '.join(unknown)}")
        kwargs = {}
        for k, v in d.items():
            # JSON turns tuples into lists; keep the declared kind.
            if isinstance(v, list):
                v = tuple(v)
            kwargs[k] = v
        return cls(**kwargs)


@dataclass
class SampleStep:
    """One generated pixel, shared by every image of the batch.

    ``x`` is the batch as it stands after this step (the model's own tensor: copy it to keep it).
    """

    index: int  #: how many pixels have been generated before this one
    total: int  #: how many pixels this run generates
    step: int  #: position of ``pixel`` in the ordering in use
    pixel: int  #: raster index of the pixel drawn
    prob: Tensor  #: (B,) probability of a 1 used for the draw (after temperature); for K > 2 levels the expected value on [0, 1]
    value: Tensor  #: (B,) the drawn values
    x: Tensor  #: (B, D) the images so far
    y: Tensor | None = None  #: (B,) the class each image is drawn from (a class-conditional model), else None


class Stepper:
    """Incremental conditionals for sampling: ask for a pixel's logits, then tell its value.

    Pixels are visited in the order of the ordering the stepper was made with. The base class is
    the protocol; :class:`ReferenceStepper` implements it with a full forward pass per pixel.
    """

    def logits(self, pixel: int) -> Tensor:  # (B,), or (B, P) for a head of P > 1 numbers
        raise NotImplementedError

    def observe(self, pixel: int, value: Tensor) -> None:
        raise NotImplementedError

    def select(self, index: Tensor) -> None:
        """Continue with batch rows ``index`` (a (B,) long tensor, repeats allowed): row i of the
        state becomes old row ``index[i]``. Used to resample particles in sequential Monte Carlo
        inpainting; a stepper that cannot raises NotImplementedError (plain importance sampling
        is used then)."""
        raise NotImplementedError


def draw_steps(
    stepper: Stepper,
    x: Tensor,
    known: np.ndarray,
    ordering: Ordering,
    generator: torch.Generator,
    temperature: float,
    *,
    batch: int | None = None,
    rows: Tensor | None = None,
    fixed: Tensor | None = None,
    head: Head | None = None,
    y: Tensor | None = None,
) -> Iterator[SampleStep]:
    """The sampling loop: visit ``ordering``, tell ``stepper`` the ``known`` (D,) pixels and draw
    the others into ``x`` (B, D), which is changed in place; yields after each drawn pixel.

    The random-number contract that makes a run reproducible and resumable
    (:mod:`engine.sampling`) lives here alone: every drawn pixel takes exactly one
    ``torch.rand(batch, generator=generator)`` (``batch`` defaults to B) and sets ``x = [u < p]``,
    ``p`` the conditional after ``temperature``. ``rows`` (B,): which of the ``batch`` uniforms each
    row of ``x`` uses (default row b uses uniform b); ``fixed`` (B, D) bool: pixels whose value in
    ``x`` is kept when the ordering reaches them instead of being drawn. ``head``: the model's output
    head where pixels have more than 2 levels; the one uniform then picks the level by inverting
    the tempered conditional's CDF (:meth:`engine.models.heads.Head.sample`). ``y``: the classes the
stepper was made with, reported in each step."""
    multi = head is not None and head.levels > 2
    b = x.shape[0]
    batch = b if batch is None else batch
    total = int((~known).sum())
    index = 0
    for t, pixel in enumerate(ordering.perm.tolist()):
        if known[pixel]:
            stepper.observe(pixel, x[:, pixel])
            continue
        params = stepper.logits(pixel)
        u = torch.rand(batch, generator=generator, device=generator.device)
        if rows is not None:
            u = u[rows]
        if multi:
            assert head is not None
            probs = head.tempered(params, temperature)  # (B, K)
            prob = probs @ torch.linspace(0.0, 1.0, head.levels, device=probs.device, dtype=probs.dtype)
            value = head.sample(params, u.to(params.device), temperature).to(x.dtype)
        else:
            prob = torch.sigmoid(params.float() / temperature)
            value = (u.to(prob.device) < prob).to(x.dtype)
        if fixed is not None:
            value = torch.where(fixed[:, pixel], x[:, pixel], value)
        stepper.observe(pixel, value)
        x[:, pixel] = value
        yield SampleStep(index=index, total=total, step=t, pixel=pixel, prob=prob, value=value, x=x, y=y)
        index += 1


@overload
def _take(t: Tensor, index: Tensor, dim: int = 0) -> Tensor: ...
@overload
def _take(t: None, index: Tensor, dim: int = 0) -> None: ...
def _take(t: Tensor | None, index: Tensor, dim: int = 0) -> Tensor | None:
    return None if t is None else t.index_select(dim, index.to(t.device))


class ReferenceStepper(Stepper):
    """One full teacher-forced pass per pixel: slow, simple, and the reference for fast paths."""

    def __init__(self, model: "ARModel", x: Tensor, ordering: Ordering, y: Tensor | None = None):
        self.model, self.x, self.ordering, self.y = model, x, ordering, y

    def logits(self, pixel: int) -> Tensor:
        return self.model._logits(self.x, self.ordering, self.y)[:, pixel]

    def observe(self, pixel: int, value: Tensor) -> None:
        self.x[:, pixel] = value

    def select(self, index: Tensor) -> None:
        self.x = _take(self.x, index)
        self.y = _take(self.y, index)


class ARModel(nn.Module):
    """Base class of all families. Subclasses set ``family``, ``config_class`` and ``any_order``."""

    family: ClassVar[str] = "base"
    config_class: ClassVar[type[ModelConfig]] = ModelConfig
    #: True when one trained network computes conditionals in any ordering (order-agnostic); a
    #: family whose config chooses sets it per instance.
    any_order: bool = False
    #: The generator a training run draws the model's own randomness from (orderings, masks,
    #: dropout where the family takes it), set by :func:`engine.train.train` while it runs, so that a
    #: run repeats from its seed while other threads use the global generator; None: the global one.
    train_generator: torch.Generator | None = None
    #: Short human explanation of the model, shown in the app.
    description: ClassVar[str] = ""
    #: images per piece of a full pass without gradients on a CPU (evaluation), or None for one pass:
    #: the convolutional nets evaluate 2-3x faster per image in pieces of ~16 than at 500 images,
    #: their activations staying in the CPU's cache
    eval_chunk: ClassVar[int | None] = None
    #: the model's own ordering as long tensors, for families that call :meth:`register_ordering_buffers`
    perm: Tensor
    inv: Tensor
    #: whether the family can be conditioned on a class (``config.classes > 0``): it then takes ``y``
    #: in :meth:`_logits`, :meth:`stepper` and :meth:`training_loss` and adds a learned embedding of it
    #: where it forms its hidden state or logits
    takes_classes: ClassVar[bool] = False
    #: (classes,) log p(y), the training frequencies of the classes (a conditional model only)
    class_log_prior: Tensor

    def __init__(self, config: ModelConfig, ordering: Ordering | None = None):
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config
        self.dist_head: Head = make_head(config.output, config.levels, config.components)
        if config.classes < 0 or config.classes == 1 or config.classes > MAX_CLASSES:
            raise ValueError(f"classes must be 0 (unconditional) or 2 to {MAX_CLASSES}, got {config.classes}")
        if config.classes:
            if not self.takes_classes:
                raise ValueError(f"the {self.family} family cannot be conditioned on a class")
            if self.dist_head.kind == "logistic-mixture":
                raise ValueError("a class-conditional model needs a Bernoulli or categorical head: the marginal over "
                                 "classes of a logistic mixture is not one")
            self.register_buffer("class_log_prior", torch.full((config.classes,), -math.log(config.classes)))
        if ordering is None:
            ordering = make_ordering("raster", config.height, config.width)
        if (ordering.height, ordering.width) != (config.height, config.width):
            raise UnsupportedOrdering(
                f"ordering is for {ordering.height}x{ordering.width} images, model for {config.height}x{config.width}"
            )
        self.ordering = ordering

    # ---------------------------------------------------------------------------------------
    # what a family implements
    def _logits(self, x: Tensor, ordering: Ordering, y: Tensor | None = None) -> Tensor:
        """(B, D) logits of p(x_i = 1 | pixels before i in ``ordering``), raster-indexed; with more
        than one head number per pixel (:attr:`out_params` > 1), (B, D, out_params). ``x`` holds
        levels 0 .. K-1; a family feeds its network :func:`~engine.models.heads.scale_levels` of it.
        ``y``: (B,) long, the class of each image, given exactly when the model is conditional."""
        raise NotImplementedError

    def stepper(self, x: Tensor, ordering: Ordering, y: Tensor | None = None) -> Stepper:
        """The fast incremental sampler; families override it. ``x`` is updated in place; ``y`` as
        in :meth:`_logits`."""
        return ReferenceStepper(self, x, ordering, y)

    def training_loss(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Mean negative log-likelihood (nats per image) minimised in training: of p(x | y) where
        ``y`` is given."""
        return -self.log_prob(x, y=y).mean()

    # ---------------------------------------------------------------------------------------
    # shared behaviour
    @property
    def size(self) -> int:
        return self.config.size

    @property
    def levels(self) -> int:
        """K, the values a pixel takes (2 for the binary models)."""
        return self.config.levels

    @property
    def classes(self) -> int:
        """The number of classes a conditional model takes, 0 for an unconditional one."""
        return self.config.classes

    @property
    def out_params(self) -> int:
        """Numbers the family computes per pixel for its head (1 for a binary model: the logit)."""
        return self.dist_head.params

    @property
    def binary(self) -> bool:
        """Two levels and one logit per pixel: the Bernoulli fast path everywhere."""
        return self.dist_head.params == 1

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    @classmethod
    def builds_in(cls, ordering: Ordering) -> tuple[bool, str]:
        """Whether a model of this family can be built, and so trained, in ``ordering`` (an
        ordering of the images the config describes); if not, the reason. A property of the family,
        where :meth:`supports` asks a built model whether it computes conditionals in an ordering.
        Every ordering by default; a family whose architecture fixes the ordering overrides this,
        and its constructor raises UnsupportedOrdering exactly where this says no."""
        return True, ""

    def supports(self, ordering: Ordering) -> tuple[bool, str]:
        """Whether conditionals can be computed in ``ordering``; if not, the reason."""
        if (ordering.height, ordering.width) != (self.config.height, self.config.width):
            return False, f"the model is for {self.config.height}x{self.config.width} images"
        if self.any_order or ordering == self.ordering:
            return True, ""
        return False, f"this {self.family.upper()} was trained for the {self.ordering.label} ordering only"

    def set_ordering(self, ordering: Ordering) -> None:
        """Make ``ordering`` the model's default (order-agnostic models only, or the same ordering)."""
        ok, why = self.supports(ordering)
        if not ok:
            raise UnsupportedOrdering(why)
        self.ordering = ordering
        self._ordering_changed()

    def _ordering_changed(self) -> None:
        if hasattr(self, "perm"):
            self.register_ordering_buffers()
            self.perm = self.perm.to(self.device)
            self.inv = self.inv.to(self.device)

    def resolve_ordering(self, ordering: Ordering | None) -> Ordering:
        if ordering is None:
            return self.ordering
        ok, why = self.supports(ordering)
        if not ok:
            raise UnsupportedOrdering(why)
        return ordering

    def _as_batch(self, x: Tensor | np.ndarray) -> Tensor:
        x = torch.as_tensor(x)
        if x.dim() == 3 or (x.dim() == 2 and x.shape[-1] != self.size and x.shape == (self.config.height, self.config.width)):
            x = x.reshape(-1 if x.dim() == 3 else 1, self.size)
        if x.dim() == 1:
            x = x.reshape(1, -1)
        if x.dim() != 2 or x.shape[1] != self.size:
            raise ValueError(f"expected images of {self.size} pixels, got shape {tuple(x.shape)}")
        return x.to(device=self.device, dtype=self._dtype())

    def _as_classes(self, y: Tensor | np.ndarray | int | Sequence[int] | None, b: int) -> Tensor | None:
        """(B,) long classes from an int (every image), a sequence or a tensor; None stays None (the
        marginal over classes of a conditional model). Checked against the model's classes."""
        if y is None:
            return None
        if not self.classes:
            raise ValueError("this model is not conditioned on a class")
        t = torch.as_tensor(y).reshape(-1).to(torch.long)
        if t.numel() == 1 and b != 1:
            t = t.expand(b)
        if t.numel() != b:
            raise ValueError(f"{t.numel()} classes given for {b} images")
        if int(t.min()) < 0 or int(t.max()) >= self.classes:
            raise ValueError(f"a class must be in 0..{self.classes - 1}")
        return t.to(self.device)

    def _dtype(self) -> torch.dtype:
        for p in self.parameters():
            return p.dtype
        return torch.get_default_dtype()

    def logits(self, x: Tensor | np.ndarray, ordering: Ordering | None = None, y: ClassArg = None) -> Tensor:
        """(B, D) logits of every pixel's conditional, teacher-forced on ``x``. For a conditional
        model, given class(es) ``y`` (an int for all images, or one per image): the conditionals of
        p(x | y); without: those of the marginal p(x) = sum_y p(y) p(x | y) (:meth:`_marginal_params`)."""
        xb = self._as_batch(x)
        return self._full_logits(xb, self.resolve_ordering(ordering), self._as_classes(y, len(xb)))

    def _full_logits(self, x: Tensor, ordering: Ordering, y: Tensor | None = None) -> Tensor:
        """:meth:`_logits`, in pieces of :attr:`eval_chunk` images where that is faster; the
        marginal over classes for a conditional model given no ``y``."""
        if self.classes and y is None:
            return self._marginal_params(x, ordering)
        n = self.eval_chunk
        if not (n and len(x) > n and not torch.is_grad_enabled() and x.device.type == "cpu"):
            return self._logits(x, ordering, y)
        pieces = []
        ys = y.split(n) if y is not None else [None] * len(x.split(n))
        for part, yp in zip(x.split(n), ys, strict=True):
            k = len(part)
            if k < n:  # pad the last piece: every piece the same size, the same kernels, so an image's
                # figures do not depend on where a batch ends (evaluation at 500 and 1000 agree exactly)
                part = torch.cat([part, part.new_zeros(n - k, part.shape[1])])
                if yp is not None:
                    yp = torch.cat([yp, yp.new_zeros(n - k)])
            pieces.append(self._logits(part, ordering, yp)[:k])
        return torch.cat(pieces)

    def pixel_logit(self, x: Tensor | np.ndarray, pixel: int, ordering: Ordering | None = None, y: ClassArg = None) -> Tensor:
        """(B,) the logit of pixel ``pixel``'s conditional, teacher-forced on ``x``: the same value as
        ``logits(x, ordering, y)[:, pixel]``, for less work in the families that read the image as a
        sequence (they run only the steps up to the pixel's)."""
        d = self.config.height * self.config.width
        if not 0 <= int(pixel) < d:
            raise ValueError(f"pixel must be a raster index in 0..{d - 1}, got {pixel}")
        xb = self._as_batch(x)
        return self._params_at(xb, int(pixel), self.resolve_ordering(ordering), self._as_classes(y, len(xb)))

    def _params_at(self, x: Tensor, pixel: int, ordering: Ordering, y: Tensor | None) -> Tensor:
        if self.classes and y is None:
            return self._marginal_params(x, ordering)[:, pixel]
        return self._pixel_logit(x, pixel, ordering, y)

    def _pixel_logit(self, x: Tensor, pixel: int, ordering: Ordering, y: Tensor | None = None) -> Tensor:
        return self._logits(x, ordering, y)[:, pixel]

    def conditionals(self, x: Tensor | np.ndarray, ordering: Ordering | None = None, y: ClassArg = None) -> Tensor:
        """(B, D) p(x_i = 1 | x_<i) for every pixel; with K > 2 levels, the expected value
        E[x_i | x_<i] / (K - 1) on [0, 1] (the same number for K = 2)."""
        params = self.logits(x, ordering, y)
        if self.binary:
            return torch.sigmoid(params)
        return self.dist_head.mean(params) / (self.levels - 1)

    def level_log_probs(self, x: Tensor | np.ndarray, ordering: Ordering | None = None, y: ClassArg = None) -> Tensor:
        """(B, D, K) every pixel's whole conditional: log p(x_i = v | x_<i) for each level v."""
        return self._level_log_probs(self.logits(x, ordering, y))

    def _level_log_probs(self, params: Tensor) -> Tensor:
        return self.dist_head.log_probs(params[..., None] if self.binary else params)

    def log_prob_per_pixel(self, x: Tensor | np.ndarray, ordering: Ordering | None = None, y: ClassArg = None) -> Tensor:
        """(B, D) log p(x_i | x_<i) in nats of the values in ``x`` (given ``y`` for a conditional
        model, else under its marginal over classes)."""
        x = self._as_batch(x)
        params = self._full_logits(x, self.resolve_ordering(ordering), self._as_classes(y, len(x)))
        return self._observed(params, x)

    def _observed(self, params: Tensor, x: Tensor) -> Tensor:
        """(..., D) log p of the values ``x`` under the head numbers ``params``."""
        if self.binary:
            return -F.binary_cross_entropy_with_logits(params, x.expand_as(params), reduction="none")
        return self.dist_head.log_prob_of(params, x.expand(*params.shape[:-1]))

    def log_prob(self, x: Tensor | np.ndarray, ordering: Ordering | None = None, y: ClassArg = None) -> Tensor:
        """(B,) log p(x) in nats; log p(x | y) given ``y``."""
        return self.log_prob_per_pixel(x, ordering, y).sum(dim=1)

    # ---------------------------------------------------------------------------------------
    # classes: p(x | y), the marginal p(x) and the posterior p(y | x)
    def class_log_probs(self, x: Tensor | np.ndarray, ordering: Ordering | None = None) -> Tensor:
        """(C, B, D) log p(x_i | x_<i, y = c) of the values in ``x`` for every class c, in one
        batched pass over the C classes."""
        xb = self._as_batch(x)
        return self._observed(self._per_class_params(xb, self.resolve_ordering(ordering)), xb)

    def _per_class_params(self, x: Tensor, ordering: Ordering) -> Tensor:
        """(C, B, D[, P]) the head numbers of every image under every class."""
        if not self.classes:
            raise ValueError("this model is not conditioned on a class")
        c, b = self.classes, len(x)
        ys = torch.arange(c, device=x.device).repeat_interleave(b)
        params = self._full_logits(x.repeat(c, 1), ordering, ys)
        return params.view(c, b, *params.shape[1:])

    def class_log_posterior(self, x: Tensor | np.ndarray, ordering: Ordering | None = None, upto: int | None = None,
                            per_pixel: Tensor | None = None) -> Tensor:
        """(B, C) log p(y | x) by Bayes' rule, from the first ``upto`` pixels of ``ordering`` (all by
        default): log p(y) + sum_{t < upto} log p(x_{o_t} | x_{o_<t}, y), normalised over y. Exact
        for a prefix of the ordering, whatever the pixels after it hold. ``per_pixel``: the
        :meth:`class_log_probs` of ``x`` where the caller has them."""
        order = self.resolve_ordering(ordering)
        lp = self.class_log_probs(x, order) if per_pixel is None else per_pixel
        d = lp.shape[-1]
        upto = d if upto is None else int(upto)
        if not 0 <= upto <= d:
            raise ValueError(f"upto must be in 0..{d}, got {upto}")
        steps = torch.tensor(np.array(order.perm[:upto], dtype=np.int64), device=lp.device)
        joint = self.class_log_prior.to(lp.device, _wide(lp).dtype)[:, None] + _wide(lp).index_select(-1, steps).sum(-1)
        return torch.log_softmax(joint, dim=0).T

    def classifier_log_posterior(self, x: Tensor | np.ndarray, ordering: Ordering | None = None, upto: int | None = None,
                                 per_pixel: Tensor | None = None) -> Tensor:
        """(B, C) the classifier's log p(y | the first ``upto`` pixels): what ``classify`` and the app's
        bar chart read. Bayes' rule on the model (:meth:`class_log_posterior`); an ensemble may read
        its members instead (:class:`~engine.models.mixture.Mixture`)."""
        return self.class_log_posterior(x, ordering, upto, per_pixel)

    def classify_batch(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """((C, B) float64 log p(x | y = c), (B, C) float64 the classifier's log p(y | x)) of a batch
        of whole images, from one batched pass over the classes."""
        ll = self.class_log_probs(x).double().sum(-1)
        joint = self.class_log_prior.detach().double().to(ll.device)[:, None] + ll
        return ll, (joint - torch.logsumexp(joint, 0)).T

    def _prefix_log_posterior(self, lp: Tensor, ordering: Ordering) -> Tensor:
        """(C, B, D): at each pixel, log p(y | the pixels before it in ``ordering``), from the
        (C, B, D) per-class log-probabilities ``lp``: an exclusive running sum along the ordering."""
        cum = prefix_sums(lp, ordering)
        joint = self.class_log_prior.to(lp.device, cum.dtype)[:, None, None] + cum
        return joint - torch.logsumexp(joint, dim=0, keepdim=True)

    def _marginal_params(self, x: Tensor, ordering: Ordering) -> Tensor:
        """The head numbers of the marginal model p(x) = sum_y p(y) p(x | y), itself autoregressive:
        p(x_i | x_<i) = sum_y p(y | x_<i) p(x_i | x_<i, y), with p(y | x_<i) from the pixels before
        i. Returned as a Bernoulli logit (B, D) or categorical logits (B, D, K), whose log-probs sum
        over pixels to log sum_y p(y) p(x | y) exactly. In pieces of images: the (C, B, D, K) level
        log-probabilities of a large batch would not stay in memory."""
        if len(x) > MARGINAL_CHUNK:
            return torch.cat([self._marginal_params(part, ordering) for part in x.split(MARGINAL_CHUNK)])
        params = self._per_class_params(x, ordering)
        levels = _wide(self._level_log_probs(params))  # (C, B, D, K)
        lp = self._observed(params, x)
        post = self._prefix_log_posterior(lp, ordering)
        return self._params_of_levels(torch.logsumexp(post[..., None] + levels, dim=0)).to(params.dtype)

    def _params_of_levels(self, level_log_probs: Tensor) -> Tensor:
        """Head numbers of a distribution given as (..., K) log-probabilities of the levels: a Bernoulli
        logit (...,) for a binary model, else the log-probabilities themselves as categorical logits."""
        if self.binary:
            return level_log_probs[..., 1] - level_log_probs[..., 0]
        return level_log_probs

    def set_class_prior(self, counts: Tensor | np.ndarray) -> None:
        """Set p(y) to the frequencies of ``counts`` (C,), the training labels' counts; a class
        never seen keeps a small weight (add-one smoothing) so that no image is impossible."""
        c = torch.as_tensor(np.asarray(counts), dtype=torch.float64).reshape(-1)
        if c.numel() != self.classes or bool((c < 0).any()):
            raise ValueError(f"class counts must be {self.classes} non-negative numbers")
        c = c + 1.0
        self.class_log_prior.copy_(torch.log(c / c.sum()).to(self.class_log_prior))

    # ---------------------------------------------------------------------------------------
    # sampling and inpainting
    def inpaint_is_exact(self, known: np.ndarray, ordering: Ordering | None = None) -> bool:
        """Whether conditioning on ``known`` is exact: every known pixel precedes every unknown one."""
        known = np.asarray(known, dtype=bool).reshape(-1)
        if self.any_order or not known.any() or known.all():
            return True
        return puts_first(self.resolve_ordering(ordering), known)

    def trained_orderings(self) -> list[Ordering]:
        """The fixed orderings an order-agnostic model was trained over; empty when it trained on
        random ones only or is tied to one ordering."""
        return []

    def known_first_ordering(self, known: np.ndarray, ordering: Ordering | None = None) -> Ordering:
        """For an order-agnostic model, an ordering with every ``known`` pixel first, so that a
        completion (or a conditional likelihood) of the rest is exact: ``ordering`` itself if it
        already is one, else the first of the model's :meth:`trained_orderings` that is one (its
        conditionals were trained; the bottom half given the top is raster, the right given the left
        the column scan), else :func:`~engine.ordering.known_first` of ``ordering``."""
        order = self.resolve_ordering(ordering)
        known = np.asarray(known, dtype=bool).reshape(-1)
        for o in (order, *self.trained_orderings()):
            if puts_first(o, known):
                return o
        return known_first(order, known)

    def sampling_ordering(self, known: np.ndarray | None, ordering: Ordering | None = None) -> Ordering:
        """The ordering in which a run visits pixels: known pixels first where the model allows it
        (:meth:`known_first_ordering`)."""
        order = self.resolve_ordering(ordering)
        if known is not None and self.any_order and np.any(known):
            return self.known_first_ordering(known, order)
        return order

    @torch.no_grad()
    def sample_steps(
        self,
        n: int = 1,
        *,
        known: np.ndarray | Tensor | None = None,
        values: np.ndarray | Tensor | None = None,
        ordering: Ordering | None = None,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        fast: bool = True,
        y: ClassArg = None,
    ) -> Generator[SampleStep, None, None]:
        """Generate ``n`` images pixel by pixel, yielding after each generated pixel.

        ``known`` (D,) marks pixels that are given; their values come from ``values`` ((D,) or
        (n, D)) and never change. Unknown pixels are drawn in ``ordering`` (for an order-agnostic
        model: after all known pixels, so the completion is exact; for a model tied to one ordering,
        known pixels that come after an unknown one cannot influence it -- see
        :meth:`inpaint_is_exact`). Random numbers come from ``generator`` (a CPU generator; one
        uniform per image per generated pixel), so the fast and reference samplers draw the same
        images for the same seed. Stop the run by no longer iterating.

        A conditional model draws from p(x | y) given ``y`` (an int for every image, or one per
        image); without, from its marginal: each image's class is drawn first (one
        ``torch.multinomial`` on ``generator`` before any pixel) from p(y), or with known pixels from
        p(y | the known pixels the ordering visits before the first unknown one) -- all of them when
        the known pixels come first, as an order-agnostic model puts them -- and the pixels then from
        p(x | y). The steps report the classes (:attr:`SampleStep.y`).
        """
        if temperature <= 0 or not math.isfinite(temperature):
            raise ValueError(f"temperature must be a positive number, got {temperature}")
        if n < 1:
            raise ValueError(f"number of samples must be at least 1, got {n}")
        d = self.size
        known_np = np.zeros(d, dtype=bool) if known is None else np.asarray(torch.as_tensor(known).cpu(), dtype=bool).reshape(-1)
        if known_np.shape[0] != d:
            raise ValueError(f"known mask has {known_np.shape[0]} pixels, expected {d}")
        x = torch.zeros(n, d, device=self.device, dtype=self._dtype())
        if known_np.any():
            if values is None:
                raise ValueError("known pixels need values")
            v = self._as_batch(values)
            if v.shape[0] not in (1, n):
                raise ValueError(f"values hold {v.shape[0]} images, expected 1 or {n}")
            kn = torch.as_tensor(known_np, device=self.device)
            x[:, kn] = v.expand(n, d)[:, kn]
        order = self.sampling_ordering(known_np, ordering)
        if generator is None:
            generator = torch.Generator()
        yt = self._as_classes(y, n)
        if self.classes and yt is None:
            yt = self._draw_classes(x, known_np, order, generator)
        stepper = self.stepper(x, order, yt) if fast else ReferenceStepper(self, x, order, yt)
        yield from draw_steps(stepper, x, known_np, order, generator, temperature, head=self.dist_head, y=yt)

    def _draw_classes(self, x: Tensor, known: np.ndarray, order: Ordering, generator: torch.Generator) -> Tensor:
        """(B,) classes drawn from p(y | the known pixels ``order`` visits before its first unknown one)."""
        steps_known = known[np.asarray(order.perm)]
        upto = int(np.argmin(steps_known)) if not steps_known.all() else len(steps_known)
        if upto == 0:
            log_post = self.class_log_prior.float()[None].expand(len(x), -1)
        else:
            log_post = self.class_log_posterior(x, order, upto)
        probs = log_post.exp().to(generator.device)
        return torch.multinomial(probs, 1, generator=generator)[:, 0].to(self.device)

    def sample(self, n: int = 1, **kwargs: Any) -> Tensor:
        """Run :meth:`sample_steps` to the end; returns (n, D) images."""
        x = None
        for step in self.sample_steps(n, **kwargs):
            x = step.x
        if x is None:  # nothing to generate: every pixel known
            known = kwargs.get("known")
            values = kwargs.get("values")
            if known is None or values is None:
                raise ValueError("nothing to sample")
            return self._as_batch(values).expand(n, self.size).clone()
        return x.clone()

    def inpaint(self, known: np.ndarray | Tensor, values: np.ndarray | Tensor, n: int = 1, **kwargs: Any) -> Tensor:
        """Fill the pixels not in ``known``; returns (n, D) completions."""
        return self.sample(n, known=known, values=values, **kwargs)

    # ---------------------------------------------------------------------------------------
    # ensembles
    def member(self, k: int) -> tuple[Ordering, int]:
        """Ordering and connectivity index of ensemble member ``k``: member 0 is the model in its
        own ordering; members ``1 .. m`` of an order-agnostic model are the other orderings it
        trained on (:meth:`trained_orderings`), in their order; later members, and every member of a
        model trained on random orderings only, the random ordering of seed ``k`` (families with
        connectivity patterns, MADE, override this)."""
        if k == 0:
            return self.ordering, 0
        if not self.any_order:
            raise UnsupportedOrdering("an ensemble over orderings needs an order-agnostic model")
        others = [o for o in self.trained_orderings() if o != self.ordering]
        if k <= len(others):
            return others[k - 1], 0
        c = self.config
        return make_ordering("random", c.height, c.width, seed=k), 0

    def member_log_prob(self, x: Tensor | np.ndarray, k: int) -> Tensor:
        """(B,) log p(x) under ensemble member ``k`` (see :meth:`member`)."""
        return self.log_prob(x) if k == 0 else self.log_prob(x, self.member(k)[0])

    def ensemble_log_prob(self, x: Tensor | np.ndarray, n: int) -> Tensor:
        """(B,) log of the mean probability over ``n`` members: log-mean-exp of joint log-likelihoods."""
        if n < 1:
            raise ValueError("an ensemble needs at least one member")
        return log_mean_exp(torch.stack([self.member_log_prob(x, k) for k in range(n)]), 0)

    def init_output_bias(self, marginals: Tensor) -> None:
        """Start the output biases at the pixel marginals (a family may ignore this): (D,) the
        frequency of a 1 for a binary model, (D, K) the frequency of each level otherwise."""

    #: families whose layers are residual name the modules that close each layer's residual
    #: branch; zeroed, an added layer passes its input through unchanged (see :meth:`grow_from`)
    residual_out: ClassVar[tuple[str, ...]] = ()

    def grow_from(self, src: "ARModel") -> None:
        """Start from ``src``, a shallower trained model of this family: every weight of ``src`` is
        copied, and the layers this model has beyond ``src``'s start with their residual branch
        closed (``residual_out`` zeroed), so the grown network computes exactly what ``src`` does
        and training goes on from there with more depth. The configurations must be equal apart from
        ``layers``, which may only grow, and ``train_orderings``, which only training reads (a grown
        order-agnostic model may train over other curves). Raises ValueError otherwise, and for
        families whose layers are not residual."""
        if not self.residual_out:
            raise ValueError(f"a {self.family} model cannot start from one of another size: its layers are not residual")
        if src.family != self.family:
            raise ValueError(f"it holds a {src.family} model, not a {self.family} one")
        mine_cfg, src_cfg = self.config.to_dict(), src.config.to_dict()
        layers, src_layers = mine_cfg.pop("layers"), src_cfg.pop("layers")
        differ = sorted(k for k in mine_cfg if mine_cfg[k] != src_cfg.get(k) and k != "train_orderings")
        if differ:
            raise ValueError(f"only the number of layers may differ from the checkpoint's, not {', '.join(differ)}")
        if layers < src_layers:
            raise ValueError(f"the checkpoint has {src_layers} layers: a model can grow from it, not shrink ({layers})")
        mine, theirs = self.state_dict(), src.state_dict()
        with torch.no_grad():
            for name, t in theirs.items():
                if mine[name].shape != t.shape and name.startswith("class_") and mine[name].shape[:-1] == t.shape[:-1]:
                    # a class table laid out layer by layer (the gated PixelCNN's): the source's layers'
                    # terms come first, the added layers' start at zero like the rest of those layers
                    mine[name].zero_()
                    mine[name][..., : t.shape[-1]].copy_(t)
                    continue
                mine[name].copy_(t)  # same names and shapes: the configs agree apart from depth
            for mod in self.residual_out:
                for layer in getattr(self, mod)[src_layers:]:
                    for p in layer.parameters():
                        p.zero_()

    def register_ordering_buffers(self) -> None:
        """``perm`` (step -> pixel) and ``inv`` (pixel -> step) of the model's own ordering."""
        self.register_buffer("perm", torch.tensor(np.array(self.ordering.perm)), persistent=False)
        self.register_buffer("inv", torch.tensor(np.array(self.ordering.inverse)), persistent=False)

    # ---------------------------------------------------------------------------------------
    def notes(self) -> list[str]:
        """What this instance's configuration means for a user reading its conditionals (shown in
        the app's model panel); none by default."""
        return []

    def describe(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "config": self.config.to_dict(),
            "ordering": self.ordering.to_dict(),
            "any_order": self.any_order,
            "levels": self.levels,
            "head": self.dist_head.kind,
            "classes": self.classes,
            "parameters": self.num_parameters(),
        }

    # ---------------------------------------------------------------------------------------
    # the influence map: one pixel's conditional under single-pixel flips of one image
    def pixel_logit_flips(self, x: Tensor | np.ndarray, pixel: int, flips: Sequence[int] | np.ndarray | Tensor,
                          ordering: Ordering | None = None, y: ClassArg = None) -> Tensor:
        """(N,) the logit of pixel ``pixel``'s conditional, teacher-forced on the one image ``x``
        with, in row n, pixel ``flips[n]`` flipped (``1 - x``; ``K - 1 - x`` at K levels, whose rows
        are the head's (N, P) numbers): the same values as
        ``pixel_logit`` of the N flipped images (the influence map's counterfactuals). Every flip
        must come before ``pixel`` in the ordering (a later one cannot move it). Families override
        :meth:`_pixel_logit_flips` to share the work the flipped images have in common (the
        unflipped prefix of a sequence, the receptive field of a convolutional net); the generic
        version here builds the flipped images and is the reference those are tested against."""
        d = self.config.height * self.config.width
        if not 0 <= int(pixel) < d:
            raise ValueError(f"pixel must be a raster index in 0..{d - 1}, got {pixel}")
        order = self.resolve_ordering(ordering)
        xb = self._as_batch(x)
        if xb.shape[0] != 1:
            raise ValueError(f"pixel_logit_flips takes one image, got {xb.shape[0]}")
        js = torch.as_tensor(np.asarray(torch.as_tensor(flips).cpu(), dtype=np.int64).reshape(-1))
        if js.numel() and (int(js.min()) < 0 or int(js.max()) >= d):
            raise ValueError(f"flipped pixels must be raster indices in 0..{d - 1}")
        inv = np.asarray(order.inverse)
        t = int(inv[int(pixel)])
        if js.numel() and int(inv[js.numpy()].max()) >= t:
            raise ValueError("every flipped pixel must come before the pixel in the ordering")
        if not js.numel():
            return xb.new_zeros((0,) if self.binary else (0, self.out_params))
        if self.classes:  # given a class or under the marginal: the flipped images themselves
            flipped = flip_rows(xb, js.to(xb.device), self.levels)
            yt = self._as_classes(y, 1)
            return self._params_at(flipped, int(pixel), order, None if yt is None else yt.expand(len(flipped)))
        if not self.binary:  # the families' shortcuts flip 0 and 1; a grey pixel's flip goes the reference way
            return ARModel._pixel_logit_flips(self, xb, int(pixel), js.to(xb.device), order)
        return self._pixel_logit_flips(xb, int(pixel), js.to(xb.device), order)

    def _pixel_logit_flips(self, x: Tensor, pixel: int, flips: Tensor, ordering: Ordering) -> Tensor:
        """The reference: the flipped images themselves, through :meth:`_pixel_logit`."""
        return self._pixel_logit(flip_rows(x, flips, self.levels), pixel, ordering)


def flip_rows(x: Tensor, flips: Tensor, levels: int = 2) -> Tensor:
    """(N, D) copies of the one image ``x`` (1, D), row n with pixel ``flips[n]`` flipped: level v
    becomes ``K - 1 - v`` (0 and 1 swap in a binary image; a grey pixel's intensity is inverted)."""
    xb = x.repeat(len(flips), 1)
    rows = torch.arange(len(flips), device=x.device)
    xb[rows, flips] = (levels - 1) - xb[rows, flips]
    return xb


def prefix_sums(lp: Tensor, ordering: Ordering) -> Tensor:
    """(..., D) raster-indexed: at each pixel, the sum of ``lp`` (..., D) over the pixels before it
    in ``ordering`` (an exclusive running sum along the ordering), in float32 at least."""
    perm = torch.tensor(np.array(ordering.perm, dtype=np.int64), device=lp.device)
    in_order = _wide(lp).index_select(-1, perm)
    before = torch.cumsum(in_order, -1) - in_order
    cum = torch.empty_like(before)
    cum[..., perm] = before
    return cum


def _wide(t: Tensor) -> Tensor:
    """``t`` in float32 at least (sums of log-probabilities over 784 pixels need it), float64 kept."""
    return t if t.dtype == torch.float64 else t.float()


def log_mean_exp(values: Tensor, dim: int = 0) -> Tensor:
    return torch.logsumexp(values, dim) - math.log(values.shape[dim])


def nats_to_bits_per_dim(nats: float, d: int) -> float:
    return nats / (d * LOG2)
