"""Command-line front ends of compression, scoring and measured inpainting.

    pixelchain compress CKPT IMAGE_OR_SPLIT... --out FILE [--max-images N] [--ordering O]
    pixelchain decompress CKPT FILE --out DIR | FILE.npy | FILE.png
    pixelchain score CKPT IMAGE... [--json]
    pixelchain inpaint-eval CKPT --region {top,bottom,left,right,centre,random50} [--max-images N] [--json]

:func:`add_parsers` registers the subcommands on :mod:`engine.cli.commands`'s parser; each sets ``handler``.
"""

from __future__ import annotations

import argparse
import json
import stat
import time
from pathlib import Path

import numpy as np

from ..atomic import atomic_file, atomic_folder, atomic_write, check_folder_target
from .options import DATA_HELP, MAX_BATCH, SEED, CommandError, Progress, add_command, bounded_int, positive_int

__all__ = ["add_parsers", "load_images", "load_named_images"]


def add_parsers(sub: argparse._SubParsersAction) -> None:
    from ..tasks.inpaint_eval import REGIONS

    c = add_command(sub, "compress", "losslessly compress images with a model (entropy coding)", """\
Arithmetic coding with the model's conditionals: an image costs about -log2 p(x) bits. The
file records the checkpoint's fingerprint, the ordering and the pixel levels; decompress needs the
same checkpoint. A grey model (K > 2 levels) codes grey pictures; the output compares each
coded size with the same image as a lossless PNG.""",
                    compute=True)
    c.add_argument("checkpoint", help="a .safetensors checkpoint")
    c.add_argument("sources", nargs="+", metavar="IMAGE_OR_SPLIT",
                   help="image files (binary model: a 28x28 one is coded as it is, only thresholded; any other size is "
                        "scaled and centred like MNIST; grey model: a 28x28 grey picture, intensity i at level "
                        "floor(i*K/256)), .npy arrays of 0/1 images (of levels 0..K-1 for a grey model), or a split "
                        "name (test, valid, train) of the checkpoint's data set")
    c.add_argument("--out", required=True, help="compressed file to write")
    c.add_argument("--max-images", type=positive_int, default=None, metavar="N", help="use only the first N images of a split or .npy")
    c.add_argument("--ordering", default=None, help="code in another ordering (order-agnostic models; stored in the file)")
    c.add_argument("--chunk-size", type=bounded_int(1, 65_536), default=500, metavar="N",
                   help="images per coder stream and stepper batch (default: %(default)s)")
    c.add_argument("--data", default=None, metavar="DIR", help=DATA_HELP)
    c.add_argument("--json", action="store_true", help="print one JSON object")
    c.set_defaults(handler=_cmd_compress)

    d = add_command(sub, "decompress", "decode a file made by `pixelchain compress` with the same checkpoint", """\
Refuses a file made with another checkpoint (its fingerprint differs). PNGs are written in
--ink: a 28x28 PNG compressed as it was comes back pixel for pixel in its own ink. Grey images
(K levels) are written as 8-bit grey PNGs, level v at intensity round(v*255/(K-1)).""", compute=True)
    d.add_argument("checkpoint", help="the checkpoint the file was compressed with")
    d.add_argument("file", help="the compressed file")
    d.add_argument("--out", required=True, help="a folder (one PNG per image), a .npy file, or a .png (one image or a grid)")
    d.add_argument("--ink", default="white", choices=["white", "black"],
                   help="PNGs: white ink on black, MNIST's convention and that of 0/1 arrays (a pixel of value 1 is 255), "
                        "or black ink on white, as drawings and the app's exports are (default: %(default)s)")
    d.set_defaults(handler=_cmd_decompress)

    s = add_command(sub, "score", "how digit-like: log-likelihood percentile and likelihood ratio", """\
For each image: log p(x) and its percentile among the test digits, and the likelihood ratio
against a pixel-independent background model fitted on the training split, with its percentile.""",
                    compute=True)
    s.add_argument("checkpoint", help="a .safetensors checkpoint")
    s.add_argument("images", nargs="+", help="image files or .npy arrays")
    s.add_argument("--data", default=None, metavar="DIR", help=DATA_HELP)
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(handler=_cmd_score)

    i = add_command(sub, "inpaint-eval", "conditional NLL of a hidden region given the rest of each image of a split", """\
-log p(hidden region | the rest of the image), exact where the model and its ordering allow it,
else estimated by sequential Monte Carlo or importance sampling (the report says which).""",
                    compute=True)
    i.add_argument("checkpoint", help="a .safetensors checkpoint")
    i.add_argument("--region", required=True, choices=list(REGIONS), help="the pixels hidden: a half of the image, "
                   "the centre, or a random 50%% of the pixels (drawn with --seed)")
    i.add_argument("--max-images", type=int, default=None, metavar="N",
                   help="use N images: the first N, or a random N with --random-subset (default: all)")
    i.add_argument("--random-subset", action="store_true",
                   help="draw the --max-images images at random (with --seed): the splits are sorted by digit class")
    i.add_argument("--samples", type=int, default=64, metavar="N",
                   help="particles / importance samples per image where the exact method is not available (default: %(default)s)")
    i.add_argument("--method", default="auto", choices=["auto", "exact", "smc", "importance", "ignore-later"],
                   help="auto: exact where the model allows it, else sequential Monte Carlo (importance sampling with "
                        "resampling) where its sampler can reorder particles, else plain importance sampling")
    i.add_argument("--seed", type=SEED, default=0,
                   help="seed of the samples, --random-subset and the random50 region (default: %(default)s)")
    i.add_argument("--batch-size", type=bounded_int(1, MAX_BATCH), default=500, metavar="N", help="images per batch (default: %(default)s)")
    i.add_argument("--split", default="test", choices=["train", "valid", "test"], help="the split to measure (default: %(default)s)")
    i.add_argument("--data", default=None, metavar="DIR", help=DATA_HELP)
    i.add_argument("--json", action="store_true", help="print one JSON object")
    i.set_defaults(handler=_cmd_inpaint_eval)


