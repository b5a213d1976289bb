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


def best_matches(b: np.ndarray, grey: np.ndarray, eps: float, top: int = 5, chunk: int = 500,
                 progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The ``top`` most likely grey images for each binarized image, best first: indices (N, top) and
    float64 log-likelihoods (N, top), the candidates found in float32 and re-scored exactly."""
    w, c = bernoulli_terms(grey, eps)
    n = len(b)
    idx = np.empty((n, top), dtype=np.int64)
    ll = np.empty((n, top), dtype=np.float64)
    t0 = time.perf_counter()
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        scores = torch.from_numpy(b[start:stop]).to(torch.float32) @ w + c
        cand = torch.topk(scores, top, dim=1).indices.numpy()
        rows = np.repeat(np.arange(start, stop), top)
        exact = exact_loglik(b[rows], grey[cand.ravel()], eps).reshape(stop - start, top)
        order = np.argsort(-exact, axis=1, kind="stable")
        idx[start:stop] = np.take_along_axis(cand, order, axis=1)
        ll[start:stop] = np.take_along_axis(exact, order, axis=1)
        if progress:
            secs = time.perf_counter() - t0
            if stop == n or (start // chunk) % 10 == 9:
                print(f"  {stop:,}/{n:,} images, {secs:.0f} s", file=sys.stderr, flush=True)
    return idx, ll


def recover(b: np.ndarray, grey: np.ndarray, grey_labels: np.ndarray, eps: float, ambiguous: float,
            **kw) -> dict:
    """Labels of the binarized images ``b`` and what the report needs."""
    idx, ll = best_matches(b, grey, eps, **kw)
    margin = ll[:, 0] - ll[:, 1]
    labels = grey_labels[idx[:, 0]].astype(np.uint8)
    cases = []
    for i in np.flatnonzero(margin < ambiguous):
        close = ll[i, 0] - ll[i] < ambiguous  # every candidate within the threshold of the best
        cand_labels = sorted({int(grey_labels[j]) for j in idx[i, close]})
        cases.append({
            "image": int(i), "candidates": [int(j) for j in idx[i, close]],
            "labels": [int(grey_labels[j]) for j in idx[i, close]],
            "gaps": [round(float(ll[i, 0] - v), 3) for v in ll[i, close]],
            "label": int(labels[i]),
            "resolution": "same label" if len(cand_labels) == 1 else "labels differ: the best match's label taken",
        })
    return {"labels": labels, "index": idx[:, 0], "loglik": ll[:, 0], "margin": margin, "cases": cases}


def report(results: dict[str, dict], grey_labels: dict[str, np.ndarray], eps: float, ambiguous: float, sha: str,
           seconds: float, out: Path) -> str:
    lines = [f"Recovered with eps = {eps:g}, ambiguity threshold {ambiguous:g} nats, in {seconds:.0f} s.", "",
             "| split | images | matched against | margin min | 1% | median | mean | ambiguous | labels differ | "
             "MNIST images matched twice |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for split, r in results.items():
        m = r["margin"]
        counts = np.bincount(r["index"])
        lines.append(
            f"| {split} | {len(m):,} | MNIST {SOURCE[split]} ({len(grey_labels[SOURCE[split]]):,}) | {m.min():.2f} | "
            f"{np.percentile(m, 1):.1f} | {np.median(m):.1f} | {m.mean():.1f} | {len(r['cases'])} | "
            f"{sum(c['resolution'] != 'same label' for c in r['cases'])} | {int((counts > 1).sum())} |")
    # train and valid both come from MNIST's training images: is the union one-to-one?
    parts = [results[s]["index"] for s in ("train", "valid") if s in results]
    if parts:
        joint = np.concatenate(parts)
        lines += ["", f"Binarized train + valid ({len(joint):,} images) matched {len(np.unique(joint)):,} distinct MNIST "
                      f"training images."]
        for s in ("train", "valid"):
            if s in results:
                ix = results[s]["index"]
                lines.append(f"Binarized {s}: {int((ix < 50_000).sum()):,} from MNIST's first 50,000 training images "
                             f"(the grey train split), {int((ix >= 50_000).sum()):,} from its last 10,000 (the grey valid split).")
    lines += ["", "Label counts, digits 0-9:"]
    for split, r in results.items():
        lines.append(f"- {split}: {' '.join(str(int(v)) for v in np.bincount(r['labels'], minlength=10))}")
    lines += ["", "Ambiguous cases (margin under the threshold; candidates within it, their labels and gaps to the best):"]
    any_case = False
    for split, r in results.items():
        for c in r["cases"]:
            any_case = True
            lines.append(f"- {split} image {c['image']}: MNIST {SOURCE[split]} images {c['candidates']}, labels "
                         f"{c['labels']}, gaps {c['gaps']} nats -> label {c['label']} ({c['resolution']})")
    if not any_case:
        lines.append("- none")
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
        np.savez(args.matches, **{f"{s}_{k}": results[s][k] for s in splits for k in ("index", "loglik", "margin", "labels")})
    text = report(results, grey_labels, args.eps, args.ambiguous, sha, seconds, args.out)
    print(text)
    if args.report:
        args.report.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
