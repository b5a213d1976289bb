"""The "Compress & score" tab: what the drawn digit costs to store, and how digit-like it is.

Compression. An autoregressive model is a lossless compressor: entropy-coding each pixel with its
conditional ``p(x_{o_t} | x_{o_<t})`` costs about ``-log2 p(x)`` bits in total (Shannon 1948;
arithmetic/range coding, Rissanen & Langdon 1979). The panel shows, for the canvas, the length of
the actual range-coder stream (:class:`engine.tasks.compress.Codec`, the ``constriction`` library's range
coder), the ideal ``-log2 p(x)``, and the size of the same image as an optimised 1-bit PNG, with
bars on one scale next to the 784 bits of the raw bitmap.

Digit-likeness (:class:`engine.tasks.score.Scorer`). The percentile of ``log p(x)`` among the 10,000 test
digits, and the likelihood ratio ``log p(x) - log p_bg(x)`` against a per-pixel independent
background model, with its own percentile (Ren et al. 2019, "Likelihood Ratios for
Out-of-Distribution Detection"; Nalisnick et al. 2019 for why raw likelihood can mislead).

Everything runs on the panel's own worker threads: the scorer's reference (the test split's
distribution, cached on disk per model) is built once per model and ordering on one thread, and
the per-canvas work (a range-coder pass and one scoring pass) on another, debounced, with every
request replacing the previous one and results tagged (model, ordering, canvas version) so a stale
one is never shown. Nothing is computed while the tab is hidden; showing it catches up.
"""

from __future__ import annotations

import copy
import time

import numpy as np
from PySide6.QtCore import QEvent, QObject, QRectF, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QPainter, QPalette
from PySide6.QtWidgets import QFormLayout, QGroupBox, QLabel, QSizePolicy, QVBoxLayout, QWidget

from engine.models.base import ARModel
from engine.ordering import Ordering

from ..worker import Worker

__all__ = ["CompressPanel", "canvas_job", "scorer_job", "DEBOUNCE_MS", "LLR_CAVEAT"]

DEBOUNCE_MS = 120
CODEC_CACHE = 4

LLR_CAVEAT = (
    "The likelihood ratio log p(x) − log p_bg(x) divides out what a per-pixel independent background model "
    "already explains (how much ink, and where). It often separates non-digits (noise, blank or inverted "
    "images) from digits better than raw log p, but not always: a digit shifted off-centre puts ink where the "
    "background expects none, so p_bg(x) drops even more than p(x) and the ratio can rate it as very digit-like."
)


def _model_for(model: ARModel, ordering: Ordering) -> ARModel:
    """``model`` itself in its own ordering; an order-agnostic model's copy set to ``ordering``."""
    if ordering == model.ordering:
        return model
    m = copy.deepcopy(model)
    m.set_ordering(ordering)
    return m


def scorer_job(job, model: ARModel, ordering: Ordering, key: tuple):
    """Worker side: the :class:`engine.tasks.score.Scorer` of ``model`` in ``ordering`` (reference cached
    on disk). Stops between batches once the job is cancelled."""
    from engine.tasks.score import Scorer

    def progress(_done: int, _total: int) -> None:
        job.check()

    return key, Scorer.for_model(_model_for(model, ordering), progress=progress)


def canvas_job(job, cache: dict, model: ARModel, ordering: Ordering, image: np.ndarray, scorer, key: tuple):
    """Worker side: (key, CodeLength, Score or None, seconds) for one (H, W) image. ``cache`` holds
    the float64 codecs per (model key, ordering); only this worker's thread touches it."""
    from engine.tasks.compress import Codec

    t0 = time.perf_counter()
    ck = key[:2]
    codec = cache.get(ck)
    if codec is None:
        codec = Codec(model, ordering, chunk_size=1)
        while len(cache) >= CODEC_CACHE:
            cache.pop(next(iter(cache)))
        cache[ck] = codec
    job.check()
    cl = codec.code_length(image)
    score = scorer.score(image)[0] if scorer is not None else None
    return key, cl, score, time.perf_counter() - t0