def load_images(sources: list[str], data: str | None = None, max_images: int | None = None, levels: int = 2,
                dataset: str | None = None) -> np.ndarray:
    """(N, 28, 28) uint8 images from image files, .npy arrays and split names, in order: 0/1
    images, or levels 0 .. ``levels``-1 for a grey model (see :func:`load_named_images`)."""
    return load_named_images(sources, data, max_images, levels, dataset)[0]


def import_grey(path: str | Path, levels: int) -> np.ndarray:
    """A 28x28 grey picture as (28, 28) uint8 levels ``0 .. levels-1``, pixel for pixel: the ink is
    detected as :func:`engine.images.import_image` detects it (light ink on dark is kept, dark ink
    on light paper inverted) and intensity i becomes level ``floor(i * K / 256)``, as the grey data
    set is quantised, so a PNG written by ``decompress`` (level v at ``round(v * 255 / (K - 1))``)
    comes back as the levels it holds. Other sizes are refused: coding a grey picture is lossless,
    and scaling one would change its pixels. The file is checked as the binary importer checks it
    (a regular file, the formats it allows), and its size is read from the header before decoding."""
    from PIL import Image, UnidentifiedImageError

    from ..images import IMAGE_FORMATS, ImageError, _to_gray, open_regular
    from ..mnist import quantize

    path = Path(path)
    try:
        with open_regular(path) as f, Image.open(f, formats=IMAGE_FORMATS) as img:
            if img.size != (28, 28):
                raise ImageError(f"{path} is {img.size[0]}x{img.size[1]} pixels: a grey model codes a 28x28 picture pixel for "
                                 f"pixel (scale it to 28x28 first)")
            if getattr(img, "n_frames", 1) > 1:
                img.seek(0)  # animations: the first frame
            img.load()
            gray = _to_gray(img)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:  # pillow refuses an absurd size from the header, before our check
        raise ImageError(f"{path} was refused as a decompression bomb: {exc}") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path} is not an image pillow can read") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageError(f"{path} is damaged or truncated: {exc}") from None
    return quantize(np.rint(np.clip(gray, 0.0, 1.0) * 255).astype(np.uint8), levels)


