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
  ``(seed, epoch)``, so a resumed run repeats an uninterrupted one. The model draws that randomness
  (orderings, masks) from the run's own generator (``ARModel.train_generator``), never from the
  global one, which other threads (the app's workers) draw from and reseed. With ``state_minutes`` it is
  also written within an epoch, with the batch reached and the random generator's state, and a
  resume finishes that epoch as the interrupted run would have.

A NaN or infinite loss stops the run before the optimizer step that would spread it; the best
checkpoint on disk is left untouched. A loss far beyond what a uniform model pays, or a validation
NLL far above the best for several epochs, stops it with a :class:`TrainingError`; the weights of a
suspect epoch are never written as the resumable state. A stop (``gen.close()``, Ctrl-C) writes
what ``state_every`` held back (see :class:`_Saver`).
"""

from __future__ import annotations

import contextlib
import functools
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
    "marginals",
    "random_shift",
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
    #: counted from the run's first batch (a resumed run finishes the ramp where it left off): a fresh
    #: Adam's first steps move every weight by about the learning rate whatever its gradient, which can
    #: throw a trained network (one grown or fine-tuned with --init-from) out of its minimum
    warmup: int = _field(
        0, "raise the learning rate linearly from lr / N to the schedule's over the run's first N minibatches (0: off)",
        metavar="N")
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
    #: the convolution weights (and so the activations) in NHWC order, which picks another oneDNN
    #: kernel: measured 1.1-1.2x faster for the grey PixelCNN under bf16 on an AMX Xeon, no faster on
    #: an AMD EPYC or in float32 (bench/deep_training_step.py); checkpoints are stored the same either way
    channels_last: bool = _field(False, "keep the convolutions' weights and activations channels-last (NHWC) while training")
    #: on parameters of two or more dimensions; the reported training NLL leaves it out
    l1: float = _field(0.0, "L1 penalty on the weight matrices, in nats per image per unit of |w|")
    #: validation, the best checkpoint and early stopping use the averaged weights; training goes
    #: on from the raw ones
    ema: float = _field(0.0, "validate and keep a moving average of the weights with this decay, e.g. 0.999 (0: off)")
    #: hybrid generative-discriminative training: the loss is -log p(x | y) + w * (-log p(y | x)), the
    #: second term the model's own Bayes classifier over its classes, so that the class terms carry
    #: what tells the digits apart and not only what they share; costs one pass per class per image.
    #: The reported training figure includes the weighted term; validation stays -log p(x | y)
    class_weight: float = _field(
        0.0, "a class-conditional model: add this times the cross-entropy of its own classifier p(y | x) to the loss "
             "(hybrid generative-discriminative training; 0: off)")
    #: the classifier term of hybrid training on only the first N images of each batch: an unbiased
    #: estimate of the same loss at a fraction of its cost ((B - N) + C * N image passes per batch of B
    #: instead of C * B), which is what makes hybrid training of a deep model affordable on a CPU
    class_batch: int = _field(
        0, "hybrid training: the classifier term on only the first N images of each batch (0: all of them)",
        metavar="N")
    #: a different translation of every image at every visit, drawn from the run's own generator (so a
    #: resumed run repeats an uninterrupted one); the pixels shifted in are background (level 0).
    #: Teaches a model, and above all a class-conditional model's classifier, that a digit moved by a
    #: pixel is the same digit; validation and test images are never moved
    shift: int = _field(
        0, "augment: move each training image by a random whole number of pixels, up to N each way in each "
           "direction (0: off)", metavar="N")
    #: ``accuracy`` validates a class-conditional model's Bayes classifier (one pass per class per
    #: image: C times the cost of the NLL alone) and keeps the epoch it classifies best, ties going to
    #: the lower NLL; what hybrid training is for, whose NLL and accuracy need not improve together
    select: str = _field(
        "nll", "which epoch's weights to keep as the best checkpoint: the lowest validation NLL, or the highest "
               "validation accuracy of a class-conditional model's classifier", choices=("nll", "accuracy"))

    def validate(self) -> None:
        """Raises :class:`TrainingError` (one line) for values that make no sense, before any work."""
        if self.epochs < 1 or self.batch_size < 1 or not (self.lr > 0):
            raise TrainingError("epochs and batch size must be at least 1 and the learning rate positive")
        if not math.isfinite(self.lr):
            raise TrainingError(f"the learning rate (--lr) must be a finite number, got {self.lr!r}")
        if self.eval_batch_size < 1:
            raise TrainingError(f"eval_batch_size (--eval-batch-size) must be at least 1, got {self.eval_batch_size!r}")
        if not (0.0 < self.lr_min_factor <= 1.0):
            raise TrainingError(f"lr_min_factor (--lr-min-factor) must be in (0, 1], got {self.lr_min_factor!r}")
        if self.grad_clip is not None and not (self.grad_clip > 0 and math.isfinite(self.grad_clip)):
            raise TrainingError(f"grad_clip (--grad-clip) must be a positive number (or left out: no clipping), got {self.grad_clip!r}")
        if not (self.weight_decay >= 0.0 and math.isfinite(self.weight_decay)):
            raise TrainingError(f"weight_decay (--weight-decay) must be 0 or more, got {self.weight_decay!r}")
        for name in ("max_train", "max_valid", "patience"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise TrainingError(f"{name} (--{name.replace('_', '-')}) must be 0 or more, got {value!r}")
        if not (0.0 <= self.ema < 1.0) or not (self.l1 >= 0.0):
            raise TrainingError("ema must be in [0, 1) and l1 at least 0")
        if self.max_minutes is not None and not (self.max_minutes > 0 and math.isfinite(self.max_minutes)):
            raise TrainingError(f"max_minutes must be a positive number of minutes, got {self.max_minutes!r}")
        if self.fit_schedule and self.max_minutes is None:
            raise TrainingError("fit_schedule needs a time limit (max_minutes) to fit the schedule to")
        if self.state_minutes is not None and not (self.state_minutes > 0 and math.isfinite(self.state_minutes)):
            raise TrainingError(f"state_minutes must be a positive number of minutes, got {self.state_minutes!r}")
        if self.warmup < 0:
            raise TrainingError(f"warmup (--warmup) must be 0 or more minibatches, got {self.warmup!r}")
        if self.state_every < 0:
            raise TrainingError(f"state_every must be 0 (only when the run stops) or more, got {self.state_every!r}")
        if not (self.class_weight >= 0.0 and math.isfinite(self.class_weight)):
            raise TrainingError(f"class_weight (--class-weight) must be 0 or more, got {self.class_weight!r}")
        if self.class_batch < 0:
            raise TrainingError(f"class_batch (--class-batch) must be 0 or more, got {self.class_batch!r}")
        if self.select not in ("nll", "accuracy"):
            raise TrainingError(f"select (--select) is nll or accuracy, got {self.select!r}")
        if not (0 <= self.shift <= 8):
            raise TrainingError(f"shift (--shift) must be from 0 to 8 pixels, got {self.shift!r}")


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
    #: of the classifier, validated with ``select="accuracy"``; the best is the kept epoch's
    valid_accuracy: float | None = None
    best_valid_accuracy: float | None = None


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
    model: ARModel, x: np.ndarray | torch.Tensor, batch_size: int = 1000, ensemble: int = 1, target_seconds: float | None = None,
    y: np.ndarray | torch.Tensor | None = None,
) -> Generator[int, None, tuple[float, float]]:
    """:func:`evaluate` as a generator that yields the number of images done after each chunk and
    returns ``(mean NLL, standard error)``. With ``target_seconds`` the chunk size adapts so that
    each chunk takes about that long (at most ``batch_size``), so a caller can stop between chunks.
    With labels ``y`` (a conditional model) the NLL is of p(x | y); without, of the model's p(x)
    (for a conditional model the marginal over classes)."""
    if y is not None and ensemble != 1:
        raise ValueError("an ensemble's NLL is of p(x), without labels")
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
                if y is not None:
                    lp = model.log_prob(xb, y=torch.as_tensor(np.asarray(y[i : i + chunk])))
                else:
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


def hybrid_loss(
    model: ARModel, weight: float, x: torch.Tensor, y: torch.Tensor | None, class_batch: int = 0
) -> torch.Tensor:
    """Mean of -log p(x | y) + ``weight`` * (-log p(y | x)) over the batch (nats per image). The
    classifier term comes from a pass of every image under every class, or, with ``class_batch`` N
    (0 < N < batch), of the first N images only, its mean there standing for the batch's; the rest
    then cost one pass under their own class."""
    if y is None:
        raise TrainingError("hybrid training needs the labels")
    n = len(x) if class_batch <= 0 else min(class_batch, len(x))
    lp = model.class_log_probs(x[:n])
    joint = (lp if lp.dtype == torch.float64 else lp.float()).sum(-1)  # (C, N) log p(x | c), summed in float32 at least
    rows = torch.arange(n, device=joint.device)
    log_post = torch.log_softmax(model.class_log_prior.to(joint.dtype)[:, None] + joint, dim=0)
    generative = joint[y[:n], rows].sum()
    if n < len(x):
        generative = generative - model.training_loss(x[n:], y[n:]) * (len(x) - n)
    return -(generative / len(x) + weight * log_post[y[:n], rows].mean())


def random_shift(x: torch.Tensor, most: int, height: int, width: int,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Each of the (B, height*width) images ``x`` moved by its own random (dy, dx), each from
    -``most`` to ``most`` pixels; what moves out is lost and what moves in is 0 (background)."""
    b = x.shape[0]
    if x.shape[1:] != (height * width,):
        raise TrainingError(f"--shift moves {height}x{width} images; these have {tuple(x.shape[1:])} pixels")
    if most <= 0 or b == 0:
        return x
    dy, dx = torch.randint(-most, most + 1, (2, b), generator=generator).to(x.device)
    # the source of each output row and column, in a frame padded by one background pixel each way
    rows = (torch.arange(height, device=x.device)[None, :] - dy[:, None]).clamp_(-1, height) + 1
    cols = (torch.arange(width, device=x.device)[None, :] - dx[:, None]).clamp_(-1, width) + 1
    padded = torch.nn.functional.pad(x.view(b, height, width), (1, 1, 1, 1))
    return padded[torch.arange(b, device=x.device)[:, None, None], rows[:, :, None], cols[:, None, :]].reshape(b, -1)


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
    # each moment in its parameter's memory layout (a channels-last run's): the fused step walks a
    # moment in its own memory order, so a mismatch would update the wrong entries (measured)
    for p, st in opt.state.items():
        for name, v in st.items():
            if torch.is_tensor(v) and v.shape == p.shape and v.stride() != p.stride():
                st[name] = torch.empty_like(p).copy_(v)


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
    train_y: np.ndarray | None = None,
    valid_y: np.ndarray | None = None,
) -> Iterator[Event]:
    """Train ``model`` with Adam, yielding progress; keeps the best-on-validation checkpoint.

    A fresh run first sets the output biases to the training marginals; ``init_output_bias=False``
    keeps the model's own (when it starts from trained weights). A class-conditional model needs the
    labels ``train_y`` and ``valid_y``: it minimises -log p(x | y), is validated on it, and its class
    prior p(y) is set to the training labels' frequencies."""
    config.validate()
    run = _Run(model, train_x, valid_x, config, out, train_y, valid_y)
    start = run.start(resume, init_output_bias)
    schedule = _Schedule(config, start, run.ddp)
    saver = _Saver(run, start, meta)
    with run.own_randomness(), saver:  # whatever ends the run, what it held back is written (see _Saver.__exit__)
        for epoch in range(start.epoch, config.epochs + 1):
            diverged = yield from run.train_epoch(epoch, schedule, saver)
            if diverged is not None:
                yield diverged
                return
            end = yield from run.validate(epoch, schedule, saver)
            stop = schedule.stop_reason(epoch, saver.bad_epochs, run.epochs_timed(epoch))
            saver.keep(epoch, stop is not None)
            yield run.epoch_event(end, schedule)
            if stop is not None:
                yield saver.finished(stop[0], epoch, stop[1])
                return
        yield saver.finished("completed", config.epochs, "")


