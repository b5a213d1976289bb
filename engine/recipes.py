"""Training recipes: the options of a run, the model config they make, and what a checkpoint records.

Everything that turns "how to train" into a model and a :class:`~engine.train.TrainConfig`, and
back into a checkpoint's metadata, lives here once, for ``pixelchain train``, the app's training
panel and ``scripts/bundle.py`` alike:

* :func:`add_train_options` builds the ``pixelchain train`` options of every
  :class:`~engine.train.TrainConfig` field from the dataclass itself (name, type, default, help in
  the field's metadata); :func:`train_config_from_args` reads them back.
* :func:`model_config` translates the family options (hidden sizes, direct connections,
  order-agnostic training, the order set, the number of masks, further fields as JSON) into the
  config of a family, with the MADE mask rules below; :func:`add_family_options` and
  :func:`model_config_from_args` are its command-line side, :func:`train_argv` the way back from a
  recipe to a command line.
* :func:`run_metadata` is what a run records beside its ``train_config`` (data checksums, device,
  command); :func:`nll_metrics`, :func:`with_metrics` and :func:`record_metrics` put measured
  likelihoods into a checkpoint's ``metrics``.

The MADE mask rules: an order-agnostic MADE whose number of masks is not given explicitly (by an
option, ``--config`` or a recorded recipe) draws a fresh ordering and mask every minibatch
(``num_masks = 0``) when its orderings are random permutations, the only way to cover them; with
the 16 line scans or the row orderings it cycles a fixed set of :data:`FIXED_MEMBERS`
ordering/mask pairs, as the bundled MADEs do, so that an ensemble over the members evaluates
exactly the pairs that were trained.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from .train import TrainConfig

if TYPE_CHECKING:
    from .checkpoint import Checkpoint

__all__ = [
    "FIXED_MEMBERS",
    "add_train_options",
    "train_config_from_args",
    "parse_hidden",
    "parse_config_json",
    "model_config",
    "add_family_options",
    "model_config_from_args",
    "train_argv",
    "run_metadata",
    "nll_metrics",
    "with_metrics",
    "record_metrics",
]

#: ordering/mask pairs of an order-agnostic MADE over the line scans or the row orderings
FIXED_MEMBERS = 32


# -------------------------------------------------------------------------- training options
def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _train_fields() -> list[tuple[dataclasses.Field, type]]:
    """Each TrainConfig field with its value type (``X`` of an optional ``X | None``)."""
    hints = typing.get_type_hints(TrainConfig)
    out = []
    for f in dataclasses.fields(TrainConfig):
        tp = hints[f.name]
        args = typing.get_args(tp)
        if type(None) in args:
            (tp,) = [a for a in args if a is not type(None)]
        out.append((f, tp))
    return out


def add_train_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Add an option for every :class:`TrainConfig` field: ``--batch-size`` for ``batch_size``,
    with the field's type, default and help (``metadata["help"]``; other metadata entries are
    passed to argparse, e.g. ``metavar``)."""
    for f, tp in _train_fields():
        meta = dict(f.metadata)
        text = meta.pop("help", None)
        if not text:
            raise TypeError(f"TrainConfig.{f.name} has no help text in its metadata")
        if tp is bool:
            if f.default is not False:
                raise TypeError(f"TrainConfig.{f.name}: a switch must default to False")
            parser.add_argument(_flag(f.name), action="store_true", help=text, **meta)
        else:
            if f.default is not None and "(default" not in text:
                text += " (default: %(default)s)"
            parser.add_argument(_flag(f.name), type=tp, default=f.default, help=text, **meta)


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` of parsed :func:`add_train_options` options."""
    return TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})


# ------------------------------------------------------------------------------ model config
def parse_hidden(text: str) -> tuple[int, ...]:
    """``"500"`` or ``"500,500"`` -> hidden sizes (argparse type of ``--hidden``)."""
    try:
        vals = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--hidden takes whole numbers separated by commas, got {text!r}") from None
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError("--hidden needs at least one positive size")
    return vals


def parse_config_json(text: str | None) -> dict[str, Any]:
    """The JSON object of ``--config`` (None or empty: no fields)."""
    if not text:
        return {}
    try:
        cfg = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--config is not valid JSON: {exc}") from None
    if not isinstance(cfg, dict):
        raise ValueError("--config must be a JSON object")
    return cfg


def model_config(
    family: str,
    base: Mapping[str, Any] | None = None,
    *,
    hidden: int | Sequence[int] | None = None,
    direct: bool | None = None,
    order_agnostic: bool | None = None,
    order_set: str | None = None,
    num_masks: int | None = None,
    levels: int | None = None,
    output: str | None = None,
    components: int | None = None,
    strict: bool = True,
    classes: int | None = None,
) -> dict[str, Any]:
    """The config of ``family`` (a dict for :func:`~engine.models.build_model`) from training options.

    ``base``: config fields given as such (``--config``, a recorded recipe, the CPU-sized
    ``QUICK_CONFIGS``); the options are applied on top, and None means "not given" (the base's or
    the family's default stands). ``hidden``: one size, or one per layer for families with several.
    With ``strict`` (the command line) an option the family does not have, or an order set without
    order-agnostic training, is a :class:`ValueError`; without it (the training panel, which
    disables such options) it is left out. Then the MADE mask rules (module docstring) apply.
    ``levels``, ``output`` (the head) and ``components`` are fields of every family; a model of more
    than two levels whose head is not given (or is the base's Bernoulli one) gets the categorical one.
    """
    from .models import family_class

    cls = family_class(family)
    fields = {f.name for f in dataclasses.fields(cls.config_class)}
    defaults = cls.config_class()
    cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in (base or {}).items()}

    def applies(key: str, value: Any) -> bool:
        if key in fields:
            return True
        if strict and value is not False:
            raise ValueError(f"{family} has no hidden size" if key == "hidden" else f"{_flag(key)} does not apply to {family}")
        return False

    if hidden is not None and applies("hidden", hidden):
        sizes = (int(hidden),) if isinstance(hidden, int) else tuple(int(h) for h in hidden)
        if not sizes or min(sizes) < 1:
            raise ValueError(f"hidden sizes must be positive, got {sizes}")
        if isinstance(defaults.hidden, tuple):  # type: ignore[attr-defined]
            cfg["hidden"] = sizes
        elif len(sizes) == 1:
            cfg["hidden"] = sizes[0]
        else:
            raise ValueError(f"{family} has one hidden layer: give one size, not {','.join(map(str, sizes))}")
    for key, value in (("direct", direct), ("order_agnostic", order_agnostic), ("num_masks", num_masks)):
        if value is not None and applies(key, value):
            cfg[key] = value
    for key, given in (("levels", levels), ("output", output), ("components", components), ("classes", classes)):
        if given is not None and applies(key, given):
            cfg[key] = given
    if _as_int(cfg.get("levels", 2)) > 2 and output is None and cfg.get("output", "bernoulli") == "bernoulli":
        cfg["output"] = "categorical"  # a Bernoulli head has two levels only
    if strict and components is not None and cfg.get("output") != "logistic-mixture":
        raise ValueError("--components is the number of logistics of --head logistic-mixture")
    agnostic = bool(cfg.get("order_agnostic", getattr(defaults, "order_agnostic", False)))
    if order_set is not None and applies("order_set", order_set):
        if agnostic:
            cfg["order_set"] = order_set
        elif strict:
            raise ValueError("--order-set chooses the orderings of order-agnostic training: add --order-agnostic")
    if "num_masks" in fields and agnostic and num_masks is None and "num_masks" not in (base or {}):
        chosen = cfg.get("order_set", getattr(defaults, "order_set", "random"))
        cfg["num_masks"] = FIXED_MEMBERS if chosen in ("scans", "rows") else 0
    return cfg


def _as_int(value: Any) -> int:
    """A config's number of levels as an int (the model's own check refuses what is not one)."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return 2


def add_family_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The family options of ``pixelchain train`` (read back by :func:`model_config_from_args`)."""
    from .mnist import LEVELS
    from .models.heads import HEADS
    from .models.made import ORDER_SETS

    parser.add_argument("--hidden", type=parse_hidden, default=None, metavar="N[,N...]",
                        help="hidden size(s), e.g. 500, or 500,500 for families with several layers")
    parser.add_argument("--direct", action="store_true", default=None, help="MADE: direct (masked) input-to-output connections")
    parser.add_argument("--order-agnostic", action="store_true", default=None,
                        help="train over orderings (MADE: and masks), so that any ordering works at inference")
    parser.add_argument("--order-set", default=None, choices=list(ORDER_SETS),
                        help="MADE, with --order-agnostic: the orderings trained over: random permutations, the 16 line "
                             "scans, or rows from the top in random directions")
    parser.add_argument("--num-masks", type=int, default=None, metavar="K",
                        help=f"MADE: ordering/mask pairs cycled in training, 0: a fresh one every minibatch (default: 1; "
                             f"order-agnostic: 0 with random orderings, {FIXED_MEMBERS} with scans or rows)")
    parser.add_argument("--levels", type=int, default=None, choices=list(LEVELS), metavar="K",
                        help=f"pixel levels: {', '.join(map(str, LEVELS))} (default: 2, binary); more than 2 needs "
                             f"--dataset mnist")
    parser.add_argument("--head", default=None, choices=list(HEADS),
                        help="how the model's outputs become a pixel's distribution over its levels: bernoulli (2 levels), "
                             "categorical (a K-way softmax) or logistic-mixture (a discretized mixture of logistics, as in "
                             "PixelCNN++) (default: bernoulli for 2 levels, categorical for more)")
    parser.add_argument("--components", type=int, default=None, metavar="M",
                        help="logistics in a --head logistic-mixture (default: 5)")
    parser.add_argument("--classes", type=int, default=None, metavar="C",
                        help="10: a class-conditional model p(x | digit), trained on the labels; it also classifies "
                             "(pixelchain classify) and its NLL is of the marginal p(x) (default: 0, unconditional)")
    parser.add_argument("--config", default=None, metavar="JSON",
                        help="a JSON object of further config fields of the family, e.g. '{\"dropout\": 0.1}'")


def model_config_from_args(family: str, args: argparse.Namespace) -> dict[str, Any]:
    """:func:`model_config` of parsed :func:`add_family_options` options (strict)."""
    return model_config(family, parse_config_json(args.config), hidden=args.hidden, direct=args.direct,
                        order_agnostic=args.order_agnostic, order_set=args.order_set, num_masks=args.num_masks,
                        levels=getattr(args, "levels", None), output=getattr(args, "head", None),
                        components=getattr(args, "components", None), classes=getattr(args, "classes", None))


def train_argv(family: str, config: Mapping[str, Any], ordering: str, tc: TrainConfig, out: str | os.PathLike,
               dataset: str | None = None) -> list[str]:
    """The ``pixelchain train`` arguments of a recipe: parsed, they give back ``config`` (through
    :func:`model_config_from_args`) and ``tc``. ``ordering``: its spec (``raster``, ``random:3``).
    ``dataset``: the data set trained on (default: ``mnist`` for more than two levels, else
    ``binarized-mnist``, which needs no option)."""
    from .models import family_class

    defaults = family_class(family).config_class()
    agnostic = bool(config.get("order_agnostic", getattr(defaults, "order_agnostic", False)))
    argv = ["train", "--model", family, "--ordering", ordering]
    rest: dict[str, Any] = {}
    for key, value in config.items():
        value = tuple(value) if isinstance(value, list) else value
        if key == "hidden":
            argv += ["--hidden", ",".join(map(str, value if isinstance(value, tuple) else (value,)))]
        elif key in ("direct", "order_agnostic") and value is True:
            argv.append(_flag(key))
        elif key in ("order_set", "num_masks") and agnostic:
            argv += [_flag(key), str(value)]
        elif key == "levels":
            argv += ["--levels", str(value)] if value != 2 else []
        elif key == "output":
            argv += ["--head", str(value)] if value != defaults.output else []
        elif key == "components" and config.get("output") == "logistic-mixture":
            argv += ["--components", str(value)]
        elif key == "classes":
            argv += ["--classes", str(value)] if value else []
        elif value != getattr(defaults, key, object()):
            rest[key] = list(value) if isinstance(value, tuple) else value
    if agnostic and hasattr(defaults, "num_masks") and "num_masks" not in config:
        argv += ["--num-masks", str(defaults.num_masks)]  # explicit: the mask rules must not choose another
    if rest:
        argv += ["--config", json.dumps(rest, sort_keys=True)]
    dataset = dataset or ("mnist" if int(config.get("levels", 2)) > 2 else None)
    if dataset and dataset != "binarized-mnist":
        argv += ["--dataset", dataset]
    for f in dataclasses.fields(TrainConfig):
        value = getattr(tc, f.name)
        if value == f.default:
            continue
        argv += [_flag(f.name)] if isinstance(value, bool) else [_flag(f.name), str(value)]
    if not tc.amp:
        argv += ["--precision", "float32"]  # explicit: --precision auto may take bf16 on another machine
    return argv + ["--out", str(out)]


# ------------------------------------------------------------------------- recorded metadata
def run_metadata(device: str, command: str | Sequence[str], name: str | None = None, *, dataset: str = "binarized-mnist",
                 levels: int = 2, **extra: Any) -> dict[str, Any]:
    """What a training run records beside its ``train_config`` (which :func:`~engine.train.train`
    adds): the data set (``dataset``, which commands that use the checkpoint read back with
    :func:`engine.datasets.dataset_of`) and its files' checksums at ``levels`` (the model's config
    records its levels too), the device's name, the command line that repeats it (a list is
    quoted as a shell would need it), optionally the model's ``name`` and further entries."""
    from .datasets import data_record

    meta: dict[str, Any] = {
        "dataset": dataset,
        "data": data_record(dataset, levels),
        "device": device,
        "command": command if isinstance(command, str) else "pixelchain " + shlex.join(command),
    }
    if name:
        meta["name"] = name
    meta.update(extra)
    return meta


def nll_metrics(split: str, nll: float, stderr: float, ensemble: int = 1) -> dict[str, float]:
    """A measured NLL as metrics entries: ``test_nll`` and ``test_nll_stderr``, or for an ensemble
    of K orderings ``test_nll_ensembleK`` and ``test_nll_ensembleK_stderr``."""
    key = f"{split}_nll" + (f"_ensemble{ensemble}" if ensemble > 1 else "")
    return {key: float(nll), key + "_stderr": float(stderr)}


def with_metrics(meta: Mapping[str, Any], metrics: Mapping[str, float]) -> dict[str, Any]:
    """A copy of ``meta`` with ``metrics`` merged into its ``metrics`` (other entries kept)."""
    old = meta.get("metrics")
    return dict(meta, metrics=dict(old if isinstance(old, dict) else {}, **metrics))


def record_metrics(path: str | os.PathLike, metrics: Mapping[str, float], checkpoint: Checkpoint | None = None) -> Path:
    """Merge ``metrics`` into the metadata of the checkpoint at ``path`` in place (atomically; only
    the metadata is rewritten, every tensor keeps its bytes: a float64, float16 or int8 checkpoint
    stays exactly one); ``checkpoint``: that file, when it is loaded already."""
    from .checkpoint import read_metadata, update_metadata

    meta = checkpoint.meta if checkpoint is not None else read_metadata(path)
    return update_metadata(path, with_metrics(meta, metrics))  # the tensors' bytes as they are
