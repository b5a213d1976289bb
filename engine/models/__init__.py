"""Model families, all behind the interface of :mod:`engine.models.base`.

``FAMILIES`` maps the name of a family that trains to its class; ``ASSEMBLED`` those built from
trained models instead (the mixture of :mod:`engine.models.mixture`). :func:`build_model` rebuilds a
model of either from the family name, a config dict and an ordering (what a checkpoint stores).
"""

from __future__ import annotations

import threading
from typing import Any

import torch

from ..errors import PixelchainError
from ..ordering import Ordering
from .base import REGISTRY, ARModel, ModelConfig, SampleStep, Stepper, UnsupportedOrdering
from .fvsbn import FVSBN, FVSBNConfig
from .lmconv import LMConvConfig, LocallyMaskedPixelCNN
from .lstm import LSTMConfig, PixelLSTM
from .made import MADE, MADEConfig
from .mixture import Mixture, MixtureConfig
from .mlp import MLPConfig, PixelMLP
from .nade import NADE, NADEConfig
from .pixelcnn import GatedPixelCNN, PixelCNNConfig
from .transformer import OrderAgnosticTransformer, TransformerConfig

FAMILIES: dict[str, type[ARModel]] = {
    "fvsbn": FVSBN,
    "mlp": PixelMLP,
    "nade": NADE,
    "made": MADE,
    "pixelcnn": GatedPixelCNN,
    "lmconv": LocallyMaskedPixelCNN,
    "lstm": PixelLSTM,
    "transformer": OrderAgnosticTransformer,
}

#: families assembled from trained models rather than trained (no training form, no recipe)
ASSEMBLED: dict[str, type[ARModel]] = {"mixture": Mixture}
REGISTRY.update(FAMILIES)
REGISTRY.update(ASSEMBLED)


#: Small configurations that train in minutes on a laptop CPU (the bundled quick models use
#: them); the config classes' defaults are sized for a GPU.
QUICK_CONFIGS: dict[str, dict[str, Any]] = {
    "fvsbn": {},
    "mlp": {"hidden": 8},
    "nade": {"hidden": 100},
    "made": {"hidden": (1000,), "direct": True},
    "pixelcnn": {"channels": 16, "layers": 4, "head": 32},
    "lmconv": {"channels": 16, "layers": 3, "head": 32},
    "lstm": {"hidden": 96, "layers": 1, "embed": 32},
    "transformer": {"d_model": 48, "layers": 2, "heads": 4},
}


class UnknownFamily(PixelchainError, ValueError):
    pass


def family_class(family: str) -> type[ARModel]:
    cls = FAMILIES.get(family) or ASSEMBLED.get(family)
    if cls is None:
        raise UnknownFamily(f"unknown model family {family!r}; known: {', '.join([*FAMILIES, *ASSEMBLED])}")
    return cls


def build_model(family: str, config: dict[str, Any] | ModelConfig | None = None, ordering: Ordering | None = None) -> ARModel:
    cls = family_class(family)
    if config is None:
        config = cls.config_class()
    elif isinstance(config, dict):
        config = cls.config_class.from_dict(config)
    return cls(config, ordering)


#: held while a model draws its initial weights from the global generator (see :func:`build_seeded`)
_INIT_LOCK = threading.Lock()


def build_seeded(family: str, config: dict[str, Any] | ModelConfig | None = None, ordering: Ordering | None = None,
                 seed: int = 0) -> ARModel:
    """:func:`build_model` with initial weights that depend on ``seed`` alone.

    The layers draw their initial weights from torch's global generator, which every thread of a
    process shares. Here the global generator is seeded, used and given back its previous state
    (``torch.random.fork_rng``) while a lock is held, so two threads building models (the app's
    training panel and a default model, the command line under a test) cannot reseed or draw in
    the middle of each other's initialisation; after the call the global generator is where it
    was. Training itself draws from a generator of its own (``ARModel.train_generator``)."""
    with _INIT_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(family, config, ordering)


__all__ = [
    "ARModel",
    "ModelConfig",
    "SampleStep",
    "Stepper",
    "UnsupportedOrdering",
    "UnknownFamily",
    "FAMILIES",
    "ASSEMBLED",
    "QUICK_CONFIGS",
    "family_class",
    "build_model",
    "build_seeded",
    "FVSBN",
    "FVSBNConfig",
    "PixelMLP",
    "MLPConfig",
    "Mixture",
    "MixtureConfig",
    "NADE",
    "NADEConfig",
    "MADE",
    "MADEConfig",
    "GatedPixelCNN",
    "PixelCNNConfig",
    "LocallyMaskedPixelCNN",
    "LMConvConfig",
    "PixelLSTM",
    "LSTMConfig",
    "OrderAgnosticTransformer",
    "TransformerConfig",
]