def load_named_images(sources: list[str], data: str | None = None, max_images: int | None = None, levels: int = 2,
                      dataset: str | None = None) -> tuple[np.ndarray, list[str]]:
    """The images of :func:`load_images` and a name for each (``file`` or ``file[k]``).

    ``levels`` K > 2 (a grey model's): image files are read by :func:`import_grey` and ``.npy``
    arrays must hold levels ``0 .. K-1``. A split name reads ``dataset`` (a checkpoint's, from
    :func:`engine.datasets.dataset_of`) at ``levels``; without it a binary model's splits are
    binarized MNIST's, as they have always been, and a grey model's those of MNIST."""
    from ..data import SPLITS, load_split
    from ..datasets import load_dataset
    from ..images import import_image, load_npy

    out, names = [], []
    for src in sources:
        p = Path(src)
        if src in SPLITS and not p.exists():
            if dataset is None and levels == 2:
                a = load_split(src, data)
            else:
                a = load_dataset(dataset or "mnist", src, data, levels)
            a = a[:max_images] if max_images else a
        elif p.suffix.lower() == ".npy":
            a = load_npy(p)  # a strict header check; only regular files
            if a.ndim == 2 and a.shape == (28, 28):
                a = a[None]
            if a.ndim == 2 and a.shape[1] == 784:
                a = a.reshape(-1, 28, 28)
            if a.ndim != 3 or a.shape[1:] != (28, 28):
                raise CommandError(f"{p} holds an array of shape {a.shape}; expected (N, 784), (N, 28, 28) or (28, 28)")
            if levels == 2 and a.size and not np.isin(a, (0, 1)).all():
                raise CommandError(f"{p} holds values other than 0 and 1")
            if levels > 2 and a.size and not np.isin(a, np.arange(levels)).all():
                raise CommandError(f"{p} holds values other than the levels 0 to {levels - 1} of this {levels}-level model")
            a = a[:max_images] if max_images else a
        elif levels > 2:
            a = import_grey(p, levels)[None]
        else:
            a = import_image(p)[None]
        a = np.asarray(a, dtype=np.uint8).reshape(-1, 28, 28)
        out.append(a)
        names += [src] if len(a) == 1 and src not in SPLITS else [f"{src}[{k}]" for k in range(len(a))]
    return (np.concatenate(out) if out else np.zeros((0, 28, 28), np.uint8)), names


def _cmd_compress(a: argparse.Namespace) -> int:
    from ..checkpoint import load_checkpoint
    from ..datasets import dataset_of
    from ..ordering import parse_ordering
    from ..tasks.compress import Codec, png_size_bytes, read_container_header

    ck = load_checkpoint(a.checkpoint)
    c = ck.model.config
    levels = ck.model.levels
    ordering = parse_ordering(a.ordering, c.height, c.width) if a.ordering else None
    x = load_images(a.sources, a.data, a.max_images, levels, dataset_of(ck.meta))
    if len(x) == 0:
        raise CommandError("no images to compress")
    codec = Codec(ck.model, ordering, a.chunk_size)
    t0 = time.perf_counter()
    progress = Progress("compress")
    data, ideal = codec.encode_detailed(x, progress)
    progress.close()
    secs = time.perf_counter() - t0
    atomic_write(a.out, data)
    info = read_container_header(data)
    pngs = [png_size_bytes(im, levels) for im in x]
    png = float(np.mean(pngs))
    res = {
        "checkpoint": a.checkpoint, "out": a.out, "n_images": int(len(x)), "levels": levels, "file_bytes": len(data),
        "bits_per_image": 8 * len(data) / len(x),
        "payload_bits_per_image": 32 * sum(w for _, w in info.chunks) / len(x),
        "ideal_bits_per_image": float(ideal.mean()), "png_bytes": int(sum(pngs)), "png_bytes_per_image": png, "seconds": secs,
    }
    if a.json:
        print(json.dumps(res))
    else:
        kind = "a 1-bit PNG" if levels == 2 else "an 8-bit grey PNG"
        print(f"compressed {len(x)} images into {a.out}: {len(data)} bytes, {res['bits_per_image']:.2f} bits per image "
              f"(ideal -log2 p(x) {res['ideal_bits_per_image']:.2f}; {kind} is {png * 8:.0f} bits) in {secs:.2f}s")
        if levels > 2:  # the lossless PNG of the same images, next to the coded size
            print(f"the same {'digit as a lossless 8-bit grey PNG' if len(x) == 1 else f'{len(x)} digits as lossless 8-bit grey PNGs'}"
                  f": {int(sum(pngs))} bytes; coded: {len(data)} bytes "
                  f"({len(data) / max(1, sum(pngs)):.1%} of the PNG size)")
    return 0


