"""Stroke -> class bar chart latency of a class-conditional model (issue 28, item 6).

    python bench/class_latency.py [--model CKPT] [--repeats 7] [--no-gui] [--json]

Everything the app computes after a stroke of a conditional model comes from one batched pass of
the canvas under all C classes (:func:`engine.class_figures.class_pass`, run by
:func:`app.jobs.figures_job`): the marginal conditionals of the heatmaps, p(y | drawn prefix) for
the bar chart and the per-class log-probabilities of the evidence map. The script times, on ONE
torch thread (the app's compute worker uses one), for a test digit drawn stroke by stroke:

* ``app pass``: :func:`app.jobs.figures_job` with the marginal (what a stroke costs), and with a
  picked class;
* what it replaces: ``model.logits(x)`` for the marginal heatmaps plus ``class_log_posterior`` for
  the bar chart, two separate passes over the classes;
* the pieces: ``class_log_probs`` alone (the batched pass) and one class's ``logits`` (1/C of it);
* unless ``--no-gui``: the real window offscreen, from the end of a stroke to the bar chart updated
  (``FiguresController.last_latency``, the heatmaps and the bar chart arrive together), with the
  percentile's background measurement of the test digits stopped.

Default model: a gated PixelCNN of the lead's size (32 channels, 8 layers, head 64, 256 levels,
10 classes) with random weights, which time like trained ones. Target: < 150 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("OMP_NUM_THREADS", "1")
SHARED = ROOT.parent / "shared" / "data"
if "PIXELCHAIN_DATA" not in os.environ and SHARED.is_dir():
    os.environ["PIXELCHAIN_DATA"] = str(SHARED)

import numpy as np  # noqa: E402
import torch  # noqa: E402

LEAD = {"channels": 32, "layers": 8, "head": 64, "levels": 256, "output": "categorical", "classes": 10}


def lead_model():
    from engine.models import build_model

    torch.manual_seed(0)
    m = build_model("pixelcnn", LEAD)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.startswith("class_"):
                p.normal_(0, 0.1)  # zero at the start: make the classes differ
    return m.eval()


def strokes(levels: int, n: int = 6) -> list[np.ndarray]:
    """A test digit drawn in ``n`` strokes, top to bottom (rows of the digit appear in turn), at
    ``levels``; a synthetic '7' when the data is not there."""
    try:
        from engine.datasets import load_dataset

        digit = load_dataset("mnist", "test", levels=levels)[0].reshape(28, 28)
    except Exception:  # noqa: BLE001 -- no data: a drawn seven
        digit = np.zeros((28, 28), np.float32)
        digit[6:8, 6:22] = levels - 1
        for r in range(8, 24):
            digit[r, 21 - (r - 8) // 2: 23 - (r - 8) // 2] = levels - 1
    rows = np.flatnonzero(digit.any(1))
    cuts = np.linspace(rows[0], rows[-1] + 1, n + 1).astype(int)[1:]
    out = []
    for cut in cuts:
        img = np.zeros_like(digit)
        img[:cut] = digit[:cut]
        out.append(img.reshape(-1).astype(np.float32))
    return out


def timed(fn, images, repeats: int) -> float:
    """Median milliseconds of ``fn(image)`` over the strokes, ``repeats`` times each (one warm-up)."""
    fn(images[0])
    times = []
    for _ in range(repeats):
        for img in images:
            t = time.perf_counter()
            fn(img)
            times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def engine_figures(model, repeats: int) -> dict:
    from app.jobs import figures_job

    order = model.ordering
    images = strokes(model.levels)
    c = model.classes

    @torch.no_grad()
    def two_passes(img):
        x = torch.as_tensor(img)[None]
        model.logits(x, order)
        from engine.class_figures import drawn_prefix

        model.class_log_posterior(x, order, upto=drawn_prefix(img, order))

    @torch.no_grad()
    def batched(img):
        model.class_log_probs(torch.as_tensor(img)[None], order)

    @torch.no_grad()
    def one_class(img):
        model.logits(torch.as_tensor(img)[None], order, y=3)

    return {
        "app pass, marginal heatmaps (figures_job)": timed(lambda img: figures_job(None, model, img, order, None), images, repeats),
        "app pass, heatmaps given y = 3": timed(lambda img: figures_job(None, model, img, order, 3), images, repeats),
        "separate passes: logits(x) + class_log_posterior": timed(two_passes, images, repeats),
        f"class_log_probs alone ({c} classes batched)": timed(batched, images, repeats),
        "logits of one class": timed(one_class, images, repeats),
    }


def gui_latency(model, n_strokes: int) -> dict:
    """The real window: mouse-up of a stroke to the bar chart showing that canvas."""
    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    from app.main_window import MainWindow
    from engine.checkpoint import save_checkpoint

    app = QApplication.instance() or QApplication([])
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        save_checkpoint(folder / "cond.safetensors", model, {"name": "cond", "metrics": {"test_nll": 1.0}})
        os.environ["PIXELCHAIN_SETTINGS"] = str(folder / "settings.ini")
        win = MainWindow(bundled=folder)
        win.resize(1600, 1000)
        win.show()

        def wait(cond, seconds=60.0) -> bool:
            loop = QEventLoop()
            timer = QTimer()
            timer.timeout.connect(lambda: loop.quit() if cond() else None)
            timer.start(2)
            QTimer.singleShot(int(seconds * 1000), loop.quit)
            loop.exec()
            timer.stop()
            return bool(cond())

        win.checkpoints.start_default()
        wait(lambda: win.state.model is not None and win.state.figures is not None and not win.live.pending)
        # the percentile's measurement of the 10,000 test digits (ten classes each, minutes of CPU) would
        # otherwise share the cores with every stroke: stopped, so the figure is the stroke's own
        win.live.reference_requests.cancel()
        st = win.state
        lat = []
        rng = np.random.default_rng(0)
        for _ in range(n_strokes):
            r0, c0 = int(rng.integers(4, 24)), int(rng.integers(4, 24))
            st.begin_stroke()
            prev = None
            for k in range(6):
                pt = (min(27, r0 + k), min(27, c0 + k // 2))
                st.paint(*pt, 1, from_point=prev)
                prev = pt
                app.processEvents()
            st.end_stroke()
            version = st.session.version
            ok = wait(lambda: win.classes.shown_serial == st.figures_serial and st.figures is not None
                      and np.array_equal(st.figures.extra["image"], st.session.flat()) and not win.live.pending)
            if ok and win.live.last_latency is not None and st.session.version == version:
                lat.append(1000 * win.live.last_latency)
        win.close()
        app.processEvents()
    return {"stroke -> bar chart on screen (window, median)": statistics.median(lat) if lat else float("nan"),
            "stroke -> bar chart on screen (window, worst)": max(lat) if lat else float("nan"), "strokes": len(lat)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="a conditional checkpoint (default: the lead's size, random weights)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--strokes", type=int, default=12, help="strokes drawn in the window")
    ap.add_argument("--no-gui", action="store_true", help="the engine passes only")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    if a.model:
        from engine.checkpoint import load_checkpoint

        model = load_checkpoint(Path(a.model), device="cpu").model.eval()
    else:
        model = lead_model()
    if not model.classes:
        sys.exit("class_latency: the model is not class-conditional")
    out = {"model": a.model or "pixelcnn 32ch x 8 layers, head 64, 256 levels, 10 classes (random weights)",
           "torch threads": torch.get_num_threads(), "load average (1 min) at the start": os.getloadavg()[0]}
    out.update(engine_figures(model, a.repeats))
    if not a.no_gui:
        out.update(gui_latency(model, a.strokes))
    if a.json:
        print(json.dumps(out, indent=1))
        return
    for k, v in out.items():
        print(f"{k:58s} {v:8.1f} ms" if isinstance(v, float) and "load" not in k else f"{k:58s} {v}")


if __name__ == "__main__":
    main()