class SizeBars(QWidget):
    """Horizontal bars on one scale: raw bitmap, 1-bit PNG, range coder, ideal (bits)."""

    COLORS = ("#5b6472", "#8b95a5", "#38bdf8", "#a3e635")

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.items: list[tuple[str, float]] = []
        self.setMinimumHeight(112)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)

    def set_items(self, items: list[tuple[str, float]]) -> None:
        self.items = items
        self.update()

    def paintEvent(self, _ev) -> None:
        if not self.items:
            return
        p = QPainter(self)
        p.setRenderHint(QPainter.Antialiasing)
        fm = p.fontMetrics()
        label_w = max(fm.horizontalAdvance(t) for t, _ in self.items) + 10
        value_w = fm.horizontalAdvance("10,000 bits") + 8
        top = max(v for _, v in self.items) or 1.0
        row_h = self.height() / len(self.items)
        bar_w = max(10, self.width() - label_w - value_w)
        for i, (text, v) in enumerate(self.items):
            y = i * row_h
            p.setPen(self.palette().color(QPalette.WindowText))
            p.drawText(QRectF(0, y, label_w - 6, row_h), Qt.AlignVCenter | Qt.AlignRight, text)
            w = bar_w * v / top
            p.fillRect(QRectF(label_w, y + row_h * 0.2, w, row_h * 0.6), QColor(self.COLORS[i % len(self.COLORS)]))
            p.drawText(QRectF(label_w + w + 4, y, value_w, row_h), Qt.AlignVCenter | Qt.AlignLeft, f"{v:,.0f} bits")
        p.end()


