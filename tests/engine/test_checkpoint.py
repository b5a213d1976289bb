"""Checkpoints: exact round trips for every family, hostile files, failed saves."""

from __future__ import annotations

import errno
import itertools
import json
import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import engine.atomic as atomic
import engine.checkpoint as ckmod
from engine.checkpoint import CheckpointError, load_checkpoint, read_metadata, save_checkpoint
from engine.models import UnsupportedOrdering, build_model
from engine.ordering import make_ordering

from .hostile import RunsCode, checkpoint_cases, read_st, tiny_made
from .tiny import H, W, all_tiny

ALL_IMAGES = torch.tensor(list(itertools.product([0.0, 1.0], repeat=H * W)))  # (256, 8)


def _tiny(family: str, cfg: dict, ordering: str = "raster"):
    torch.manual_seed(3)
    o = make_ordering(ordering, H, W, seed=5)
    m = build_model(family, dict(cfg, height=H, width=W), o)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.7)
    return m.eval()


@pytest.mark.parametrize("label, family, cfg", all_tiny(), ids=[t[0] for t in all_tiny()])
def test_round_trip_is_exact_for_every_family(tmp_path, label, family, cfg):
    try:
        m = _tiny(family, cfg, "snake")
    except UnsupportedOrdering:
        m = _tiny(family, cfg, "raster")  # a family tied to its own ordering
    path = tmp_path / f"{label}.safetensors"
    extra = {"optim.0.exp_avg": torch.randn(3, 2)}
    save_checkpoint(path, m, {"name": label, "history": [{"epoch": 1, "valid_nll": 3.5}]}, extra=extra)
    ck = load_checkpoint(path)
    assert ck.model.family == family and ck.model.config == m.config and ck.model.ordering == m.ordering
    assert not ck.model.training
    with torch.no_grad():
        a, b = m.log_prob(ALL_IMAGES), ck.model.log_prob(ALL_IMAGES)
        assert torch.equal(a, b), f"{label}: log-likelihoods differ after a round trip"
        assert torch.equal(m.log_prob_per_pixel(ALL_IMAGES), ck.model.log_prob_per_pixel(ALL_IMAGES))
    for k, v in m.state_dict().items():
        assert torch.equal(v, ck.model.state_dict()[k]), k
    assert torch.equal(ck.extra["optim.0.exp_avg"], extra["optim.0.exp_avg"])
    assert ck.meta["name"] == label and ck.meta["history"][0]["valid_nll"] == 3.5
    info = read_metadata(path)
    assert info["family"] == family and info["parameters"] == m.num_parameters()
    hdr, _ = read_st(path)
    assert hdr["__metadata__"]["format_version"] == str(ckmod.FORMAT_VERSION)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_storage(tmp_path, dtype):
    m = _tiny("made", {"hidden": (7, 6)})
    full, half = tmp_path / "full.safetensors", tmp_path / "half.safetensors"
    save_checkpoint(full, m)
    save_checkpoint(half, m, dtype=dtype)
    hdr, _ = read_st(half)
    assert {v["dtype"] for k, v in hdr.items() if k != "__metadata__"} == {"F16" if dtype == torch.float16 else "BF16"}
    ck = load_checkpoint(half)
    assert next(ck.model.parameters()).dtype == torch.float32  # computed in float32 again
    with torch.no_grad():
        a, b = m.log_prob(ALL_IMAGES), ck.model.log_prob(ALL_IMAGES)
    tol = 0.05 if dtype == torch.float16 else 0.3
    assert torch.allclose(a, b, atol=tol), (a - b).abs().max()
    assert not torch.equal(a, b)


BUNDLED = sorted((Path(__file__).resolve().parents[2] / "resources" / "checkpoints").glob("*.safetensors"))


def test_checkpoints_are_bundled():
    assert len(BUNDLED) >= 5, "resources/checkpoints/ lost its bundled models"


