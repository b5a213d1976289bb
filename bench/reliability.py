"""Hostile and broken inputs, tried and counted: how many were handled as specified, per kind.

    python bench/reliability.py                 # table; fuzz 2,000 mutated checkpoints
    python bench/reliability.py --fuzz 20000 --json

Kinds: checkpoints (pickles incl. one that runs code, truncated, random, empty, bad or
missing metadata, unknown family, wrong shapes/dtypes, NaN, future format, several-GB file, header
lies, ...), checkpoint fuzz (mutated bytes of a valid file: loaded or ``CheckpointError``, nothing
else), header fuzz (one value anywhere in the header replaced by a hostile JSON value), images
(non-images, truncated, bombs, 16-bit/palette/RGBA/CMYK/GIF/huge: imported to the same digit),
image fuzz (random small images in random modes and formats), data (missing folders,
truncated/altered files, downloads that break off or are altered, served by a loopback server;
nothing half-written kept, a retry succeeds) and training faults (NaN/inf loss, CUDA out of memory,
full disk, read-only folder, SIGKILL mid-save, resume equivalence), and the families of issue 30
run as their tests: outputs (a symlink's target replaced, /dev/null and FIFOs written, folders
whole or untouched, leftovers of killed writes removed), caches (altered or hostile caches
recomputed), results (huge weights, NaN on a probe batch, non-finite figures refused) and bounded
work (overlapping tensor offsets, header and metadata sizes, images per coded bit, gzip bombs,
nonsense sizes and seeds on the command line, eval --record). "Handled" means exactly what
the tests in tests/engine/ assert; the failures are listed by name. Also prints a few figures: the
parse-cache load time of all 70k images, the peak memory of importing a 64-megapixel image, and the
longest gap between training progress events (how long a stop request can wait).
"""

from __future__ import annotations

import argparse
import errno
import gzip
import io
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import engine.data as data  # noqa: E402
from engine.checkpoint import CheckpointError, load_checkpoint  # noqa: E402
from engine.data import DataError, content_checksum, load_split  # noqa: E402
from engine.images import ImageError, import_image  # noqa: E402
from engine.models import build_model  # noqa: E402
from engine.ordering import make_ordering  # noqa: E402
from engine.train import BatchEnd, EpochEnd, TrainConfig, train  # noqa: E402
from tests.engine.hostile import amat_bytes, checkpoint_cases, image_cases, serve  # noqa: E402
from tests.engine.test_fuzz_checkpoint import GOOD, HLEN, mutate  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "binarized_mnist"


class Tally:
    def __init__(self) -> None:
        self.kinds: dict[str, dict] = {}

    def record(self, kind: str, name: str, ok: bool, detail: str = "") -> None:
        k = self.kinds.setdefault(kind, {"tried": 0, "handled": 0, "failures": []})
        k["tried"] += 1
        k["handled"] += bool(ok)
        if not ok:
            k["failures"].append(f"{name}: {detail}"[:300])


def expect_error(fn, exc_type, pattern: str, path: str | None = None) -> tuple[bool, str]:
    try:
        fn()
    except exc_type as exc:
        msg = str(exc)
        ok = re.search(pattern, msg) is not None and (path is None or path in msg) and "\n" not in msg
        return ok, msg
    except Exception as exc:  # noqa: BLE001 - counting anything unexpected is the point
        return False, f"{type(exc).__name__}: {exc}"
    return False, "no error"


# ---------------------------------------------------------------------------------- kinds
def run_checkpoints(t: Tally, d: Path) -> None:
    marker = d / "code-ran.marker"
    for c in checkpoint_cases(d, marker):
        if c.expect is None:
            try:
                ok, detail = load_checkpoint(c.path).model.family == "made", ""
            except Exception as exc:  # noqa: BLE001
                ok, detail = False, repr(exc)
        else:
            ok, detail = expect_error(lambda path=c.path: load_checkpoint(path), CheckpointError, c.expect, str(c.path))
        t.record("checkpoints", c.name, ok and not marker.exists(), detail)


