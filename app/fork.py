"""A fork in sampling: pause a run, change pixels, and continue both ways (issue 7, part 4).

An autoregressive sample is a chain of draws ``x_{o_t} ~ p(x_{o_t} | x_{o_<t})``. Pausing a run at
step ``t`` and editing a pixel that was already drawn asks "what would the rest have been, had this
pixel come out differently?". To make the two continuations comparable they share their random
numbers (common random numbers): the run draws ``u_t ~ U(0, 1)`` per generated pixel from a seeded
generator and sets ``x = [u_t < p_t]`` (:meth:`engine.models.base.ARModel.sample_steps`); the fork
re-seeds that generator, skips the draws the run already made, and feeds the *same* ``u_t`` to both
continuations. So the unedited continuation is exactly the original run's completion, and the two
differ only where the edit moved a probability across its ``u_t``.

The edited pixels keep their values in the forked continuation. A pixel already drawn comes before
every pending one in the run's ordering, so the fork conditions on it exactly; a pending pixel set
by hand is fixed when the ordering reaches it (it cannot influence pixels drawn before it).

:func:`continue_both` is Qt-free; :class:`ForkController` adds "Fork here" to the sampling panel and
shows both continuations in a :class:`ForkDialog`, animated on its own worker thread.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg
import torch
from PySide6.QtCore import QEvent, QObject, QRectF, Signal
from PySide6.QtWidgets import QDialog, QGraphicsRectItem, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from engine.models.base import ARModel
from engine.ordering import Ordering

from .screen import fitted_size
from .worker import Worker

__all__ = ["ForkPoint", "continue_both", "fork_job", "ForkController", "ForkDialog"]

FRAME_INTERVAL = 1 / 60


@dataclass
class ForkPoint:
    """Where a paused run stood: everything needed to continue it exactly."""

    prefix: np.ndarray  #: (D,) float 0/1: the first image of the run at the pause (pending pixels 0)
    decided: np.ndarray  #: (D,) bool: pixels known from the start or generated so far
    order: Ordering  #: the run's sampling ordering
    draws: int  #: random draws the run has made (one per generated pixel)
    n: int  #: images in the run's batch (each draw is of this size)
    seed: int
    temperature: float


@torch.no_grad()
def continue_both(model: ARModel, fp: ForkPoint, edited: np.ndarray):
    """Generator: continue ``fp.prefix`` (row 0) and ``edited`` (row 1) with shared random numbers.

    Yields ``(done, total, pixel, x)`` after each generated pixel (``x``: (2, D) tensor, shared;
    copy it to keep it) and returns the final (2, D) numpy array."""
    d = model.size
    prefix = torch.as_tensor(np.asarray(fp.prefix, np.float32).reshape(d))
    ed = torch.as_tensor(np.asarray(edited, np.float32).reshape(d))
    changed = (ed != prefix).numpy()
    decided = np.asarray(fp.decided, bool).reshape(d)
    gen = torch.Generator().manual_seed(int(fp.seed))
    for _ in range(fp.draws):  # the draws the run already used
        torch.rand(fp.n, generator=gen)
    x = torch.stack([prefix, ed]).to(model.device)
    x[0, torch.as_tensor(~decided)] = 0.0
    model.eval()
    stepper = model.stepper(x, fp.order)
    total = int((~decided).sum())
    done = 0
    for pixel in fp.order.perm.tolist():
        if decided[pixel]:
            stepper.observe(pixel, x[:, pixel])
            continue
        prob = torch.sigmoid(stepper.logits(pixel).float() / fp.temperature)
        u = torch.rand(fp.n, generator=gen)[0]
        value = (u < prob.cpu()).to(x.dtype).to(x.device)
        if changed[pixel]:
            value[1] = ed[pixel]
        stepper.observe(pixel, value)
        x[:, pixel] = value
        done += 1
        yield done, total, pixel, x
    return x.cpu().numpy().copy()


def fork_job(job, model: ARModel, fp: ForkPoint, edited: np.ndarray):
    """Worker side: yields (done, total, (2, D) images so far) at most ~60 times a second (every
    pixel when slowed down); returns (images (2, D), log p of each in the run's ordering)."""
    gen = continue_both(model, fp, edited)
    last = 0.0
    while True:
        try:
            done, total, _pixel, x = next(gen)
        except StopIteration as stop:
            out = stop.value
            break
        now = time.perf_counter()
        if job.delay > 0 or now - last >= FRAME_INTERVAL or done == total:
            last = now
            yield done, total, x.cpu().numpy().copy()
        else:
            job.check()
    if out is None:  # nothing was left to generate
        out = np.stack([np.asarray(fp.prefix, np.float32), np.asarray(edited, np.float32)])
    with torch.no_grad():
        lp = model.log_prob(torch.as_tensor(out, dtype=torch.float32), fp.order).double().cpu().numpy()
    return out, lp


class ForkDialog(QDialog):
    """The two continuations side by side and where they differ."""

    continueRequested = Signal()
    useRequested = Signal(int)  #: 0: original, 1: forked

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Fork — pixelchain")
        lay = QVBoxLayout(self)
        self.note = QLabel()
        self.note.setWordWrap(True)
        lay.addWidget(self.note)
        self.view = pg.GraphicsLayoutWidget()
        self.view.setBackground("#14171c")
        self.view.setMinimumSize(900, 330)
        self.titles, self.images, self.plots = [], [], []
        for col, title in enumerate(("original continuation", "forked (edited pixels outlined)", "forked − original")):
            self.titles.append(self.view.ci.addLabel(title, row=0, col=col, size="9pt"))
            vb = self.view.ci.addViewBox(row=1, col=col, lockAspect=True, invertY=True, enableMouse=False)
            vb.setMenuEnabled(False)
            img = pg.ImageItem(axisOrder="row-major")
            vb.addItem(img)
            vb.setRange(QRectF(0, 0, 28, 28), padding=0.02)
            self.images.append(img)
            self.plots.append(vb)
        self.images[2].setColorMap(pg.colormap.get("CET-D1"))
        for col in range(3):  # three equal columns, whatever their titles' widths
            self.view.ci.layout.setColumnStretchFactor(col, 1)
            self.view.ci.layout.setColumnPreferredWidth(col, 300)
        lay.addWidget(self.view, 1)
        self.info = QLabel("")
        self.info.setWordWrap(True)
        lay.addWidget(self.info)
        row = QHBoxLayout()
        self.continue_btn = QPushButton("▶  Continue both")
        self.continue_btn.setObjectName("primary")
        self.use_a = QPushButton("Original to canvas")
        self.use_b = QPushButton("Forked to canvas")
        for b in (self.continue_btn, self.use_a, self.use_b):
            row.addWidget(b)
        row.addStretch(1)
        lay.addLayout(row)
        self.continue_btn.clicked.connect(self.continueRequested)
        self.use_a.clicked.connect(lambda: self.useRequested.emit(0))
        self.use_b.clicked.connect(lambda: self.useRequested.emit(1))
        self.resize(*fitted_size(960, 520))
        self._marks: list[QGraphicsRectItem] = []
        self.images_shown: np.ndarray | None = None
        self.set_done(False)

    def set_done(self, done: bool) -> None:
        self.use_a.setEnabled(done)
        self.use_b.setEnabled(done)

    def show_pair(self, x: np.ndarray, pending: np.ndarray, changed: np.ndarray, shape: tuple[int, int]) -> None:
        """Rows of ``x`` as images; ``pending`` pixels grey; ``changed`` outlined on the forked one."""
        h, w = shape
        self.images_shown = np.asarray(x)
        for i in range(2):
            im = np.where(pending, 0.35, x[i]).reshape(h, w).astype(np.float32)
            self.images[i].setImage(im, levels=(0.0, 1.0), autoLevels=False)
        diff = np.where(pending, 0.0, x[1] - x[0]).reshape(h, w).astype(np.float32)
        self.images[2].setImage(diff, levels=(-1.0, 1.0), autoLevels=False)
        for m in self._marks:
            self.plots[1].removeItem(m)
        self._marks = []
        for p in np.flatnonzero(changed):
            r, c = divmod(int(p), w)
            m = QGraphicsRectItem(QRectF(c, r, 1, 1))
            m.setPen(pg.mkPen("#facc15", width=2, cosmetic=True))
            self.plots[1].addItem(m)
            self._marks.append(m)


class ForkController(QObject):
    """Adds "Fork here" to the host's sampling panel and runs the fork (see the module docstring)."""

    forked = Signal()  #: the fork point is on the canvas, ready to edit
    finished = Signal()  #: both continuations are complete

    def __init__(self, host):
        super().__init__(host)
        self.host = host
        self.worker = Worker("fork", self, torch_threads=1)
        self.point: ForkPoint | None = None
        self.result: tuple[np.ndarray, np.ndarray] | None = None
        self._last = None
        self._job = None
        self._await_stop = False
        self.dialog = ForkDialog(host)
        s = host.sampling
        self.button = QPushButton("Fork here")
        self.button.setToolTip("While paused: stop here, put the image so far on the canvas to change pixels, then "
                               "continue both the original and the changed image with the same random numbers")
        ctl = next(s.layout().itemAt(i).layout() for i in range(s.layout().count())
                   if s.layout().itemAt(i).layout() is not None and s.layout().itemAt(i).layout().indexOf(s.stop_btn) >= 0)
        ctl.addWidget(self.button)
        self.button.clicked.connect(self.fork)
        host.sampler.progress.connect(self._on_frame)
        s.pauseToggled.connect(lambda _on: self._sync())
        host.runFinished.connect(self._on_run_finished)
        self.dialog.continueRequested.connect(self.continue_both)
        self.dialog.useRequested.connect(self.use)
        self.worker.progress.connect(self._on_progress)
        self.worker.result.connect(self._on_result)
        self.worker.error.connect(lambda _i, m: self.dialog.note.setText(f"The fork failed: {m}"))
        host.installEventFilter(self)
        self._sync()

    def eventFilter(self, obj: QObject, ev: QEvent) -> bool:
        if obj is self.host and ev.type() == QEvent.Close:
            self.worker.shutdown(600_000)
        return False

    # -- the paused run ------------------------------------------------------------------------
    def _sync(self) -> None:
        run = self.host._run
        self.button.setEnabled(run is not None and run.paused and self._last is not None and self._last[0] == run.id)

    def _on_frame(self, job_id: int, fr: object) -> None:
        run = self.host._run
        if run is not None and job_id == run.id:
            self._last = (job_id, fr)
            self._sync()

    def fork(self) -> None:
        h = self.host
        run = h._run
        if run is None or self._last is None or self._last[0] != run.id:
            return
        fr = self._last[1]
        s = h.sampling
        decided = ~np.asarray(s._unknown, bool)
        decided[fr.order.perm[: fr.step + 1]] = True
        self.point = ForkPoint(prefix=np.asarray(fr.x[0], np.float32).copy(), decided=decided, order=fr.order,
                               draws=fr.index + 1, n=len(fr.x), seed=s.seed.value(), temperature=s.temperature.value())
        self.model = h.model
        self.result = None
        self._await_stop = True
        h.stop_run()

    def _on_run_finished(self, _completed: bool) -> None:
        self._last = None
        self._sync()
        if not self._await_stop or self.point is None:
            return
        self._await_stop = False
        h, fp = self.host, self.point
        shape = (h.session.height, h.session.width)
        h.session.set_canvas(fp.prefix.reshape(shape).astype(np.uint8))
        h.session.set_mask((~fp.decided).reshape(shape), record=False)
        h.canvas_replaced()
        left = int((~fp.decided).sum())
        self.dialog.note.setText(
            f"Paused with {left} pixels to go. Change pixels on the canvas (the masked part is still to be drawn), "
            "then <b>Continue both</b>: the original and the changed image continue with the same random numbers.")
        self.dialog.show_pair(np.stack([fp.prefix, fp.prefix]), ~fp.decided, np.zeros_like(fp.decided), shape)
        self.dialog.info.setText("")
        self.dialog.set_done(False)
        self.dialog.continue_btn.setEnabled(True)
        self.dialog.show()
        h.statusBar().showMessage(f"Forked with {left} pixels to go: change pixels on the canvas, then Continue both", 8000)
        self.forked.emit()

    # -- both continuations --------------------------------------------------------------------
    def continue_both(self) -> None:
        if self.point is None:
            return
        h, fp = self.host, self.point
        self.edited = h.session.flat().copy()
        self.changed = self.edited != fp.prefix
        self.dialog.continue_btn.setEnabled(False)
        self.dialog.set_done(False)
        self._job = self.worker.submit(fork_job, self.model, fp, self.edited)
        self._job.delay = h.sampling.delay()

    def _on_progress(self, _job_id: int, item: object) -> None:
        done, total, x = item  # type: ignore[misc]
        fp = self.point
        pending = ~fp.decided
        todo = fp.order.perm[pending[fp.order.perm]]  # the pixels to draw, in the run's order
        pending[todo[:done]] = False
        self.dialog.show_pair(x, pending, self.changed, (self.host.session.height, self.host.session.width))
        self.dialog.info.setText(f"pixel {done} / {total}")

    def _on_result(self, _job_id: int, value: object) -> None:
        x, lp = value  # type: ignore[misc]
        self.result = (x, lp)
        shape = (self.host.session.height, self.host.session.width)
        self.dialog.show_pair(x, np.zeros(x.shape[1], bool), self.changed, shape)
        drawn = ~self.point.decided & ~self.changed
        differ = int((x[0] != x[1])[drawn].sum())
        self.dialog.info.setText(
            f"original: log p = {lp[0]:.1f} nats · forked: log p = {lp[1]:.1f} nats · "
            f"{int(self.changed.sum())} pixel(s) edited · {differ} of {int(drawn.sum())} newly drawn pixels differ "
            "(<span style='color:#ef4444'>red</span>: ink only in the fork, <span style='color:#3b82f6'>blue</span>: only in the original)")
        self.dialog.set_done(True)
        self.dialog.continue_btn.setEnabled(True)
        self.finished.emit()

    def use(self, which: int) -> None:
        if self.result is None or self.host.canvas.locked:
            return
        h = self.host
        h.session.set_canvas(self.result[0][which].reshape(h.session.height, h.session.width).astype(np.uint8))
        h.canvas_replaced()
