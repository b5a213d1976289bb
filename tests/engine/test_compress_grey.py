"""Compression of grey digits (K > 2 levels): K-ary range coding with integer frequencies, exact round
trips on real grey MNIST digits, code lengths within 1% of -log2 p(x), the version-2 container that
records the levels, binary files unchanged, hostile headers refused, and the command line with PNGs."""

from __future__ import annotations

import functools
import io
import json
import math
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from engine.checkpoint import save_checkpoint
from engine.cli import main
from engine.datasets import load_dataset
from engine.models import build_model
from engine.tasks.compress import (
    _HEAD,
    MAGIC,
    VERSION,
    VERSION_LEVELS,
    Codec,
    CompressionError,
    compress,
    decompress,
    model_fingerprint,
    png_size_bytes,
    quantise_frequencies,
    quantise_probabilities,
    read_container_header,
)

LOG2 = math.log(2.0)
HEADS = {"categorical": {"output": "categorical"}, "mixture": {"output": "logistic-mixture", "components": 3}}


@functools.lru_cache(maxsize=None)
def _digits(data: str, levels: int, split: str = "test") -> np.ndarray:
    return load_dataset("mnist", split, data, levels)


@functools.lru_cache(maxsize=None)
def grey_nade(data: str, levels: int, head: str, hidden: int = 8, steps: int = 12) -> torch.nn.Module:
    """A small NADE fitted for a few steps on 400 grey training digits: real, if rough, conditionals."""
    torch.manual_seed(0)
    model = build_model("nade", {"levels": levels, "hidden": hidden, **HEADS[head]})
    x = torch.as_tensor(_digits(data, levels, "train")[:400], dtype=torch.float32)
    freq = torch.stack([(x == v).float().mean(0) for v in range(levels)], -1)
    model.init_output_bias((freq + 1e-3) / (freq + 1e-3).sum(-1, keepdim=True))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for i in range(steps):
        loss = model.training_loss(x[(i * 50) % 400 : (i * 50) % 400 + 50])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.mark.parametrize("levels", [4, 256])
@pytest.mark.parametrize("head", list(HEADS))
def test_real_grey_digits_round_trip_exactly_within_one_percent_of_their_likelihood(shared_data, levels, head):
    model = grey_nade(str(shared_data), levels, head)
    x = _digits(str(shared_data), levels)[:12]
    codec = Codec(model, chunk_size=12)
    data, ideal = codec.encode_detailed(x)
    np.testing.assert_array_equal(codec.decode(data).reshape(len(x), -1), x)
    nll_bits = -model.log_prob(torch.as_tensor(x, dtype=torch.float32)).detach().double().numpy() / LOG2
    # the quantised conditionals cost what the model says, image by image
    np.testing.assert_allclose(ideal, nll_bits, rtol=1e-3)
    # and the stream itself: the range coder's bits within 1% of sum -log2 p(x) (the coder's termination included)
    info = read_container_header(data)
    payload = 32 * sum(words for _, words in info.chunks)
    assert abs(payload - nll_bits.sum()) <= 0.01 * nll_bits.sum(), (payload, nll_bits.sum())
    assert info.levels == levels and data[4] == VERSION_LEVELS
    assert 8 * len(data) < 1.01 * nll_bits.sum() + 8 * info.header_bytes + 32 * len(info.chunks)


