"""``pixelchain classify CKPT``: a class-conditional model as a Bayes classifier on a split.

    pixelchain classify CKPT [--split test|valid|train] [--max-images N [--random-subset]] [--json]

Prints the accuracy, the confusion matrix (rows: the true class) and the marginal NLL
``-log p(x)`` (what ``eval`` reports for a conditional model), from one batched pass over the
classes per chunk of images (:mod:`engine.classify`).
"""

from __future__ import annotations

import argparse
import json
import time

from .options import DATA_HELP, SEED, CommandError, Progress, add_command, bounded_int, positive_int

__all__ = ["add_parser", "confusion_table"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    c = add_command(sub, "classify", "classify a split's digits with a class-conditional model (Bayes' rule)", """\
p(y | x) is proportional to p(y) p(x | y): the model's likelihood of each image under each of its
classes, one batched pass over the classes per chunk of images, gives the most probable class (the
prediction), the marginal NLL -log p(x) = -log sum_y p(y) p(x | y) (what eval reports for a
conditional model) and the conditional NLL -log p(x | true y). The labels are the split's own
(binarized MNIST's recovered ones, MNIST's published ones). Prints the accuracy, the confusion
matrix (rows: true class) and the NLLs; --json prints one JSON object.""",
                    compute=True)
    c.add_argument("checkpoint", help="a .safetensors checkpoint of a class-conditional model (trained with --classes)")
    c.add_argument("--split", default="test", choices=["test", "valid", "train"], help="the split to classify (default: %(default)s)")
    c.add_argument("--max-images", type=positive_int, default=None, metavar="N",
                   help="use N images: the first N, or a random N with --random-subset (default: all; the binarized test "
                        "split is sorted by class, so its first N are not typical)")
    c.add_argument("--random-subset", action="store_true", help="draw the --max-images images at random (with --seed)")
    c.add_argument("--seed", type=SEED, default=0, help="seed of --random-subset (default: %(default)s)")
    c.add_argument("--batch-size", type=bounded_int(1, 10_000), default=None, metavar="N",
                   help="images per chunk, each run under every class at once (default: as many as fit in about 256 MiB, at "
                        "most 500)")
    c.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto (default: %(default)s)")
    c.add_argument("--data", default=None, metavar="DIR", help=DATA_HELP)
    c.add_argument("--json", action="store_true", help="print one JSON object")
    c.set_defaults(handler=_cmd_classify)


def confusion_table(confusion, per_class: list[float | None]) -> list[str]:
    """The confusion matrix as text lines: a header of predicted classes, one row per true class
    with its accuracy at the end."""
    c = len(confusion)
    width = max(5, len(str(int(max((max(r) for r in confusion), default=0)))) + 1)
    lines = ["true \\ predicted " + "".join(f"{k:>{width}}" for k in range(c)) + "   accuracy"]
    for k, row in enumerate(confusion):
        acc = per_class[k]
        lines.append(f"{k:>16} " + "".join(f"{int(v):>{width}}" for v in row) + ("        -" if acc is None else f"   {acc:8.2%}"))
    return lines


def _cmd_classify(a: argparse.Namespace) -> int:
    from ..checkpoint import load_checkpoint
    from ..classify import classify_steps
    from ..data import subset
    from ..datasets import dataset_of, describe, load_dataset, load_labels
    from ..train import resolve_device

    ck = load_checkpoint(a.checkpoint, device=resolve_device(a.device))
    model = ck.model
    if not model.classes:
        raise CommandError(f"{a.checkpoint} holds an unconditional {model.family} model: it has no classes to classify "
                           "with (train one with --classes 10)")
    dataset, levels = dataset_of(ck.meta), model.levels
    x = load_dataset(dataset, a.split, a.data, levels)
    y = load_labels(dataset, a.split, a.data)
    x, drawn = subset(x, a.max_images, a.random_subset, a.seed)
    y = y[drawn] if drawn is not None else y[: len(x)]
    t0 = time.perf_counter()
    progress = Progress(f"classify {a.split}")
    steps = classify_steps(model, x, y, a.batch_size)
    while True:
        try:
            progress(next(steps), len(x))
        except StopIteration as stop:
            r = stop.value
            break
    progress.close()
    secs = time.perf_counter() - t0
    res = {"checkpoint": str(a.checkpoint), "model": model.family, "ordering": model.ordering.spec, "dataset": dataset,
           "levels": levels, "split": a.split, **r.to_dict(),
           "subset": ("random" if drawn is not None else "first") if a.max_images else "all", "seconds": secs}
    if a.json:
        print(json.dumps(res))
        return 0
    errors = res["errors"]
    print(f"{model.family} ({model.ordering.label}) conditioned on {r.classes} classes, on the {a.split} split of "
          f"{describe(dataset, levels)}: {r.n_images:,} {'randomly drawn ' if drawn is not None else ''}images ({secs:.1f}s)")
    print(f"accuracy {r.accuracy:.2%} ({errors:,} error{'s' if errors != 1 else ''}); "
          f"mean p(true class | x) {r.mean_true_posterior:.4f}")
    print(f"NLL -log p(x) (the marginal over classes) {r.nll_nats:.3f} ± {r.stderr_nats:.3f} nats per image, "
          f"{r.bits_per_dim:.4f} bits per dimension; -log p(x | true class) {r.cond_nll_nats:.3f} ± {r.cond_stderr_nats:.3f}")
    print("confusion matrix (rows: true class, columns: predicted class):")
    for line in confusion_table(r.confusion, r.per_class_accuracy):
        print(line)
    return 0
