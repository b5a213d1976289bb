"""Copy trained checkpoints into resources/checkpoints/ for the app, with measured test NLL.

    python scripts/bundle.py [--device cuda] [--dest DIR] [--max-images N] runs/made1000d_wd.safetensors:made-raster [more SRC:NAME[:K] ...]
    python scripts/bundle.py --reference resources/checkpoints/NAME.safetensors [more ...]

For each: evaluate the test NLL in float32, store the weights in the smallest form that leaves the
reported NLL (two decimals) unchanged after reloading -- int8 with group-wise scales (weight
matrices; about half the size of float16), float16, else float32 -- and record the name, the
test NLL and its standard error in the checkpoint's metadata. A class-conditional model is measured
by its classifier pass (:mod:`engine.classify`: the NLL of its marginal over classes and the test
accuracy of its Bayes classifier, both recorded). ``--dtype float16|float32`` starts the search at
that form (float32 keeps the weights bit for bit, so it is not measured again: for a model whose
evaluation is long). ``--dtype int8`` stores int8 whatever it changes and records the figures of
the weights as stored, measured again after reloading (for a model that must fit the size limit:
the file's own figures are what is reported). Measured on the whole test split, every test digit's
log p(x) under the file as written (in the model's own ordering) also goes to ``reference/`` beside
the destination (``resources/reference/``): the app's percentile among test digits then needs no
pass of its own (:mod:`engine.reference`). ``--reference`` writes those figures alone for checkpoints
already bundled, leaving the files as they are. With ``:K`` (order-agnostic models)
also the test NLL of the ensemble of K orderings (log-mean-exp), recorded as
``test_nll_ensembleK``. Prints a Markdown table row each. ``--max-images N`` measures on the first N
test images only (quick end-to-end checks; the recorded NLL is then not the test NLL).
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.checkpoint import INT8, load_checkpoint, save_checkpoint  # noqa: E402
from engine.classify import classify  # noqa: E402
from engine.datasets import dataset_of, load_dataset, load_labels  # noqa: E402
from engine.recipes import nll_metrics, record_metrics, with_metrics  # noqa: E402
from engine.reference import checkpoint_sha256, split_log_probs_steps, write_reference  # noqa: E402
from engine.steps import drain  # noqa: E402
from engine.train import evaluate  # noqa: E402

DEST = ROOT / "resources" / "checkpoints"


def test_images(ck, max_images: int | None = None):
    """The test split of the data set the checkpoint was trained on, at its model's levels."""
    return load_dataset(dataset_of(ck.meta), "test", levels=ck.model.levels)[:max_images]


def measure(model, test, labels) -> tuple[float, float, dict, np.ndarray | None]:
    """(NLL, standard error, further metrics, each image's log p(x) where the pass gave them): the
    classifier pass for a conditional model."""
    if not model.classes:
        return (*evaluate(model, test), {}, None)
    r = classify(model, test, labels)
    return r.nll_nats, r.stderr_nats, {"test_accuracy": r.accuracy, "test_cond_nll": r.cond_nll_nats}, r.log_px


def write_test_reference(out: Path, model, test, log_px: np.ndarray | None) -> Path:
    """Every test digit's log p(x) under the checkpoint ``out`` as written (``model``: its weights,
    ``log_px``: their figures if already measured), keyed by the file's sha256, in ``reference/``
    beside its folder."""
    if log_px is None:
        log_px = drain(split_log_probs_steps(model, None, None, images=test))[1]
    return write_reference(out.parent.parent / "reference", checkpoint_sha256(out), model.ordering, test, log_px)