def test_a_single_grey_image_and_its_png(shared_data):
    model = grey_nade(str(shared_data), 4, "categorical")
    img = _digits(str(shared_data), 4)[7].reshape(28, 28)
    cl = Codec(model, chunk_size=1).code_length(img)
    assert cl.ideal_bits == pytest.approx(cl.model_bits, rel=1e-3)
    assert cl.ideal_bits <= cl.bits <= cl.ideal_bits + 64
    # the PNG compared with is the lossless 8-bit grey PNG of the digit, level v at round(v * 255 / 3)
    assert cl.png_bytes == png_size_bytes(img, 4)
    buf = io.BytesIO()
    Image.fromarray((img.astype(np.int64) * 85).astype(np.uint8), mode="L").save(buf, format="PNG", optimize=True)
    assert cl.png_bytes == len(buf.getvalue())
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        assert im.mode == "L" and np.array_equal(np.asarray(im) // 85, img)


def test_frequencies_are_whole_numbers_that_code_every_level():
    lp = torch.log_softmax(torch.tensor([[0.0, 0.0, 0.0, 0.0], [5.0, -5.0, -1e9, 0.0], [1.0, 2.0, 3.0, 4.0]],
                                        dtype=torch.float64), -1)
    lp[1, 2] = -math.inf  # a level the model calls impossible is still codable
    f = quantise_frequencies(lp)
    assert f.dtype == np.int64 and (f.sum(1) == 1 << 24).all() and f.min() >= 1
    assert (f[0] == 1 << 22).all()  # uniform: exactly a quarter each
    assert f[1, 2] == 1 and f[1, 0] > f[1, 3] > f[1, 1]
    np.testing.assert_allclose(f[2] / 2**24, lp[2].exp().numpy(), atol=4 / 2**24)
    np.testing.assert_array_equal(quantise_frequencies(lp), f)  # deterministic
    with pytest.raises(CompressionError, match="NaN"):
        quantise_frequencies(torch.tensor([[0.0, float("nan")]]))


def _old_format(model, x: np.ndarray, chunk: int) -> bytes:
    """The version-1 container exactly as binary files were written before grey levels: rebuilt here
    from the format's description with the constriction Bernoulli coder."""
    import constriction

    m = model.double().eval()
    parts = [_HEAD.pack(MAGIC, 1, bytes.fromhex(model_fingerprint(model))[:16], 28, 28, len(x), chunk, 0),
             struct.pack("<I", zlib.crc32(np.packbits(x, axis=1).tobytes()))]
    for i in range(0, len(x), chunk):
        c = x[i : i + chunk]
        st = m.stepper(torch.zeros(len(c), 784, dtype=torch.float64), m.ordering)
        probs, sym = [], []
        with torch.no_grad():
            for pixel in m.ordering.perm.tolist():
                probs.append(quantise_probabilities(st.logits(pixel)))
                sym.append(c[:, pixel])
                st.observe(pixel, torch.as_tensor(c[:, pixel], dtype=torch.float64))
        enc = constriction.stream.queue.RangeEncoder()
        enc.encode(np.concatenate(sym).astype(np.int32), constriction.stream.model.Bernoulli(perfect=False), np.concatenate(probs))
        words = np.asarray(enc.get_compressed(), dtype=np.uint32)
        parts += [struct.pack("<I", len(words)), words.astype("<u4").tobytes()]
    return b"".join(parts)


def test_a_binary_file_is_byte_for_byte_the_old_format(data_dir):
    from engine.data import load_split

    torch.manual_seed(0)
    model = build_model("nade", {"hidden": 10})
    x = load_split("test", data_dir)[:9]
    data = compress(model, x, chunk_size=4)
    assert data[4] == VERSION == 1 and read_container_header(data).levels == 2
    assert data == _old_format(model, x, 4)


@pytest.fixture(scope="module")
def grey_file(shared_data):
    model = grey_nade(str(shared_data), 4, "mixture")
    x = _digits(str(shared_data), 4)[:3]
    return model, x, compress(model, x, chunk_size=2)


def _with_levels(data: bytes, version: int, levels: int | None) -> bytes:
    """``data`` with its version byte and its levels field (present or not) replaced."""
    assert _HEAD.unpack_from(data, 0)[-1] == 0  # no ordering description: the levels field follows the fixed header
    rest = data[_HEAD.size + (2 if data[4] == VERSION_LEVELS else 0):]
    head = bytearray(data[: _HEAD.size])
    head[4] = version
    return bytes(head) + (struct.pack("<H", levels) if levels is not None else b"") + rest


@pytest.mark.parametrize("levels", [0, 2, 3, 5, 255, 257, 65535])
def test_a_grey_header_with_impossible_levels_is_refused(grey_file, levels):
    model, _, data = grey_file
    with pytest.raises(CompressionError, match=f"corrupt header: {levels} pixel levels"):
        read_container_header(_with_levels(data, VERSION_LEVELS, levels))
    with pytest.raises(CompressionError, match="pixel levels"):
        decompress(model, _with_levels(data, VERSION_LEVELS, levels))


def test_grey_headers_that_disagree_with_the_model_are_refused(grey_file, data_dir):
    model, x, data = grey_file
    np.testing.assert_array_equal(decompress(model, data).reshape(3, -1), x)
    with pytest.raises(CompressionError, match="images of 16 levels, the model's pixels have 4"):
        decompress(model, _with_levels(data, VERSION_LEVELS, 16))
    with pytest.raises(CompressionError, match="images of 2 levels, the model's pixels have 4"):
        decompress(model, _with_levels(data, VERSION, None))  # the levels dropped: a binary file's header
    with pytest.raises(CompressionError, match="truncated"):
        decompress(model, data[: _HEAD.size + 1])  # cut inside the levels field
    from engine.data import load_split

    binary = build_model("fvsbn", {})
    bdata = compress(binary, load_split("test", data_dir)[:2])
    with pytest.raises(CompressionError, match="images of 4 levels, the model's pixels have 2"):
        decompress(binary, _with_levels(bdata, VERSION_LEVELS, 4))
    with pytest.raises(CompressionError, match="another model"):
        decompress(binary, data)
    # flipped payload bytes are never silently decoded
    info = read_container_header(data)
    codec = Codec(model)
    for k in np.linspace(0, 4 * info.chunks[0][1] - 1, 6).astype(int):
        bad = bytearray(data)
        bad[info.chunks[0][0] + k] ^= 0x5A
        with pytest.raises(CompressionError):
            codec.decode(bytes(bad))
    # a small grey file claiming many images is refused before any work
    head = bytearray(data[: info.header_bytes])
    struct.pack_into("<II", head, 4 + 1 + 16 + 4, 100_000, 65_536)
    with pytest.raises(CompressionError, match="cannot be held"):
        read_container_header(bytes(head) + struct.pack("<II", 1, 0) * 2)


def test_values_outside_the_levels_are_refused(shared_data):
    codec = Codec(grey_nade(str(shared_data), 4, "categorical"))
    for bad in (np.full((1, 784), 4), np.full((1, 784), 1.5), np.full((1, 784), -1)):
        with pytest.raises(CompressionError, match="only the whole values 0 to 3"):
            codec.encode(bad)


@pytest.fixture(scope="module")
def grey_ckpt(tmp_path_factory, shared_data):
    path = tmp_path_factory.mktemp("grey") / "nade4.safetensors"
    save_checkpoint(path, grey_nade(str(shared_data), 4, "categorical"), {"dataset": "mnist"})
    return path


def test_cli_compresses_a_split_and_grey_pngs_and_reports_the_png_size(grey_ckpt, shared_data, tmp_path, capsys):
    out, data = tmp_path / "five.pxcz", str(shared_data)
    assert main(["compress", str(grey_ckpt), "test", "--max-images", "5", "--data", data, "--out", str(out), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    x = _digits(data, 4)[:5]
    assert res["levels"] == 4 and res["n_images"] == 5 and res["file_bytes"] == out.stat().st_size
    assert res["png_bytes"] == sum(png_size_bytes(im.reshape(28, 28), 4) for im in x)
    assert res["png_bytes_per_image"] == pytest.approx(res["png_bytes"] / 5)
    pngs = tmp_path / "pngs"
    assert main(["decompress", str(grey_ckpt), str(out), "--out", str(pngs)]) == 0
    files = sorted(pngs.iterdir())
    assert len(files) == 5
    for f, im in zip(files, x, strict=True):
        with Image.open(f) as png:
            assert png.mode == "L" and np.array_equal(np.asarray(png), (im.reshape(28, 28).astype(np.int64) * 85).astype(np.uint8))
    # the grey PNGs come back as the same levels: compressed again, decoded to an array
    again, npy = tmp_path / "again.pxcz", tmp_path / "back.npy"
    assert main(["compress", str(grey_ckpt), *map(str, files), "--out", str(again)]) == 0
    text = capsys.readouterr().out
    assert "an 8-bit grey PNG" in text and f"as lossless 8-bit grey PNGs: {res['png_bytes']} bytes" in text
    assert main(["decompress", str(grey_ckpt), str(again), "--out", str(npy)]) == 0
    np.testing.assert_array_equal(np.load(npy).reshape(5, -1), x)
    # black ink on white: the same levels again
    black = tmp_path / "black.png"
    single = tmp_path / "one.pxcz"
    assert main(["compress", str(grey_ckpt), str(files[0]), "--out", str(single)]) == 0
    assert main(["decompress", str(grey_ckpt), str(single), "--out", str(black), "--ink", "black"]) == 0
    assert main(["compress", str(grey_ckpt), str(black), "--out", str(single)]) == 0
    assert main(["decompress", str(grey_ckpt), str(single), "--out", str(npy)]) == 0
    np.testing.assert_array_equal(np.load(npy).reshape(1, -1), x[:1])


def test_cli_refuses_what_a_grey_model_cannot_code_in_one_line(grey_ckpt, tmp_path, capsys):
    np.save(tmp_path / "bad.npy", np.full((2, 28, 28), 7, np.uint8))
    Image.fromarray(np.zeros((30, 30), np.uint8), mode="L").save(tmp_path / "big.png")
    for src, match in ((tmp_path / "bad.npy", "holds values other than the levels 0 to 3 of this 4-level model"),
                       (tmp_path / "big.png", "is 30x30 pixels: a grey model codes a 28x28 picture pixel for pixel")):
        assert main(["compress", str(grey_ckpt), str(src), "--out", str(tmp_path / "o.pxcz")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("pixelchain: error: ") and match in err, err
