"""The training panel: family, ordering, hyperparameters, device; start/stop; progress with ETA;
live curves of the training and validation NLL per epoch.

Training is :func:`engine.train.train`, a plain generator, driven on the training worker's thread
(:mod:`app.worker`). Stopping closes the generator between two minibatches; files are only
written atomically at an epoch's end, so a stop or a closed window never leaves a half-written
checkpoint. A finished or stopped run that got through at least one epoch leaves its best
checkpoint (by validation NLL) on disk; a completed run also measures its test NLL and records it
in the checkpoint's metadata, and the panel hands the file to the model picker.
"""

from __future__ import annotations

import time
from pathlib import Path

import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from engine.models import FAMILIES, QUICK_CONFIGS, family_class
from engine.ordering import ORDERING_NAMES, make_ordering
from engine.recipes import model_config
from engine.steps import fmt_time
from engine.train import (
    BatchEnd,
    EpochEnd,
    Finished,
    TrainConfig,
    amp_warning,
    bf16_hardware,
    device_name,
    resolve_amp,
    resolve_device,
)

from ..jobs import training_job
from ..latest import Latest
from ..worker import Job, Worker

__all__ = ["TrainingPanel", "training_job", "fmt_time"]


def _continued_note(info: dict) -> str:
    """What a recipe leaves out when its run started from another checkpoint's weights."""
    src = Path(str(info["init_from"])).name
    return (f"This model's last run started from the weights of {src} (see docs/training.md); "
            f"the recipe trains the same network from fresh weights, so expect a weaker model.")