@pytest.mark.parametrize("src", BUNDLED, ids=[p.stem for p in BUNDLED])
def test_round_trip_of_a_bundled_checkpoint(tmp_path, src):
    """A trained model (not only the tiny random ones above) survives load, save, load to the last bit,
    metadata included. Saving in float32 stores int8-coded weights as their decoded values, so only
    the record of the coding goes; a file may omit config fields that have defaults, a save writes
    them all, so the config is compared as the model's."""
    ck = load_checkpoint(src)
    dst = tmp_path / "copy.safetensors"
    save_checkpoint(dst, ck.model, ck.meta)
    again = load_checkpoint(dst)
    assert again.model.family == ck.model.family and again.model.config == ck.model.config
    assert again.model.ordering == ck.model.ordering
    assert {k: v for k, v in again.meta.items() if k != "config"} == {
        k: v for k, v in ck.meta.items() if k not in ("quantization", "config")
    }
    x = torch.bernoulli(torch.full((4, 784), 0.2), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(ck.model.log_prob(x), again.model.log_prob(x))


# ----------------------------------------------------------------------------- hostile files
@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile-checkpoints")
    marker = d / "code-ran.marker"
    return checkpoint_cases(d, marker), marker


def _case_ids():
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        return [c.name for c in checkpoint_cases(Path(d), Path(d) / "m", big_gb=1)]


@pytest.mark.parametrize("name", _case_ids())
def test_hostile_checkpoint(hostile, name):
    cases, marker = hostile
    case = next(c for c in cases if c.name == name)
    if case.expect is None:
        assert load_checkpoint(case.path).model.family == "made"
        return
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(case.path)
    msg = str(info.value)
    assert str(case.path) in msg, f"the message does not name the file: {msg}"
    assert re.search(case.expect, msg), f"{name}: unexpected message {msg!r}"
    assert "\n" not in msg
    assert not marker.exists(), "code from the file ran"


def test_the_crafted_pickle_really_runs_code_when_unpickled(tmp_path, hostile):
    """The payload is live (so the hostile test above proves something), and load never runs it."""
    cases, marker = hostile
    for case in cases:
        if "runs code" in case.name:
            with pytest.raises(CheckpointError):
                load_checkpoint(case.path)
            with pytest.raises(CheckpointError):
                read_metadata(case.path)
    assert not marker.exists()
    other = tmp_path / "proof.marker"
    pickle.loads(pickle.dumps(RunsCode(str(other)))).close()
    assert other.exists()


def test_huge_file_is_refused_without_reading(tmp_path, monkeypatch):
    big = tmp_path / "big.safetensors"
    with open(big, "wb") as f:
        f.truncate(6 << 30)  # sparse: 6 GB long, nothing on disk

    def no_open(*a, **k):
        raise AssertionError("the file was opened")

    monkeypatch.setattr(ckmod, "open", no_open, raising=False)
    monkeypatch.setattr(ckmod, "load_file", no_open)
    for fn in (load_checkpoint, read_metadata):
        with pytest.raises(CheckpointError, match=r"6144 MiB.*refused without reading"):
            fn(big)
    # the limit is a parameter
    monkeypatch.undo()
    good = tmp_path / "good.safetensors"
    save_checkpoint(good, tiny_made())
    with pytest.raises(CheckpointError, match="larger than"):
        load_checkpoint(good, max_bytes=100)


def test_header_starting_with_0x80_is_not_taken_for_a_pickle(tmp_path):
    """A safetensors header length whose low byte is 0x80 is legal; it once looked like a pickle."""
    m = tiny_made()
    for pad in range(600):  # the header is padded to 8 bytes: > 256 lengths cover every low byte
        path = tmp_path / "m.safetensors"
        save_checkpoint(path, m, {"pad": "x" * pad})
        if path.read_bytes()[0] == 0x80:
            assert load_checkpoint(path).model.family == "made"
            return
    pytest.fail("no padding gave a header length with low byte 0x80")


# ------------------------------------------------------------------------------ failed saves
def _leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize(
    "target, err",
    [
        ("fsync", errno.ENOSPC),  # the disk fills up while writing
        ("replace", errno.EROFS),  # the rename is refused (read-only file system)
        ("mkstemp", errno.EACCES),  # the folder is not writable
    ],
)
def test_failed_save_keeps_the_previous_file(tmp_path, monkeypatch, target, err):
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, tiny_made(0), {"name": "first"})
    before = path.read_bytes()

    def fail(*a, **k):
        raise OSError(err, os.strerror(err))

    if target == "mkstemp":
        monkeypatch.setattr(atomic.tempfile, "mkstemp", fail)
    else:
        monkeypatch.setattr(atomic.os, target, fail)
    with pytest.raises(CheckpointError) as info:
        save_checkpoint(path, tiny_made(1), {"name": "second"})
    monkeypatch.undo()
    msg = str(info.value)
    assert str(path) in msg and os.strerror(err) in msg
    assert path.read_bytes() == before
    assert load_checkpoint(path).meta["name"] == "first"
    assert _leftovers(tmp_path) == [], "a temporary file was left behind"


