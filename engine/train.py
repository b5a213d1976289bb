"""Training as a plain generator of progress events: no callbacks, no threads, no Qt.

``for event in train(model, train_x, valid_x, TrainConfig(...), out="m.safetensors"): ...``

Events are :class:`BatchEnd` after every minibatch, :class:`Validating` between chunks of the
validation pass (about 0.2 s each), :class:`EpochEnd` after each validation and
:class:`Finished` once at the end. Whoever drives the generator stops training by no longer
iterating (``gen.close()``); nothing half-written is left behind because every file is written
atomically at an epoch's end. Files written when ``out`` is given:

* ``out`` -- the best model on the validation split so far (what ``eval`` and the app open);
* ``out`` with ``.resume`` before the suffix -- the latest weights with the optimizer state,
  used by ``resume=True``. Each epoch reseeds its shuffling and the model's own randomness from
  ``(seed, epoch)``, so a resumed run repeats an uninterrupted one. With ``state_minutes`` it is
  also written within an epoch, with the batch reached and the random generator's state, and a
  resume finishes that epoch as the interrupted run would have.

A NaN or infinite loss stops the run before the optimizer step that would spread it; the best
checkpoint on disk is left untouched.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Generator, Iterator, Sequence, Union

import numpy as np
import torch

from . import distributed
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .errors import PixelchainError
from .models import ARModel
from .steps import drain

__all__ = [
    "TrainConfig",
    "BatchEnd",
    "Validating",
    "evaluate_steps",
    "EpochEnd",
    "Finished",
    "TrainingError",
    "train",
    "evaluate",
    "resolve_device",
    "resume_path",
    "device_name",
]


class TrainingError(PixelchainError, RuntimeError):
    pass


def _field(default: Any, help: str, **cli: Any) -> Any:
    """A :class:`TrainConfig` field with its help text; ``cli``: further argparse settings of its
    ``pixelchain train`` option (e.g. ``metavar``), which :mod:`engine.recipes` builds from here."""
    return field(default=default, metadata={"help": help, **cli})


@dataclass
class TrainConfig:
    """How a model is trained. Every field is also an option of ``pixelchain train`` (``batch_size``
    is ``--batch-size``) with the default and the help text given here, so the two never disagree."""

    epochs: int = _field(10, "epochs to train; the learning-rate schedule spans them")
    batch_size: int = _field(100, "training images per minibatch")
    lr: float = _field(1e-3, "learning rate of Adam")
    weight_decay: float = _field(0.0, "L2 weight decay of Adam")
    lr_min_factor: float = _field(1.0, "cosine-decay the learning rate to lr * this over the epochs (1: constant)")
    grad_clip: float | None = _field(None, "clip the gradient's norm to this (default: no clipping)")
    seed: int = _field(0, "seed of the initial weights, the shuffling and the model's own randomness")
    device: str = _field("auto", "auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps")
    patience: int | None = _field(None, "stop after this many epochs without a better validation NLL (default: never)")
    #: the best checkpoint and the resumable state are kept at the stop, so ``resume`` continues
    #: the run (training in slices, e.g. on a lent GPU)
    max_minutes: float | None = _field(
        None, "stop after the last epoch that fits in this many minutes of this run (continue with --resume)")
    #: re-estimated after every epoch from this run's epochs so far, never more than ``epochs``, so that
    #: a run of unknown speed, e.g. on a lent GPU, still decays to ``lr * lr_min_factor``. A resumed
    #: run starts from the full ``epochs`` schedule and refits it after its first epoch, which
    #: amounts to a warm restart of the learning rate
    fit_schedule: bool = _field(
        False, "with --max-minutes: end the cosine schedule at the last epoch that fits the limit (re-estimated every epoch)")
    #: the state holds the weights, the optimiser's moments and the average: about four times the
    #: weights. Above 1 or at 0 a new best checkpoint is also held in memory and written with the
    #: state (a large model on a fast GPU would otherwise spend much of its time writing files)
    state_every: int = _field(
        1, "save the resumable state every N epochs and when the run stops (0: only when it stops)", metavar="N")
    #: a state written within an epoch records the batch it reached, the position of the shuffling
    #: and the random generator, and the learning-rate schedule; a resume from it finishes that epoch
    #: exactly as the killed run would have, then goes on as after any resume
    state_minutes: float | None = _field(
        None, "also save the resumable state every M minutes within an epoch, so that a run killed mid-epoch "
        "loses at most M minutes (--resume continues from the batch it reached)", metavar="M")
    max_train: int | None = _field(None, "use only the first N training images (default: all 50,000)", metavar="N")
    max_valid: int | None = _field(None, "use only the first N validation images (default: all 10,000)", metavar="N")
    eval_batch_size: int = _field(1000, "images per batch of the validation pass")
    #: fast where the CPU has bf16 instructions (AVX-512 BF16, AMX); emulated elsewhere, and slower
    amp: bool = _field(False, "train in bf16 mixed precision on CUDA or the CPU, the same as --precision bf16 (validation stays float32)")
    #: on parameters of two or more dimensions; the reported training NLL leaves it out
    l1: float = _field(0.0, "L1 penalty on the weight matrices, in nats per image per unit of |w|")
    #: validation, the best checkpoint and early stopping use the averaged weights; training goes
    #: on from the raw ones
    ema: float = _field(0.0, "validate and keep a moving average of the weights with this decay, e.g. 0.999 (0: off)")


@dataclass
class BatchEnd:
    epoch: int  # 1-based
    epochs: int
    batch: int  # 1-based within the epoch
    batches: int
    loss: float  # nats per image on this batch
    elapsed: float  # seconds since the run started
    eta: float  # seconds left, estimated


@dataclass
class Validating:
    """Progress of the validation pass at the end of an epoch (yielded between chunks)."""

    epoch: int
    epochs: int
    done: int  # validation images evaluated so far
    total: int
    elapsed: float


@dataclass
class EpochEnd:
    epoch: int
    epochs: int
    train_nll: float
    valid_nll: float
    best_valid_nll: float
    improved: bool
    epoch_seconds: float
    elapsed: float
    eta: float


@dataclass
class Finished:
    reason: str  # "completed", "early-stopped", "diverged", "time-limit"
    epochs_run: int
    best_valid_nll: float | None
    best_path: Path | None
    message: str = ""
    history: list[dict[str, float]] = field(default_factory=list)


Event = Union[BatchEnd, Validating, EpochEnd, Finished]


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TrainingError("CUDA was asked for but no CUDA device is available; use --device cpu or auto")
    if name == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        raise TrainingError("Apple MPS was asked for but is not available; use --device cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise TrainingError(f"unknown device {name!r}: {exc}") from None


def _cpu_flags() -> set[str] | None:
    """The CPU's feature flags from /proc/cpuinfo (Linux), or None where they cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return None
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, val = line.partition(":")
        if key.strip().lower() in ("flags", "features"):  # x86 / aarch64
            flags.update(val.split())
    return flags or None