def run_fuzz(t: Tally, d: Path, n: int) -> None:
    rng = random.Random(0)
    p = d / "fuzz.safetensors"
    for i in range(n):
        header_only = rng.random() < 0.7
        ops = [(rng.choice(["flip", "set", "delete", "insert"] + ([] if header_only else ["truncate"])),
                rng.randrange(8 + HLEN if header_only else len(GOOD)), rng.randrange(256)) for _ in range(rng.randint(1, 6))]
        p.write_bytes(mutate(GOOD, ops))
        try:
            load_checkpoint(p)
            ok, detail = True, ""
        except CheckpointError:
            ok, detail = True, ""
        except Exception as exc:  # noqa: BLE001
            ok, detail = False, f"{type(exc).__name__}: {exc} after {ops}"
        t.record("checkpoint fuzz", f"mutation {i}", ok, detail)


def _hostile_value(rng: random.Random, depth: int = 0):
    choices = [
        lambda: None, lambda: True, lambda: -1, lambda: 0, lambda: 2**70, lambda: 1e308, lambda: float("nan"),
        lambda: "F32", lambda: "x" * rng.randrange(0, 50), lambda: [rng.randrange(-5, 10**7) for _ in range(rng.randrange(4))],
    ]
    if depth < 2:
        choices += [
            lambda: [_hostile_value(rng, depth + 1) for _ in range(rng.randrange(4))],
            lambda: {str(rng.randrange(5)): _hostile_value(rng, depth + 1) for _ in range(rng.randrange(4))},
        ]
    return rng.choice(choices)()


def run_structured_fuzz(t: Tally, d: Path, n: int) -> None:
    """Replace one value anywhere in the header (tensor descriptions, metadata, the pixelchain JSON)."""
    from tests.engine.hostile import st_bytes
    from tests.engine.test_fuzz_checkpoint import DATA, HEADER

    rng = random.Random(1)
    p = d / "structured.safetensors"
    for i in range(n):
        h = json.loads(json.dumps(HEADER))
        info = json.loads(h["__metadata__"]["pixelchain"])
        where = rng.choice(["tensor", "metadata", "info", "config", "ordering"])
        if where == "tensor":
            name = rng.choice([k for k in h if k != "__metadata__"])
            if rng.random() < 0.3:
                h[name] = _hostile_value(rng)
            else:
                h[name][rng.choice(["dtype", "shape", "data_offsets", "extra"])] = _hostile_value(rng)
        elif where == "metadata":
            h["__metadata__"][rng.choice(["format", "format_version", "pixelchain", "other"])] = _hostile_value(rng)
        else:
            target = info if where == "info" else info[where]
            key = rng.choice(list(target) + ["new"])
            target[key] = _hostile_value(rng)
            h["__metadata__"]["pixelchain"] = json.dumps(info)
        p.write_bytes(st_bytes(h, DATA))
        try:
            load_checkpoint(p)
            ok, detail = True, ""
        except CheckpointError:
            ok, detail = True, ""
        except Exception as exc:  # noqa: BLE001
            ok, detail = False, f"{type(exc).__name__}: {exc} ({where})"
        t.record("header fuzz", f"header {i}", ok, detail)


def run_images(t: Tally, d: Path, huge: int) -> None:
    cases = image_cases(d, huge=huge)
    ref = import_image(d / "ref.png")
    for c in cases:
        if c.expect is not None:
            ok, detail = expect_error(lambda path=c.path: import_image(path), ImageError, c.expect, str(c.path))
        else:
            try:
                x = import_image(c.path)
                good = x.shape == (28, 28) and set(np.unique(x)) <= {0, 1}
                if c.check is not None:
                    good = good and bool(c.check(x))
                else:
                    good = good and (x & ref).sum() / max(1, (x | ref).sum()) > 0.75
                ok, detail = good, "" if good else "a different digit"
            except Exception as exc:  # noqa: BLE001
                ok, detail = False, repr(exc)
        t.record("images", c.name, ok, detail)


