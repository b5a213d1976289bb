"""``pixelchain`` on the command line.

    pixelchain                      start the desktop app (app.launcher; options: --model, --ordering, --screenshot)
    pixelchain train --model made --ordering raster --epochs 20 --out made.safetensors
    pixelchain train --model fvsbn --dataset mnist --levels 16 --head categorical --out grey.safetensors
    pixelchain eval CKPT [--json] [--ensemble K] [--split test] [--record]
    pixelchain sample CKPT --n 16 --out grid.png [--temperature T] [--seed S]
    pixelchain info CKPT            print a checkpoint's metadata
    pixelchain compress|decompress|score|inpaint-eval ...   see engine/cli/tasks.py
    pixelchain classify CKPT [--split test] [--json]        a class-conditional model as a classifier (engine/cli/classify.py)
    pixelchain mix A B [...] --out OUT                      an ensemble of checkpoints as one model (engine/cli/mix.py)

Errors print one line ``pixelchain: error: ...`` and exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from ..steps import fmt_time
from .options import CommandError

__all__ = ["ENGINE_COMMANDS", "main", "build_parser", "quiet_broken_pipe"]

#: every subcommand (the launcher hands these to :func:`main` without importing Qt); compress,
#: decompress, score and inpaint-eval have their parsers and handlers in engine/cli/tasks.py, classify in
#: engine/cli/classify.py, mix in engine/cli/mix.py
ENGINE_COMMANDS = frozenset({"train", "eval", "sample", "info", "compress", "decompress", "score", "inpaint-eval", "classify",
                             "mix"})


DESCRIPTION = """\
Autoregressive models of MNIST digits, binarized or grey: train them, measure their likelihood, sample, compress,
score and inpaint with them. Without a subcommand the installed `pixelchain` command starts the
desktop app. Errors print one line `pixelchain: error: ...` and exit with status 2."""


def build_parser() -> argparse.ArgumentParser:
    from ..datasets import DATASETS
    from ..models import FAMILIES
    from ..ordering import ORDERING_NAMES
    from ..recipes import add_family_options, add_train_options
    from ..train import PRECISIONS
    from .classify import add_parser as add_classify_parser
    from .mix import add_parser as add_mix_parser
    from .options import DATA_HELP, MAX_BATCH, MAX_ENSEMBLE, SEED, Parser, add_command, bounded_int
    from .tasks import add_parsers as add_task_parsers

    p = Parser(prog="pixelchain", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", title="subcommands", metavar="COMMAND",
                           description="`pixelchain COMMAND --help` describes each one")
    orderings = (f"{', '.join(ORDERING_NAMES)}; random:SEED and random-rows:SEED draw one; "
                 "NAME/mirror, NAME/flip or NAME/turn start a named one from another corner (e.g. snake/turn)")

    t = add_command(sub, "train", "train a model; keeps the best checkpoint on validation", """\