def bf16_is_native(device: torch.device, flags: set[str] | None = None) -> bool | None:
    """Whether ``device`` computes in bfloat16 natively (so ``amp`` speeds training up); None if unknown.

    CUDA devices of compute capability 8.0 and later do; a CPU does when it has AVX-512 BF16 or AMX
    (x86) or the BF16 extension (aarch64). Elsewhere bf16 is emulated: on an AVX2 CPU a masked MLP
    trains 6-10 times *slower* under autocast than in float32 (measured here).
    """
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.get_device_capability(device)[0] >= 8
    if device.type != "cpu":
        return None
    flags = _cpu_flags() if flags is None else flags
    if flags is None:
        return None
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def bf16_hardware(device: torch.device, flags: set[str] | None = None) -> str | None:
    """What computes bf16 natively on ``device`` when it does ("AMX", "AVX-512 BF16", "BF16",
    or for CUDA the GPU's name), else None."""
    if bf16_is_native(device, flags) is not True:
        return None
    if device.type != "cpu":
        return device_name(device)
    flags = _cpu_flags() if flags is None else flags
    if flags is None:
        return None
    return next(name for flag, name in (("amx_bf16", "AMX"), ("avx512_bf16", "AVX-512 BF16"), ("bf16", "BF16")) if flag in flags)


