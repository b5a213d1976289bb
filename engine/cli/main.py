"""``pixelchain`` on the command line.

    pixelchain                      start the desktop app (app.launcher; options: --model, --ordering, --screenshot)
    pixelchain train --model made --ordering raster --epochs 20 --out made.safetensors
    pixelchain eval CKPT [--json] [--ensemble K] [--split test] [--record]
    pixelchain sample CKPT --n 16 --out grid.png [--temperature T] [--seed S]
    pixelchain info CKPT            print a checkpoint's metadata
    pixelchain compress|decompress|score|inpaint-eval ...   see engine/cli/tasks.py

Errors print one line ``pixelchain: error: ...`` and exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Sequence

__all__ = ["main", "build_parser"]

ENGINE_COMMANDS = {"train", "eval", "sample", "info"}
# compress, decompress, score, inpaint-eval: parsers and handlers in engine/cli/tasks.py
ENGINE_COMMANDS |= {"compress", "decompress", "score", "inpaint-eval"}


def _fmt_time(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    s = int(s)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def _parse_hidden(text: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--hidden takes whole numbers separated by commas, got {text!r}") from None
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError("--hidden needs at least one positive size")
    return vals


def build_parser() -> argparse.ArgumentParser:
    from ..models import FAMILIES
    from ..models.made import ORDER_SETS
    from ..ordering import ORDERING_NAMES

    p = argparse.ArgumentParser(prog="pixelchain", description="Autoregressive models of binarized MNIST.")
    sub = p.add_subparsers(dest="command")

    t = sub.add_parser("train", help="train a model; keeps the best checkpoint on validation")
    t.add_argument("--model", required=True, choices=sorted(FAMILIES), help="model family")
    t.add_argument("--ordering", default="raster", help=f"pixel ordering: {', '.join(ORDERING_NAMES)} (random:SEED, random-rows:SEED)")
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument("--batch-size", type=int, default=100)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--lr-min-factor", type=float, default=1.0, help="cosine-decay the learning rate to lr * this (1: constant)")
    t.add_argument("--weight-decay", type=float, default=0.0)
    t.add_argument("--l1", type=float, default=0.0, help="L1 penalty on weight matrices (nats per image per unit of |w|)")
    t.add_argument("--ema", type=float, default=0.0, help="validate and keep a moving average of the weights with this decay (e.g. 0.999)")
    t.add_argument("--grad-clip", type=float, default=None)
    t.add_argument("--patience", type=int, default=None, help="stop after this many epochs without validation improvement")
    t.add_argument("--max-minutes", type=float, default=None,
                   help="stop after the last epoch that fits in this many minutes (continue with --resume)")
    t.add_argument("--fit-schedule", action="store_true",
                   help="with --max-minutes: end the cosine schedule at the last epoch that fits the limit (re-estimated every epoch)")
    t.add_argument("--state-every", type=int, default=1, metavar="N",
                   help="save the resumable state every N epochs and when the run stops (0: only when it stops)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N, mps")
    t.add_argument("--amp", action="store_true", help="bf16 mixed precision on CUDA or the CPU (evaluation stays float32)")
    t.add_argument("--hidden", type=_parse_hidden, default=None, help="hidden size(s), e.g. 500 or 500,500")
    t.add_argument("--num-masks", type=int, default=None, help="MADE: connectivity/ordering sets (0: new every batch)")
    t.add_argument("--order-agnostic", action="store_true", help="MADE: train over orderings; any ordering at inference")
    t.add_argument("--direct", action="store_true", help="MADE: direct input-to-output connections")
    t.add_argument("--order-set", default=None, choices=list(ORDER_SETS), help="MADE order-agnostic: random permutations, the 16 line scans, or rows from the top with random directions")
    t.add_argument("--config", default=None, help="JSON object of further config fields of the family")
    t.add_argument("--max-train", type=int, default=None, help="use only the first N training images")
    t.add_argument("--max-valid", type=int, default=None, help="use only the first N validation images")
    t.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    t.add_argument("--out", required=True, help="checkpoint path (.safetensors)")
    t.add_argument("--resume", action="store_true", help="continue the run saved next to --out")
    t.add_argument("--init-from", default=None, metavar="CKPT", help="start from the weights of a checkpoint of the same family and sizes (fine-tuning)")
    t.add_argument("--data", default=None, help="folder with binarized_mnist_*.amat (default: PIXELCHAIN_DATA or the cache)")
    t.add_argument("--quiet", action="store_true")

    e = sub.add_parser("eval", help="test NLL of a checkpoint")
    e.add_argument("checkpoint")
    e.add_argument("--split", default="test", choices=["train", "valid", "test"])
    e.add_argument("--ensemble", type=int, default=1, help="log-mean-exp over K orderings/masks (order-agnostic models)")
    e.add_argument("--ordering", default=None, help="evaluate in another ordering (order-agnostic models)")
    e.add_argument("--max-images", type=int, default=None, help="use N images: the first N, or a random N with --random-subset")
    e.add_argument("--random-subset", action="store_true",
                   help="draw the --max-images images at random (with --seed): the splits are sorted by digit class")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--batch-size", type=int, default=500)
    e.add_argument("--device", default="cpu")
    e.add_argument("--data", default=None)
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.add_argument("--record", action="store_true", help="store the measured NLL in the checkpoint's metadata")

    s = sub.add_parser("sample", help="draw samples into a PNG grid")
    s.add_argument("checkpoint")
    s.add_argument("--n", type=int, default=16)
    s.add_argument("--out", required=True)
    s.add_argument("--temperature", type=float, default=1.0)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--ordering", default=None)
    s.add_argument("--scale", type=int, default=4, help="pixels per image pixel in the PNG")
    s.add_argument("--device", default="cpu")

    i = sub.add_parser("info", help="print a checkpoint's metadata as JSON")
    i.add_argument("checkpoint")

    from .tasks import add_parsers as _add_beyond

    _add_beyond(sub)
    return p


class _Bar:
    """A one-line progress bar on a terminal; a line per epoch otherwise."""

    def __init__(self, quiet: bool = False):
        self.tty = sys.stderr.isatty() and not quiet
        self.quiet = quiet
        self.last = 0.0

    def batch(self, ev) -> None:
        if not self.tty:
            return
        now = time.perf_counter()
        if now - self.last < 0.2 and ev.batch != ev.batches:
            return
        self.last = now
        frac = ev.batch / ev.batches
        bar = "#" * int(frac * 30)
        sys.stderr.write(
            f"\repoch {ev.epoch}/{ev.epochs} [{bar:<30}] {ev.batch}/{ev.batches} loss {ev.loss:7.2f}  "
            f"elapsed {_fmt_time(ev.elapsed)} eta {_fmt_time(ev.eta)} "
        )
        sys.stderr.flush()

    def validating(self, ev) -> None:
        if self.tty:
            sys.stderr.write(f"\repoch {ev.epoch}/{ev.epochs} validating {ev.done}/{ev.total} images" + " " * 40)
            sys.stderr.flush()

    def epoch(self, ev) -> None:
        if self.quiet:
            return
        if self.tty:
            sys.stderr.write("\r" + " " * 110 + "\r")
        star = " *" if ev.improved else ""
        print(
            f"epoch {ev.epoch}/{ev.epochs}  train {ev.train_nll:.3f}  valid {ev.valid_nll:.3f}  best {ev.best_valid_nll:.3f}  "
            f"({ev.epoch_seconds:.1f}s, eta {_fmt_time(ev.eta)}){star}",
            flush=True,
        )


def _download_progress(split: str):
    """A progress line on stderr for a download into the cache (only ever called when downloading)."""
    state = {"last": 0.0}

    def report(done: int, total: int | None) -> None:
        now = time.perf_counter()
        if now - state["last"] < 0.2 and done != total:
            return
        state["last"] = now
        size = f"{done / 2**20:.1f}" + (f" of {total / 2**20:.1f}" if total else "")
        sys.stderr.write(f"\rdownloading the binarized MNIST {split} split: {size} MiB")
        if done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return report


def _cmd_train(a: argparse.Namespace) -> int:
    import torch

    from ..data import CHECKSUMS, load_split
    from ..models import build_model, family_class
    from ..ordering import parse_ordering
    from ..train import BatchEnd, EpochEnd, Finished, TrainConfig, Validating, amp_warning, device_name, resolve_device, train

    if a.threads:
        torch.set_num_threads(a.threads)
    cls = family_class(a.model)
    cfg: dict[str, Any] = {}
    if a.config:
        try:
            cfg = json.loads(a.config)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--config is not valid JSON: {exc}") from None
        if not isinstance(cfg, dict):
            raise ValueError("--config must be a JSON object")
    fields = set(cls.config_class.__dataclass_fields__)
    if a.hidden is not None:
        if "hidden" not in fields:
            raise ValueError(f"{a.model} has no hidden size")
        default = cls.config_class().hidden  # type: ignore[attr-defined]
        cfg["hidden"] = a.hidden if isinstance(default, tuple) else a.hidden[0]
    for flag, key in (("num_masks", "num_masks"), ("order_agnostic", "order_agnostic"), ("order_set", "order_set"), ("direct", "direct")):
        val = getattr(a, flag)
        if val not in (None, False):
            if key not in fields:
                raise ValueError(f"--{flag.replace('_', '-')} does not apply to {a.model}")
            cfg[key] = val
    ordering = parse_ordering(a.ordering)
    model = build_model(a.model, cfg, ordering)
    tc = TrainConfig(
        epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, lr_min_factor=a.lr_min_factor, weight_decay=a.weight_decay, l1=a.l1, ema=a.ema,
        grad_clip=a.grad_clip, seed=a.seed, device=a.device, patience=a.patience, max_minutes=a.max_minutes, fit_schedule=a.fit_schedule,
        state_every=a.state_every, max_train=a.max_train,
        max_valid=a.max_valid, amp=a.amp,
    )
    from ..distributed import context as dist_context

    ddp = dist_context(a.device)  # under torchrun: one process per GPU/CPU share; only rank 0 prints
    quiet = a.quiet or not ddp.is_main
    device = ddp.device if ddp.enabled else resolve_device(a.device)
    torch.manual_seed(a.seed)
    model = build_model(a.model, cfg, ordering)  # rebuilt after seeding: same initial weights for a seed
    if a.init_from:
        _init_from(model, a.init_from)
    train_x = load_split("train", a.data, progress=_download_progress("train"))
    valid_x = load_split("valid", a.data, progress=_download_progress("valid"))
    out = Path(a.out)
    if not quiet:
        print(
            f"training {a.model} ({model.num_parameters():,} parameters) in the {ordering.label} ordering on "
            f"{device_name(device)}; best checkpoint -> {out}",
            flush=True,
        )
    warning = amp_warning(device) if a.amp else None
    if warning and ddp.is_main:
        print(f"pixelchain: warning: {warning}; drop --amp to train in float32", file=sys.stderr, flush=True)
    meta = {"data": {"name": "binarized_mnist", "checksums": {k: CHECKSUMS[k] for k in ("train", "valid")}},
            "device": device_name(device), "command": "pixelchain " + " ".join(sys.argv[1:])}
    bar = _Bar(quiet)
    t0 = time.perf_counter()
    if a.init_from:
        meta["init_from"] = str(a.init_from)
    for ev in train(model, train_x, valid_x, tc, out=out, resume=a.resume, meta=meta, init_output_bias=not a.init_from):
        if isinstance(ev, BatchEnd):
            bar.batch(ev)
        elif isinstance(ev, Validating):
            bar.validating(ev)
        elif isinstance(ev, EpochEnd):
            bar.epoch(ev)
        elif isinstance(ev, Finished):
            if ev.reason == "diverged":
                print(f"pixelchain: error: {ev.message}", file=sys.stderr)
                return 2
            if not quiet:
                best = f"{ev.best_valid_nll:.3f}" if ev.best_valid_nll is not None else "-"
                print(f"{ev.reason} after {ev.epochs_run} epochs in {_fmt_time(time.perf_counter() - t0)}; best valid NLL {best} nats -> {ev.best_path}")
                if ev.reason == "time-limit":
                    print(ev.message)
    return 0


def _init_from(model, path: str) -> None:
    """Copy the weights of checkpoint ``path`` into ``model``: same family, same tensor shapes."""
    from ..checkpoint import load_checkpoint

    src = load_checkpoint(path).model
    if src.family != model.family:
        raise ValueError(f"--init-from {path}: it holds a {src.family} model, not a {model.family} one")
    mine, theirs = model.state_dict(), src.state_dict()
    diff = sorted(k for k in set(mine) | set(theirs) if k not in mine or k not in theirs or mine[k].shape != theirs[k].shape)
    if diff:
        raise ValueError(f"--init-from {path}: the sizes differ from this model's ({', '.join(diff[:4])}{', ...' if len(diff) > 4 else ''})")
    model.load_state_dict(theirs)


def _cmd_eval(a: argparse.Namespace) -> int:
    from ..checkpoint import load_checkpoint, save_checkpoint
    from ..data import load_split, subset
    from ..models.base import nats_to_bits_per_dim
    from ..ordering import parse_ordering
    from ..train import evaluate, resolve_device

    if a.record and a.max_images:
        raise ValueError("--record stores the NLL of the whole split: leave out --max-images")
    ck = load_checkpoint(a.checkpoint, device=resolve_device(a.device))
    model = ck.model
    if a.ordering:
        o = parse_ordering(a.ordering, model.config.height, model.config.width)
        model.set_ordering(o)
    x = load_split(a.split, a.data, progress=_download_progress(a.split))
    x, drawn = subset(x, a.max_images, a.random_subset, a.seed)
    t0 = time.perf_counter()
    nll, se = evaluate(model, x, a.batch_size, ensemble=a.ensemble)
    secs = time.perf_counter() - t0
    d = model.size
    res = {
        "checkpoint": str(a.checkpoint),
        "model": model.family,
        "ordering": model.ordering.spec,
        "split": a.split,
        "n_images": int(len(x)),
        "subset": ("random" if drawn is not None else "first") if a.max_images else "all",
        "ensemble": a.ensemble,
        f"{a.split}_nll_nats": nll,
        "stderr_nats": se,
        "bits_per_dim": nats_to_bits_per_dim(nll, d),
        "parameters": model.num_parameters(),
        "seconds": secs,
    }
    if a.split == "test":
        res["test_nll_nats"] = nll
    if a.record:
        metrics = dict(ck.meta.get("metrics", {}))
        key = f"{a.split}_nll" + (f"_ensemble{a.ensemble}" if a.ensemble > 1 else "")
        metrics[key] = nll
        metrics[key + "_stderr"] = se
        save_checkpoint(a.checkpoint, ck.model, dict(ck.meta, metrics=metrics))
    if a.json:
        print(json.dumps(res))
    else:
        ens = f", ensemble of {a.ensemble}" if a.ensemble > 1 else ""
        print(
            f"{model.family} ({model.ordering.label}{ens}): {a.split} NLL {nll:.3f} ± {se:.3f} nats per image, "
            f"{res['bits_per_dim']:.4f} bits per dimension over {len(x)} images ({secs:.1f}s)"
        )
    return 0


def _cmd_sample(a: argparse.Namespace) -> int:
    import torch

    from ..checkpoint import load_checkpoint
    from ..images import save_grid
    from ..ordering import parse_ordering
    from ..train import resolve_device

    ck = load_checkpoint(a.checkpoint, device=resolve_device(a.device))
    ordering = parse_ordering(a.ordering, ck.model.config.height, ck.model.config.width) if a.ordering else None
    if a.n < 1:
        raise ValueError("--n must be at least 1")
    gen = torch.Generator().manual_seed(a.seed)
    x = ck.model.sample(a.n, ordering=ordering, temperature=a.temperature, generator=gen)
    imgs = x.reshape(a.n, ck.model.config.height, ck.model.config.width).cpu().numpy()
    save_grid(imgs, a.out, scale=a.scale)
    print(f"wrote {a.n} samples to {a.out}")
    return 0


def _cmd_info(a: argparse.Namespace) -> int:
    from ..checkpoint import read_metadata

    print(json.dumps(read_metadata(a.checkpoint), indent=2))
    return 0


def _known_errors() -> tuple[type[BaseException], ...]:
    from ..checkpoint import CheckpointError
    from ..data import DataError
    from ..ordering import OrderingError
    from ..train import TrainingError

    return (CheckpointError, DataError, OrderingError, TrainingError, ValueError, OSError)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv:
        parser.print_help()
        print("\nWith no subcommand, the installed `pixelchain` command (app.launcher) starts the desktop app.")
        return 2
    a = parser.parse_args(argv)
    handlers = {"train": _cmd_train, "eval": _cmd_eval, "sample": _cmd_sample, "info": _cmd_info}
    try:
        return (handlers.get(a.command) or a.handler)(a)
    except KeyboardInterrupt:
        print("pixelchain: interrupted", file=sys.stderr)
        return 130
    except _known_errors() as exc:
        print(f"pixelchain: error: {exc}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as exc:  # allocation failures only; other bugs keep their traceback
        text = str(exc)
        if not isinstance(exc, MemoryError) and "allocate" not in text and "out of memory" not in text:
            raise
        print(f"pixelchain: error: not enough memory ({text.splitlines()[0][:160] if text else 'MemoryError'}); "
              f"try a smaller model, --batch-size or --max-images", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
