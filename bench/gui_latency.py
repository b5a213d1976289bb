"""GUI responsiveness of the app, per model: stroke-to-heatmap latency and GUI-thread stalls.

    python bench/gui_latency.py [--models A.safetensors ...] [--strokes 20] [--json]

For every model (default: the bundled checkpoints in resources/checkpoints, else runs/*.safetensors)
the script opens the real main window offscreen and

* draws ``--strokes`` mouse strokes on the canvas and times each from the mouse release to the
  end of the heatmaps' repaint with the new data (the "forward" column is the model's pass alone);
* measures the longest stall of the GUI thread with a 5 ms heartbeat timer while a batch of 16
  samples is generated at full speed (stopped after ``--sample-seconds``), and while a short training run of the same family goes on
  (``--train-seconds``, then stopped).

Targets: heatmaps within 30 ms for binary FVSBN, NADE and MADE and 150 ms for the deep
families and every grey model (a whole 256-way conditional per pixel); no GUI stall over 50 ms.
Figures depend on the machine and its load: run it on an idle one.
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
SHARED = ROOT.parent / "shared" / "data" / "binarized_mnist"
if "PIXELCHAIN_DATA" not in os.environ and SHARED.is_dir():
    os.environ["PIXELCHAIN_DATA"] = str(SHARED)

FAST = {"fvsbn", "nade", "made", "mlp"}

from PySide6.QtCore import QEvent, QObject  # noqa: E402 -- after QT_QPA_PLATFORM is set


class Heartbeat:
    """A 5 ms timer on the GUI thread; the longest gap between ticks past 5 ms is a stall."""

    def __init__(self, interval_ms: int = 5):
        from PySide6.QtCore import QTimer

        self.interval = interval_ms / 1000
        self.timer = QTimer()
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self._tick)
        self.last = None
        self.worst = 0.0

    def _tick(self) -> None:
        now = time.perf_counter()
        if self.last is not None:
            self.worst = max(self.worst, now - self.last - self.interval)
        self.last = now

    def start(self) -> None:
        self.last, self.worst = None, 0.0
        self.timer.start()

    def stop(self) -> float:
        self.timer.stop()
        return self.worst


class PaintSpy(QObject):
    """Records when a widget has been painted (the end of its paint event)."""

    def __init__(self, out: list):
        super().__init__()
        self.out = out

    def eventFilter(self, obj, ev) -> bool:
        if ev.type() == QEvent.Type.Paint:
            obj.removeEventFilter(self)
            try:
                obj.event(ev)  # paint now, then note the time
            finally:
                obj.installEventFilter(self)
            self.out.append(time.perf_counter())
            return True
        return False


def wait(app, cond, timeout: float) -> bool:
    end = time.perf_counter() + timeout
    while not cond():
        if time.perf_counter() > end:
            return False
        app.processEvents()
        time.sleep(0.001)
    return True


def bench_model(app, win, path: Path, strokes: int, train_seconds: float, sample_seconds_max: float) -> dict:
    from PySide6.QtCore import Qt
    from PySide6.QtTest import QTest

    shown = []
    win.figuresShown.connect(lambda: shown.append(1))
    win.checkpoints.open_checkpoint(path, "bundled")
    if not wait(app, lambda: win.entry is not None and Path(win.entry.path) == path and win.figures is not None, 120):
        raise RuntimeError(f"{path} did not open")
    # the percentile's scoring of test digits is start-up work; stop it so it does not compete
    win.live.ref_worker.cancel_all()
    wait(app, lambda: not win.live.pending and not win.trainer.busy and not win.live.ref_worker.busy, 120)
    cv = win.canvas
    lat, comp = [], []
    painted: list[float] = []
    spy = PaintSpy(painted)
    win.heatmaps.viewport().installEventFilter(spy)
    for k in range(strokes):
        r = 4 + (k * 5) % 20
        pts = [(r, 6), (r, 12), (r + 3, 18)]
        n = len(shown)
        win.live.last_latency = None
        QTest.mousePress(cv, Qt.LeftButton if k % 4 else Qt.RightButton, Qt.NoModifier, cv.pixel_center(*pts[0]).toPoint())
        for p in pts[1:]:
            QTest.mouseMove(cv, cv.pixel_center(*p).toPoint())
        t_release = time.perf_counter()
        QTest.mouseRelease(cv, Qt.LeftButton if k % 4 else Qt.RightButton, Qt.NoModifier, cv.pixel_center(*pts[-1]).toPoint())
        if not wait(app, lambda n=n: win.live.last_latency is not None and len(shown) > n, 30):
            raise RuntimeError("heatmaps did not update")
        painted.clear()
        wait(app, lambda: bool(painted), 5)  # the heatmaps' repaint with the new data
        lat.append((painted[0] - t_release) * 1000 if painted else float("nan"))
        comp.append(win.figures.extra.get("seconds", float("nan")) * 1000)
    # sampling stall
    hb = Heartbeat()
    done = []
    win.runFinished.connect(done.append)
    win.sampling.set_count(16)
    win.sampling.speed.setValue(win.sampling.speed.maximum())
    hb.start()
    t0 = time.perf_counter()
    win.runs.start_run("sample")
    finished = wait(app, lambda: bool(done), sample_seconds_max)
    sample_seconds = time.perf_counter() - t0
    if not finished:
        win.state.stop_run()
        wait(app, lambda: bool(done), 60)
    sample_stall = hb.stop() * 1000
    pixels_done = win.sampling.progress.value()
    # training stall
    panel = win.training
    trains = getattr(win.model, "models", [win.model])[0]  # an ensemble: its first member's family
    panel.family.setCurrentIndex(panel.family.findData(trains.family))
    panel.epochs.setValue(100)
    panel.max_train.setValue(5000)
    panel.max_valid.setValue(1000)
    hb.start()
    panel.start()
    t0 = time.perf_counter()
    wait(app, lambda: time.perf_counter() - t0 > train_seconds, train_seconds + 5)
    ts = time.perf_counter()
    panel.stop()
    wait(app, lambda: not panel.running, 60)
    stop_seconds = time.perf_counter() - ts
    train_stall = hb.stop() * 1000
    fam = win.model.family
    return {
        "model": win.entry.name, "family": fam, "path": str(path),
        "heatmap_ms_median": statistics.median(lat), "heatmap_ms_max": max(lat),
        "heatmap_target_ms": 30 if fam in FAST and win.model.levels == 2 else 150, "forward_ms_median": statistics.median(comp),
        "sample16_seconds": sample_seconds if finished else None, "sample16_pixels_done": pixels_done, "stall_sampling_ms": sample_stall,
        "stall_training_ms": train_stall, "training_stop_seconds": stop_seconds,
    }


def print_row(r: dict) -> None:
    samples = f"{r['sample16_seconds']:>10.1f} s" if r["sample16_seconds"] is not None else f"{r['sample16_pixels_done']:>7}/784 px"
    print(f"{r['model'][:21]:<22}{r['family']:<8}{r['heatmap_ms_median']:>11.1f} / {r['heatmap_ms_max']:<9.1f}"
          f"{r['forward_ms_median']:>7.1f}ms{r['heatmap_target_ms']:>6}"
          f"{r['stall_sampling_ms']:>13.1f} ms{r['stall_training_ms']:>13.1f} ms{r['training_stop_seconds']:>8.2f}"
          + samples, flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=None)
    ap.add_argument("--strokes", type=int, default=20)
    ap.add_argument("--train-seconds", type=float, default=4.0)
    ap.add_argument("--sample-seconds", type=float, default=20.0, help="stop a sampling run after this long")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    threads = torch.get_num_threads()
    tmp = tempfile.mkdtemp(prefix="pixelchain-bench-")
    os.environ["PIXELCHAIN_SETTINGS"] = str(Path(tmp) / "settings.ini")
    paths = [Path(p) for p in a.models] if a.models else sorted((ROOT / "resources" / "checkpoints").glob("*.safetensors"))
    if not paths:
        paths = [p for p in sorted((ROOT / "runs").glob("*.safetensors")) if ".resume." not in p.name]
    if not paths:
        print("no checkpoints to measure (bundle some or pass --models)", file=sys.stderr)
        return 2
    from app.main import make_app
    from app.main_window import MainWindow

    app = make_app()
    rows = []
    if not a.json:
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; torch threads for training {threads}"
              f" (1 for the app's other workers); stroke -> heatmap over {a.strokes} strokes; stalls with a 5 ms heartbeat")
        print(f"{'model':<22}{'family':<8}{'heatmap median/max ms':>23}{'forward':>9}{'target':>8}"
              f"{'sampling stall':>16}{'training stall':>16}{'stop s':>8}{'16 samples':>12}", flush=True)
    for p in paths:
        win = MainWindow(bundled=ROOT / "resources" / "checkpoints")
        win.resize(1600, 1000)
        win.show()
        try:
            rows.append(bench_model(app, win, p.resolve(), a.strokes, a.train_seconds, a.sample_seconds))
            if not a.json:
                print_row(rows[-1])
        finally:
            win.close()
            win.deleteLater()
            app.processEvents()
    if a.json:
        print(json.dumps({"torch_threads_training": threads, "load_average": os.getloadavg(), "results": rows}, indent=2))
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