Trains on the training split and keeps the checkpoint that is best on the validation split
(OUT), with the resumable state beside it (OUT with .resume before the suffix). The family
options make the model's config; every training option is a field of engine.train.TrainConfig.""",
                    compute=True)
    fam = t.add_argument_group("model")
    fam.add_argument("--model", required=True, choices=sorted(FAMILIES), help="model family")
    fam.add_argument("--ordering", default="raster", help=f"pixel ordering: {orderings} (default: %(default)s)")
    add_family_options(fam)
    training = t.add_argument_group("training (engine.train.TrainConfig)")
    add_train_options(training)
    training.add_argument("--precision", default=None, choices=list(PRECISIONS),
                          help="auto (default): bf16 mixed precision where the device computes bf16 natively (CUDA 8.0+, "
                               "CPUs with AVX-512 BF16 or AMX) for the families measured faster in it (MADE, PixelCNN, LMConv, "
                               "LSTM, Transformer), float32 elsewhere; evaluation and every reported NLL stay float32")
    run = t.add_argument_group("run")
    run.add_argument("--out", required=True, help="where the best checkpoint goes (.safetensors)")
    run.add_argument("--resume", action="store_true", help="continue the run saved next to --out")
    run.add_argument("--overwrite", action="store_true", help="start over even if --out exists, replacing it at the first save")
    run.add_argument("--init-from", default=None, metavar="CKPT",
                     help="start from the weights of a checkpoint of the same family and sizes (fine-tuning); a PixelCNN or "
                          "LMConv may have more --config layers than the checkpoint: the added layers start as identities")
    run.add_argument("--dataset", default="binarized-mnist", choices=list(DATASETS),
                     help="binarized-mnist: the static binarized MNIST (2 levels); mnist: the grey MNIST quantised to --levels "
                          "(at 2 levels: intensity >= 128, another data set than binarized-mnist) (default: %(default)s)")
    run.add_argument("--data", default=None, metavar="DIR", help=DATA_HELP)
    run.add_argument("--quiet", action="store_true", help="no progress output (errors and warnings still go to stderr)")

    e = add_command(sub, "eval", "measure the NLL of a checkpoint on a split", """\
Prints the mean negative log-likelihood in nats per image (with its standard error) and in
bits per dimension, for the model's own ordering, another one, or an ensemble of orderings.""",
                    compute=True)
    e.add_argument("checkpoint", help="a .safetensors checkpoint")
    e.add_argument("--split", default="test", choices=["train", "valid", "test"], help="the split to measure (default: %(default)s)")
    e.add_argument("--ensemble", type=bounded_int(1, MAX_ENSEMBLE), default=1, metavar="K",
                   help="log-mean-exp over K orderings/masks (order-agnostic models; default: %(default)s)")
    e.add_argument("--ordering", default=None, help="evaluate in another ordering (order-agnostic models)")
    e.add_argument("--max-images", type=int, default=None, metavar="N",
                   help="use N images: the first N, or a random N with --random-subset (default: all)")
    e.add_argument("--random-subset", action="store_true",
                   help="draw the --max-images images at random (with --seed): the splits are sorted by digit class")
    e.add_argument("--seed", type=SEED, default=0, help="seed of --random-subset (default: %(default)s)")
    e.add_argument("--batch-size", type=bounded_int(1, MAX_BATCH), default=500, metavar="N", help="images per batch (default: %(default)s)")
    e.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto (default: %(default)s)")
    e.add_argument("--data", default=None, metavar="DIR", help=DATA_HELP)
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.add_argument("--record", action="store_true", help="store the measured NLL in the checkpoint's metadata")

    s = add_command(sub, "sample", "draw samples into a PNG grid", """\
Ancestral sampling in the model's own ordering or, for order-agnostic models, another one.""",
                    compute=True)
    s.add_argument("checkpoint", help="a .safetensors checkpoint")
    s.add_argument("--n", type=int, default=16, help="how many samples (default: %(default)s)")
    s.add_argument("--out", required=True, help="the PNG grid to write")
    s.add_argument("--temperature", type=float, default=1.0,
                   help="divide the logits by this: below 1 sharper, above 1 noisier (default: %(default)s)")
    s.add_argument("--seed", type=SEED, default=0, help="seed of the draws (default: %(default)s)")
    s.add_argument("--ordering", default=None, help="sample in another ordering (order-agnostic models)")
    s.add_argument("--scale", type=bounded_int(1, 64), default=4, help="pixels per image pixel in the PNG (default: %(default)s)")
    s.add_argument("--class", dest="klass", type=bounded_int(0, 999), default=None, metavar="N",
                   help="a class-conditional model: draw from p(x | y = N), e.g. --class 7 for sevens (default: from the "
                        "marginal p(x), each image's class drawn from p(y) first)")
    s.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto (default: %(default)s)")

    i = add_command(sub, "info", "print a checkpoint's metadata as JSON", """\
Reads only the header: the data set and pixel levels, family, config, ordering, training history and
recorded metrics.""")
    i.add_argument("checkpoint", help="a .safetensors checkpoint")

    add_task_parsers(sub)
    add_classify_parser(sub)
    add_mix_parser(sub)
    return p


