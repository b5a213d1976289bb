"""Long waits show their progress and end when no longer wanted: the percentile among the whole
test split (measured once per checkpoint and ordering, cached on disk, shared with the Compress
tab), the Compress tab's reference and the influence map of a pinned pixel."""

from __future__ import annotations

import re
import threading

import numpy as np
import pytest

from app import jobs
from engine.data import content_checksum
from engine.figures import pixel_influence_steps
from engine.reference import cache_file, checkpoint_sha256, split_log_probs_steps
from engine.steps import drain

from .test_compress_panel import open_tab


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """A cache folder of this test's own: whatever another test measured is not there."""
    monkeypatch.setenv("PIXELCHAIN_CACHE", str(tmp_path / "cache"))


class Gate:
    """Wraps a generator function so that its first call stops after its first item until
    :meth:`open` (the work is then still running when the test changes what it is for); later
    calls run freely."""

    def __init__(self, fn):
        self.fn = fn
        self.calls = 0
        self.event = threading.Event()

    def __call__(self, *args, **kwargs):
        self.calls += 1
        first = self.calls == 1
        steps = self.fn(*args, **kwargs)
        while True:
            try:
                item = next(steps)
            except StopIteration as stop:
                return stop.value
            yield item
            if first:
                assert self.event.wait(20), "the gate was never opened"

    def open(self) -> None:
        self.event.set()


def _ended(worker) -> dict[int, bool]:
    """Job id -> cancelled, for every job ``worker`` ends from now on."""
    ended: dict[int, bool] = {}
    worker.finished.connect(lambda i, c: ended.__setitem__(i, c))
    return ended


def _notes(signal, get):
    seen: list = []
    signal.connect(lambda *_: seen.append(get()))
    return seen


def test_the_percentile_is_among_the_whole_test_split_measured_once_per_checkpoint(qtbot, make_window, bundled, tmp_path):
    win = make_window(bundled, start=False)
    st = win.state
    notes = _notes(st.percentileChanged, lambda: st.percentile_note)
    with qtbot.waitSignal(win.percentileShown, timeout=30000):
        win.checkpoints.start_default()
    assert st.entry.name == "made-raster"
    ref = win.live.reference[win.live._ref_key()]
    x = jobs.split("test")
    assert len(ref) == len(x) == 10_000  # never a subset
    assert st.percentile_note == "among the 10,000 test digits" and "10,000 test digits" in win.readout.pct.text()
    # while measuring, the read-out said how far it was
    measuring = [n for n in notes if n.startswith("measuring the 10,000 test digits: ")]
    assert measuring and measuring[0].endswith(": 0%")
    assert all(re.fullmatch(r"measuring the 10,000 test digits: \d+%", n) for n in measuring)
    # the figures are cached on disk by the checkpoint's bytes and the ordering ...
    sha = checkpoint_sha256(bundled / "made-raster.safetensors")
    assert cache_file(sha, st.ordering, content_checksum(x), tmp_path / "cache" / "reference").is_file()
    np.testing.assert_allclose(ref, drain(split_log_probs_steps(st.model, None, st.ordering, images=x))[1], rtol=1e-6)
    # ... so opening the same checkpoint again reads them back at once: no test digit is scored
    progress = []
    win.live.reference_requests.progress.connect(lambda _k, f: progress.append(f))
    with qtbot.waitSignal(win.percentileShown, timeout=30000):
        win.checkpoints.open_checkpoint(bundled / "made-raster.safetensors")
    assert progress == [1.0]
    np.testing.assert_array_equal(win.live.reference[win.live._ref_key()], ref)


def test_a_model_change_cancels_the_measurement_of_the_old_one(qtbot, make_window, bundled, monkeypatch):
    gate = Gate(jobs.split_log_probs_steps)
    monkeypatch.setattr(jobs, "split_log_probs_steps", gate)
    win = make_window(bundled, start=False)
    live = win.live
    ended = _ended(live.ref_worker)
    with qtbot.waitSignal(live.reference_requests.progress, timeout=30000):
        win.checkpoints.start_default()
    old, old_key = live.reference_requests.job, live._ref_key()
    assert old is not None and win.state.percentile_note.startswith("measuring the 10,000 test digits")
    with qtbot.waitSignal(win.modelChanged, timeout=30000):
        win.checkpoints.open_checkpoint(bundled / "fvsbn-snake.safetensors")
    assert old.cancelled
    gate.open()
    qtbot.waitUntil(lambda: old.id in ended, timeout=30000)
    assert ended[old.id] is True  # stopped between two batches, not finished
    qtbot.waitUntil(lambda: win.state.percentile is not None, timeout=30000)
    assert old_key not in live.reference and win.state.entry.name == "fvsbn-snake"
    assert gate.calls == 2