@dataclass
class _Start:
    """Where a run starts: the first epoch, and for a state written within an epoch the batches of
    it already done, their loss sum and count, the schedule's end then and the random generators'
    states; the history and best of the epochs before."""

    epoch: int = 1
    skip: int = 0
    part_total: float = 0.0
    part_count: int = 0
    planned: int | None = None
    rng: dict[str, torch.Tensor] = field(default_factory=dict)
    resumed: bool = False
    history: list[dict[str, float]] = field(default_factory=list)

    def best(self, select: str = "nll") -> dict[str, float] | None:
        """The history's entry of the kept epoch (None before any); an entry without its numbers raises."""
        return min(self.history, key=functools.partial(_score, select), default=None)


def _score(select: str, entry: dict[str, float]) -> tuple[float, ...]:
    """The order of the epochs for ``select``, lowest best: the NLL, or the accuracy and then the NLL
    (an epoch validated without its accuracy, as by a run resumed with another choice, ranks last)."""
    nll = float(entry["valid_nll"])
    nll = nll if math.isfinite(nll) else math.inf
    if select == "accuracy":
        return (-float(entry.get("valid_accuracy", -1.0)), nll)
    return (nll,)


class _Schedule:
    """The learning-rate schedule and the time limit. ``planned``: the schedule's last epoch, earlier
    when it is fitted to the time limit; a run resumed within an epoch keeps the one it had, so that
    epoch ends as it would have."""

    def __init__(self, cfg: TrainConfig, start: _Start, ddp: distributed.DistContext):
        self.cfg, self.ddp = cfg, ddp
        self.planned = start.planned if start.planned is not None else cfg.epochs
        self.t0 = time.perf_counter()

    def lr_at(self, epoch: int) -> float:
        cfg, planned = self.cfg, self.planned
        if cfg.lr_min_factor >= 1.0 or planned <= 1:
            return cfg.lr
        frac = min(1.0, (epoch - 1) / (planned - 1))
        return cfg.lr * (cfg.lr_min_factor + (1 - cfg.lr_min_factor) * 0.5 * (1 + math.cos(math.pi * frac)))

    def stop_reason(self, epoch: int, bad_epochs: int, epochs_timed: float) -> tuple[str, str] | None:
        """Why the run stops after ``epoch`` (reason, message), or None; ``epochs_timed``: the epochs
        this run has trained so far (a fraction for one resumed within it). Refits the schedule."""
        cfg = self.cfg
        if cfg.patience is not None and bad_epochs >= cfg.patience:
            return ("early-stopped", f"no improvement for {bad_epochs} epochs")
        if cfg.max_minutes is None or epoch >= cfg.epochs:
            return None
        ddp = self.ddp
        if epochs_timed <= 0:  # resumed at the end of an epoch's batches: no pace measured yet
            return None
        spent = time.perf_counter() - self.t0
        per_epoch = spent / epochs_timed
        if cfg.fit_schedule:  # the epochs that fit what is left of the limit, at the pace so far
            fits = int(ddp.mean(float((60.0 * cfg.max_minutes - spent) // per_epoch)))
            self.planned = max(epoch, min(cfg.epochs, epoch + fits))
            if epoch >= self.planned:
                return ("time-limit", f"the learning-rate schedule was fitted to the limit of {cfg.max_minutes:g} minutes "
                                      f"and ended at epoch {epoch} of at most {cfg.epochs}; continue with resume (--resume)")
        elif ddp.mean(float(spent + per_epoch > 60.0 * cfg.max_minutes)) > 0:  # all processes stop together
            return ("time-limit", f"stopped after epoch {epoch} of {cfg.epochs}: another would pass the limit of "
                                  f"{cfg.max_minutes:g} minutes; continue with resume (--resume)")
        return None


def marginals(x: np.ndarray, levels: int = 2) -> np.ndarray:
    """The per-pixel frequencies of the images ``x`` (N, D) that start a model's output biases:
    (D,) the frequency of a 1 for two levels, (D, K) that of each level 0 .. K-1 otherwise (float64)."""
    x = np.asarray(x)
    if levels == 2:
        return x.mean(0)
    n, d = x.shape
    counts = np.zeros(d * levels, np.int64)
    offsets = np.arange(d, dtype=np.int64) * levels
    for i in range(0, n, 4096):  # in chunks: an int64 copy of all 50,000 images would take 300 MB
        counts += np.bincount((x[i : i + 4096].astype(np.int64) + offsets).ravel(), minlength=d * levels)
    return counts.reshape(d, levels) / max(n, 1)


class _Run:
    """The model, the data, the optimiser and the device of one run, and its two steps: an epoch of
    training and a validation pass."""

    def __init__(self, model: ARModel, train_x: np.ndarray, valid_x: np.ndarray, cfg: TrainConfig, out: str | Path | None,
                 train_y: np.ndarray | None = None, valid_y: np.ndarray | None = None):
        self.cfg = cfg
        self.ddp = ddp = distributed.context(cfg.device)  # several processes under torchrun, else a no-op
        self.device = device = ddp.device if ddp.device is not None else resolve_device(cfg.device)  # set when distributed
        self.train_x = np.asarray(train_x[: cfg.max_train] if cfg.max_train else train_x)
        self.valid_x = np.asarray(valid_x[: cfg.max_valid] if cfg.max_valid else valid_x)
        if len(self.train_x) == 0 or len(self.valid_x) == 0:
            raise TrainingError("training needs at least one training and one validation image")
        self.train_y, self.valid_y = self._labels(model, train_y, valid_y)
        self.out = Path(out) if out is not None else None
        if self.out is not None and not self.out.parent.is_dir():
            raise TrainingError(f"cannot save to {self.out}: folder {self.out.parent} does not exist")
        self.model = model
        model.to(device)
        if cfg.channels_last:
            model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.params = params = [p for p in model.parameters() if p.requires_grad]
        # the fused kernel updates all of a tensor's state in one pass: on the CPU ~7x faster than the
        # default per-tensor loop for a 77 M-parameter MADE (measured here), the same arithmetic
        fused = device.type in ("cpu", "cuda") and all(p.is_floating_point() for p in params)
        self.opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused or None)
        self.matrices = [p for p in params if p.dim() >= 2]
        self.avg: _WeightAverage | None = None
        self.loss_fn = ddp.loss_fn(model)  # model.training_loss, gradient-synchronising under DDP
        if cfg.select == "accuracy" and (not model.classes or ddp.enabled):
            raise TrainingError("--select accuracy keeps the best classifier: it needs a class-conditional model (--classes) "
                                "trained in one process" if model.classes else
                                "--select accuracy keeps the best classifier: the model has no classes")
        if cfg.class_weight:
            if not model.classes:
                raise TrainingError("--class-weight trains a class-conditional model's classifier: the model has no classes")
            if ddp.enabled:
                raise TrainingError("hybrid training (--class-weight) is not supported across processes")
            self.loss_fn = functools.partial(hybrid_loss, model, cfg.class_weight, class_batch=cfg.class_batch)
        self.x_all = torch.as_tensor(self.train_x, dtype=torch.float32)
        self.y_all = None if self.train_y is None else torch.as_tensor(self.train_y, dtype=torch.long)
        if device.type != "cpu":
            self.x_all = self.x_all.to(device)
            self.y_all = None if self.y_all is None else self.y_all.to(device)
        self.n = len(self.x_all)
        self.batches = math.ceil(self.n / cfg.batch_size)
        self.done_batches = 0  # by this run
        self.resumed_at = 0  # batches of the first epoch done before this run
        self.start_epoch = 1
        self.train_nll = math.nan  # of the last epoch trained
        self.rng = torch.Generator()  # the model's own randomness in this run, seeded every epoch
        self.levels = levels = int(getattr(model, "levels", 2))
        for what, x in (("training", self.train_x), ("validation", self.valid_x)):
            if x.size and (x.min() < 0 or x.max() >= levels):
                raise TrainingError(f"the {what} images hold values from {x.min()} to {x.max()}, but the model's pixels have "
                                    f"{levels} levels (0 to {levels - 1}): train it on data of its levels")
        # what a uniform model pays per image: pixels * ln(levels), binary unless the model has levels
        self.uniform_nll = int(np.prod(self.train_x.shape[1:])) * math.log(levels)
        if cfg.class_weight:  # and, in hybrid training, the weighted cross-entropy of a uniform classifier
            self.uniform_nll += cfg.class_weight * math.log(model.classes)

    def _labels(self, model: ARModel, train_y: np.ndarray | None,
                valid_y: np.ndarray | None) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The labels of the images used, checked, for a conditional model; None for another."""
        if not model.classes:
            return None, None
        if train_y is None or valid_y is None:
            raise TrainingError("a class-conditional model trains on labelled images: give the labels of both splits")
        cfg, out = self.cfg, []
        for what, y, x in (("training", train_y, self.train_x), ("validation", valid_y, self.valid_x)):
            y = np.asarray(y).reshape(-1)
            cap = cfg.max_train if what == "training" else cfg.max_valid
            y = y[:cap] if cap else y
            if len(y) != len(x):
                raise TrainingError(f"{len(y)} {what} labels for {len(x)} images")
            if y.size and (y.min() < 0 or y.max() >= model.classes):
                raise TrainingError(f"the {what} labels run from {y.min()} to {y.max()}, but the model takes {model.classes} classes")
            out.append(y.astype(np.int64))
        return out[0], out[1]

    def start(self, resume: bool, init_output_bias: bool) -> _Start:
        """The resume point (loading the state) or a fresh start (output biases at the marginals,
        the class prior at the labels' frequencies)."""
        start = _Start()
        if resume:
            start = self._load_state()
        else:
            if self.train_y is not None:
                self.model.set_class_prior(np.bincount(self.train_y, minlength=self.model.classes))
            if init_output_bias:
                marg = torch.as_tensor(marginals(self.train_x, self.levels), dtype=torch.float32, device=self.device)
                self.model.init_output_bias(marg)
        if self.cfg.ema > 0 and self.avg is None:  # from the starting weights, output biases included
            self.avg = _WeightAverage(self.params, self.cfg.ema)
        if start.skip > self.batches:
            raise TrainingError(f"cannot resume: {resume_path(self.out or '')} stopped at batch {start.skip} of an epoch of "
                                f"{self.batches}: the batch size or the training set has changed")
        self.resumed_at, self.start_epoch = start.skip, start.epoch
        return start

    def _load_state(self) -> _Start:
        if self.out is None:
            raise TrainingError("resume needs the output path of the run to continue")
        model, device, rp = self.model, self.device, resume_path(self.out)
        try:
            ck = load_checkpoint(rp, device="cpu")
        except CheckpointError as exc:
            raise TrainingError(f"cannot resume: {exc}") from None
        if ck.model.family != model.family or ck.model.config != model.config or ck.model.ordering != model.ordering:
            raise TrainingError(f"cannot resume: {rp} holds a different model ({ck.model.family}, {ck.model.config})")
        model.load_state_dict(ck.model.state_dict())
        model.to(device)
        start = _Start(resumed=True)
        try:  # the training state in the metadata: a damaged one is an error, not a crash
            _load_optim_state(self.opt, {k: v.to(device) for k, v in ck.extra.items()}, ck.meta["optimizer"])
            if self.cfg.ema > 0:  # the average as saved; a run that had none starts one from here
                self.avg = _WeightAverage(self.params, self.cfg.ema)
                if "ema.0" in ck.extra:
                    self.avg.load({k: v.to(device) for k, v in ck.extra.items()}, int(ck.meta.get("ema_steps", 0)))
            start.history = [dict(h) for h in ck.meta.get("history", [])]
            start.epoch = int(ck.meta["epoch"]) + 1
            if "partial" in ck.meta:  # killed within an epoch: finish it from the batch it reached
                partial = ck.meta["partial"]
                start.epoch, start.skip = int(partial["epoch"]), int(partial["batch"])
                start.part_total, start.part_count = float(partial["total"]), int(partial["count"])
                start.planned = int(partial["planned"])
                start.rng = {k: v for k, v in ck.extra.items() if k.startswith("rng.")}
                if start.epoch != int(ck.meta["epoch"]) + 1 or not 0 < start.skip or "rng.cpu" not in start.rng:
                    raise ValueError(f"an inconsistent position within an epoch: {partial}")
            start.best()
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as exc:
            raise TrainingError(f"cannot resume: {rp} holds a damaged training state ({type(exc).__name__}: {exc})") from None
        return start

    def total_batches(self, schedule: _Schedule) -> int:
        return self.batches * (schedule.planned - self.start_epoch + 1) - self.resumed_at

    def epochs_timed(self, epoch: int) -> float:
        return epoch - self.start_epoch + 1 - self.resumed_at / self.batches

    def eta(self, schedule: _Schedule) -> float:
        elapsed = time.perf_counter() - schedule.t0
        return elapsed / max(self.done_batches, 1) * (self.total_batches(schedule) - self.done_batches)

    @contextlib.contextmanager
    def own_randomness(self) -> Iterator[None]:
        """While the run lasts the model draws its randomness (orderings, masks, MADE's dropout) from
        the run's own generator, never from the global one that other threads draw from and reseed."""
        before = self.model.train_generator
        self.model.train_generator = self.rng
        try:
            yield
        finally:
            self.model.train_generator = before

    def _seed(self, epoch: int, start: _Start | None) -> torch.Tensor:
        """Seeds the model's own randomness for ``epoch`` (or restores it within an epoch) and
        returns the epoch's shuffling of the training images."""
        cfg = self.cfg
        self.rng.manual_seed(cfg.seed * 100_003 + epoch)
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch))
        if start is not None:  # a state of a run before its own generator held the global one's: the same stream
            self.rng.set_state(start.rng["rng.cpu"])
        return order

    def rng_state(self) -> dict[str, torch.Tensor]:
        return {"rng.cpu": self.rng.get_state()}

    def train_epoch(self, epoch: int, schedule: _Schedule, saver: _Saver) -> Generator[Event, None, Finished | None]:
        """One epoch of minibatches (the rest of one, for a run resumed within it), yielding
        :class:`BatchEnd`; returns a :class:`Finished` when the loss stopped being finite."""
        cfg, ddp, batches = self.cfg, self.ddp, self.batches
        self.t_epoch = time.perf_counter()
        start = saver.take_partial()
        order = self._seed(epoch, start)
        first, total, count = (start.skip, start.part_total, start.part_count) if start is not None else (0, 0.0, 0)
        lr = schedule.lr_at(epoch)
        self._set_lr(lr)
        self.model.train()
        for b in range(first, batches):
            step = (epoch - 1) * batches + b  # the run's minibatches before this one
            if cfg.warmup and step <= cfg.warmup:
                self._set_lr(lr * min(1.0, (step + 1) / cfg.warmup))
            idx = ddp.shard(order[b * cfg.batch_size : (b + 1) * cfg.batch_size])
            yb = None if self.y_all is None else self.y_all[idx.to(self.y_all.device)]
            xb = self.x_all[idx.to(self.x_all.device)]
            if cfg.shift:
                xb = random_shift(xb, cfg.shift, self.model.config.height, self.model.config.width, self.rng)
            lv = self._step(xb, yb, epoch, b)
            if not math.isfinite(lv):
                return saver.diverged(lv, epoch, b)
            if lv > DIVERGED_LOSS * self.uniform_nll:
                saver.diverging = True
                raise TrainingError(
                    f"training diverged: the loss reached {lv:.4g} nats per image at epoch {epoch}, batch {b + 1}, more than "
                    f"{DIVERGED_LOSS:g} times the {self.uniform_nll:.1f} a uniform model pays; {saver.kept()}. Try a lower learning rate"
                )
            total += lv * len(idx)
            count += len(idx)
            self.done_batches += 1
            self.train_nll = total / max(count, 1)
            saver.batch_done(epoch, b + 1, total, count, schedule)
            yield BatchEnd(epoch, schedule.planned, b + 1, batches, lv, time.perf_counter() - schedule.t0, self.eta(schedule))
        self.train_nll = total / max(count, 1)
        return None

    def _set_lr(self, lr: float) -> None:
        for g in self.opt.param_groups:
            g["lr"] = lr

    def _step(self, xb: torch.Tensor, yb: torch.Tensor | None, epoch: int, b: int) -> float:
        """One optimiser step on ``xb``; returns its loss (nats per image), taking no step when that
        is not finite."""
        cfg, device = self.cfg, self.device
        try:
            if cfg.amp and device.type in ("cuda", "cpu"):
                with torch.autocast(device.type, dtype=torch.bfloat16):
                    loss = self.loss_fn(xb, yb)
            else:
                loss = self.loss_fn(xb, yb)
            lv = self.ddp.mean(float(loss.detach()))
        except torch.cuda.OutOfMemoryError:
            raise _out_of_memory("a training batch", len(xb), "--batch-size", epoch, b + 1) from None
        if not math.isfinite(lv) or lv > DIVERGED_LOSS * self.uniform_nll:
            return lv  # no step: the weights stay the last good ones
        if cfg.l1 > 0:
            loss = loss + cfg.l1 * sum(w.abs().sum() for w in self.matrices)
        self.opt.zero_grad(set_to_none=True)
        try:
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
            self.opt.step()
        except torch.cuda.OutOfMemoryError:
            raise _out_of_memory("a training batch", len(xb), "--batch-size", epoch, b + 1) from None
        if self.avg is not None:
            self.avg.update()
        return lv

    def validate(self, epoch: int, schedule: _Schedule, saver: _Saver) -> Generator[Event, None, EpochEnd]:
        """Validates the (averaged) weights, yielding :class:`Validating` between chunks, and has
        ``saver`` record the result while those weights are in the model."""
        if self.avg is not None:
            self.avg.swap()  # validate and keep the averaged weights
        try:
            if self.cfg.select == "accuracy":
                valid_nll, accuracy = yield from self._valid_accuracy(epoch, schedule)
                return saver.epoch_end(epoch, self.train_nll, valid_nll, schedule, accuracy)
            valid_nll = yield from self._valid_nll(epoch, schedule)
            return saver.epoch_end(epoch, self.train_nll, valid_nll, schedule)
        finally:
            if self.avg is not None:
                self.avg.swap()  # back to the raw weights that training continues from

    def _valid_nll(self, epoch: int, schedule: _Schedule) -> Generator[Event, None, float]:
        cfg, ddp, valid_x = self.cfg, self.ddp, self.valid_x
        try:
            if ddp.enabled:  # every process must take part: no stopping half-way
                if self.valid_y is not None:
                    raise TrainingError("distributed training of a class-conditional model is not supported")
                part = ddp.eval_shard(valid_x)
                mean, se = evaluate(self.model, part, cfg.eval_batch_size) if len(part) else (0.0, 0.0)
                return ddp.combine_nll(mean, se, len(part))[0]
            # in chunks of about 0.2 s, so that whoever drives the run can stop it between them
            steps = evaluate_steps(self.model, valid_x, cfg.eval_batch_size, target_seconds=0.2, y=self.valid_y)
            while True:
                try:
                    done = next(steps)
                except StopIteration as result:
                    return result.value[0]
                yield Validating(epoch, schedule.planned, done, len(valid_x), time.perf_counter() - schedule.t0)
        except torch.cuda.OutOfMemoryError:
            raise _out_of_memory("validation", cfg.eval_batch_size, "TrainConfig.eval_batch_size", epoch, None) from None

    def _valid_accuracy(self, epoch: int, schedule: _Schedule) -> Generator[Event, None, tuple[float, float]]:
        """-log p(x | y) and the classifier's accuracy on the validation images, from one pass of each
        under every class, in chunks that a stop can come between."""
        from .classify import classify_steps, default_chunk

        assert self.valid_y is not None
        # the validation batch shared among the classes, and never more than classify's own memory bound
        chunk = max(1, min(default_chunk(self.model), self.cfg.eval_batch_size // max(1, self.model.classes)))
        steps = classify_steps(self.model, self.valid_x, self.valid_y, chunk=chunk)
        try:
            while True:
                try:
                    done = next(steps)
                except StopIteration as result:
                    return result.value.cond_nll_nats, result.value.accuracy
                yield Validating(epoch, schedule.planned, done, len(self.valid_x), time.perf_counter() - schedule.t0)
        except torch.cuda.OutOfMemoryError:
            raise _out_of_memory("validation", chunk, "TrainConfig.eval_batch_size", epoch, None) from None

    def epoch_event(self, end: EpochEnd, schedule: _Schedule) -> EpochEnd:
        end.epochs, end.epoch_seconds = schedule.planned, time.perf_counter() - self.t_epoch
        end.elapsed, end.eta = time.perf_counter() - schedule.t0, self.eta(schedule)
        return end


class _Saver:
    """The files of a run: the best checkpoint (written at once, or with ``state_every`` other than 1
    held in memory and written with the next state) and the resumable state (every ``state_every``
    epochs, every ``state_minutes`` within an epoch, and when the run stops); the history, the best
    validation NLL and the epochs since it."""

    def __init__(self, run: _Run, start: _Start, meta: dict[str, Any] | None):
        self.run, self.cfg, self.out = run, run.cfg, run.out
        self.writes = self.out is not None and run.ddp.is_main
        self.partial_start: _Start | None = start if start.skip else None
        self.history = start.history
        kept = start.best(self.cfg.select)
        self.best = math.inf if kept is None else float(kept["valid_nll"])  # the kept epoch's validation NLL
        self.best_accuracy = None if kept is None else kept.get("valid_accuracy")
        self.best_score = (math.inf,) if kept is None else _score(self.cfg.select, kept)
        self.best_path = self.out if self.out is not None and self.out.exists() and start.resumed else None
        # epochs since the best one, so that patience counts across a resume
        h = self.history
        self.bad_epochs = len(h) - 1 - min(range(len(h)), key=lambda i: _score(self.cfg.select, h[i])) if h else 0
        self.base_meta = dict(meta or {})
        self.base_meta["train_config"] = asdict(self.cfg)
        self.pending_best: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None  # held until the next state save
        self.last_state = time.perf_counter()
        self.meta: dict[str, Any] = {}  # of the last epoch's end
        # the last epoch ended, the last one whose state is on disk, and the place within an epoch
        # reached since (epoch, batch, loss sum, count, schedule's end), None at an epoch's end
        self.completed = self.saved = start.epoch - 1
        self.position: tuple[int, int, float, int, int] | None = None
        self.diverging = False  # then the weights are never written as the resumable state
        self.suspect = 0  # epochs in a row whose validation NLL was far above the best (or not finite)

    def __enter__(self) -> _Saver:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        """When the run ends: what was held back is written. A stop (the generator closed, Ctrl-C)
        also writes the resumable state where it is behind the epochs done (``state_every`` 0 or
        above 1): within an epoch, the batch reached, so that a resume goes on exactly from there.
        After an error only the best checkpoint held back is written."""
        if not self.writes:
            return
        stopped = exc_type is None or issubclass(exc_type, (GeneratorExit, KeyboardInterrupt))
        if not stopped or self.diverging or self.suspect:
            try:
                self.write_best()
            except Exception:  # noqa: BLE001 -- the error that ended the run is the one to report
                pass
            return
        if self.completed <= self.saved:
            self.write_best()
        elif self.position is None:
            self.save_state(self.meta)
        elif not self.run.ddp.enabled:  # under DDP the other processes' generators are not here
            self.save_state(self._partial_meta(*self.position), self.run.rng_state())
        else:
            self.write_best()

    def take_partial(self) -> _Start | None:
        """The position within an epoch a resumed run starts from, once."""
        start, self.partial_start = self.partial_start, None
        return start

    def write_best(self) -> None:
        if self.pending_best is not None and self.out is not None:  # only held when there is a file to write
            save_checkpoint(self.out, self.run.model, self.pending_best[1], state=self.pending_best[0])
            self.pending_best, self.best_path = None, self.out

    def save_state(self, meta_now: dict[str, Any], rng: dict[str, torch.Tensor] | None = None) -> None:
        """The resumable state: the raw weights, the optimiser's moments and the average (and the held
        back best checkpoint first)."""
        assert self.out is not None
        self.write_best()
        run, avg = self.run, self.run.avg
        opt_t, opt_info = _optim_state_tensors(run.opt)
        extra = dict(opt_t, **(avg.tensors() if avg is not None else {}), **(rng or {}))
        info = dict(optimizer=opt_info, **({"ema_steps": avg.steps} if avg is not None else {}))
        save_checkpoint(resume_path(self.out), run.model, dict(meta_now, **info), extra=extra)
        self.last_state = time.perf_counter()
        self.saved = self.completed

    def _partial_meta(self, epoch: int, batch: int, total: float, count: int, planned: int) -> dict[str, Any]:
        partial = {"epoch": epoch, "batch": batch, "total": total, "count": count, "planned": planned}
        return dict(self.base_meta, history=self.history, epoch=epoch - 1, partial=partial,
                    **({"metrics": {"valid_nll": self.best}} if math.isfinite(self.best) else {}))

    def batch_done(self, epoch: int, batch: int, total: float, count: int, schedule: _Schedule) -> None:
        """After each batch: with ``state_minutes``, the state within the epoch when it is due."""
        cfg, run = self.cfg, self.run
        self.position = (epoch, batch, total, count, schedule.planned)
        if (cfg.state_minutes is not None and self.out is not None and not self.suspect and not run.ddp.enabled and batch < run.batches
                and time.perf_counter() - self.last_state >= 60.0 * cfg.state_minutes):
            self.save_state(self._partial_meta(epoch, batch, total, count, schedule.planned), run.rng_state())

    def diverged(self, lv: float, epoch: int, b: int) -> Finished:
        """A non-finite loss at batch ``b`` (0-based): the best held back is written, the state is not."""
        self.diverging = True
        msg = (
            f"the loss became {lv} at epoch {epoch}, batch {b + 1}; training stopped before the weights changed. "
            f"The best checkpoint{' ' + str(self.out) if self.best_path or self.pending_best else ''} is kept. Try a lower learning rate."
        )
        self.write_best()
        return Finished("diverged", epoch - 1, None if math.isinf(self.best) else self.best, self.best_path, msg, self.history)

    def epoch_end(self, epoch: int, train_nll: float, valid_nll: float, schedule: _Schedule,
                  valid_accuracy: float | None = None) -> EpochEnd:
        """Records the epoch's validation: the history, the best and (held back or written) the best
        checkpoint."""
        run = self.run
        far = self.best + max(DIVERGED_MARGIN * abs(self.best), 1.0)
        self.suspect = self.suspect + 1 if not math.isfinite(valid_nll) or valid_nll > far else 0
        entry = {"epoch": epoch, "train_nll": train_nll, "valid_nll": valid_nll, "seconds": time.perf_counter() - run.t_epoch}
        if valid_accuracy is not None:
            entry["valid_accuracy"] = valid_accuracy
        self.history.append(entry)
        score = _score(self.cfg.select, entry)
        improved = math.isfinite(valid_nll) and score < self.best_score
        if improved:
            self.best, self.best_score, self.best_accuracy, self.bad_epochs = valid_nll, score, valid_accuracy, 0
        else:
            self.bad_epochs += 1
        if self.writes:
            m = dict(self.base_meta, history=self.history, epoch=epoch, metrics={"valid_nll": self.best})
            if self.cfg.fit_schedule:  # the schedule's length as fitted so far: what --epochs repeats it
                m["schedule_epochs"] = schedule.planned
            self.meta = m
            if improved:
                metrics = {"valid_nll": valid_nll, **({"valid_accuracy": valid_accuracy} if valid_accuracy is not None else {})}
                best_meta = dict(m, history=list(self.history), metrics=metrics)
                if self.cfg.state_every == 1:
                    assert self.out is not None
                    save_checkpoint(self.out, run.model, best_meta)
                    self.best_path = self.out
                else:  # the validated (averaged) weights, written with the next state
                    self.pending_best = ({k: v.detach().clone() for k, v in run.model.state_dict().items()}, best_meta)
        return EpochEnd(epoch, schedule.planned, train_nll, valid_nll, self.best, improved, 0.0, 0.0, 0.0,
                        valid_accuracy, self.best_accuracy)

    def keep(self, epoch: int, stopping: bool) -> None:
        """The resumable state at the end of ``epoch``, when it is due."""
        cfg = self.cfg
        self.completed, self.position = epoch, None
        if self.suspect >= DIVERGED_EPOCHS:
            self.diverging = True
            raise TrainingError(
                f"training diverged: the validation NLL was far above the best ({self.best:.3f} nats) for {self.suspect} epochs "
                f"in a row (now {self.history[-1]['valid_nll']:.4g} at epoch {epoch}); {self.kept()}. Try a lower learning rate"
            )
        if self.writes and not self.suspect and (stopping or epoch == cfg.epochs or (cfg.state_every > 0 and epoch % cfg.state_every == 0)):
            self.save_state(self.meta)

    def kept(self) -> str:
        """What a diverged run keeps, for its message."""
        if not self.writes:
            return "no file was written"
        best = f"the best checkpoint {self.out}" if self.best_path or self.pending_best else "no best checkpoint yet"
        state = f"the resumable state of epoch {self.saved}" if resume_path(self.out or "").exists() else "no resumable state"
        return f"{best} and {state} (the last good one) are kept"

    def finished(self, reason: str, epochs_run: int, message: str) -> Finished:
        return Finished(reason, epochs_run, None if math.isinf(self.best) else self.best, self.best_path, message, self.history)


#: divergence: a training batch whose loss is beyond this many times what a uniform model pays stops
#: the run before its step (random data sits at the uniform figure itself, so a little above it is
#: noise, far above it is not); so does a validation NLL more than ``DIVERGED_MARGIN`` of the best
#: (at least 1 nat) above the best for ``DIVERGED_EPOCHS`` epochs in a row, whose weights are never
#: written as the resumable state
DIVERGED_LOSS = 2.0
DIVERGED_MARGIN = 0.5
DIVERGED_EPOCHS = 3


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