def bundle(src: str, name: str, test=None, ensemble: int = 1, device: str = "cpu", dest: Path | None = None,
           max_images: int | None = None, first_dtype: str | None = None) -> str:
    """Bundle ``src`` as ``name``, measured on ``test`` (default: the test split of its data set)."""
    ck = load_checkpoint(src, device=device)
    labels, whole = None, test is None and max_images is None  # the whole test split: its reference is written
    if test is None:
        test = test_images(ck, max_images)
        labels = load_labels(dataset_of(ck.meta), "test")[:max_images] if ck.model.classes else None
    elif ck.model.classes:
        raise ValueError("a conditional model is bundled on its own test split (its labels)")
    t0 = time.perf_counter()
    nll, se, more, log_px0 = measure(ck.model, test, labels)
    stored, log_px = ck.model, log_px0  # the weights as the file holds them, and their figures
    secs = time.perf_counter() - t0
    meta = with_metrics(dict(ck.meta, name=name), dict(nll_metrics("test", nll, se), **more))
    ens = ""
    if ensemble > 1:
        enll, ese = evaluate(ck.model, test, batch_size=500, ensemble=ensemble)
        meta = with_metrics(meta, nll_metrics("test", enll, ese, ensemble))
        ens = f"; ensemble of {ensemble}: {enll:.2f} ± {ese:.2f}"
    meta.pop("optimizer", None)
    dest = dest or DEST
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / f"{name}.safetensors"
    only_int8 = first_dtype == "int8"
    forms = [INT8, torch.float16, None]
    forms = [INT8] if only_int8 else forms[{None: 0, "float16": 1, "float32": 2}[first_dtype]:]
    for dtype in forms:
        meta["weights_dtype"] = INT8 if dtype == INT8 else str(dtype or torch.float32).replace("torch.", "")
        save_checkpoint(out, ck.model, meta, dtype=dtype)
        if dtype is None:
            stored, log_px = ck.model, log_px0
            break  # float32 is the model's own weights, bit for bit
        reloaded = load_checkpoint(out, device=device).model
        nll2, se2, more2, log_px = measure(reloaded, test, labels)
        stored = reloaded
        if only_int8:  # the stored weights are the model: their own figures are the ones recorded
            nll, se, more = nll2, se2, more2
            record_metrics(out, dict(nll_metrics("test", nll, se), **more))
            break
        same = f"{nll2:.2f}" == f"{nll:.2f}"
        if same and more2 != more:  # the classifier's figures of the weights as stored
            more = more2
            record_metrics(out, more)
        if same and ensemble > 1:
            same = f"{evaluate(reloaded, test, batch_size=500, ensemble=ensemble)[0]:.2f}" == f"{enll:.2f}"
        if same:
            break
    if whole:  # the app's percentile among the test digits reads these figures
        write_test_reference(out, stored, test, log_px)
    hist = ck.meta.get("history", [])
    valid = min((h["valid_nll"] for h in hist), default=float("nan"))
    epochs = ck.meta.get("epoch", len(hist))
    wall = sum(h.get("seconds", 0) for h in hist)
    m = ck.model
    return (
        f"| {name} | {m.family} | {m.ordering.label} | {m.num_parameters():,} | {epochs} "
        f"| {wall / 60:.0f} min, {ck.meta.get('device', '?')} | {valid:.2f} | {nll:.2f} ± {se:.2f}{ens}"
        f" ({nll / (m.size * math.log(2)):.4f} bits/dim) "
        + (f"; accuracy {more['test_accuracy'] * 100:.2f}%" if more else "")
        + f" | {out.stat().st_size / 2**20:.1f} MB ({meta['weights_dtype']}) | `{ck.meta.get('command', '')}` |"
        f"  <!-- eval {secs:.1f}s -->"
    )


def reference(path: Path, device: str = "cpu") -> Path:
    """The figures :func:`write_test_reference` writes, for the bundled checkpoint ``path`` as it is."""
    ck = load_checkpoint(path, device=device)
    return write_test_reference(path, ck.model, test_images(ck), None)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--reference"]:
        for arg in argv[1:]:
            print(reference(Path(arg)), flush=True)
        return 0
    # where to evaluate; where to write; first N test images; the first stored form tried
    opts = {"--device": "cpu", "--dest": None, "--max-images": None, "--dtype": None}
    while argv[:1] and argv[0] in opts and len(argv) > 1:
        opts[argv[0]], argv = argv[1], argv[2:]
    device, dest = opts["--device"], Path(opts["--dest"]) if opts["--dest"] else None
    max_images = int(opts["--max-images"]) if opts["--max-images"] else None
    print("| name | family | ordering | parameters | epochs | training | valid NLL | test NLL | file | command |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for arg in argv:
        src, _, rest = arg.partition(":")
        name, _, k = rest.partition(":")
        print(bundle(src, name or Path(src).stem, None, int(k or 1), device, dest, max_images, opts["--dtype"]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