class _Bar:
    """A one-line progress bar on a terminal; a line per epoch otherwise."""

    #: seconds between the progress lines written when the output is not a terminal (a run in the
    #: background, its output in a log file): the mean training loss since the previous line
    LOG_EVERY = 60.0

    def __init__(self, quiet: bool = False):
        self.tty = sys.stderr.isatty() and not quiet
        self.quiet = quiet
        self.last = 0.0
        self.losses: list[float] = []

    def batch(self, ev) -> None:
        if not self.tty:
            if self.quiet:
                return
            self.losses.append(ev.loss)
            if ev.elapsed - self.last >= self.LOG_EVERY:
                self.last = ev.elapsed
                mean = sum(self.losses) / len(self.losses)
                self.losses.clear()
                print(f"  epoch {ev.epoch}/{ev.epochs} batch {ev.batch}/{ev.batches}  loss {mean:.3f} (mean since the last line)  "
                      f"elapsed {fmt_time(ev.elapsed)} eta {fmt_time(ev.eta)}", flush=True)
            return
        now = time.perf_counter()
        if now - self.last < 0.2 and ev.batch != ev.batches:
            return
        self.last = now
        frac = ev.batch / ev.batches
        bar = "#" * int(frac * 30)
        sys.stderr.write(
            f"\repoch {ev.epoch}/{ev.epochs} [{bar:<30}] {ev.batch}/{ev.batches} loss {ev.loss:7.2f}  "
            f"elapsed {fmt_time(ev.elapsed)} eta {fmt_time(ev.eta)} "
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
        acc = ""
        if ev.valid_accuracy is not None:
            best = f"{100 * ev.best_valid_accuracy:.2f}%" if ev.best_valid_accuracy is not None else "-"
            acc = f"  accuracy {100 * ev.valid_accuracy:.2f}% (best {best})"
        print(
            f"epoch {ev.epoch}/{ev.epochs}  train {ev.train_nll:.3f}  valid {ev.valid_nll:.3f}  best {ev.best_valid_nll:.3f}{acc}  "
            f"({ev.epoch_seconds:.1f}s, eta {fmt_time(ev.eta)}){star}",
            flush=True,
        )


def _download_progress(split: str, dataset: str = "binarized-mnist"):
    """A progress line on stderr for a download into the cache (only ever called when downloading)."""
    state = {"last": 0.0}

    def report(done: int, total: int | None) -> None:
        now = time.perf_counter()
        if now - state["last"] < 0.2 and done != total:
            return
        state["last"] = now
        size = f"{done / 2**20:.1f}" + (f" of {total / 2**20:.1f}" if total else "")
        what = f"the binarized MNIST {split} split" if dataset == "binarized-mnist" else f"MNIST for the {split} split"
        sys.stderr.write(f"\rdownloading {what}: {size} MiB")
        if done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return report


def _cmd_train(a: argparse.Namespace) -> int:

    from ..datasets import check_dataset, describe, load_dataset, load_labels
    from ..distributed import context as dist_context
    from ..models import build_model, build_seeded
    from ..ordering import parse_ordering
    from ..recipes import model_config_from_args, run_metadata, train_config_from_args
    from ..train import BatchEnd, EpochEnd, Finished, Validating, amp_warning, device_name, resolve_amp, resolve_device, train

    cfg = model_config_from_args(a.model, a)
    ordering = parse_ordering(a.ordering)
    model = build_model(a.model, cfg, ordering)  # a bad config fails here, before any data is read
    if model.levels != 2 and a.dataset != "mnist":
        raise CommandError(f"--levels {model.levels} needs --dataset mnist: {a.dataset} has 2 levels")
    dataset, levels = check_dataset(a.dataset, model.levels)
    tc = train_config_from_args(a)
    tc.validate()  # nonsense values are refused before any data is read
    if os.path.lexists(a.out) and not (a.resume or a.overwrite):  # never silently start over on a finished run
        raise CommandError(f"--out {a.out} exists; pass --resume to continue its run or --overwrite to start over and replace it")
    ddp = dist_context(a.device)  # under torchrun: one process per GPU/CPU share; only rank 0 prints
    quiet = a.quiet or not ddp.is_main
    device = ddp.device if ddp.device is not None else resolve_device(a.device)  # set when distributed
    if a.amp and a.precision not in (None, "bf16"):
        raise CommandError(f"--amp contradicts --precision {a.precision}")
    precision = "bf16" if a.amp else (a.precision or "auto")
    tc.amp = resolve_amp(precision, device, a.model)
    model = build_seeded(a.model, cfg, ordering, seed=a.seed)  # rebuilt: the same initial weights for a seed
    if a.init_from:
        _init_from(model, a.init_from)
    train_x = load_dataset(dataset, "train", a.data, levels, progress=_download_progress("train", dataset))
    valid_x = load_dataset(dataset, "valid", a.data, levels, progress=_download_progress("valid", dataset))
    train_y = load_labels(dataset, "train", a.data) if model.classes else None
    valid_y = load_labels(dataset, "valid", a.data) if model.classes else None
    out = Path(a.out)
    if not quiet:
        print(
            f"training {a.model} ({model.num_parameters():,} parameters{'' if model.binary else f', {model.dist_head.kind} head'}"
            f"{f', conditioned on {model.classes} classes' if model.classes else ''}) "
            f"on {describe(dataset, levels)} in the {ordering.label} ordering, on {device_name(device)}, "
            f"{'bf16 mixed precision' if tc.amp else 'float32'}; best checkpoint -> {out}",
            flush=True,
        )
    warning = amp_warning(device) if tc.amp else None
    if warning and ddp.is_main:
        print(f"pixelchain: warning: {warning}; drop --amp / --precision bf16 to train in float32", file=sys.stderr, flush=True)
    meta = run_metadata(device_name(device), a.argv, dataset=dataset, levels=levels,
                        **({"init_from": str(a.init_from)} if a.init_from else {}))
    bar = _Bar(quiet)
    t0 = time.perf_counter()
    for ev in train(model, train_x, valid_x, tc, out=out, resume=a.resume, meta=meta, init_output_bias=not a.init_from,
                    train_y=train_y, valid_y=valid_y):
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
                kept = "the best classifier's valid NLL" if tc.select == "accuracy" else "best valid NLL"
                print(f"{ev.reason} after {ev.epochs_run} epochs in {fmt_time(time.perf_counter() - t0)}; "
                      f"{kept} {best} nats -> {ev.best_path}")
                if ev.reason == "time-limit":
                    print(ev.message)
    return 0


def _init_from(model, path: str) -> None:
    """Copy the weights of checkpoint ``path`` into ``model``: same family and tensor shapes, or, for
    the residual families, a shallower model (for LMConv also a narrower one) that ``model`` grows from."""
    from ..checkpoint import load_checkpoint

    src = load_checkpoint(path).model
    if src.family != model.family:
        raise CommandError(f"--init-from {path}: it holds a {src.family} model, not a {model.family} one")
    mine, theirs = model.state_dict(), src.state_dict()
    diff = sorted(k for k in set(mine) | set(theirs) if k not in mine or k not in theirs or mine[k].shape != theirs[k].shape)
    if not diff:
        model.load_state_dict(theirs)
        return
    if model.classes and not src.classes and all(k in mine and k not in theirs and k.startswith("class_") for k in diff):
        # a conditional model from an unconditional one: its class terms start at zero, so it computes
        # the source's conditionals for every class until training moves them apart
        model.load_state_dict(theirs, strict=False)
        return
    if model.residual_out:  # deeper (and, for LMConv, wider): grow_from says what else differs
        try:
            model.grow_from(src)
        except ValueError as e:
            raise CommandError(f"--init-from {path}: {e}") from None
        return
    more = ", ..." if len(diff) > 4 else ""
    raise CommandError(f"--init-from {path}: the sizes differ from this model's ({', '.join(diff[:4])}{more})")


def _cmd_eval(a: argparse.Namespace) -> int:
    from ..checkpoint import check_can_save, load_checkpoint
    from ..data import subset
    from ..datasets import dataset_of, describe, load_dataset
    from ..models.base import nats_to_bits_per_dim
    from ..ordering import parse_ordering
    from ..recipes import nll_metrics, record_metrics
    from ..train import evaluate_steps, resolve_device
    from .options import Progress

    if a.record and a.max_images:
        raise CommandError("--record stores the NLL of the whole split: leave out --max-images")
    if a.record:
        check_can_save(a.checkpoint)  # before the whole split is computed, not after
    ck = load_checkpoint(a.checkpoint, device=resolve_device(a.device))
    model = ck.model
    if a.ordering:
        o = parse_ordering(a.ordering, model.config.height, model.config.width)
        model.set_ordering(o)
    dataset, levels = dataset_of(ck.meta), model.levels  # recorded by training: no flag needed
    x = load_dataset(dataset, a.split, a.data, levels, progress=_download_progress(a.split, dataset))
    x, drawn = subset(x, a.max_images, a.random_subset, a.seed)
    t0 = time.perf_counter()
    progress = Progress(f"eval {a.split}" + (f", ensemble of {a.ensemble}" if a.ensemble > 1 else ""))
    steps = evaluate_steps(model, x, a.batch_size, ensemble=a.ensemble)
    while True:
        try:
            progress(next(steps), len(x))
        except StopIteration as stop:
            nll, se = stop.value
            break
    progress.close()
    secs = time.perf_counter() - t0
    if not math.isfinite(nll):  # a figure, never NaN: the weights or this ordering compute NaN or infinity
        raise CommandError(f"the {a.split} NLL of {a.checkpoint} is not finite ({nll}); the model computes NaN or infinity here")
    d = model.size
    res = {
        "checkpoint": str(a.checkpoint),
        "model": model.family,
        "ordering": model.ordering.spec,
        "dataset": dataset,
        "levels": levels,
        "split": a.split,
        "n_images": int(len(x)),
        "subset": ("random" if drawn is not None else "first") if a.max_images else "all",
        "ensemble": a.ensemble,
        f"{a.split}_nll_nats": nll,
        "stderr_nats": se,
        "bits_per_dim": nats_to_bits_per_dim(nll, d),
        "parameters": model.num_parameters(),
        "seconds": secs,
        "classes": model.classes,  # > 0: the NLL is of the marginal p(x) = sum_y p(y) p(x | y)
    }
    if a.split == "test":
        res["test_nll_nats"] = nll
    if a.record:
        record_metrics(a.checkpoint, nll_metrics(a.split, nll, se, a.ensemble), ck)
    if a.json:
        print(json.dumps(res))
    else:
        ens = f", ensemble of {a.ensemble}" if a.ensemble > 1 else ""
        print(
            f"{model.family} ({model.ordering.label}{ens}) on {describe(dataset, levels)}: {a.split} NLL {nll:.3f} ± {se:.3f} "
            f"nats per image, "
            f"{res['bits_per_dim']:.4f} bits per dimension over {len(x)} images ({secs:.1f}s)"
        )
        if model.classes:
            print(f"(a class-conditional model: the NLL of its marginal p(x) = sum_y p(y) p(x | y) over its {model.classes} classes; "
                  f"`pixelchain classify` also gives -log p(x | true class) and the accuracy)")
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
        raise CommandError("--n must be at least 1")
    model = ck.model
    if a.klass is not None and not model.classes:
        raise CommandError(f"--class {a.klass}: {a.checkpoint} holds an unconditional model, which has no classes")
    if a.klass is not None and a.klass >= model.classes:
        raise CommandError(f"--class {a.klass}: the model's classes are 0 to {model.classes - 1}")
    gen = torch.Generator().manual_seed(a.seed)
    x = classes = None
    for step in model.sample_steps(a.n, ordering=ordering, temperature=a.temperature, generator=gen, y=a.klass):
        x, classes = step.x, step.y
    assert x is not None  # every pixel is drawn
    imgs = x.reshape(a.n, model.config.height, model.config.width).cpu().numpy()
    save_grid(imgs, a.out, scale=a.scale, levels=model.levels)  # grey for K > 2 levels
    if a.klass is not None:
        print(f"wrote {a.n} samples of class {a.klass} to {a.out}")
    elif classes is not None:  # the marginal: say which class each image was drawn from
        print(f"wrote {a.n} samples to {a.out}, from the marginal p(x); their classes, drawn from p(y): "
              f"{' '.join(str(int(k)) for k in classes.tolist())}")
    else:
        print(f"wrote {a.n} samples to {a.out}")
    return 0


def _cmd_info(a: argparse.Namespace) -> int:
    from ..checkpoint import read_metadata
    from ..data import DataError
    from ..datasets import dataset_of

    meta = read_metadata(a.checkpoint)
    config = meta.get("config")
    levels = config.get("levels", 2) if isinstance(config, dict) else 2
    dataset: Any
    try:  # what the checkpoint was trained on: recorded, or for one older than the record inferred
        dataset = dataset_of(meta)
    except DataError:
        dataset = meta.get("dataset")  # a name this pixelchain does not know: shown as it is
    print(json.dumps({"dataset": dataset, "levels": levels, **{k: v for k, v in meta.items() if k != "dataset"}}, indent=2))
    return 0


def _suggest(word: str, choices) -> str:
    """`` (did you mean 'train'?)`` for a near miss among ``choices``, else nothing."""
    import difflib

    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_json_options(a: argparse.Namespace) -> None:
    """Parse every JSON-valued option (``--config``, an ``--ordering`` given as JSON) once through
    :func:`engine.jsonsafe.loads`, so text nested thousands deep or megabytes long is refused in one
    line before any handler hands it to :func:`json.loads` (which would recurse without bound)."""
    from ..jsonsafe import loads

    for name in ("config", "ordering"):
        text = getattr(a, name, None)
        if isinstance(text, str) and text.lstrip()[:1] in ("{", "["):
            loads(text, what=f"--{name}", max_bytes=1 << 20)


def _error_line(exc: BaseException) -> str:
    """The one line for an expected error: an OSError names its file (and its errno's words, not
    ``[Errno 2]``); an engine error, whatever else it is, says it all itself."""
    from ..errors import PixelchainError

    if isinstance(exc, OSError) and exc.strerror and not isinstance(exc, PixelchainError):
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return str(exc) or type(exc).__name__


def quiet_broken_pipe() -> int:
    """The reader of our output went away (``pixelchain info X | head``): stop quietly, as Unix tools
    do. Later writes (and the interpreter's final flush) go to /dev/null instead of failing again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a real file (a test's capture): nothing to redirect
        pass
    return 141  # 128 + SIGPIPE, what a shell reports for a tool ended by a closed pipe


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``pixelchain COMMAND ...``; the exit status (argparse's own errors and ``--help`` exit)."""
    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    except BrokenPipeError:  # in --help as much as in a command's output
        return quiet_broken_pipe()


def _main(argv: list[str]) -> int:
    from ..errors import PixelchainError
    from .options import apply_threads, check_device

    parser = build_parser()
    if not argv:
        parser.print_help()
        print("\nWith no subcommand, the installed `pixelchain` command (app.launcher) starts the desktop app.")
        return 2
    if not argv[0].startswith("-") and argv[0] not in ENGINE_COMMANDS:
        parser.error(f"unknown command {argv[0]!r}{_suggest(argv[0], ENGINE_COMMANDS)}; "
                     f"the commands are {', '.join(sorted(ENGINE_COMMANDS))}")
    a = parser.parse_args(argv)
    a.argv = argv  # recorded in a trained checkpoint as the command that repeats the run
    handlers = {"train": _cmd_train, "eval": _cmd_eval, "sample": _cmd_sample, "info": _cmd_info}
    try:
        if isinstance(getattr(a, "device", None), str):
            check_device(a.device)
        _check_json_options(a)
        apply_threads(a)
        rc = (handlers.get(a.command) or a.handler)(a)
        sys.stdout.flush()  # a closed pipe shows here, where main() handles it, not at exit
        return rc
    except BrokenPipeError:
        raise
    except KeyboardInterrupt:
        print("pixelchain: interrupted", file=sys.stderr)
        return 130
    # PixelchainError: every expected engine error. ValueError stays: the models' config checks and a
    # few engine helpers still raise plain ValueErrors with user-facing messages (e.g. a --config field
    # out of range). OSError: a file that cannot be read or written, named in the message.
    except (PixelchainError, ValueError, OSError) as exc:
        print(f"pixelchain: error: {_error_line(exc)}", file=sys.stderr)
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
