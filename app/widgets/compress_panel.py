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

The panel is handed the app's state (:class:`app.state.AppState`) and follows its model, ordering
and canvas. Everything runs on the panel's own worker threads: the scorer's reference (the test
split's distribution, cached on disk per model) is built once per model and ordering on one thread,
and the per-canvas work (a range-coder pass and one scoring pass) on another, debounced, with every
request replacing the previous one and results tagged (model, ordering, canvas version) so a stale
one is never shown (:class:`app.latest.Latest`). Nothing is computed while the tab is hidden;
showing it catches up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QRectF, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QPainter, QPalette
from PySide6.QtWidgets import QFormLayout, QGroupBox, QLabel, QSizePolicy, QVBoxLayout, QWidget

from ..jobs import REFERENCE_IMAGES, canvas_job, scorer_job
from ..latest import Latest
from ..state import AppState
from ..worker import Worker

if TYPE_CHECKING:  # loaded on the workers, when first needed
    from engine.tasks.compress import CodeLength
    from engine.tasks.score import Score, Scorer

__all__ = ["CompressPanel", "canvas_job", "scorer_job", "DEBOUNCE_MS", "LLR_CAVEAT"]

DEBOUNCE_MS = 120

LLR_CAVEAT = (
    "The likelihood ratio log p(x) − log p_bg(x) divides out what a per-pixel independent background model "
    "already explains (how much ink, and where). It often separates non-digits (noise, blank or inverted "
    "images) from digits better than raw log p, but not always: a digit shifted off-centre puts ink where the "
    "background expects none, so p_bg(x) drops even more than p(x) and the ratio can rate it as very digit-like."
)


class SizeBars(QWidget):
    """Horizontal bars on one scale: raw bitmap, 1-bit PNG, range coder, ideal (bits)."""

    COLORS = ("#5b6472", "#8b95a5", "#38bdf8", "#a3e635")

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.items: list[tuple[str, float]] = []
        self.setMinimumHeight(112)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def set_items(self, items: list[tuple[str, float]]) -> None:
        self.items = items
        self.update()

    def paintEvent(self, _ev) -> None:
        if not self.items:
            return
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        fm = p.fontMetrics()
        label_w = max(fm.horizontalAdvance(t) for t, _ in self.items) + 10
        value_w = fm.horizontalAdvance("10,000 bits") + 8
        top = max(v for _, v in self.items) or 1.0
        row_h = self.height() / len(self.items)
        bar_w = max(10, self.width() - label_w - value_w)
        for i, (text, v) in enumerate(self.items):
            y = i * row_h
            p.setPen(self.palette().color(QPalette.ColorRole.WindowText))
            p.drawText(QRectF(0, y, label_w - 6, row_h), Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignRight, text)
            w = bar_w * v / top
            p.fillRect(QRectF(label_w, y + row_h * 0.2, w, row_h * 0.6), QColor(self.COLORS[i % len(self.COLORS)]))
            p.drawText(QRectF(label_w + w + 4, y, value_w, row_h), Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft,
                       f"{v:,.0f} bits")
        p.end()


class CompressPanel(QWidget):
    """Code lengths and digit-likeness of the state's canvas (see the module docstring)."""

    codeShown = Signal()  #: code lengths shown for the current canvas
    scoreShown = Signal()  #: scores shown for the current canvas

    def __init__(self, state: AppState, parent: QWidget | None = None):
        super().__init__(parent)
        self.state = state
        self.worker = Worker("compress", self, torch_threads=1)
        self.ref_worker = Worker("score-reference", self, torch_threads=1)
        # a code length is shown while it belongs to the model and ordering shown (an older canvas
        # version is fine: the newest is on its way); a scorer is kept whatever is shown by then
        self.requests = Latest(self.worker, self._same_model, parent=self)
        self.scorer_requests = Latest(self.ref_worker, parent=self)
        self._codecs: dict = {}  # touched only on self.worker's thread
        self.scorers: dict[tuple, Scorer] = {}
        self._scorer_failed: tuple | None = None  #: not asked again for this (model key, ordering)
        self.code: CodeLength | None = None  #: the CodeLength shown
        self.score: Score | None = None  #: the Score shown

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
        # the figures wrap rather than widen the panel: their text grows once computed, after the
        # window has sized its side panel for what it showed then
        for lab in (self.bits, self.ideal, self.overhead, self.png, self.pct, self.llr):
            lab.setWordWrap(True)

        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(DEBOUNCE_MS)
        self._debounce.timeout.connect(self.request)
        state.canvasChanged.connect(self.schedule)
        state.figuresShown.connect(self.schedule)
        state.modelChanged.connect(self.schedule)
        state.modelChanged.connect(self._cancel_stale_reference)
        state.orderingChanged.connect(self._cancel_stale_reference)
        state.closing.connect(self.shutdown)
        self.requests.result.connect(self._on_result)
        self.requests.error.connect(lambda _k, m: self._set_error(f"cannot code this image: {m}"))
        self.scorer_requests.progress.connect(lambda _k, frac: self._show_measuring(float(frac)))
        self.scorer_requests.result.connect(self._on_scorer)
        self.scorer_requests.error.connect(self._on_scorer_error)

    # ------------------------------------------------------------------------------------------
    def _key(self) -> tuple | None:
        st = self.state
        if st.model is None or st.ordering is None:
            return None
        return st.canvas_key()

    def _same_model(self, key: tuple) -> bool:
        cur = self._key()
        return cur is not None and key[:2] == cur[:2]

    @property
    def up_to_date(self) -> bool:
        """The code length shown belongs to the current model, ordering and canvas."""
        return self.requests.shown is not None and self.requests.shown == self._key()

    def schedule(self, *_: object) -> None:
        """Something changed: compute again soon (only while the panel is shown)."""
        if self.isVisible():
            self._debounce.start()

    def _cancel_stale_reference(self) -> None:
        """A reference being measured for another model or ordering than the one shown is no longer
        wanted: stop it (the model or ordering changed, whether or not the tab is shown)."""
        key = self._key()
        pending = self.scorer_requests.pending
        if pending is not None and (key is None or pending != key[:2]):
            self.scorer_requests.cancel()
            if key is not None and key[:2] in self.scorers:
                self._show_reference(self.scorers[key[:2]])

    def _show_measuring(self, frac: float) -> None:
        self.status.setText(f"Measuring the {REFERENCE_IMAGES:,} test digits under this model: {frac:.0%} "
                            "(once per checkpoint and ordering; cached)")

    def request(self) -> None:
        self._cancel_stale_reference()
        key = self._key()
        if key is None or key == self.requests.shown:
            return
        st = self.state
        skey = key[:2]
        if skey not in self.scorers and skey != self._scorer_failed and self.scorer_requests.pending != skey:
            self._show_measuring(0.0)
            self.pct.setText("…")
            self.llr.setText("…")
            path = st.entry.path if st.entry is not None else None
            self.scorer_requests.submit(skey, scorer_job, st.model, st.ordering, path, st.dataset)
        self.requests.submit(key, canvas_job, self._codecs, st.model, st.ordering, st.session.canvas.copy(),
                             self.scorers.get(skey), skey)

    def showEvent(self, ev) -> None:
        super().showEvent(ev)
        self.schedule()

    def shutdown(self) -> None:
        for w in (self.worker, self.ref_worker):
            w.shutdown(600_000)

    # ------------------------------------------------------------------------------------------
    def _on_scorer(self, key: tuple, scorer: Scorer) -> None:
        self.scorers[key] = scorer
        self._show_reference(scorer)
        cur = self._key()
        if cur is not None and cur[:2] == key:
            self.requests.forget()  # the code length is shown but the scores are not: ask again
            self.request()

    def _show_reference(self, scorer: Scorer) -> None:
        n = scorer.reference.n_images
        self.status.setText(f"Percentiles among the {n:,} {scorer.reference.split} digits under the same model and ordering.")

    def _on_scorer_error(self, key: tuple, message: str) -> None:
        self._scorer_failed = key
        self.status.setText(f"Scores unavailable: {message}")

    def _on_result(self, key: tuple, value: tuple[CodeLength, Score | None, float]) -> None:
        cl, score, _secs = value  # what canvas_job returns
        cur = self._key()
        self.code = cl
        d = self.state.session.height * self.state.session.width
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
            self.pct.setText(f"{score.percentile:.1f} percentile  ·  log p = {score.log_prob_nats:.1f} nats")
            self.llr.setText(f"{score.llr_percentile:.1f} percentile  ·  {score.llr_nats:+.1f} nats")
            if key == cur:
                self.scoreShown.emit()

    def _set_error(self, msg: str) -> None:
        self.requests.shown = self._key()  # not asked again for this canvas
        self.code = None
        for lab in (self.bits, self.ideal, self.overhead, self.png):
            lab.setText("–")
        self.bits.setText(msg)
        self.bars.set_items([])
