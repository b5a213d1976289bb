"""A mixture of trained models: an ensemble of checkpoints that is itself an autoregressive model.

``p(x) = (1 / M) sum_m p_m(x)`` over M members trained on the same images (the same size, levels,
head kind and classes), the log-mean-exp of their joint log-likelihoods. When the members share an
ordering the mixture factorises along it with exact conditionals:

    p(x_i | x_<i) = sum_m w_m(x_<i) p_m(x_i | x_<i),   w_m(x_<i) = p_m(x_<i) / sum_k p_k(x_<i),

each member weighted by how well it explains the pixels already there (its posterior given the
prefix). So everything the app and the command line do with a model -- heatmaps, the inspector's
whole conditional, sampling, inpainting, compression, scoring -- works on an ensemble, and the sum of
its per-pixel log-probabilities is the log-mean-exp of the members' joint ones exactly. A
class-conditional mixture mixes ``p_m(x | y)`` class by class: its Bayes classifier reads
``p(y | x) ~ p(y) mean_m p_m(x | y)``.

A mixture is assembled from checkpoints (``pixelchain mix``), never trained: each member keeps the
weights it was trained with, stored under ``members.<m>.`` in one checkpoint. Members may be of
different families; a mixture of mixtures is refused (assemble one from the members themselves).
Sampling runs every member's fast sampler side by side and carries the M running log-likelihoods
of the prefix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence, cast

import numpy as np
import torch
from torch import Tensor, nn

from ..ordering import Ordering
from .base import REGISTRY, ARModel, ModelConfig, Stepper, _take, _wide, prefix_sums, typed

__all__ = ["Mixture", "MixtureConfig", "MixtureStepper", "CLASSIFIERS", "MAX_MEMBERS", "SHARED_FIELDS"]

#: the most members a mixture takes (each one is a whole model, run on every pass)
MAX_MEMBERS = 16
#: the config fields every member must share with the mixture (and so with each other)
SHARED_FIELDS = ("height", "width", "levels", "output", "classes")
#: how a class-conditional ensemble classifies (:attr:`MixtureConfig.classifier`)
CLASSIFIERS = ("bayes", "vote")


@dataclass
class MixtureConfig(ModelConfig):
    #: the members, each ``{"family": name, "config": that family's config as a dict}``
    members: tuple[dict[str, Any], ...] = ()
    #: how a class-conditional ensemble classifies: "bayes", Bayes' rule on its own p(x | y) (the
    #: member that explains the image best carries the answer), or "vote", the mean of the members'
    #: own posteriors p_m(y | x) (each member's Bayes classifier, weighted equally whatever its
    #: likelihood of the image). The density, sampling and every figure but the posterior are the
    #: mixture's either way.
    classifier: str = "bayes"


class Mixture(ARModel):
    family = "mixture"
    config_class = MixtureConfig
    takes_classes = True
    description = ("An ensemble of trained models, mixed with equal weights: p(x) is the mean of the members' "
                   "p(x), and each pixel's conditional weighs the members by how well they explain the pixels "
                   "before it.")

    def __init__(self, config: MixtureConfig, ordering: Ordering | None = None):
        if config.output == "logistic-mixture":
            raise ValueError("a mixture needs members with a Bernoulli or categorical head")
        if config.classifier not in CLASSIFIERS:
            raise ValueError(f"classifier must be one of {', '.join(CLASSIFIERS)}, got {config.classifier!r}")
        super().__init__(config, ordering)
        specs = config.members
        if not 2 <= len(specs) <= MAX_MEMBERS:
            raise ValueError(f"a mixture takes 2 to {MAX_MEMBERS} members, got {len(specs)}")
        members = []
        for m, spec in enumerate(specs):
            if not isinstance(spec, dict) or not isinstance(spec.get("family"), str) or not isinstance(spec.get("config"), dict):
                raise ValueError(f"member {m} is not a {{'family': ..., 'config': {{...}}}} object")
            if spec["family"] == self.family:
                raise ValueError("a mixture cannot hold another mixture: assemble one from the members themselves")
            cls = REGISTRY.get(spec["family"])
            if cls is None:
                raise ValueError(f"member {m}: unknown model family {spec['family']!r}; known: {', '.join(REGISTRY)}")
            member_config = cls.config_class.from_dict(spec["config"])
            for f in SHARED_FIELDS:  # checked before the member is built: its size is the mixture's
                if getattr(member_config, f) != getattr(config, f):
                    raise ValueError(f"member {m} ({spec['family']}) has {f} {getattr(member_config, f)!r}, the mixture "
                                     f"{getattr(config, f)!r}")
            members.append(cls(member_config, self.ordering))
        self.members = nn.ModuleList(members)
        self.any_order = all(m.any_order for m in members)

    @property
    def models(self) -> Sequence[ARModel]:
        """The members, as models."""
        return typed(self.members, ARModel)

    @classmethod
    def of(cls, models: list[ARModel], classifier: str = "bayes") -> "Mixture":
        """A mixture of ``models`` (trained, sharing size, levels, head kind and classes) in the first
        one's ordering, holding their weights; a conditional mixture takes the first one's p(y) and
        classifies by ``classifier`` (:attr:`MixtureConfig.classifier`)."""
        if not models:
            raise ValueError("a mixture needs members")
        if any(m.family == cls.family for m in models):
            raise ValueError("a mixture cannot hold another mixture: assemble one from the members themselves")
        first = models[0].config
        shared = {f: getattr(first, f) for f in SHARED_FIELDS}
        config = MixtureConfig(first.height, first.width, levels=first.levels, output=first.output,
                               components=first.components, classes=first.classes, classifier=classifier,
                               members=tuple({"family": m.family, "config": m.config.to_dict()} for m in models))
        for k, m in enumerate(models[1:], 1):
            for f, v in shared.items():
                if getattr(m.config, f) != v:
                    raise ValueError(f"model {k + 1} ({m.family}) has {f} {getattr(m.config, f)!r}, model 1 {v!r}: "
                                     "members must model the same images the same way")
            ok, why = m.supports(models[0].ordering)
            if not ok:
                raise ValueError(f"model {k + 1} ({m.family}) cannot follow model 1's {models[0].ordering.label} ordering: {why}")
        mix = cls(config, models[0].ordering).to(models[0].device, models[0]._dtype())
        for own, src in zip(mix.members, models, strict=True):
            own.load_state_dict(src.state_dict())
        if config.classes:  # one p(y) for the mixture and every member's own posterior (its vote)
            for m in (mix, *mix.models):
                m.class_log_prior.copy_(models[0].class_log_prior)
        return mix

    # -- orderings -----------------------------------------------------------------------------
    def supports(self, ordering: Ordering) -> tuple[bool, str]:
        for k, m in enumerate(self.models):
            ok, why = m.supports(ordering)
            if not ok:
                return False, f"member {k + 1} of the mixture: {why}"
        return True, ""

    def _ordering_changed(self) -> None:
        for m in self.models:
            m.set_ordering(self.ordering)

    def trained_orderings(self) -> list[Ordering]:
        """The first member's trained orderings that every member can follow."""
        return [o for o in self.models[0].trained_orderings() if self.supports(o)[0]]

    # -- density -------------------------------------------------------------------------------
    def _member_levels(self, x: Tensor, ordering: Ordering, y: Tensor | None) -> tuple[Tensor, Tensor]:
        """(M, B, D, K) every member's level log-probabilities and (M, B, D) its log p of ``x``'s values."""
        levels, observed = [], []
        for m in self.models:
            params = m._full_logits(x, ordering, y)
            levels.append(_wide(m._level_log_probs(params)))
            observed.append(_wide(m._observed(params, x)))
        return torch.stack(levels), torch.stack(observed)

    def _logits(self, x: Tensor, ordering: Ordering, y: Tensor | None = None) -> Tensor:
        return self._mix(*self._member_levels(x, ordering, y), ordering)

    def _mix(self, levels: Tensor, observed: Tensor, ordering: Ordering) -> Tensor:
        """The mixture's head numbers from the members' (M, B, D, K) level log-probabilities and (M, B, D)
        log p of the values drawn."""
        weights = torch.log_softmax(prefix_sums(observed, ordering), dim=0)  # (M, B, D): p(member | x_<i)
        mix = torch.logsumexp(weights[..., None] + levels, dim=0)  # (B, D, K)
        return self._params_of_levels(mix).to(self._dtype())

    def _per_class_params(self, x: Tensor, ordering: Ordering) -> Tensor:
        """As every model's, and each member's per-class log-probabilities of ``x`` from the same pass
        are kept (:meth:`_member_class_log_probs`), so that the vote and the members' weights of the
        same image cost no second pass."""
        if not self.classes:
            raise ValueError("this model is not conditioned on a class")
        c, b = self.classes, len(x)
        ys = torch.arange(c, device=x.device).repeat_interleave(b)
        levels, observed = self._member_levels(x.repeat(c, 1), ordering, ys)
        self._remember(x, ordering, observed.view(len(observed), c, b, -1))
        params = self._mix(levels, observed, ordering)
        return params.view(c, b, *params.shape[1:])

    #: the most images whose members' per-class log-probabilities are kept (the app's one drawing)
    _REMEMBER_AT_MOST = 4

    def _remember(self, x: Tensor, ordering: Ordering, lp: Tensor) -> None:
        """Keep (M, C, B, D) ``lp`` of the batch ``x`` in ``ordering``: one entry, replaced as a whole
        (so a reader on another thread sees either the old entry or the new one)."""
        if len(x) <= self._REMEMBER_AT_MOST:
            self._kept = (self._weights_stamp(), x.detach().clone(), np.asarray(ordering.perm).copy(), lp.detach())

    def _weights_stamp(self) -> tuple[tuple[int, int], ...]:
        """Where each weight lives and how often it was written in place: changes when the weights do
        (``load_state_dict``, an optimiser's step, a move to another device or dtype)."""
        return tuple((p.data_ptr(), p._version) for p in self.parameters())

    def _kept_for(self, x: Tensor, ordering: Ordering) -> Tensor | None:
        """The kept (M, C, B, D) log-probabilities when they are of the images ``x`` in ``ordering``
        under the weights the model has now."""
        kept = getattr(self, "_kept", None)
        if (kept is not None and kept[1].shape == x.shape and kept[1].device == x.device
                and np.array_equal(kept[2], np.asarray(ordering.perm)) and torch.equal(kept[1], x)
                and kept[0] == self._weights_stamp()):
            return kept[3]
        return None

    def _member_class_log_probs(self, x: Tensor, ordering: Ordering) -> Tensor:
        """(M, C, B, D) every member's log p(x_i | x_<i, y = c): those of the last class pass when it was
        of the same images in the same ordering, else from a pass of each member."""
        kept = self._kept_for(x, ordering)
        if kept is not None:
            return kept
        lp = torch.stack([_wide(m.class_log_probs(x, ordering)) for m in self.models])
        self._remember(x, ordering, lp)
        return lp

    def member_posterior(self, x: Tensor, ordering: Ordering | None = None, y: int | None = None) -> Tensor:
        """(M, B, D) raster-indexed: at each pixel, p(member m | the pixels before it), the weight of
        member m's conditional in the mixture's. Given class ``y``, of p(x | y)'s mixture; for a
        conditional model without, under the marginal: the joint posterior over (class, member)
        from p(y) and each member's p(x_<i | y), summed over the classes."""
        xb = self._as_batch(x)
        order = self.resolve_ordering(ordering)
        with torch.no_grad():
            if not self.classes or y is not None:  # one class's pass, or that class of the last class pass
                yt = self._as_classes(y, len(xb))
                kept = self._kept_for(xb, order) if y is not None else None
                if kept is not None:
                    lp = kept[:, int(cast(int, y))]  # (M, B, D)
                else:
                    lp = torch.stack([_wide(m.log_prob_per_pixel(xb, order, yt)) for m in self.models])
                return torch.softmax(prefix_sums(lp, order), dim=0)
            per = self._member_class_log_probs(xb, order)  # (M, C, B, D)
            prior = torch.log_softmax(self.class_log_prior.double(), 0).to(xb.device)
            joint = prefix_sums(per, order).double() + prior[None, :, None, None]
            m, c = joint.shape[:2]
            post = torch.softmax(joint.reshape(m * c, *joint.shape[2:]), dim=0).reshape(joint.shape)
            return post.sum(1).to(torch.float32)

    # -- the classifier ------------------------------------------------------------------------
    @property
    def votes(self) -> bool:
        """Whether the ensemble classifies by its members' vote (:attr:`MixtureConfig.classifier`)."""
        return bool(self.classes) and cast(MixtureConfig, self.config).classifier == "vote"

    def classifier_log_posterior(self, x: Tensor | np.ndarray, ordering: Ordering | None = None, upto: int | None = None,
                                 per_pixel: Tensor | None = None) -> Tensor:
        """Bayes' rule on the mixture, or with ``classifier = "vote"`` the log of the mean of the
        members' posteriors from the same prefix (``per_pixel``, the mixture's own, is not theirs)."""
        if not self.votes:
            return super().classifier_log_posterior(x, ordering, upto, per_pixel)
        xb, order = self._as_batch(x), self.resolve_ordering(ordering)
        per = self._member_class_log_probs(xb, order)
        posts = torch.stack([m.class_log_posterior(xb, order, upto, per_pixel=lp).double()
                             for m, lp in zip(self.models, per, strict=True)])
        return torch.logsumexp(posts, 0) - math.log(len(posts))

    def classify_batch(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """One pass per member over the classes: the mixture's log p(x | y) is the log-mean-exp of
        the members', and the posterior Bayes' rule on it, or the mean of the members' posteriors."""
        lls = torch.stack([m.class_log_probs(x, self.ordering).double().sum(-1) for m in self.models])  # (M, C, B)
        prior = self.class_log_prior.detach().double().to(lls.device)
        ll = torch.logsumexp(lls, 0) - math.log(len(lls))
        if self.votes:
            joint = prior[None, :, None] + lls
            posts = joint - torch.logsumexp(joint, 1, keepdim=True)
            return ll, (torch.logsumexp(posts, 0) - math.log(len(lls))).T
        joint = prior[:, None] + ll
        return ll, (joint - torch.logsumexp(joint, 0)).T

    def training_loss(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        raise ValueError("a mixture is assembled from trained models (pixelchain mix), not trained; train its members")

    def stepper(self, x: Tensor, ordering: Ordering, y: Tensor | None = None) -> Stepper:
        return MixtureStepper(self, x, ordering, y)

    # -- description ---------------------------------------------------------------------------
    def notes(self) -> list[str]:
        kinds = ", ".join(m.family.upper() for m in self.models)
        return [f"An ensemble of {len(self.models)} trained models ({kinds}), mixed with equal weights: each pixel's "
                "conditional is the members' conditionals weighted by how well each explains the pixels before it."]

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["members"] = [m.describe() for m in self.models]
        return d


class MixtureStepper(Stepper):
    """The members' own fast samplers side by side, with each member's running log p of the pixels
    observed so far: a pixel's conditional mixes the members' by their posterior given the prefix."""

    def __init__(self, model: Mixture, x: Tensor, ordering: Ordering, y: Tensor | None = None):
        self.model = model
        self.steppers = [m.stepper(x, ordering, y) for m in model.models]
        self.log_w = torch.zeros(len(self.steppers), len(x), device=x.device)  # (M, B): log p_m(prefix)
        self._at: tuple[int, Tensor] | None = None  # the pixel whose member conditionals are cached

    def _levels(self, pixel: int) -> Tensor:
        """(M, B, K) the members' log-probabilities of each level of ``pixel``."""
        if self._at is None or self._at[0] != pixel:
            lv = [_wide(m._level_log_probs(s.logits(pixel))) for m, s in zip(self.model.models, self.steppers, strict=True)]
            self._at = (pixel, torch.stack(lv))
        return self._at[1]

    def logits(self, pixel: int) -> Tensor:
        levels = self._levels(pixel)
        mix = torch.logsumexp(torch.log_softmax(self.log_w, 0)[..., None] + levels, dim=0)  # (B, K)
        return self.model._params_of_levels(mix).to(self.model._dtype())

    def observe(self, pixel: int, value: Tensor) -> None:
        levels = self._levels(pixel)
        index = value.long().reshape(1, -1, 1).expand(len(levels), -1, 1).to(levels.device)
        self.log_w = self.log_w + levels.gather(-1, index)[..., 0]
        for s in self.steppers:
            s.observe(pixel, value)
        self._at = None

    def select(self, index: Tensor) -> None:
        for s in self.steppers:
            s.select(index)
        self.log_w = _take(self.log_w, index, 1)
        self._at = None