def test_save_into_a_missing_folder(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        save_checkpoint(tmp_path / "nope" / "m.safetensors", tiny_made())


def test_saved_file_is_not_private(tmp_path):
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, tiny_made())
    assert path.stat().st_mode & 0o044 == 0o044


def test_metadata_is_plain_json(tmp_path):
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, tiny_made(), {"note": "ünïcode ✓", "numbers": [1, 2.5]})
    hdr, _ = read_st(path)
    info = json.loads(hdr["__metadata__"]["pixelchain"])
    assert info["note"] == "ünïcode ✓" and info["numbers"] == [1, 2.5]
    assert np.isfinite(info["parameters"])


def test_stale_temporary_files_of_killed_saves_are_removed(tmp_path):
    path = tmp_path / "m.safetensors"
    old, fresh = tmp_path / ".m.safetensors.abc123.tmp", tmp_path / ".m.safetensors.def456.tmp"
    old.write_bytes(b"half a checkpoint")
    fresh.write_bytes(b"a save killed a second ago")
    os.utime(old, (1e9, 1e9))
    save_checkpoint(path, tiny_made())
    assert not old.exists() and not fresh.exists() and load_checkpoint(path)  # no save holds either one


# ----------------------------------------------------------------------------- int8 storage
def _made_28(seed: int = 0):
    torch.manual_seed(seed)
    m = build_model("made", {"hidden": (96,), "direct": True}, make_ordering("snake", 28, 28))
    with torch.no_grad():
        m.direct.weight.normal_(0, 0.05)
    return m.eval()