class CompressPanel(QWidget):
    """Code lengths and digit-likeness of the host window's canvas (see the module docstring)."""

    codeShown = Signal()  #: code lengths shown for the current canvas
    scoreShown = Signal()  #: scores shown for the current canvas

    def __init__(self, host, parent: QWidget | None = None):
        super().__init__(parent)
        self.host = host
        self.worker = Worker("compress", self, torch_threads=1)
        self.ref_worker = Worker("score-reference", self, torch_threads=1)
        self._codecs: dict = {}  # touched only on self.worker's thread
        self.scorers: dict[tuple, object] = {}
        self._scorer_key: tuple | None = None
        self._shown_key: tuple | None = None
        self.code = None  #: the CodeLength shown
        self.score = None  #: the Score shown

        lay = QVBoxLayout(self)
        box = QGroupBox("Lossless compression of the canvas")
        form = QFormLayout(box)
        self.bits = QLabel("–")
        self.bits.setObjectName("value")
        self.bits.setToolTip("Length of the range-coder stream (constriction) that stores this image with the model's "
                             "conditionals in its ordering; decoding it with the same model gives the image back bit-exactly.")
        self.ideal = QLabel("–")
        self.ideal.setToolTip("−log₂ p(x): the ideal code length, the sum of −log₂ p(x_i | x_<i) over the pixels")
        self.overhead = QLabel("–")
        self.overhead.setToolTip("The coder's cost above the ideal: terminating the stream and padding it to whole 32-bit "
                                 "words (a few bits per stream; spread over many images it is below 0.1%)")
        self.png = QLabel("–")
        self.png.setToolTip("The same 28×28 image saved as an optimised 1-bit PNG (headers included)")
        form.addRow("range coder", self.bits)
        form.addRow("ideal −log₂ p(x)", self.ideal)
        form.addRow("coder overhead", self.overhead)
        form.addRow("1-bit PNG", self.png)
        self.bars = SizeBars()
        form.addRow(self.bars)
        lay.addWidget(box)

        sbox = QGroupBox("How digit-like is it?")
        sform = QFormLayout(sbox)
        self.pct = QLabel("–")
        self.pct.setObjectName("value")
        self.pct.setToolTip("The percent of the 10,000 test digits whose log p(x) under this model is lower than the canvas's")
        self.llr = QLabel("–")
        self.llr.setObjectName("value")
        self.llr.setToolTip(LLR_CAVEAT)
        sform.addRow("log p percentile", self.pct)
        sform.addRow("likelihood ratio", self.llr)
        self.caveat = QLabel("vs a per-pixel independent background model · <u>not always better</u>")
        self.caveat.setObjectName("hint")
        self.caveat.setWordWrap(True)
        self.caveat.setToolTip(LLR_CAVEAT)
        sform.addRow(self.caveat)
        self.status = QLabel("")
        self.status.setObjectName("hint")
        self.status.setWordWrap(True)
        sform.addRow(self.status)
        lay.addWidget(sbox)
        lay.addStretch(1)

        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(DEBOUNCE_MS)
        self._debounce.timeout.connect(self.request)
        host.canvas.canvasChanged.connect(self.schedule)
        host.figuresShown.connect(self.schedule)
        host.modelChanged.connect(self.schedule)
        self.worker.result.connect(self._on_result)
        self.worker.error.connect(lambda _i, m: self._set_error(f"cannot code this image: {m}"))
        self.ref_worker.result.connect(self._on_scorer)
        self.ref_worker.error.connect(lambda _i, m: self.status.setText(f"Scores unavailable: {m}"))
        host.installEventFilter(self)

    # ------------------------------------------------------------------------------------------
    def _key(self) -> tuple | None:
        h = self.host
        if h.model is None or h.ordering is None:
            return None
        return (h.model_key, h.ordering, h.session.version)

    def schedule(self, *_: object) -> None:
        """Something changed: compute again soon (only while the panel is shown)."""
        if self.isVisible():
            self._debounce.start()

    def request(self) -> None:
        key = self._key()
        if key is None or key == self._shown_key:
            return
        h = self.host
        skey = key[:2]
        if skey not in self.scorers and self._scorer_key != skey:
            self._scorer_key = skey
            self.status.setText("Measuring the test digits under this model (once per model and ordering; cached)…")
            self.pct.setText("…")
            self.llr.setText("…")
            self.ref_worker.submit(scorer_job, h.model, h.ordering, skey)
        self.worker.submit(canvas_job, self._codecs, h.model, h.ordering, h.session.canvas.copy(), self.scorers.get(skey), key)

    def showEvent(self, ev) -> None:
        super().showEvent(ev)
        self.schedule()

    def eventFilter(self, obj: QObject, ev: QEvent) -> bool:
        if obj is self.host and ev.type() == QEvent.Close:
            self.shutdown()
        return False

    def shutdown(self) -> None:
        for w in (self.worker, self.ref_worker):
            w.shutdown(600_000)

    # ------------------------------------------------------------------------------------------
    def _on_scorer(self, _job_id: int, value: object) -> None:
        key, scorer = value  # type: ignore[misc]
        self.scorers[key] = scorer
        if self._scorer_key == key:
            self._scorer_key = None
        n = scorer.reference.n_images
        self.status.setText(f"Percentiles among {n:,} {scorer.reference.split} digits under the same model and ordering.")
        cur = self._key()
        if cur is not None and cur[:2] == key:
            self._shown_key = None  # the code length is shown but the scores are not: ask again
            self.request()

    def _on_result(self, _job_id: int, value: object) -> None:
        key, cl, score, _secs = value  # type: ignore[misc]
        cur = self._key()
        if cur is None or key[:2] != cur[:2]:
            return  # another model or ordering
        self._shown_key = key
        self.code = cl
        d = self.host.session.height * self.host.session.width
        self.bits.setText(f"{cl.bits:,} bits  ·  {cl.bits / 8:.0f} bytes  ·  {cl.bits / d:.3f} bits/pixel")
        self.ideal.setText(f"{cl.ideal_bits:,.1f} bits  ·  {cl.ideal_bits / d:.3f} bits/pixel")
        self.overhead.setText(f"{cl.bits - cl.ideal_bits:+.1f} bits")
        ratio = 8 * cl.png_bytes / max(cl.bits, 1)
        self.png.setText(f"{cl.png_bytes:,} bytes = {8 * cl.png_bytes:,} bits  ·  {ratio:.1f}× the model's code")
        self.bars.set_items([("raw bitmap", float(d)), ("1-bit PNG", 8.0 * cl.png_bytes), ("range coder", float(cl.bits)),
                             ("ideal", cl.ideal_bits)])
        if key == cur:
            self.codeShown.emit()
        if score is not None:
            self.score = score
            self.pct.setText(f"{score.percentile:.1f}  ·  log p = {score.log_prob_nats:.1f} nats")
            self.llr.setText(f"{score.llr_percentile:.1f}  ·  {score.llr_nats:+.1f} nats")
            if key == cur:
                self.scoreShown.emit()

    def _set_error(self, msg: str) -> None:
        self._shown_key = self._key()
        self.code = None
        for lab in (self.bits, self.ideal, self.overhead, self.png):
            lab.setText("–")
        self.bits.setText(msg)
        self.bars.set_items([])