def _cmd_decompress(a: argparse.Namespace) -> int:
    from ..checkpoint import load_checkpoint
    from ..images import save_grid, save_png
    from ..tasks.compress import decompress

    ck = load_checkpoint(a.checkpoint)
    try:
        data = Path(a.file).read_bytes()
    except OSError as exc:
        raise CommandError(f"cannot read {a.file}: {exc.strerror or exc}") from None
    out = Path(a.out)
    try:  # a character device or FIFO (--out /dev/null, a pipe) takes the .npy stream
        stream = stat.S_ISCHR(out.stat().st_mode) or stat.S_ISFIFO(out.stat().st_mode)
    except OSError:
        stream = False
    as_folder = out.suffix.lower() not in (".npy", ".png") and not stream
    if as_folder:  # refused before decoding: a folder must be new or empty, to hold exactly this result
        out.parent.mkdir(parents=True, exist_ok=True)
        check_folder_target(out)
    x = decompress(ck.model, data)
    grey = {"levels": ck.model.levels} if ck.model.levels > 2 else {}  # 8-bit grey PNGs; a binary model's as before
    if out.suffix.lower() == ".npy" or stream:
        with atomic_file(out) as f:
            np.save(f, x, allow_pickle=False)
    elif out.suffix.lower() == ".png":
        save_png(x[0], out, ink=a.ink, **grey) if len(x) == 1 else save_grid(x, out, scale=1, ink=a.ink, **grey)
    else:
        with atomic_folder(out) as tmp:  # the folder appears whole, or not at all
            for k, im in enumerate(x):
                save_png(im, tmp / f"image_{k:05d}.png", ink=a.ink, **grey)
    print(f"decoded {len(x)} images into {out}")
    return 0


def _cmd_score(a: argparse.Namespace) -> int:
    from ..checkpoint import load_checkpoint
    from ..datasets import dataset_of
    from ..tasks.score import Scorer

    ck = load_checkpoint(a.checkpoint)
    dataset = dataset_of(ck.meta)
    # a bad file is reported before the reference is measured
    x, names = load_named_images(a.images, a.data, levels=ck.model.levels, dataset=dataset)
    scorer = Scorer.for_model(ck.model, data_dir=a.data, dataset=dataset)
    results = scorer.score(x)
    rows = [dict(image=name, **r.to_dict()) for name, r in zip(names, results, strict=True)]
    if a.json:
        print(json.dumps({"checkpoint": a.checkpoint, "reference": scorer.reference_info(), "images": rows}))
    else:
        for r in rows:
            print(f"{r['image']}: log p {r['log_prob_nats']:.1f} nats ({r['bits']:.0f} bits), percentile {r['percentile']:.1f} of "
                  f"test digits; likelihood ratio vs pixel-independent background {r['llr_nats']:+.1f} nats "
                  f"(percentile {r['llr_percentile']:.1f})")
    return 0


def _cmd_inpaint_eval(a: argparse.Namespace) -> int:
    from ..checkpoint import load_checkpoint
    from ..data import subset
    from ..datasets import dataset_of, load_dataset
    from ..tasks.inpaint_eval import evaluate_inpainting, region_mask

    ck = load_checkpoint(a.checkpoint)
    c = ck.model.config
    x = load_dataset(dataset_of(ck.meta), a.split, a.data, ck.model.levels)  # the data set the model was trained on
    x, drawn = subset(x, a.max_images, a.random_subset, a.seed)
    hidden = region_mask(a.region, c.height, c.width, seed=a.seed)
    t0 = time.perf_counter()
    progress = Progress(f"inpaint-eval {a.split}, region {a.region}")
    r = evaluate_inpainting(ck.model, x, hidden, method=a.method, samples=a.samples, seed=a.seed, batch_size=a.batch_size,
                            progress=progress)
    progress.close()
    if not np.isfinite(r.nll):  # a figure, never NaN
        raise CommandError(f"the conditional NLL of {a.checkpoint} is not finite ({r.nll}); the model computes NaN or infinity here")
    res = dict(checkpoint=a.checkpoint, region=a.region, split=a.split, **r.to_dict(), seconds=time.perf_counter() - t0,
               subset=("random" if drawn is not None else "first") if a.max_images else "all",
               classes=ck.model.classes)  # > 0: of the marginal p(x) = sum_y p(y) p(x | y)
    if a.json:
        print(json.dumps(res))
    else:
        how = "" if r.exact else " (an estimate, not exact)"  # an exact method's name says so already
        print(f"{ck.model.family} ({ck.model.ordering.label}), region {a.region} ({r.hidden_pixels} hidden pixels): "
              f"conditional NLL {r.nll:.3f} ± {r.stderr:.3f} nats per image ({r.nll / r.hidden_pixels:.4f} nats per hidden pixel) "
              f"over {r.n_images} {'randomly drawn ' if drawn is not None else ''}images\nmethod: {r.method}{how}: {r.note}"
              + (f"; mean effective sample size {r.mean_ess:.1f} of {r.samples}" if r.mean_ess is not None else ""))
        if ck.model.classes:
            print(f"(a class-conditional model: the conditional of its marginal p(x) = sum_y p(y) p(x | y) over its "
                  f"{ck.model.classes} classes)")
    return 0
