"""Recover the digit label of every image of the static binarized MNIST split.

    python scripts/recover_labels.py [--data ../shared/data] [--threads 1] [--out resources/labels/binarized_mnist_labels.bin]
                                     [--report report.md] [--matches matches.npz]

Each binarized image is a Bernoulli sample of one MNIST image (a pixel is 1 with probability
grey/255), so its label is the label of the MNIST image under which it is most likely:

    log p(b | g) = sum_i b_i log p_i + (1 - b_i) log(1 - p_i),   p_i = clip(g_i / 255, eps, 1 - eps)
                 = b . (log p - log(1 - p)) + sum_i log(1 - p_i)

one matrix product per chunk of binarized images (float32), against the 10,000 MNIST test images
for the binarized test split and against all 60,000 MNIST training images for the binarized train
and valid splits (they come from MNIST's training images, in another order). The few best
candidates of each image are then scored again in float64, and the margin (best minus second best
log-likelihood, nats) is reported. An image whose margin is under ``--ambiguous`` nats is listed
with how its label is decided: all candidates within the margin carry the same label (the label is
not in doubt), or they differ (the best one's label is taken, and the case is reported as such).

Writes one uint8 label per image, train then valid then test (70,000 bytes), and prints a Markdown
report (also to ``--report``) with the file's sha256, which ``engine/labels.py`` records.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine import data as binarized  # noqa: E402
from engine import mnist  # noqa: E402
from engine.atomic import atomic_write  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data"
DEFAULT_OUT = ROOT / "resources" / "labels" / "binarized_mnist_labels.bin"
#: which MNIST images each binarized split is matched against
SOURCE = {"train": "train", "valid": "train", "test": "test"}


def bernoulli_terms(grey: np.ndarray, eps: float, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """``(W, c)`` with ``log p(b | g_m) = b @ W[:, m] + c[m]`` for the (M, 784) grey images ``g``."""
    p = np.clip(grey.astype(np.float64) / 255.0, eps, 1.0 - eps)
    w = np.log(p) - np.log1p(-p)
    c = np.log1p(-p).sum(axis=1)
    return torch.from_numpy(w.T.copy()).to(dtype), torch.from_numpy(c).to(dtype)


def exact_loglik(b: np.ndarray, grey: np.ndarray, eps: float) -> np.ndarray:
    """log p(b | g) in float64 for matching rows of ``b`` (K, 784) and ``grey`` (K, 784)."""
    p = np.clip(grey.astype(np.float64) / 255.0, eps, 1.0 - eps)
    return np.where(b.astype(bool), np.log(p), np.log1p(-p)).sum(axis=1)


def best_matches(b: np.ndarray, grey: np.ndarray, grey_labels: np.ndarray, eps: float, top: int = 5, chunk: int = 500,
                 progress: bool = False) -> dict[str, np.ndarray]:
    """For each binarized image: the ``top`` most likely grey images, best first (``index`` (N, top)
    and float64 ``loglik`` (N, top): candidates found in float32, re-scored exactly), and the exact
    log-likelihood of the most likely grey image of each digit (``class_loglik`` (N, 10))."""
    w, c = bernoulli_terms(grey, eps)
    by_class = [np.flatnonzero(grey_labels == d) for d in range(10)]
    n = len(b)
    idx = np.empty((n, top), dtype=np.int64)
    ll = np.empty((n, top), dtype=np.float64)
    class_ll = np.full((n, 10), -np.inf)
    t0 = time.perf_counter()
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        rows = np.arange(start, stop)
        scores = torch.from_numpy(b[start:stop]).to(torch.float32) @ w + c
        cand = torch.topk(scores, top, dim=1).indices.numpy()
        exact = exact_loglik(b[np.repeat(rows, top)], grey[cand.ravel()], eps).reshape(stop - start, top)
        order = np.argsort(-exact, axis=1, kind="stable")
        idx[start:stop] = np.take_along_axis(cand, order, axis=1)
        ll[start:stop] = np.take_along_axis(exact, order, axis=1)
        for d, members in enumerate(by_class):
            if len(members):
                best = members[scores[:, torch.from_numpy(members)].argmax(dim=1).numpy()]
                class_ll[start:stop, d] = exact_loglik(b[start:stop], grey[best], eps)
        if progress and (stop == n or (start // chunk) % 10 == 9):
            print(f"  {stop:,}/{n:,} images, {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return {"index": idx, "loglik": ll, "class_loglik": class_ll}


def recover(b: np.ndarray, grey: np.ndarray, grey_labels: np.ndarray, eps: float, ambiguous: float,
            **kw) -> dict:
    """Labels of the binarized images ``b`` and what the report needs.

    ``margin``: best minus second-best MNIST image (nats); ``label_margin``: best image minus the
    best image of any other digit, the margin that decides the label. An image whose ``margin`` is
    under ``ambiguous`` is a case; its label is in doubt only if its ``label_margin`` is too."""
    m = best_matches(b, grey, grey_labels, eps, **kw)
    idx, ll = m["index"], m["loglik"]
    labels = grey_labels[idx[:, 0]].astype(np.uint8)
    others = m["class_loglik"].copy()
    others[np.arange(len(b)), labels] = -np.inf
    label_margin = ll[:, 0] - others.max(axis=1)
    margin = ll[:, 0] - ll[:, 1]
    cases = []
    for i in np.flatnonzero(margin < ambiguous):
        close = ll[i, 0] - ll[i] < ambiguous  # candidates within the threshold of the best
        cases.append({
            "image": int(i), "candidates": [int(j) for j in idx[i, close]],
            "labels": [int(grey_labels[j]) for j in idx[i, close]],
            "gaps": [round(float(ll[i, 0] - v), 3) for v in ll[i, close]],
            "label": int(labels[i]), "label_margin": float(label_margin[i]),
            "resolution": ("same label" if label_margin[i] >= ambiguous
                           else "labels differ: the best match's label taken"),
        })
    return {"labels": labels, "index": idx[:, 0], "loglik": ll[:, 0], "margin": margin, "label_margin": label_margin,
            "cases": cases}


def report(results: dict[str, dict], grey_labels: dict[str, np.ndarray], eps: float, ambiguous: float, sha: str,
           seconds: float, out: Path) -> str:
    """The Markdown report: margins, one-to-one checks, label counts, every ambiguous case."""
    lines = [f"Recovered with eps = {eps:g} and an ambiguity threshold of {ambiguous:g} nats, in {seconds:.0f} s.", "",
             "Margins in nats: *image margin* = log-likelihood of the best MNIST image minus the second best; "
             "*label margin* = the best minus the best MNIST image of another digit (what decides the label).", "",
             "| split | images | matched against | image margin: min | 1% | median | mean | label margin: min | median | "
             f"image margin < {ambiguous:g} | label margin < {ambiguous:g} | MNIST images matched twice |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for split, r in results.items():
        m, lm = r["margin"], r["label_margin"]
        counts = np.bincount(r["index"])
        lines.append(
            f"| {split} | {len(m):,} | MNIST {SOURCE[split]} ({len(grey_labels[SOURCE[split]]):,}) | {m.min():.2f} | "
            f"{np.percentile(m, 1):.1f} | {np.median(m):.1f} | {m.mean():.1f} | {lm.min():.1f} | {np.median(lm):.1f} | "
            f"{len(r['cases']):,} | {int((lm < ambiguous).sum())} | {int((counts > 1).sum())} |")
    lines += ["", "One to one?"]
    if "test" in results and len(results["test"]["index"]) == len(grey_labels["test"]):
        order = np.argsort(grey_labels["test"], kind="stable")  # MNIST test, ordered by class
        same = int((results["test"]["index"] == order).sum())
        lines.append(f"- test: the best match of binarized test image i is the i-th MNIST test image in class order for "
                     f"{same:,} of {len(order):,} images; the binarized test split is MNIST's test set sorted by digit.")
    parts = [s for s in ("train", "valid") if s in results]
    if parts:
        joint = np.concatenate([results[s]["index"] for s in parts])
        joint_labels = np.concatenate([results[s]["labels"] for s in parts])
        equal = np.array_equal(np.bincount(joint_labels, minlength=10), np.bincount(grey_labels["train"], minlength=10))
        lines.append(f"- {' + '.join(parts)}: {len(joint):,} images matched {len(np.unique(joint)):,} distinct MNIST "
                     f"training images; recovered label counts {'equal' if equal else 'differ from'} MNIST's training label counts.")
        for s in parts:
            ix = results[s]["index"]
            lines.append(f"- binarized {s}: {int((ix < 50_000).sum()):,} matched among MNIST's first 50,000 training images "
                         f"(the grey train split), {int((ix >= 50_000).sum()):,} among its last 10,000 (the grey valid split).")
    lines += ["", "Recovered label counts, digits 0-9:"]
    for split, r in results.items():
        lines.append(f"- {split}: {' '.join(str(int(v)) for v in np.bincount(r['labels'], minlength=10))}")
    lines += ["", f"Ambiguous images (image margin < {ambiguous:g} nats), by recovered digit:"]
    for split, r in results.items():
        by_digit = np.bincount([c["label"] for c in r["cases"]], minlength=10) if r["cases"] else np.zeros(10, int)
        lines.append(f"- {split}: {' '.join(str(int(v)) for v in by_digit)} (total {len(r['cases']):,})")
    lines += ["", f"Cases whose label is in doubt (label margin < {ambiguous:g} nats): candidates within the threshold, "
                  "their labels and gaps to the best, and the decision:"]
    doubt = [(split, c) for split, r in results.items() for c in r["cases"] if c["resolution"] != "same label"]
    doubt += [(split, {"image": int(i), "label": int(r["labels"][i]), "label_margin": float(r["label_margin"][i]),
                       "candidates": [int(r["index"][i])], "labels": [int(r["labels"][i])], "gaps": [0.0],
                       "resolution": "labels differ: the best match's label taken"})
              for split, r in results.items()
              for i in np.flatnonzero((r["label_margin"] < ambiguous) & (r["margin"] >= ambiguous))]
    for split, c in doubt:
        lines.append(f"- {split} image {c['image']}: MNIST {SOURCE[split]} images {c['candidates']}, labels {c['labels']}, "
                     f"gaps {c['gaps']} nats, label margin {c['label_margin']:.2f} -> label {c['label']} ({c['resolution']})")
    if not doubt:
        lines.append("- none: for every ambiguous image all MNIST images within the threshold carry the same digit")
    lines += ["", "Every ambiguous image (binarized index: best MNIST index, gap to the runner-up in nats); each is "
                  "resolved as stated above:"]
    for split, r in results.items():
        lines.append(f"- {split} ({len(r['cases']):,}): " + ", ".join(
            f"{c['image']}:{c['candidates'][0]}/{c['gaps'][1] if len(c['gaps']) > 1 else 0:.1f}" for c in r["cases"]))
    lines += ["", f"Label file: {out.name}, {sum(len(r['labels']) for r in results.values()):,} bytes, sha256 {sha}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder holding binarized_mnist/ and mnist/")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--report", type=Path, help="also write the Markdown report here")
    ap.add_argument("--matches", type=Path, help="save the best MNIST index, log-likelihood and margin of every image (.npz)")
    ap.add_argument("--eps", type=float, default=1e-3, help="probabilities are clipped to [eps, 1 - eps]")
    ap.add_argument("--ambiguous", type=float, default=10.0, help="margins under this many nats are reported")
    ap.add_argument("--chunk", type=int, default=500)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--splits", default="train,valid,test")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    splits = [s for s in args.splits.split(",") if s]
    t0 = time.perf_counter()
    grey = {"train": mnist.load_file("train-images", args.data).reshape(-1, 784),
            "test": mnist.load_file("test-images", args.data).reshape(-1, 784)}
    grey_labels = {"train": mnist.load_file("train-labels", args.data), "test": mnist.load_file("test-labels", args.data)}
    bin_dir = args.data / "binarized_mnist" if (args.data / "binarized_mnist").is_dir() else args.data
    results = {}
    for split in splits:
        b = binarized.load_split(split, bin_dir)
        print(f"{split}: {len(b):,} binarized images against {len(grey[SOURCE[split]]):,} MNIST {SOURCE[split]} images",
              file=sys.stderr)
        results[split] = recover(b, grey[SOURCE[split]], grey_labels[SOURCE[split]], args.eps, args.ambiguous,
                                 chunk=args.chunk, progress=True)
    seconds = time.perf_counter() - t0
    blob = b"".join(results[s]["labels"].tobytes() for s in splits)
    sha = hashlib.sha256(blob).hexdigest()
    if splits == list(binarized.SPLITS):
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(args.out, blob)
    else:
        print("not all splits recovered: the label file is left as it is", file=sys.stderr)
    if args.matches:
        keys = ("index", "loglik", "margin", "label_margin", "labels")
        np.savez(args.matches, **{f"{s}_{k}": results[s][k] for s in splits for k in keys})
    text = report(results, grey_labels, args.eps, args.ambiguous, sha, seconds, args.out)
    print(text)
    if args.report:
        args.report.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