def run_image_fuzz(t: Tally, d: Path, n: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    forms = {"L": ["PNG", "BMP", "GIF", "TIFF"], "RGB": ["PNG", "JPEG", "TIFF"], "RGBA": ["PNG"], "P": ["PNG", "GIF"],
             "1": ["PNG", "BMP"], "I;16": ["PNG"], "LA": ["PNG"], "CMYK": ["JPEG", "TIFF"]}
    for i in range(n):
        mode = list(forms)[rng.integers(len(forms))]
        fmt = forms[mode][rng.integers(len(forms[mode]))]
        arr = rng.integers(0, 256, (int(rng.integers(1, 50)), int(rng.integers(1, 50))), dtype=np.uint8)
        if rng.random() < 0.5:
            arr = np.where(arr > 200, 0, 255).astype(np.uint8)  # sparse dark "ink"
        img = Image.fromarray(arr.astype(np.uint16) * 257) if mode == "I;16" else Image.fromarray(arr)
        if mode not in ("L", "I;16"):
            img = img.convert(mode)
        p = d / f"fuzz.{fmt.lower()}"
        buf = io.BytesIO()
        img.save(buf, format=fmt)
        p.write_bytes(buf.getvalue())
        try:
            x = import_image(p)
            ok, detail = x.shape == (28, 28) and set(np.unique(x)) <= {0, 1}, ""
        except Exception as exc:  # noqa: BLE001
            ok, detail = False, f"{mode} {fmt} {arr.shape}: {exc!r}"
        t.record("image fuzz", f"image {i}", ok, detail)


def run_data(t: Tally, d: Path) -> None:
    rng = np.random.default_rng(0)
    fake = {s: (rng.random((n, 784)) < 0.15).astype(np.uint8) for s, n in (("train", 30), ("valid", 20), ("test", 10))}
    saved = dict(data.SPLIT_SIZES), dict(data.CHECKSUMS), dict(os.environ)
    name = "binarized_mnist_test.amat"
    try:
        for s, x in fake.items():
            data.SPLIT_SIZES[s], data.CHECKSUMS[s] = len(x), content_checksum(x)
        os.environ.pop("PIXELCHAIN_DATA", None)
        cache = d / "cache"
        os.environ["PIXELCHAIN_CACHE"] = str(cache)

        def clean() -> bool:
            return not cache.exists() or not [p for p in cache.rglob("*") if p.name.startswith(".") or p.name == name]

        def folder(tag: str, content: bytes, fname: str = name) -> Path:
            f = d / tag
            f.mkdir()
            (f / fname).write_bytes(content)
            return f

        altered = fake["test"].copy()
        altered[2, 300] ^= 1
        local = [
            ("missing data folder", lambda: load_split("test", d / "nope"), "does not exist"),
            ("folder without the files", lambda: load_split("test", folder("empty", b"", "other.txt")), "has no"),
            ("truncated file (cut mid-line)", lambda: load_split("test", folder("cut", amat_bytes(fake["test"])[:5000])),
             "malformed or truncated"),
            ("truncated file (whole lines missing)", lambda: load_split("test", folder("short", amat_bytes(fake["test"][:6]))),
             "holds 6 images"),
            ("altered file (checksum)", lambda: load_split("test", folder("altered", amat_bytes(altered))), "does not match"),
            ("values other than 0/1", lambda: load_split("test", folder("digits", amat_bytes(fake["test"] * 2))), "other than 0 and 1"),
            ("truncated .gz", lambda: load_split("test", folder("gz", gzip.compress(amat_bytes(fake["test"]))[:200], name + ".gz")),
             "cannot read"),
            ("empty file", lambda: load_split("test", folder("zero", b"")), "holds no images"),
        ]
        os.environ["PIXELCHAIN_DATA"] = str(d / "gone")
        local.append(("PIXELCHAIN_DATA missing", lambda: load_split("test"), "PIXELCHAIN_DATA"))
        for label, fn, pat in local:
            ok, detail = expect_error(fn, DataError, pat)
            t.record("data", label, ok, detail)
        os.environ.pop("PIXELCHAIN_DATA")
        body = amat_bytes(fake["test"])
        remote = [
            ("download breaks off half-way", {name: body}, len(body) // 2, "broke off|cannot download"),
            ("download altered (checksum)", {name: amat_bytes(altered)}, None, "does not match"),
            ("download truncated", {name: amat_bytes(fake["test"][:4])}, None, "not the test split"),
            ("download is an HTML page", {name: b"<html>moved</html>"}, None, "not the test split"),
            ("download 404", {}, None, "cannot download"),
        ]
        for label, files, drop, pat in remote:
            with serve(files, drop_after=drop) as url:
                os.environ["PIXELCHAIN_DATA_URL"] = url
                ok, detail = expect_error(lambda: load_split("test"), DataError, pat)
            t.record("data", label, ok and clean(), detail if ok else detail + " (or a file was left)")
        import pytest

        from tests.engine.test_data import test_disk_full_during_a_download

        with pytest.MonkeyPatch.context() as mp:
            try:
                test_disk_full_during_a_download(fake, mp)  # uses the fake split set above
                ok, detail = True, ""
            except Exception as exc:  # noqa: BLE001
                ok, detail = False, repr(exc)
        t.record("data", "disk full during a download", ok and clean(), detail)
        os.environ["PIXELCHAIN_DATA_URL"] = "http://127.0.0.1:9/"
        ok, detail = expect_error(lambda: load_split("test"), DataError, "cannot download")
        t.record("data", "connection refused", ok and clean(), detail)
        with serve({name: body}) as url:
            os.environ["PIXELCHAIN_DATA_URL"] = url
            try:
                ok = np.array_equal(load_split("test"), fake["test"])
                detail = ""
            except Exception as exc:  # noqa: BLE001
                ok, detail = False, repr(exc)
        t.record("data", "retry after the failures succeeds", ok, detail)
    finally:
        data.SPLIT_SIZES.clear()
        data.SPLIT_SIZES.update(saved[0])
        data.CHECKSUMS.clear()
        data.CHECKSUMS.update(saved[1])
        os.environ.clear()
        os.environ.update(saved[2])


def run_training(t: Tally, d: Path, kills: int) -> None:
    """The training-fault tests of tests/engine, run as they are (pass = handled), plus SIGKILLs."""
    import pytest

    from tests.engine import test_checkpoint as tc
    from tests.engine import test_reliability_kill as tk
    from tests.engine import test_train as tt

    faults = [
        ("NaN loss", lambda mp, tmp: tt.test_nan_or_inf_loss_stops_and_keeps_the_last_good_checkpoint(tmp, mp, float("nan"))),
        ("infinite loss", lambda mp, tmp: tt.test_nan_or_inf_loss_stops_and_keeps_the_last_good_checkpoint(tmp, mp, float("inf"))),
        ("CUDA OOM in the forward pass", lambda mp, tmp: tt.test_cuda_out_of_memory_names_the_batch_size(tmp, mp, "loss")),
        ("CUDA OOM in backward", lambda mp, tmp: tt.test_cuda_out_of_memory_names_the_batch_size(tmp, mp, "backward")),
        ("CUDA OOM in validation", lambda mp, tmp: tt.test_cuda_out_of_memory_names_the_batch_size(tmp, mp, "validation")),
        ("disk full while training saves", lambda mp, tmp: tt.test_full_disk_during_training_keeps_the_previous_checkpoint(tmp, mp)),
        ("disk full during a save", lambda mp, tmp: tc.test_failed_save_keeps_the_previous_file(tmp, mp, "fsync", errno.ENOSPC)),
        ("read-only file system at the rename",
         lambda mp, tmp: tc.test_failed_save_keeps_the_previous_file(tmp, mp, "replace", errno.EROFS)),
        ("output folder not writable", lambda mp, tmp: tc.test_failed_save_keeps_the_previous_file(tmp, mp, "mkstemp", errno.EACCES)),
        ("stop mid-epoch (generator closed)", lambda mp, tmp: tt.test_closing_the_generator_stops_at_once(tmp, mp)),
        ("resume = uninterrupted run (MADE, random masks)",
         lambda mp, tmp: tt.test_resume_after_an_interruption_repeats_an_uninterrupted_run(tmp, "made-agnostic", {})),
        ("resume = uninterrupted run (NADE)",
         lambda mp, tmp: tt.test_resume_after_an_interruption_repeats_an_uninterrupted_run(tmp, "nade", {})),
        ("resume/output-folder errors", lambda mp, tmp: tt.test_resume_errors(tmp)),
    ]
    for i, (label, fn) in enumerate(faults):
        tmp = d / f"fault{i}"
        tmp.mkdir()
        with pytest.MonkeyPatch.context() as mp:
            try:
                fn(mp, tmp)
                ok, detail = True, ""
            except BaseException as exc:  # noqa: BLE001 - an assertion or a crash: not handled
                if isinstance(exc, KeyboardInterrupt):
                    raise
                ok, detail = False, f"{type(exc).__name__}: {exc}"
        t.record("training faults", label, ok, detail)
    # SIGKILL while saving in a loop: one forked saver per kill
    path = d / "killed.safetensors"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    rng = random.Random(2)
    proc = subprocess.Popen([sys.executable, "-c", tk.CHILD, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=env, cwd=ROOT)
    try:
        for k in range(kills):
            try:
                target, held = tk.kill_one_saver(proc, path, rng, max_sleep=0.05)
                ok, detail = True, ""
            except Exception as exc:  # noqa: BLE001 - an unloadable file or a mismatch
                ok, detail = False, repr(exc)
            t.record("training faults", f"SIGKILL during save #{k + 1}", ok, detail)
        from engine.atomic import temporary_files
        from engine.checkpoint import save_checkpoint

        try:  # the killed saves' temporary files go with the next save, however young they are
            save_checkpoint(path, load_checkpoint(path).model)
            ok, detail = temporary_files(path) == [], ""
        except Exception as exc:  # noqa: BLE001
            ok, detail = False, repr(exc)
        t.record("outputs", "leftovers of the SIGKILLed saves removed by the next save", ok, detail)
    finally:
        proc.kill()
        proc.wait(10)
        proc.stdin.close()
        proc.stdout.close()


# --------------------------------------------------------------------------------- figures
def figures(d: Path, huge_path: Path | None) -> dict:
    out: dict = {}
    if SHARED.is_dir():
        env = dict(os.environ)
        os.environ["PIXELCHAIN_CACHE"] = str(d / "figcache")
        try:
            t0 = time.perf_counter()
            data.load_splits(SHARED)
            out["first load of 70k images (parse + verify + cache), s"] = round(time.perf_counter() - t0, 3)
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                data.load_splits(SHARED)
                times.append(time.perf_counter() - t0)
            out["cached load of 70k images (median of 5), s"] = round(float(np.median(times)), 4)
        finally:
            os.environ.clear()
            os.environ.update(env)
    for path in (huge_path, huge_path.with_suffix(".jpg")) if huge_path is not None else ():
        if not path.is_file():
            continue
        # peak resident memory (VmHWM) reset just before the import: what the import itself needs
        code = (
            "import sys; from engine.images import import_image\n"
            "hwm = lambda: int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])\n"
            "rss = lambda: int(next(l for l in open('/proc/self/status') if l.startswith('VmRSS')).split()[1])\n"
            "open('/proc/self/clear_refs', 'w').write('5'); b = rss(); x = import_image(sys.argv[1]); print(b, hwm())"
        )
        r = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                           env=dict(os.environ, PYTHONPATH=str(ROOT)))
        if r.returncode == 0:
            before, peak = map(int, r.stdout.split())
            from PIL import Image

            with Image.open(path) as im:
                w, h, fmt = *im.size, im.format
            out[f"peak extra memory importing a {w}x{h} {fmt} ({w * h / 1e6:.0f} Mpx), MiB"] = round((peak - before) / 1024, 1)
    # how long can a stop request wait? the gap between progress events of a real-size model
    torch.manual_seed(0)
    m = build_model("made", {"hidden": (500,)}, make_ordering("raster"))
    rng = np.random.default_rng(0)
    tx, vx = (rng.random((2000, 784)) < 0.13).astype(np.uint8), (rng.random((10000, 784)) < 0.13).astype(np.uint8)
    gaps, last, val_gap = [], time.perf_counter(), 0.0
    for ev in train(m, tx, vx, TrainConfig(epochs=1, batch_size=100, device="cpu")):
        now = time.perf_counter()
        (gaps.append if isinstance(ev, BatchEnd) else lambda g: None)(now - last)
        if isinstance(ev, EpochEnd):
            val_gap = now - last
        last = now
    out["MADE 500 on CPU: longest gap between batch events, ms"] = round(1000 * max(gaps), 1)
    out["MADE 500 on CPU: gap over validation of 10k images, ms"] = round(1000 * val_gap, 1)
    return out


#: the families of issue 30, as the tests that assert them: (kind, test file, -k expression)
TEST_FAMILIES = [
    ("outputs", "tests/engine/test_atomic.py", ""),
    ("outputs", "tests/engine/test_compress.py", "decompress_into_a_folder"),
    ("caches", "tests/engine/test_data.py", "parse_cache"),
    ("caches", "tests/engine/test_score.py", "cache"),
    ("results", "tests/engine/test_checkpoint.py", "nan or probe or non_finite or huge"),
    ("results", "tests/engine/test_score.py", "non_finite"),
    ("bounded work", "tests/engine/test_checkpoint.py", "overlapping or many_tensors or metadata_sizes or nonsense or record"),
    ("bounded work", "tests/engine/test_compress.py", "small_file or encoder_never or corrupt"),
    ("bounded work", "tests/engine/test_data.py", "gzip"),
]


def run_test_families(t: Tally, d: Path) -> None:
    """Outputs (symlinks, devices, FIFOs, folders, leftovers of killed writes), verified caches,
    non-finite results and bounded work: each test case of these families is one case here (run by
    pytest in a child process, read back from its JUnit XML report)."""
    import xml.etree.ElementTree as ET

    for i, (kind, path, expr) in enumerate(TEST_FAMILIES):
        report = d / f"family{i}.xml"
        cmd = [sys.executable, "-m", "pytest", str(ROOT / path), "-q", "-p", "no:cacheprovider", f"--junitxml={report}"]
        subprocess.run(cmd + (["-k", expr] if expr else []), cwd=ROOT, capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
        if not report.is_file():
            t.record(kind, f"{path} -k {expr!r}", False, "pytest wrote no report")
            continue
        for case in ET.parse(report).iter("testcase"):
            bad = case.find("failure")
            if bad is None:
                bad = case.find("error")
            detail = "" if bad is None else (bad.get("message") or "")[:200]
            t.record(kind, case.get("name", "?"), bad is None, detail)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fuzz", type=int, default=2000, help="mutated checkpoints to try")
    ap.add_argument("--image-fuzz", type=int, default=300, help="random small images to try")
    ap.add_argument("--kills", type=int, default=10, help="SIGKILLs during saves")
    ap.add_argument("--huge", type=int, default=8000, help="side of the huge valid test image (8000: 64 megapixels)")
    ap.add_argument("--no-figures", action="store_true")
    ap.add_argument("--no-tests", action="store_true", help="skip the families run as their tests (outputs, caches, results, "
                                                              "bounded work)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    t = Tally()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pixelchain-reliability-") as tmp:
        d = Path(tmp)
        for sub in ("ck", "fuzz", "img", "imgfuzz", "data", "train"):
            (d / sub).mkdir()
        run_checkpoints(t, d / "ck")
        run_fuzz(t, d / "fuzz", a.fuzz)
        run_structured_fuzz(t, d / "fuzz", a.fuzz // 2)
        run_images(t, d / "img", a.huge)
        run_image_fuzz(t, d / "imgfuzz", a.image_fuzz)
        run_data(t, d / "data")
        run_training(t, d / "train", a.kills)
        if not a.no_tests:
            run_test_families(t, d)
        figs = {} if a.no_figures else figures(d, d / "img" / "huge.png")
    seconds = time.perf_counter() - t0
    if a.json:
        print(json.dumps({"kinds": t.kinds, "figures": figs, "seconds": round(seconds, 1)}, indent=2))
    else:
        print(f"{'kind':<18} {'tried':>6} {'handled as specified':>21}")
        for kind, k in t.kinds.items():
            print(f"{kind:<18} {k['tried']:>6} {k['handled']:>21}")
        total = sum(k["tried"] for k in t.kinds.values()), sum(k["handled"] for k in t.kinds.values())
        print(f"{'total':<18} {total[0]:>6} {total[1]:>21}")
        for kind, k in t.kinds.items():
            for f in k["failures"][:10]:
                print(f"  NOT HANDLED ({kind}) {f}")
        for name, v in figs.items():
            print(f"{name}: {v}")
        print(f"({seconds:.0f} s)")
    return 0 if all(k["handled"] == k["tried"] for k in t.kinds.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