def test_the_compress_tab_reuses_the_readouts_test_digits_and_shows_its_progress(qtbot, make_window, bundled, monkeypatch):
    win = make_window(bundled)  # its read-out measured the test digits (cached on disk)
    qtbot.waitUntil(lambda: win.state.percentile is not None, timeout=30000)
    panel = win.compress_panel
    progress = []
    panel.scorer_requests.progress.connect(lambda _k, f: progress.append(f))
    with qtbot.waitSignal(panel.scoreShown, timeout=30000):
        open_tab(qtbot, win)
    assert progress == [1.0]  # read back, not measured again
    assert "among the 10,000 test digits" in panel.status.text()
    # the likelihood ratio's figure says what it is
    sc = panel.score
    assert f"{sc.llr_percentile:.1f} percentile" in panel.llr.text() and f"{sc.llr_nats:+.1f} nats" in panel.llr.text()

    # another model: its measurement shows progress, and a model change stops it
    gate = Gate(jobs.split_log_probs_steps)
    monkeypatch.setattr(jobs, "split_log_probs_steps", gate)
    texts = _notes(panel.scorer_requests.progress, panel.status.text)
    ended = _ended(panel.ref_worker)
    with qtbot.waitSignal(panel.scorer_requests.progress, timeout=30000):
        win.checkpoints.open_checkpoint(bundled / "made-any.safetensors")
    assert re.fullmatch(r"Measuring the 10,000 test digits under this model: \d+% \(once per checkpoint and ordering; cached\)",
                        texts[-1])
    old = panel.scorer_requests.job
    with qtbot.waitSignal(win.modelChanged, timeout=30000):
        win.checkpoints.open_checkpoint(bundled / "made-raster.safetensors")
    assert old.cancelled
    gate.open()
    qtbot.waitUntil(lambda: old.id in ended, timeout=30000)
    assert ended[old.id] is True
    qtbot.waitUntil(lambda: "among the 10,000" in panel.status.text(), timeout=30000)  # the scorer of made-raster, kept


def test_the_influence_map_shows_progress_from_the_first_batch(qtbot, win):
    pixel = 27 * 28 + 27  # the last pixel in raster order: 783 pixels before it, 13 batches
    view = win.influence_view
    fracs, hints = [], []
    win.influence.requests.progress.connect(lambda _k, f: (fracs.append(f), hints.append(view.hint.text())))
    with qtbot.waitSignal(win.influenceShown, timeout=30000):
        win.state.set_pin(pixel)
    assert len(fracs) == 13 and fracs == sorted(fracs) and fracs[-1] == 1.0
    assert fracs[0] == pytest.approx(64 / 783)
    assert hints[0] == f"Flipping each pixel before (27, 27) in turn… {fracs[0]:.0%}" and hints[0].endswith(" 8%")


def test_pinning_another_pixel_cancels_the_old_map(qtbot, win, monkeypatch):
    gate = Gate(jobs.pixel_influence_steps)
    monkeypatch.setattr(jobs, "pixel_influence_steps", gate)
    inf = win.influence
    ended = _ended(inf.worker)
    shown = []
    inf.requests.result.connect(lambda key, value: shown.append(value.pixel))
    first, second = 27 * 28 + 27, 20 * 28 + 5
    with qtbot.waitSignal(inf.requests.progress, timeout=30000):
        win.state.set_pin(first)
    old = inf.requests.job
    win.state.set_pin(second)
    assert old.cancelled and inf.requests.pending[3] == second
    gate.open()
    qtbot.waitUntil(lambda: old.id in ended, timeout=30000)
    assert ended[old.id] is True
    qtbot.waitUntil(lambda: inf.up_to_date, timeout=30000)
    assert shown == [second] and win.influence_view.influence.pixel == second
    want = drain(pixel_influence_steps(win.model, win.figures.extra["image"], second, win.ordering))[1]
    np.testing.assert_allclose(win.influence_view.influence.delta, want.delta, atol=1e-6)


class _Job:
    cancelled = False

    def check(self) -> None:
        pass


def test_a_second_measurement_of_the_same_checkpoint_waits_for_the_first_and_reads_its_cache(bundled):
    """The read-out and the Compress tab ask at once: the test digits are scored once."""
    from engine.checkpoint import load_checkpoint

    path = bundled / "made-raster.safetensors"
    model = load_checkpoint(path).model.eval()
    scored = []
    real = model.log_prob
    model.log_prob = lambda x, *a, **k: (scored.append(len(x)), real(x, *a, **k))[1]
    a = jobs.measure_test_split(_Job(), model, model.ordering, path)
    b = jobs.measure_test_split(_Job(), model, model.ordering, path)
    first = next(a)  # a measures ...
    assert 0 < first < 1
    assert next(b) == first  # ... b waits, showing a's progress
    fracs_a, logp_a = drain(a)
    assert sum(scored) == 10_000
    fracs_b, logp_b = drain(b)
    assert fracs_b[-1] == 1.0 and sum(scored) == 10_000  # read back from the cache a wrote
    np.testing.assert_array_equal(logp_a, logp_b)


def test_a_grey_models_percentile_is_measured_on_the_grey_test_digits(tmp_path, shared_data, monkeypatch):
    import torch

    from engine.checkpoint import save_checkpoint
    from engine.datasets import load_dataset
    from engine.models import build_model

    monkeypatch.setenv("PIXELCHAIN_DATA", str(shared_data))
    torch.manual_seed(0)
    model = build_model("fvsbn", {"levels": 4, "output": "categorical"})
    path = save_checkpoint(tmp_path / "grey.safetensors", model, {"dataset": "mnist"})

    class _Job:
        def check(self):
            pass

    _, got = drain(jobs.reference_job(_Job(), model, model.ordering, path, "mnist"))
    x = load_dataset("mnist", "test", levels=4)
    with torch.no_grad():
        want = model.log_prob(x[:50]).double().numpy()
    assert len(got) == 10_000
    np.testing.assert_allclose(got[:50], want, rtol=1e-5)