class TrainingPanel(QWidget):
    checkpointReady = Signal(object, str)  #: Path of the best checkpoint, how the run ended
    message = Signal(str)

    def __init__(self, worker: Worker, out_dir: Path, parent: QWidget | None = None):
        super().__init__(parent)
        self.worker = worker
        self.out_dir = Path(out_dir)
        self.job: Job | None = None
        self.out: Path | None = None
        self.epochs_done = 0
        lay = QVBoxLayout(self)
        box = QGroupBox("Model and data")
        form = QFormLayout(box)
        self.recipe = QComboBox()
        self.recipe.addItem("your own settings", None)
        self.recipe.setToolTip("Fill the form with how a bundled model was trained (its recorded configuration\n"
                               "and hyperparameters), to train it again or to start from its recipe")
        self.recipe.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.recipe.setMinimumContentsLength(18)
        self._recipe_cfg: dict | None = None  #: the chosen recipe's full model config
        self._recipe_tc: dict = {}  #: and its training settings that the form does not show
        self._applying = False
        self.family = QComboBox()
        for name, cls in FAMILIES.items():
            self.family.addItem(name.upper() if len(name) <= 5 else name, name)
            self.family.setItemData(self.family.count() - 1, cls.description, Qt.ItemDataRole.ToolTipRole)
        self.family.setCurrentIndex(max(0, self.family.findData("made")))
        self.ordering = QComboBox()
        for name in ORDERING_NAMES:
            self.ordering.addItem(name, name)
        self.hidden = QSpinBox()
        self.hidden.setRange(1, 16384)
        self.hidden.setValue(500)
        self.order_agnostic = QCheckBox("order-agnostic")
        self.order_agnostic.setToolTip("Train over random orderings (and, for MADE, masks), so any ordering works at inference")
        self.direct = QCheckBox("direct connections")
        self.direct.setChecked(True)
        self.direct.setToolTip(
            "MADE only: masked input-to-output weights beside the hidden layer. They learn the easy part of\n"
            "every conditional at once: without them a MADE trains far slower (here a 500-unit one was at\n"
            "102 nats on validation after 15 epochs, a 1000-unit one with them at 90)"
        )
        self.order_set = QComboBox()
        self.order_set.addItem("any ordering (random permutations)", "random")
        self.order_set.addItem("the 16 line scans", "scans")
        self.order_set.addItem("rows from the top, random directions", "rows")
        # the long names show in full in the list; closed, the box may elide them in a narrow window
        self.order_set.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.order_set.setMinimumContentsLength(18)
        self.order_set.setToolTip(
            "MADE only: which orderings order-agnostic training draws from. The 16 line scans are raster,\n"
            "column, snake and column-snake started from every corner: easier to learn, and an ensemble\n"
            "over them scores better, but other orderings stay untrained. Rows from the top walk each row\n"
            "left or right at random: closest to raster, better single orderings, a weaker ensemble"
        )
        self.small = QCheckBox("CPU-sized model")
        self.small.setToolTip(
            "Use the small configuration the bundled quick models use (trains in minutes on a CPU);\n"
            "unchecked, deep families use their full, GPU-sized defaults"
        )
        self.epochs = QSpinBox()
        self.epochs.setRange(1, 1000)
        self.epochs.setValue(5)
        self.batch = QSpinBox()
        self.batch.setRange(1, 10000)
        self.batch.setValue(100)
        self.lr = QDoubleSpinBox()
        self.lr.setDecimals(5)
        self.lr.setRange(1e-5, 1.0)
        self.lr.setSingleStep(1e-4)
        self.lr.setValue(1e-3)
        self.l1 = QDoubleSpinBox()
        self.l1.setDecimals(6)
        self.l1.setRange(0.0, 0.01)
        self.l1.setSingleStep(1e-5)
        self.l1.setValue(0.0)
        self.l1.setSpecialValueText("off")
        self.l1.setToolTip("L1 penalty on the weight matrices (the bundled FVSBN and MADE use 1e-4)")
        self.ema = QCheckBox("average the weights (EMA 0.999)")
        self.ema.setToolTip("Validate and keep a moving average of the weights instead of the last ones")
        self.amp = QCheckBox("bf16 mixed precision")
        self.amp.setToolTip("Train in bfloat16 (validation stays float32): much faster on GPUs and on CPUs with\n"
                            "bf16 instructions (AVX-512 BF16, AMX), slower on other CPUs")
        self.max_train = QSpinBox()
        self.max_train.setRange(0, 50000)
        self.max_train.setSingleStep(1000)
        self.max_train.setValue(10000)
        self.max_train.setSpecialValueText("all")  # short: the form fits a 1024 px window
        self.max_valid = QSpinBox()
        self.max_valid.setRange(0, 10000)
        self.max_valid.setSingleStep(500)
        self.max_valid.setValue(2000)
        self.max_valid.setSpecialValueText("all")
        dev = self._device = resolve_device("auto")
        slow_bf16 = amp_warning(dev)
        if slow_bf16:  # emulated bf16 would only slow training down: say so instead of offering it
            self.amp.setEnabled(False)
            self.amp.setToolTip(slow_bf16[0].upper() + slow_bf16[1:] + ";\nit is offered on GPUs and on CPUs with AVX-512 BF16 or AMX")
        native = bf16_hardware(dev) if dev.type == "cpu" else None
        self.device = QLabel(f"{device_name(dev)}  ({dev.type})" + (f"  ·  bf16 in {native}" if native else ""))
        if native:
            self.amp.setToolTip(self.amp.toolTip() + f"\nThis CPU computes bf16 in {native}: MADE and the deep families train"
                                " 1.2-2.8x as fast,\n"
                                "so it is on by default for them (as `pixelchain train --precision auto`)")
        self.small.setChecked(dev.type == "cpu")
        self.device.setObjectName("value")
        self.device.setWordWrap(True)  # a long device name wraps rather than widen the panel (a 1024 px screen)
        form.addRow("recipe", self.recipe)
        form.addRow("family", self.family)
        form.addRow("ordering", self.ordering)
        form.addRow("hidden units", self.hidden)
        form.addRow("", self.direct)
        form.addRow("", self.order_agnostic)
        form.addRow("orderings", self.order_set)
        form.addRow("", self.small)
        form.addRow("epochs", self.epochs)
        form.addRow("batch size", self.batch)
        form.addRow("learning rate", self.lr)
        form.addRow("L1 penalty", self.l1)
        form.addRow("", self.ema)
        form.addRow("", self.amp)
        images = QHBoxLayout()  # one row for both, so that the form fits a 940-pixel window unscrolled
        images.setContentsMargins(0, 0, 0, 0)
        images.addWidget(self.max_train, 1)
        images.addWidget(QLabel("valid"))
        images.addWidget(self.max_valid, 1)
        self.max_train.setToolTip("Training images: the first N of the 50,000 (0: all)")
        self.max_valid.setToolTip("Validation images: the first N of the 10,000 (0: all)")
        form.addRow("images: train", images)
        form.addRow("device", self.device)
        lay.addWidget(box)
        row = QHBoxLayout()
        self.start_btn = QPushButton("\u25b6  Start training")
        self.start_btn.setObjectName("primary")
        self.stop_btn = QPushButton("Stop")
        self.stop_btn.setEnabled(False)
        row.addWidget(self.start_btn)
        row.addWidget(self.stop_btn)
        lay.addLayout(row)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("idle")
        lay.addWidget(self.progress)
        self._idle_text = f"Checkpoints are saved in {self.out_dir}"
        self.status = QLabel(self._idle_text)
        self.status.setWordWrap(True)
        self.status.setObjectName("hint")
        lay.addWidget(self.status)
        self.plot = pg.PlotWidget(background="#14171c")
        self.plot.setMinimumHeight(120)
        self.plot.setLabel("bottom", "epoch")
        self.plot.setLabel("left", "NLL (nats)")
        for side in ("bottom", "left"):  # epochs and nats as they are, never "epoch (x0.001)"
            self.plot.getAxis(side).enableAutoSIPrefix(False)
        self.plot.showGrid(x=True, y=True, alpha=0.2)
        self.plot.addLegend(offset=(-10, 10))
        self.plot.setMenuEnabled(False)
        self.batch_curve = self.plot.plot([], [], pen=pg.mkPen((148, 163, 184, 90), width=1), name="minibatch")
        self.train_curve = self.plot.plot([], [], pen=pg.mkPen("#38bdf8", width=2), symbol="o", symbolSize=6, symbolBrush="#38bdf8",
                                          name="train")
        self.valid_curve = self.plot.plot([], [], pen=pg.mkPen("#f97316", width=2), symbol="s", symbolSize=6, symbolBrush="#f97316",
                                          name="validation")
        lay.addWidget(self.plot, 1)
        self.family.currentIndexChanged.connect(self._family_changed)
        self.small.toggled.connect(self._family_changed)
        self.recipe.activated.connect(self._recipe_chosen)
        self.order_agnostic.toggled.connect(self._order_set_enabled)
        self._family_changed()
        self.start_btn.clicked.connect(self.start)
        self.stop_btn.clicked.connect(self.stop)
        # the training worker also runs the window's warm-up: only this panel's newest run counts
        self.requests = Latest(worker, parent=self)
        self.requests.progress.connect(self._on_progress)
        self.requests.result.connect(self._on_result)
        self.requests.error.connect(self._on_error)
        self.requests.finished.connect(self._on_finished)
        self._hist: dict[str, list[float]] = self._empty_history()

    # -- recipes of bundled models -------------------------------------------------------------
    def set_recipes(self, entries) -> None:
        """Offer the recipe of each checkpoint in ``entries`` (ModelEntry) that records how it was
        trained (its model config and ``train_config``)."""
        from engine.checkpoint import read_metadata

        while self.recipe.count() > 1:
            self.recipe.removeItem(1)
        for e in entries:
            try:
                info = read_metadata(e.path)
            except Exception:  # noqa: BLE001 -- an unreadable file offers no recipe
                continue
            if e.family not in FAMILIES or not isinstance(info.get("train_config"), dict):
                continue
            nll = e.ensemble[1] if e.ensemble else e.test_nll
            self.recipe.addItem(e.name + (f"  ·  {nll:.2f}" if nll is not None else ""), info)
            what = f"test NLL of an ensemble of {e.ensemble[0]}" if e.ensemble else "test NLL"
            tip = (f"{what}: {nll:.2f} nats\n" if nll is not None else "") + str(info.get("command", ""))
            if info.get("init_from"):
                tip += f"\n{_continued_note(info)}"
            self.recipe.setItemData(self.recipe.count() - 1, tip, Qt.ItemDataRole.ToolTipRole)

    def _recipe_chosen(self, index: int) -> None:
        info = self.recipe.itemData(index)
        if not isinstance(info, dict):
            self._recipe_cfg = None
            return
        cfg = {k: v for k, v in info.get("config", {}).items() if k not in ("height", "width")}
        tc = info["train_config"]
        self._applying = True
        try:
            self.small.setChecked(False)
            self.family.setCurrentIndex(max(0, self.family.findData(info["family"])))
            name = info.get("ordering", {}).get("name")
            if self.ordering.findData(name) >= 0:
                self.ordering.setCurrentIndex(self.ordering.findData(name))
            hidden = cfg.get("hidden")
            if isinstance(hidden, (list, tuple)) and hidden:
                hidden = hidden[0]
            if isinstance(hidden, int) and self.hidden.isEnabled():
                self.hidden.setValue(hidden)
            self.direct.setChecked(bool(cfg.get("direct", self.direct.isChecked())))
            self.order_agnostic.setChecked(bool(cfg.get("order_agnostic", False)))
            if self.order_set.findData(cfg.get("order_set")) >= 0:
                self.order_set.setCurrentIndex(self.order_set.findData(cfg.get("order_set")))
            for box, key in ((self.epochs, "epochs"), (self.batch, "batch_size")):
                if isinstance(tc.get(key), int):
                    box.setValue(tc[key])
            if tc.get("fit_schedule") and isinstance(info.get("schedule_epochs"), int):
                self.epochs.setValue(info["schedule_epochs"])  # the schedule fitted to a time limit, not the cap
            for rate, key in ((self.lr, "lr"), (self.l1, "l1")):
                if isinstance(tc.get(key), (int, float)):
                    rate.setValue(float(tc[key]))
            self.ema.setChecked(bool(tc.get("ema")))
            self.amp.setChecked(bool(tc.get("amp")) and self.amp.isEnabled())
            self.max_train.setValue(int(tc.get("max_train") or 0))
            self.max_valid.setValue(int(tc.get("max_valid") or 0))
        finally:
            self._applying = False
        self._recipe_cfg = cfg
        self.status.setText(_continued_note(info) if info.get("init_from") else self._idle_text)
        hidden_tc = ("lr_min_factor", "warmup", "weight_decay", "grad_clip", "seed", "patience", "eval_batch_size")
        self._recipe_tc = {k: tc[k] for k in hidden_tc
                           if k in tc and (tc[k] is None or (isinstance(tc[k], (int, float)) and not isinstance(tc[k], bool)))}
        self.recipe.setCurrentIndex(index)

    def _family_changed(self, *_: object) -> None:
        if not self._applying:  # the user chose another family: the recipe no longer applies
            self._recipe_cfg = None
            self.recipe.setCurrentIndex(0)
        fields = family_class(self.family.currentData()).config_class.__dataclass_fields__
        self.hidden.setEnabled("hidden" in fields)
        if "hidden" in fields:
            family = self.family.currentData()
            default = family_class(family).config_class().hidden  # type: ignore[attr-defined]
            h = QUICK_CONFIGS.get(family, {}).get("hidden", default) if self.small.isChecked() else default
            self.hidden.setValue(int(h[0] if isinstance(h, tuple) else h))
        self.order_agnostic.setEnabled("order_agnostic" in fields)
        self.direct.setEnabled("direct" in fields)
        # each family starts at its own default (the Transformer is order-agnostic by design)
        self.order_agnostic.setChecked(bool(getattr(family_class(self.family.currentData()).config_class(), "order_agnostic", False)))
        # the precision `pixelchain train` takes by default (--precision auto) on this device
        self.amp.setChecked(self.amp.isEnabled() and resolve_amp("auto", self._device, self.family.currentData()))
        self._order_set_enabled()

    @staticmethod
    def _empty_history() -> dict[str, list[float]]:
        """The curves' points: batches (bx, by) and epochs (ex, train, valid)."""
        return {"bx": [], "by": [], "ex": [], "train": [], "valid": []}

    def _order_set_enabled(self, *_: object) -> None:
        fields = family_class(self.family.currentData()).config_class.__dataclass_fields__
        self.order_set.setEnabled("order_set" in fields and self.order_agnostic.isChecked())

    @property
    def running(self) -> bool:
        return self.job is not None

    def config(self) -> tuple[str, dict, TrainConfig]:
        family = self.family.currentData()
        fields = family_class(family).config_class.__dataclass_fields__
        recipe = dict(self._recipe_cfg) if self._recipe_cfg is not None else None
        if recipe is not None:  # the recipe's own settings, the form's visible ones on top
            base = {k: v for k, v in recipe.items() if k in fields}
        else:
            base = dict(QUICK_CONFIGS.get(family, {})) if self.small.isChecked() else {}
        layers = base.get("hidden")
        hidden: int | tuple[int, ...]
        if recipe is not None and isinstance(layers, (list, tuple)) and layers and layers[0] == self.hidden.value():
            hidden = tuple(layers)  # deeper than the one spin box shows: kept as recorded
        else:
            hidden = self.hidden.value()
        # options the family lacks are left out (their widgets are disabled), as is an order set
        # without order-agnostic training; engine.recipes adds the MADE mask rules
        cfg = model_config(family, base, hidden=hidden if "hidden" in fields else None, direct=self.direct.isChecked(),
                           order_agnostic=self.order_agnostic.isChecked(), order_set=self.order_set.currentData(), strict=False)
        tc = TrainConfig(**(self._recipe_tc if recipe is not None else {}),
                         epochs=self.epochs.value(), batch_size=self.batch.value(), lr=self.lr.value(),
                         l1=self.l1.value(), ema=0.999 if self.ema.isChecked() else 0.0, amp=self.amp.isChecked() and self.amp.isEnabled(),
                         max_train=self.max_train.value() or None, max_valid=self.max_valid.value() or None)
        return family, cfg, tc

    def start(self) -> None:
        if self.running:
            return
        family, cfg, tc = self.config()
        ordering = make_ordering(self.ordering.currentData(), 28, 28, seed=0 if self.ordering.currentData() == "random" else None)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        oa = "-oa" if cfg.get("order_agnostic") else ""
        self.out = self.out_dir / f"{family}{oa}-{ordering.spec.replace(':', '')}-{stamp}.safetensors"
        self._hist = self._empty_history()
        for c in (self.batch_curve, self.train_curve, self.valid_curve):
            c.setData([], [])
        self.epochs_done = 0
        self.progress.setRange(0, 1000)
        self.progress.setValue(0)
        self.progress.setFormat("loading data…")
        self.status.setText(f"Training {family} in the {ordering.label} ordering → {self.out.name}")
        self.start_btn.setEnabled(False)
        self.stop_btn.setEnabled(True)
        self.job = self.requests.submit(self.out, training_job, family, cfg, ordering.to_dict(), tc, self.out)

    def stop(self) -> None:
        if self.job is not None:
            self.job.cancel()
            self.progress.setFormat("stopping after the current minibatch…")
            self.stop_btn.setEnabled(False)

    # -- events from the worker ------------------------------------------------------------------
    def _on_progress(self, _out: Path, ev: object) -> None:
        if isinstance(ev, BatchEnd):
            frac = ((ev.epoch - 1) + ev.batch / ev.batches) / ev.epochs
            self.progress.setValue(int(frac * 1000))
            self.progress.setFormat(f"epoch {ev.epoch}/{ev.epochs} · batch {ev.batch}/{ev.batches} · loss {ev.loss:.1f} · "
                                    f"ETA {fmt_time(ev.eta)}")
            self._hist["bx"].append(ev.epoch - 1 + ev.batch / ev.batches)
            self._hist["by"].append(ev.loss)
            self.batch_curve.setData(self._hist["bx"], self._hist["by"])
        elif isinstance(ev, EpochEnd):
            self.epochs_done = ev.epoch
            self._hist["ex"].append(ev.epoch)
            self._hist["train"].append(ev.train_nll)
            self._hist["valid"].append(ev.valid_nll)
            self.train_curve.setData(self._hist["ex"], self._hist["train"])
            self.valid_curve.setData(self._hist["ex"], self._hist["valid"])
            star = " (best so far, saved)" if ev.improved else ""
            acc = f", classifier {100 * ev.valid_accuracy:.2f}% correct" if ev.valid_accuracy is not None else ""
            self.status.setText(f"epoch {ev.epoch}: train {ev.train_nll:.2f}, validation {ev.valid_nll:.2f} nats{acc}{star}")
        elif isinstance(ev, str):
            self.progress.setFormat(ev)

    def _on_result(self, _out: Path, final: object) -> None:
        if not isinstance(final, Finished):
            return
        if final.reason == "diverged":
            self.message.emit(final.message)
        best = f"{final.best_valid_nll:.2f}" if final.best_valid_nll is not None else "–"
        self.status.setText(f"{final.reason} after {final.epochs_run} epochs; best validation NLL {best} nats")

    def _on_error(self, _out: Path, msg: str) -> None:
        self.status.setText(f"Training failed: {msg}")
        self.message.emit(f"Training failed: {msg}")

    def _on_finished(self, _out: Path, cancelled: bool) -> None:
        self.job = None
        self.start_btn.setEnabled(True)
        self.stop_btn.setEnabled(False)
        how = "stopped" if cancelled else "finished"
        self.progress.setFormat(how)
        if self.out is not None and self.out.is_file():
            self.checkpointReady.emit(self.out, how)
            if cancelled:
                self.status.setText(f"Stopped; the best checkpoint so far ({self.epochs_done} epochs) is {self.out.name}")
        elif cancelled:
            self.status.setText("Stopped before the first epoch ended: nothing was saved.")
