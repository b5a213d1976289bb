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
    the tempered conditional's CDF (:meth:`engine.models.heads.Head.sample`)."""
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
        yield SampleStep(index=index, total=total, step=t, pixel=pixel, prob=prob, value=value, x=x)
        index += 1


@overload
def _take(t: Tensor, index: Tensor, dim: int = 0) -> Tensor: ...
@overload
def _take(t: None, index: Tensor, dim: int = 0) -> None: ...
def _take(t: Tensor | None, index: Tensor, dim: int = 0) -> Tensor | None:
    return None if t is None else t.index_select(dim, index.to(t.device))


class ReferenceStepper(Stepper):
    """One full teacher-forced pass per pixel: slow, simple, and the reference for fast paths."""

    def __init__(self, model: "ARModel", x: Tensor, ordering: Ordering):
        self.model, self.x, self.ordering = model, x, ordering

    def logits(self, pixel: int) -> Tensor:
        return self.model._logits(self.x, self.ordering)[:, pixel]

    def observe(self, pixel: int, value: Tensor) -> None:
        self.x[:, pixel] = value

    def select(self, index: Tensor) -> None:
        self.x = _take(self.x, index)


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

    def __init__(self, config: ModelConfig, ordering: Ordering | None = None):
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config
        self.dist_head: Head = make_head(config.output, config.levels, config.components)
        if ordering is None:
            ordering = make_ordering("raster", config.height, config.width)
        if (ordering.height, ordering.width) != (config.height, config.width):
            raise UnsupportedOrdering(
                f"ordering is for {ordering.height}x{ordering.width} images, model for {config.height}x{config.width}"
            )
        self.ordering = ordering

    # ---------------------------------------------------------------------------------------
    # what a family implements
    def _logits(self, x: Tensor, ordering: Ordering) -> Tensor:
        """(B, D) logits of p(x_i = 1 | pixels before i in ``ordering``), raster-indexed; with more
        than one head number per pixel (:attr:`out_params` > 1), (B, D, out_params). ``x`` holds
        levels 0 .. K-1; a family feeds its network :func:`~engine.models.heads.scale_levels` of it."""
        raise NotImplementedError

    def stepper(self, x: Tensor, ordering: Ordering) -> Stepper:
        """The fast incremental sampler; families override it. ``x`` is updated in place."""
        return ReferenceStepper(self, x, ordering)

    def training_loss(self, x: Tensor) -> Tensor:
        """Mean negative log-likelihood (nats per image) minimised in training."""
        return -self.log_prob(x).mean()

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

    def _dtype(self) -> torch.dtype:
        for p in self.parameters():
            return p.dtype
        return torch.get_default_dtype()

    def logits(self, x: Tensor | np.ndarray, ordering: Ordering | None = None) -> Tensor:
        """(B, D) logits of every pixel's conditional, teacher-forced on ``x``."""
        return self._full_logits(self._as_batch(x), self.resolve_ordering(ordering))

    def _full_logits(self, x: Tensor, ordering: Ordering) -> Tensor:
        """:meth:`_logits`, in pieces of :attr:`eval_chunk` images where that is faster."""
        n = self.eval_chunk
        if not (n and len(x) > n and not torch.is_grad_enabled() and x.device.type == "cpu"):
            return self._logits(x, ordering)
        pieces = []
        for part in x.split(n):
            k = len(part)
            if k < n:  # pad the last piece: every piece the same size, the same kernels, so an image's
                # figures do not depend on where a batch ends (evaluation at 500 and 1000 agree exactly)
                part = torch.cat([part, part.new_zeros(n - k, part.shape[1])])
            pieces.append(self._logits(part, ordering)[:k])
        return torch.cat(pieces)

    def pixel_logit(self, x: Tensor | np.ndarray, pixel: int, ordering: Ordering | None = None) -> Tensor:
        """(B,) the logit of pixel ``pixel``'s conditional, teacher-forced on ``x``: the same value as
        ``logits(x, ordering)[:, pixel]``, for less work in the families that read the image as a
        sequence (they run only the steps up to the pixel's)."""
        d = self.config.height * self.config.width
        if not 0 <= int(pixel) < d:
            raise ValueError(f"pixel must be a raster index in 0..{d - 1}, got {pixel}")
        return self._pixel_logit(self._as_batch(x), int(pixel), self.resolve_ordering(ordering))

    def _pixel_logit(self, x: Tensor, pixel: int, ordering: Ordering) -> Tensor:
        return self._logits(x, ordering)[:, pixel]

    def conditionals(self, x: Tensor | np.ndarray, ordering: Ordering | None = None) -> Tensor:
        """(B, D) p(x_i = 1 | x_<i) for every pixel; with K > 2 levels, the expected value
        E[x_i | x_<i] / (K - 1) on [0, 1] (the same number for K = 2)."""
        params = self.logits(x, ordering)
        if self.binary:
            return torch.sigmoid(params)
        return self.dist_head.mean(params) / (self.levels - 1)

    def level_log_probs(self, x: Tensor | np.ndarray, ordering: Ordering | None = None) -> Tensor:
        """(B, D, K) every pixel's whole conditional: log p(x_i = v | x_<i) for each level v."""
        params = self.logits(x, ordering)
        return self.dist_head.log_probs(params[..., None] if self.binary else params)

    def log_prob_per_pixel(self, x: Tensor | np.ndarray, ordering: Ordering | None = None) -> Tensor:
        """(B, D) log p(x_i | x_<i) in nats of the values in ``x``."""
        x = self._as_batch(x)
        params = self._full_logits(x, self.resolve_ordering(ordering))
        if self.binary:
            return -F.binary_cross_entropy_with_logits(params, x, reduction="none")
        return self.dist_head.log_prob_of(params, x)

    def log_prob(self, x: Tensor | np.ndarray, ordering: Ordering | None = None) -> Tensor:
        """(B,) log p(x) in nats."""
        return self.log_prob_per_pixel(x, ordering).sum(dim=1)

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
    ) -> Generator[SampleStep, None, None]:
        """Generate ``n`` images pixel by pixel, yielding after each generated pixel.

        ``known`` (D,) marks pixels that are given; their values come from ``values`` ((D,) or
        (n, D)) and never change. Unknown pixels are drawn in ``ordering`` (for an order-agnostic
        model: after all known pixels, so the completion is exact; for a model tied to one ordering,
        known pixels that come after an unknown one cannot influence it -- see
        :meth:`inpaint_is_exact`). Random numbers come from ``generator`` (a CPU generator; one
        uniform per image per generated pixel), so the fast and reference samplers draw the same
        images for the same seed. Stop the run by no longer iterating.
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
        stepper = self.stepper(x, order) if fast else ReferenceStepper(self, x, order)
        yield from draw_steps(stepper, x, known_np, order, generator, temperature, head=self.dist_head)

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
            "parameters": self.num_parameters(),
        }

    # ---------------------------------------------------------------------------------------
    # the influence map: one pixel's conditional under single-pixel flips of one image
    def pixel_logit_flips(self, x: Tensor | np.ndarray, pixel: int, flips: Sequence[int] | np.ndarray | Tensor,
                          ordering: Ordering | None = None) -> Tensor:
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


def log_mean_exp(values: Tensor, dim: int = 0) -> Tensor:
    return torch.logsumexp(values, dim) - math.log(values.shape[dim])


def nats_to_bits_per_dim(nats: float, d: int) -> float:
    return nats / (d * LOG2)
