"""``pixelchain --screenshot`` end to end, in a subprocess (it exits the process when done)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


def _run(args, tmp_path, timeout=120):
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PIXELCHAIN_SETTINGS=str(tmp_path / "s.ini"))
    return subprocess.run([sys.executable, "-m", "app", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_screenshot_of_a_model_by_path(tmp_path, bundled, data_dir):
    out = tmp_path / "shot.png"
    r = _run(["--screenshot", str(out), "--model", str(bundled / "made-any.safetensors"), "--ordering", "snake",
              "--size", "1500x950"], tmp_path)
    assert r.returncode == 0, r.stderr
    with Image.open(out) as img:
        assert img.size == (1500, 950)
        colours = img.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50  # a rendered window, not a blank image


def test_screenshot_errors_are_clear(tmp_path, bundled):
    r = _run(["--screenshot", str(tmp_path / "x.png"), "--model", "no-such-model"], tmp_path)
    assert r.returncode == 2 and "no model named 'no-such-model'" in r.stderr
    r = _run(["--screenshot", str(tmp_path / "x.png"), "--model", str(bundled / "made-raster.safetensors"),
              "--ordering", "snake"], tmp_path)
    assert r.returncode == 2 and "raster ordering only" in r.stderr
    assert not (tmp_path / "x.png").exists()


def test_pixelchain_help_lists_the_subcommands_and_the_apps_options(capsys):
    from app.launcher import main

    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("train", "eval", "sample", "info", "compress", "decompress", "score", "inpaint-eval"):
        assert f"\n    {command}" in out, command
    app_part = out[out.index("Without a subcommand, pixelchain starts the desktop app"):]
    for option in ("--model", "--ordering", "--screenshot", "--tab", "--overlay", "--timeout"):
        assert option in app_part, option