def amp_warning(device: torch.device, flags: set[str] | None = None) -> str | None:
    """A one-line warning when bf16 autocast would be emulated (slow) on ``device``, else None."""
    if bf16_is_native(device, flags) is not False:
        return None
    if device.type == "cpu":
        what = f"this CPU ({torch.backends.cpu.get_cpu_capability()}) has no bf16 instructions"
    else:
        what = f"{device_name(device)} has no native bf16"
    return f"{what}: bf16 mixed precision is emulated and trains several times slower than float32 here"


#: families whose training step measured faster under bf16 autocast than in float32 on a CPU with
#: native bf16 (bench/deep_training_step.py, bench/training_step.py): 1.2-2x for the deep families
#: on AVX-512 BF16, 2-2.8x for a wide MADE on AMX. The others (FVSBN, the per-pixel MLP, NADE's
#: fused float32 path) train in float32 unless bf16 is asked for.
BF16_PAYS = frozenset({"made", "pixelcnn", "lmconv", "lstm", "transformer"})
PRECISIONS = ("auto", "float32", "bf16")


def resolve_amp(precision: str, device: torch.device, family: str, flags: set[str] | None = None) -> bool:
    """Whether a run trains under bf16 autocast: ``"bf16"`` always, ``"float32"`` never, ``"auto"``
    where ``device`` computes bf16 natively and the family measured faster in it. Evaluation and
    every reported likelihood stay float32 either way."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision != "auto":
        return precision == "bf16"
    return family in BF16_PAYS and device.type in ("cpu", "cuda") and bf16_is_native(device, flags) is True


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return {"mps": "Apple GPU (MPS)", "cpu": "CPU"}.get(device.type, str(device))


def resume_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.stem + ".resume" + (out.suffix or ".safetensors"))


def evaluate_steps(
    model: ARModel, x: np.ndarray | torch.Tensor, batch_size: int = 1000, ensemble: int = 1, target_seconds: float | None = None
) -> Generator[int, None, tuple[float, float]]:
    """:func:`evaluate` as a generator that yields the number of images done after each chunk and
    returns ``(mean NLL, standard error)``. With ``target_seconds`` the chunk size adapts so that
    each chunk takes about that long (at most ``batch_size``), so a caller can stop between chunks."""
    was_training = model.training
    model.eval()
    nlls = []
    chunk = min(batch_size, 16) if target_seconds else batch_size
    i = 0
    try:
        while i < len(x):
            t = time.perf_counter()
            xb = torch.as_tensor(np.asarray(x[i : i + chunk]), dtype=torch.float32)
            with torch.no_grad():
                lp = model.member_log_prob(xb, 0) if ensemble == 1 else model.ensemble_log_prob(xb, ensemble)
            nlls.append(-lp.double().cpu())
            i += len(xb)
            if target_seconds:
                per_image = max((time.perf_counter() - t) / len(xb), 1e-7)
                chunk = int(min(batch_size, max(1, target_seconds / per_image)))
            yield i
    finally:
        model.train(was_training)
    v = torch.cat(nlls)
    se = float(v.std(unbiased=True) / math.sqrt(len(v))) if len(v) > 1 else float("nan")
    return float(v.mean()), se


def evaluate(model: ARModel, x: np.ndarray | torch.Tensor, batch_size: int = 1000, ensemble: int = 1) -> tuple[float, float]:
    """Mean NLL in nats per image and its standard error, in float32 (or the model's dtype)."""
    return drain(evaluate_steps(model, x, batch_size, ensemble))[1]


def _optim_state_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            tensors[f"optim.{idx}.{k}"] = torch.as_tensor(v)
    groups = [{k: v for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups}


def _load_optim_state(opt: torch.optim.Optimizer, extra: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in extra.items():
        if not key.startswith("optim."):
            continue
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": info["param_groups"]})


def _out_of_memory(what: str, batch: int, option: str, epoch: int, b: int | None) -> TrainingError:
    """The error for a CUDA out-of-memory: which batch size failed and what to try."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    where = f"epoch {epoch}" + (f", batch {b}" if b is not None else "")
    return TrainingError(
        f"the GPU ran out of memory on {what} of {batch} images ({where}); try a smaller {option} "
        f"(e.g. {max(1, batch // 2)}), a smaller model, or --device cpu. The best checkpoint so far is kept."
    )


def train(
    model: ARModel,
    train_x: np.ndarray,
    valid_x: np.ndarray,
    config: TrainConfig,
    out: str | Path | None = None,
    resume: bool = False,
    meta: dict[str, Any] | None = None,
    init_output_bias: bool = True,
) -> Iterator[Event]:
    """Train ``model`` with Adam, yielding progress; keeps the best-on-validation checkpoint.

    A fresh run first sets the output biases to the training marginals; ``init_output_bias=False``
    keeps the model's own (when it starts from trained weights)."""
    cfg = config
    ddp = distributed.context(cfg.device)  # several processes under torchrun, else a no-op
    device = ddp.device if ddp.device is not None else resolve_device(cfg.device)  # set when distributed
    train_x = np.asarray(train_x[: cfg.max_train] if cfg.max_train else train_x)
    valid_x = np.asarray(valid_x[: cfg.max_valid] if cfg.max_valid else valid_x)
    if len(train_x) == 0 or len(valid_x) == 0:
        raise TrainingError("training needs at least one training and one validation image")
    if cfg.epochs < 1 or cfg.batch_size < 1 or not (cfg.lr > 0):
        raise TrainingError("epochs and batch size must be at least 1 and the learning rate positive")
    if not (0.0 <= cfg.ema < 1.0) or not (cfg.l1 >= 0.0):
        raise TrainingError("ema must be in [0, 1) and l1 at least 0")
    if cfg.max_minutes is not None and not (cfg.max_minutes > 0 and math.isfinite(cfg.max_minutes)):
        raise TrainingError(f"max_minutes must be a positive number of minutes, got {cfg.max_minutes!r}")
    if cfg.fit_schedule and cfg.max_minutes is None:
        raise TrainingError("fit_schedule needs a time limit (max_minutes) to fit the schedule to")
    if cfg.state_minutes is not None and not (cfg.state_minutes > 0 and math.isfinite(cfg.state_minutes)):
        raise TrainingError(f"state_minutes must be a positive number of minutes, got {cfg.state_minutes!r}")
    if cfg.state_every < 0:
        raise TrainingError(f"state_every must be 0 (only when the run stops) or more, got {cfg.state_every!r}")
    out = Path(out) if out is not None else None
    if out is not None and not out.parent.is_dir():
        raise TrainingError(f"cannot save to {out}: folder {out.parent} does not exist")
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    # the fused kernel updates all of a tensor's state in one pass: on the CPU ~7x faster than the
    # default per-tensor loop for a 77 M-parameter MADE (measured here), the same arithmetic
    fused = device.type in ("cpu", "cuda") and all(p.is_floating_point() for p in params)
    opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused or None)
    matrices = [p for p in params if p.dim() >= 2]
    avg: _WeightAverage | None = None
    history: list[dict[str, float]] = []
    start_epoch = 1
    # where a state written within an epoch left off: batches done, their loss sum and count, the
    # schedule's end then and the random generators' states
    skip, part_total, part_count, resumed_planned = 0, 0.0, 0, None
    rng_states: dict[str, torch.Tensor] = {}
    best = math.inf
    if resume:
        if out is None:
            raise TrainingError("resume needs the output path of the run to continue")
        rp = resume_path(out)
        try:
            ck = load_checkpoint(rp, device="cpu")
        except CheckpointError as exc:
            raise TrainingError(f"cannot resume: {exc}") from None
        if ck.model.family != model.family or ck.model.config != model.config or ck.model.ordering != model.ordering:
            raise TrainingError(f"cannot resume: {rp} holds a different model ({ck.model.family}, {ck.model.config})")
        model.load_state_dict(ck.model.state_dict())
        model.to(device)
        try:  # the training state in the metadata: a damaged one is an error, not a crash
            _load_optim_state(opt, {k: v.to(device) for k, v in ck.extra.items()}, ck.meta["optimizer"])
            if cfg.ema > 0:  # the average as saved; a run that had none starts one from here
                avg = _WeightAverage(params, cfg.ema)
                if "ema.0" in ck.extra:
                    avg.load({k: v.to(device) for k, v in ck.extra.items()}, int(ck.meta.get("ema_steps", 0)))
            history = [dict(h) for h in ck.meta.get("history", [])]
            start_epoch = int(ck.meta["epoch"]) + 1
            if "partial" in ck.meta:  # killed within an epoch: finish it from the batch it reached
                partial = ck.meta["partial"]
                start_epoch, skip = int(partial["epoch"]), int(partial["batch"])
                part_total, part_count = float(partial["total"]), int(partial["count"])
                resumed_planned = int(partial["planned"])
                rng_states = {k: v for k, v in ck.extra.items() if k.startswith("rng.")}
                if start_epoch != int(ck.meta["epoch"]) + 1 or not 0 < skip or "rng.cpu" not in rng_states:
                    raise ValueError(f"an inconsistent position within an epoch: {partial}")
            best = min([float(h["valid_nll"]) for h in history], default=math.inf)
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as exc:
            raise TrainingError(f"cannot resume: {rp} holds a damaged training state ({type(exc).__name__}: {exc})") from None
    elif init_output_bias:
        marg = torch.as_tensor(train_x.mean(0), dtype=torch.float32, device=device)
        model.init_output_bias(marg)
    if cfg.ema > 0 and avg is None:  # from the starting weights, output biases included
        avg = _WeightAverage(params, cfg.ema)

    loss_fn = ddp.loss_fn(model)  # model.training_loss, gradient-synchronising under DDP

    # the schedule's last epoch: earlier when it is fitted to the time limit; a run resumed within an
    # epoch keeps the one it had, so that epoch ends as it would have
    planned = resumed_planned if resumed_planned is not None else cfg.epochs

    def lr_at(epoch: int) -> float:
        if cfg.lr_min_factor >= 1.0 or planned <= 1:
            return cfg.lr
        frac = min(1.0, (epoch - 1) / (planned - 1))
        return cfg.lr * (cfg.lr_min_factor + (1 - cfg.lr_min_factor) * 0.5 * (1 + math.cos(math.pi * frac)))

    x_all = torch.as_tensor(train_x, dtype=torch.float32)
    if device.type != "cpu":
        x_all = x_all.to(device)
    n = len(x_all)
    batches = math.ceil(n / cfg.batch_size)
    t0 = time.perf_counter()
    done_batches = 0

    if skip >= batches:
        raise TrainingError(f"cannot resume: {resume_path(out or '')} stopped at batch {skip} of an epoch of {batches}: "
                            "the batch size or the training set has changed")

    resumed_at = skip  # batches of the first epoch done before this run

    def total_batches() -> int:
        return batches * (planned - start_epoch + 1) - resumed_at

    def save_state(meta_now: dict[str, Any], rng: dict[str, torch.Tensor] | None = None) -> None:
        """The resumable state: the raw weights, the optimiser's moments and the average."""
        assert out is not None
        opt_t, opt_info = _optim_state_tensors(opt)
        extra = dict(opt_t, **(avg.tensors() if avg is not None else {}), **(rng or {}))
        info = dict(optimizer=opt_info, **({"ema_steps": avg.steps} if avg is not None else {}))
        save_checkpoint(resume_path(out), model, dict(meta_now, **info), extra=extra)
    last_state = t0
    best_path = out if out is not None and out.exists() and resume else None
    # epochs since the best one, so that patience counts across a resume
    bad_epochs = len(history) - 1 - min(range(len(history)), key=lambda i: history[i]["valid_nll"]) if history else 0
    base_meta = dict(meta or {})
    base_meta["train_config"] = asdict(cfg)
    pending_best: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None  # held until the next state save

    def write_best() -> None:
        nonlocal pending_best, best_path
        if pending_best is not None and out is not None:  # only held when there is a file to write
            save_checkpoint(out, model, pending_best[1], state=pending_best[0])
            pending_best, best_path = None, out

    for epoch in range(start_epoch, cfg.epochs + 1):
        te = time.perf_counter()
        torch.manual_seed(cfg.seed * 100_003 + epoch)
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        order = torch.randperm(n, generator=gen)
        first, total, count = 0, 0.0, 0
        if skip:  # the rest of an epoch a killed run had begun
            first, total, count, skip = skip, part_total, part_count, 0
            torch.set_rng_state(rng_states["rng.cpu"])
            if device.type == "cuda" and "rng.cuda" in rng_states:
                torch.cuda.set_rng_state(rng_states["rng.cuda"], device)
        for g in opt.param_groups:
            g["lr"] = lr_at(epoch)
        model.train()
        for b in range(first, batches):
            idx = ddp.shard(order[b * cfg.batch_size : (b + 1) * cfg.batch_size])
            xb = x_all[idx.to(x_all.device)]
            try:
                if cfg.amp and device.type in ("cuda", "cpu"):
                    with torch.autocast(device.type, dtype=torch.bfloat16):
                        loss = loss_fn(xb)
                else:
                    loss = loss_fn(xb)
                lv = ddp.mean(float(loss.detach()))
            except torch.cuda.OutOfMemoryError:
                raise _out_of_memory("a training batch", len(idx), "--batch-size", epoch, b + 1) from None
            if not math.isfinite(lv):
                msg = (
                    f"the loss became {lv} at epoch {epoch}, batch {b + 1}; training stopped before the weights changed. "
                    f"The best checkpoint{' ' + str(out) if best_path or pending_best else ''} is kept. Try a lower learning rate."
                )
                write_best()
                yield Finished("diverged", epoch - 1, None if math.isinf(best) else best, best_path, msg, history)
                return
            if cfg.l1 > 0:
                loss = loss + cfg.l1 * sum(w.abs().sum() for w in matrices)
            opt.zero_grad(set_to_none=True)
            try:
                loss.backward()
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                opt.step()
            except torch.cuda.OutOfMemoryError:
                raise _out_of_memory("a training batch", len(idx), "--batch-size", epoch, b + 1) from None
            if avg is not None:
                avg.update()
            total += lv * len(idx)
            count += len(idx)
            done_batches += 1
            elapsed = time.perf_counter() - t0
            if (cfg.state_minutes is not None and out is not None and not ddp.enabled and b + 1 < batches
                    and time.perf_counter() - last_state >= 60.0 * cfg.state_minutes):
                write_best()
                rng = {"rng.cpu": torch.get_rng_state()}
                if device.type == "cuda":
                    rng["rng.cuda"] = torch.cuda.get_rng_state(device)
                partial = {"epoch": epoch, "batch": b + 1, "total": total, "count": count, "planned": planned}
                state_meta = dict(base_meta, history=history, epoch=epoch - 1, partial=partial,
                            **({"metrics": {"valid_nll": best}} if math.isfinite(best) else {}))
                save_state(state_meta, rng)
                last_state = time.perf_counter()
            eta = elapsed / done_batches * (total_batches() - done_batches)
            yield BatchEnd(epoch, planned, b + 1, batches, lv, elapsed, eta)
        if avg is not None:
            avg.swap()  # validate and keep the averaged weights
        try:
            try:
                if ddp.enabled:  # every process must take part: no stopping half-way
                    part = ddp.eval_shard(valid_x)
                    mean, se = evaluate(model, part, cfg.eval_batch_size) if len(part) else (0.0, 0.0)
                    valid_nll, _ = ddp.combine_nll(mean, se, len(part))
                else:  # in chunks of about 0.2 s, so that whoever drives the run can stop it between them
                    steps = evaluate_steps(model, valid_x, cfg.eval_batch_size, target_seconds=0.2)
                    while True:
                        try:
                            done = next(steps)
                        except StopIteration as result:
                            valid_nll, _ = result.value
                            break
                        yield Validating(epoch, planned, done, len(valid_x), time.perf_counter() - t0)
            except torch.cuda.OutOfMemoryError:
                raise _out_of_memory("validation", cfg.eval_batch_size, "TrainConfig.eval_batch_size", epoch, None) from None
            train_nll = total / max(count, 1)
            improved = valid_nll < best
            history.append({"epoch": epoch, "train_nll": train_nll, "valid_nll": valid_nll, "seconds": time.perf_counter() - te})
            if improved:
                best = valid_nll
                bad_epochs = 0
            else:
                bad_epochs += 1
            if out is not None and ddp.is_main:
                m = dict(base_meta, history=history, epoch=epoch, metrics={"valid_nll": best})
                if cfg.fit_schedule:  # the schedule's length as fitted so far: what --epochs repeats it
                    m["schedule_epochs"] = planned
                if improved:
                    best_meta = dict(m, history=list(history), metrics={"valid_nll": valid_nll})
                    if cfg.state_every == 1:
                        save_checkpoint(out, model, best_meta)
                        best_path = out
                    else:  # the validated (averaged) weights, written with the next state
                        pending_best = ({k: v.detach().clone() for k, v in model.state_dict().items()}, best_meta)
        finally:
            if avg is not None:
                avg.swap()  # back to the raw weights that training continues from
        stop: tuple[str, str] | None = None
        if cfg.patience is not None and bad_epochs >= cfg.patience:
            stop = ("early-stopped", f"no improvement for {bad_epochs} epochs")
        elif cfg.max_minutes is not None and epoch < cfg.epochs:
            spent = time.perf_counter() - t0
            per_epoch = spent / (epoch - start_epoch + 1 - resumed_at / batches)
            if cfg.fit_schedule:  # the epochs that fit what is left of the limit, at the pace so far
                fits = int(ddp.mean(float((60.0 * cfg.max_minutes - spent) // per_epoch)))
                planned = max(epoch, min(cfg.epochs, epoch + fits))
                if epoch >= planned:
                    stop = ("time-limit", f"the learning-rate schedule was fitted to the limit of {cfg.max_minutes:g} minutes "
                                          f"and ended at epoch {epoch} of at most {cfg.epochs}; continue with resume (--resume)")
            elif ddp.mean(float(spent + per_epoch > 60.0 * cfg.max_minutes)) > 0:  # all processes stop together
                stop = ("time-limit", f"stopped after epoch {epoch} of {cfg.epochs}: another would pass the limit of "
                                      f"{cfg.max_minutes:g} minutes; continue with resume (--resume)")
        keep_state = stop is not None or epoch == cfg.epochs or (cfg.state_every > 0 and epoch % cfg.state_every == 0)
        if out is not None and ddp.is_main and keep_state:
            write_best()
            save_state(m)
            last_state = time.perf_counter()
        elapsed = time.perf_counter() - t0
        eta = elapsed / max(done_batches, 1) * (total_batches() - done_batches)
        yield EpochEnd(epoch, planned, train_nll, valid_nll, best, improved, time.perf_counter() - te, elapsed, eta)
        if stop is not None:
            yield Finished(stop[0], epoch, None if math.isinf(best) else best, best_path, stop[1], history)
            return
    yield Finished("completed", cfg.epochs, None if math.isinf(best) else best, best_path, "", history)


class _WeightAverage:
    """Exponential moving average of parameters, with the usual warm-up of the decay
    (``min(decay, (1 + t) / (10 + t))``) so that the first steps do not drag the average
    towards the initial weights."""

    def __init__(self, params: Sequence[torch.Tensor], decay: float):
        self.params = params
        self.decay = decay
        self.avg = [p.detach().clone() for p in params]
        self.steps = 0

    @torch.no_grad()
    def update(self) -> None:
        self.steps += 1
        d = min(self.decay, (1 + self.steps) / (10 + self.steps))
        torch._foreach_lerp_(self.avg, [p.detach() for p in self.params], 1.0 - d)

    @torch.no_grad()
    def swap(self) -> None:
        for p, a in zip(self.params, self.avg, strict=True):
            tmp = p.detach().clone()
            p.copy_(a)
            a.copy_(tmp)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f"ema.{i}": a for i, a in enumerate(self.avg)}

    def load(self, extra: dict[str, torch.Tensor], steps: int) -> None:
        for i, a in enumerate(self.avg):
            a.copy_(extra[f"ema.{i}"])
        self.steps = steps