@pytest.mark.parametrize("shape", [(5, 200), (3, 64), (4, 1), (2, 3, 5, 7), (130,)])
def test_int8_codes_every_value_within_half_a_step(shape):
    w = torch.randn(*shape, generator=torch.Generator().manual_seed(1)) * torch.logspace(-3, 1, shape[0])[
        (...,) + (None,) * (len(shape) - 1)]
    q, scale = ckmod.quantize_int8(w, group=16)
    assert q.dtype == torch.int8 and q.shape == w.shape and int(q.abs().max()) <= 127
    rows = shape[0]
    cols = w.numel() // rows
    assert scale.shape == (rows, -(-cols // 16))
    back = ckmod.dequantize_int8(q, scale, group=16)
    step = scale.repeat_interleave(16, 1)[:, :cols].reshape(w.shape)
    assert bool(((back - w).abs() <= step / 2 + 1e-7).all())
    zero = torch.zeros(3, 40)
    q0, s0 = ckmod.quantize_int8(zero, group=16)
    assert torch.equal(ckmod.dequantize_int8(q0, s0, group=16), zero)  # an all-zero group stays zero


def test_int8_storage_is_half_the_size_of_float16_and_close(tmp_path):
    m = _made_28()
    half, small = tmp_path / "half.safetensors", tmp_path / "int8.safetensors"
    save_checkpoint(half, m, dtype=torch.float16)
    save_checkpoint(small, m, {"name": "x", "quantization": "stale"}, dtype=ckmod.INT8)
    hdr, _ = read_st(small)
    coded = {k for k, v in hdr.items() if k != "__metadata__" and v["dtype"] == "I8"}
    assert coded == {"model.layers.0.weight", "model.out.weight", "model.direct.weight"}
    for k in coded:
        rows, cols = hdr[k]["shape"][0], int(np.prod(hdr[k]["shape"][1:]))
        assert hdr[f"qscale.{k[len('model.'):]}"]["shape"] == [rows, -(-cols // ckmod.INT8_GROUP)]
    assert small.stat().st_size < 0.6 * half.stat().st_size
    ck = load_checkpoint(small)
    assert ck.meta["quantization"] == {"scheme": "int8-groups", "group": ckmod.INT8_GROUP}
    x = torch.bernoulli(torch.full((64, 784), 0.2), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = m.log_prob(x), ck.model.log_prob(x)
    assert next(ck.model.parameters()).dtype == torch.float32
    # coded, not copied; off by under 0.1 % of the NLL (here ~500 nats, a random network)
    assert not torch.equal(a, b) and float((a - b).abs().max()) < 1e-3 * float(a.abs().mean()), (a - b).abs().max()
    # saved again in float32, the stale quantization note is gone and the file loads as before
    again = tmp_path / "again.safetensors"
    save_checkpoint(again, ck.model, ck.meta)
    assert "quantization" not in read_metadata(again)
    with torch.no_grad():
        assert torch.equal(load_checkpoint(again).model.log_prob(x), b)


def _crafted(src: Path, dst: Path, case: str) -> Path:
    """``src`` (an int8 checkpoint) rewritten with one thing wrong."""
    from safetensors.torch import load_file, save_file
    tensors = load_file(str(src))
    meta = read_st(src)[0]["__metadata__"]
    info = json.loads(meta["pixelchain"])
    if case == "no-scheme":
        info.pop("quantization")
    elif case == "bad-group":
        info["quantization"]["group"] = True
    elif case == "scale-shape":
        tensors["qscale.out.weight"] = tensors["qscale.out.weight"][:, :1].contiguous()
    elif case == "no-scale":
        del tensors["qscale.out.weight"]
    elif case == "negative-scale":
        tensors["qscale.out.weight"][0, 0] = -1.0
    elif case == "nan-scale":
        tensors["qscale.out.weight"][3, 0] = float("nan")
    save_file(tensors, str(dst), metadata=dict(meta, pixelchain=json.dumps(info)))
    return dst


@pytest.mark.parametrize("case, expect", [
    ("no-scheme", "is int8 but the metadata does not say how it was coded"),
    ("bad-group", "is int8 but the metadata does not say how it was coded"),
    ("scale-shape", "its scales (qscale.out.weight) are missing or not of shape (784, 2)"),
    ("no-scale", "its scales (qscale.out.weight) are missing"),
    ("negative-scale", "the int8 scales of 'out.weight' are negative, NaN or infinite"),
    ("nan-scale", "the int8 scales of 'out.weight' are negative, NaN or infinite"),
])
def test_bad_int8_checkpoints_are_refused_clearly(tmp_path, case, expect):
    src = save_checkpoint(tmp_path / "ok.safetensors", _made_28(), dtype=ckmod.INT8)
    load_checkpoint(src)  # the unaltered file loads
    with pytest.raises(CheckpointError, match=re.escape(expect)):
        load_checkpoint(_crafted(src, tmp_path / f"{case}.safetensors", case))


def test_a_snapshot_of_the_weights_is_saved_instead_of_the_current_ones(tmp_path):
    m = tiny_made()
    snap = {k: v.clone() for k, v in m.state_dict().items()}
    with torch.no_grad():
        for p in m.parameters():
            p.add_(1.0)  # training went on after the snapshot
    save_checkpoint(tmp_path / "a.safetensors", m, state=snap)
    back = load_checkpoint(tmp_path / "a.safetensors").model.state_dict()
    assert all(torch.equal(back[k], v) for k, v in snap.items())
    for bad in ({k: v for k, v in list(snap.items())[1:]}, {k: v[..., :1] if v.dim() else v for k, v in snap.items()}):
        with pytest.raises(ValueError, match="snapshot"):
            save_checkpoint(tmp_path / "b.safetensors", m, state=bad)
    assert not (tmp_path / "b.safetensors").exists()


# ------------------------------------------------------------------- no NaN as a result
def test_weights_that_compute_nan_are_refused_at_load(tmp_path, monkeypatch):
    """Finite weights may still compute NaN (the issue's 'test NLL nan' with exit 0): a probe batch
    through log_prob must give finite log-likelihoods before the model is handed out."""
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, tiny_made())
    assert load_checkpoint(path).model.family == "made"
    real = type(tiny_made()).log_prob_per_pixel
    monkeypatch.setattr(type(tiny_made()), "log_prob_per_pixel", lambda self, x, o=None, y=None: real(self, x, o, y) * float("nan"))
    with pytest.raises(CheckpointError, match=r"compute NaN or infinite log-likelihoods .*probe") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_the_load_probe_is_cheap_on_a_bundled_model():
    import time

    path = Path(ckmod.__file__).parents[1] / "resources" / "checkpoints" / "made-raster.safetensors"
    ck = load_checkpoint(path)
    t0 = time.perf_counter()
    ckmod._probe(ck.model, path)
    assert time.perf_counter() - t0 < 0.5


def test_eval_refuses_to_report_a_non_finite_nll(tmp_path, capsys, monkeypatch):
    import engine.train
    from engine.cli import main

    path = tmp_path / "m.safetensors"
    save_checkpoint(path, tiny_made())
    def nan_steps(*a, **k):
        yield 4
        return float("nan"), 0.1

    monkeypatch.setattr(engine.train, "evaluate_steps", nan_steps)
    monkeypatch.setattr("engine.data.load_split", lambda *a, **k: np.zeros((4, 8), np.uint8))
    assert main(["eval", str(path)]) == 2
    out, err = capsys.readouterr()
    assert "nan" not in out.lower() and err.count("\n") == 1 and err.startswith("pixelchain: error: ") and "not finite" in err


# ------------------------------------------------------------------------- bounded work
def _header_and_data(model):
    import io

    from safetensors.torch import save

    raw = save({f"model.{k}": v.contiguous() for k, v in model.state_dict().items()},
               metadata=read_st_meta(model))
    return read_st_bytes(io.BytesIO(raw).getvalue())


def read_st_meta(model):
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "m.safetensors"
        save_checkpoint(p, model)
        return read_st(p)[0]["__metadata__"]


def read_st_bytes(raw: bytes):
    import struct

    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def test_overlapping_offsets_are_refused_before_the_model_is_built(tmp_path, monkeypatch):
    """The issue's 8 MB checkpoint that built a 3.3 GB model: every tensor described on the same
    bytes, so the shapes claim far more values than the file holds."""
    from .hostile import st_bytes

    torch.manual_seed(0)
    model = build_model("made", {"hidden": (64, 64), "height": 8, "width": 8}, make_ordering("raster", 8, 8))
    header, data = _header_and_data(model)
    longest = 0
    for k, spec in header.items():
        if k != "__metadata__":
            a, b = spec["data_offsets"]
            spec["data_offsets"] = [0, b - a]  # all on the first bytes
            longest = max(longest, b - a)
    path = tmp_path / "overlap.safetensors"
    path.write_bytes(st_bytes(header, data[:longest]))
    monkeypatch.setattr(ckmod, "build_model", lambda *a, **k: pytest.fail("the model was built"))
    with pytest.raises(CheckpointError, match="overlaps another tensor's bytes") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    gap = json.loads(json.dumps(header))
    for k, spec in gap.items():
        if k != "__metadata__":
            spec["data_offsets"] = [v + 4 for v in spec["data_offsets"]]
    path.write_bytes(st_bytes(gap, data[:longest] + bytes(4)))
    with pytest.raises(CheckpointError, match="leaves a gap"):
        load_checkpoint(path)


def test_a_header_of_very_many_tensors_is_refused_quickly(tmp_path):
    """The issue's 43 MB header of 600k empty tensors took 42 s (and froze the app's UI thread)."""
    import time

    from .hostile import st_bytes

    header, data = read_st(_saved(tmp_path))
    for i in range(20_000):
        header[f"model.x{i}"] = {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}
    path = tmp_path / "many.safetensors"
    path.write_bytes(st_bytes(header, data))
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError, match="describes 20,00[0-9] tensors, more than the 10,000"):
        read_metadata(path)
    assert time.perf_counter() - t0 < 1.0


def _saved(tmp_path, **meta):
    p = tmp_path / "src.safetensors"
    save_checkpoint(p, tiny_made(), meta or None)
    return p


@pytest.mark.parametrize("where, size, message", [
    ("name", 1_000_000, "name is 1,000,000 characters long"),
    ("note", 300_000, "holds a string of 300,000 characters"),
    ("other", 5000, "metadata entry 'other' is 5,000 characters long"),
    ("many", 100, "the metadata has 10[0-9] entries"),
    ("header", 9 << 20, "header is 9.0 MiB, more than the 8 MiB"),
])
def test_metadata_sizes_are_bounded(tmp_path, where, size, message):
    """The issue's 20 MB metadata name froze the app 105 s; every string and the header are bounded."""
    from .hostile import st_bytes

    header, data = read_st(_saved(tmp_path))
    info = json.loads(header["__metadata__"]["pixelchain"])
    if where in ("name", "note"):
        info[where] = "x" * size
        header["__metadata__"]["pixelchain"] = json.dumps(info)
    elif where == "other":
        header["__metadata__"]["other"] = "y" * size
    elif where == "many":
        header["__metadata__"].update({f"k{i}": "v" for i in range(size)})
    else:
        header["__metadata__"]["pad"] = "z" * size
    path = tmp_path / "meta.safetensors"
    path.write_bytes(st_bytes(header, data))
    with pytest.raises(CheckpointError, match=message) as info_:
        read_metadata(path)
    assert str(path) in str(info_.value)
    assert load_checkpoint(_saved(tmp_path, name="n" * 200)).name == "n" * 200  # the longest name allowed


def _tiny_data(monkeypatch):
    monkeypatch.setattr("engine.data.load_split", lambda *a, **k: (np.random.default_rng(0).random((6, 8)) < 0.4).astype(np.uint8))


def test_eval_record_keeps_a_float64_checkpoint_bit_for_bit(tmp_path, monkeypatch, capsys):
    """The issue: --record rounded a float64 checkpoint to float32 precision."""
    from engine.cli import main

    path = tmp_path / "m64.safetensors"
    model = tiny_made().double()
    with torch.no_grad():
        model.out.bias.add_(1e-12)  # not representable in float32
    save_checkpoint(path, model, {"name": "sixty-four"}, dtype=torch.float64)
    header0, data0 = read_st(path)
    _tiny_data(monkeypatch)
    assert main(["eval", str(path), "--record", "--split", "valid"]) == 0
    header1, data1 = read_st(path)
    assert data1 == data0  # every tensor's bytes as they were
    assert {k: v for k, v in header1.items() if k != "__metadata__"} == {k: v for k, v in header0.items() if k != "__metadata__"}
    ck = load_checkpoint(path)
    assert "valid_nll" in json.dumps(ck.meta) and ck.name == "sixty-four"
    assert ckmod.stored_dtype(path) == torch.float64


def test_eval_record_checks_it_can_write_before_computing(tmp_path, monkeypatch, capsys):
    import engine.atomic
    import engine.train
    from engine.cli import main

    path = tmp_path / "m.safetensors"
    save_checkpoint(path, tiny_made())
    _tiny_data(monkeypatch)
    monkeypatch.setattr(engine.train, "evaluate", lambda *a, **k: pytest.fail("the split was computed first"))

    def refuse(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(engine.atomic.tempfile, "mkstemp", refuse)  # the folder takes no new files
    assert main(["eval", str(path), "--record"]) == 2
    err = capsys.readouterr().err
    assert err == f"pixelchain: error: cannot save {path}: folder {tmp_path} does not take new files (Permission denied)\n"


@pytest.mark.parametrize("argv, message", [
    (["eval", "CK", "--batch-size", "0"], "--batch-size: must be from 1 to 100,000, got 0"),
    (["eval", "CK", "--ensemble", "1000000000"], "--ensemble: must be from 1 to 1,000, got 1,000,000,000"),
    (["sample", "CK", "--out", "x.png", "--scale", "0"], "--scale: must be from 1 to 64, got 0"),
    (["sample", "CK", "--out", "x.png", "--seed", "99999999999999999999"], "--seed: must be from 0 to"),
    (["compress", "CK", "test", "--out", "x", "--max-images", "-1"], "--max-images: must be at least 1, got -1"),
    (["compress", "CK", "test", "--out", "x", "--chunk-size", "0"], "--chunk-size: must be from 1 to 65,536, got 0"),
    (["inpaint-eval", "CK", "--region", "top", "--batch-size", "0"], "--batch-size: must be from 1 to 100,000, got 0"),
])
def test_nonsense_sizes_and_seeds_are_refused_up_front(tmp_path, capsys, argv, message):
    """The issue's `eval --batch-size 0` ("range() arg 3 must not be zero"), `--ensemble 1000000000`
    (memory until it runs out), `sample --scale 0`, `--seed` beyond 64 bits ("Overflow when
    unpacking long"), `compress --max-images -1` (silently one image fewer)."""
    from engine.cli import main

    ck = tmp_path / "m.safetensors"
    save_checkpoint(ck, tiny_made())
    with pytest.raises(SystemExit) as info:
        main([str(ck) if a == "CK" else a for a in argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Overflow" not in err and "range()" not in err
