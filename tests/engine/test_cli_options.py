"""What every ``pixelchain`` subcommand shares: complete --help, --threads on every command that runs
a model, and reports that say which images they measured."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import engine.cli.classify as cliclassify
import engine.cli.commands as clicommands
import engine.cli.tasks as clitasks
from app.launcher import main as launcher_main
from engine.checkpoint import save_checkpoint
from engine.cli import ENGINE_COMMANDS, build_parser, main
from engine.cli.options import Progress
from engine.models import build_model

#: subcommands that only read files and run no model
NON_COMPUTE = {"info", "mix"}


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_the_launcher_hands_every_subcommand_to_the_engine():
    """``pixelchain COMMAND`` reaches the engine's command line for exactly the parser's commands."""
    assert ENGINE_COMMANDS == set(_subparsers(build_parser()))


def test_every_subcommand_and_option_has_help(capsys):
    parser = build_parser()
    subs = _subparsers(parser)
    assert {"train", "eval", "sample", "info", "compress", "decompress", "score", "inpaint-eval"} <= set(subs)
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    top = capsys.readouterr().out
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    summaries = {a.dest: a.help for a in action._choices_actions}
    for name, sub in subs.items():
        assert summaries.get(name), f"{name} has no line in pixelchain --help"
        assert name in top and summaries[name][:30] in " ".join(top.split())
        assert sub.description and len(sub.description) > len(summaries[name]), f"{name} has no description"
        for a in sub._actions:
            if isinstance(a, argparse._HelpAction):
                continue
            assert a.help and a.help != argparse.SUPPRESS and len(a.help) > 8, f"pixelchain {name} {a.option_strings or a.dest}: no help"
        sub.format_help()  # every %(default)s and %% in the help texts formats


def _minimal_argv(name: str, tmp_path) -> list[str]:
    ck = str(tmp_path / "m.safetensors")
    return {
        "train": ["train", "--model", "fvsbn", "--out", ck],
        "eval": ["eval", ck],
        "sample": ["sample", ck, "--out", str(tmp_path / "g.png")],
        "compress": ["compress", ck, "test", "--out", str(tmp_path / "c.pxc")],
        "decompress": ["decompress", ck, str(tmp_path / "c.pxc"), "--out", str(tmp_path / "d.npy")],
        "score": ["score", ck, str(tmp_path / "x.npy")],
        "inpaint-eval": ["inpaint-eval", ck, "--region", "top"],
        "info": ["info", ck],
        "classify": ["classify", ck],
        "mix": ["mix", ck, ck, "--out", str(tmp_path / "ens.safetensors")],
    }[name]


def test_every_compute_command_takes_threads_and_runs_with_them(tmp_path, monkeypatch):
    """--threads reaches torch before the command's work starts, on every subcommand that runs a
    model (a new subcommand must either take it or be listed as not computing)."""
    names = set(_subparsers(build_parser()))
    assert NON_COMPUTE < names
    seen: dict[str, int] = {}

    def fake(name):
        def run(a):
            seen[name] = torch.get_num_threads()
            return 0
        return run

    for name, attr in (("train", "_cmd_train"), ("eval", "_cmd_eval"), ("sample", "_cmd_sample")):
        monkeypatch.setattr(clicommands, attr, fake(name))
    for name in ("compress", "decompress", "score", "inpaint-eval"):
        monkeypatch.setattr(clitasks, f"_cmd_{name.replace('-', '_')}", fake(name))
    monkeypatch.setattr(cliclassify, "_cmd_classify", fake("classify"))
    before = torch.get_num_threads()
    want = before + 1  # differs from the current count, so a command that ignores it is caught
    try:
        for name in sorted(names - NON_COMPUTE):
            argv = _minimal_argv(name, tmp_path)
            assert build_parser().parse_args([*argv, "--threads", str(want)]).threads == want
            torch.set_num_threads(before)
            assert main([*argv, "--threads", str(want)]) == 0
            assert seen.pop(name) == want, name
    finally:
        torch.set_num_threads(before)
    for name in NON_COMPUTE:
        with pytest.raises(SystemExit):
            build_parser().parse_args([*_minimal_argv(name, tmp_path), "--threads", "2"])


def test_threads_must_be_positive(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["eval", str(tmp_path / "m.safetensors"), "--threads", "0"])
    assert info.value.code == 2 and "at least 1" in capsys.readouterr().err


def test_inpaint_eval_report_says_how_the_images_were_chosen(tmp_path, capsys, data_dir):
    """The plain-text report calls the images randomly drawn only when they were."""
    ck = tmp_path / "fvsbn.safetensors"
    torch.manual_seed(0)
    save_checkpoint(ck, build_model("fvsbn"))
    argv = ["inpaint-eval", str(ck), "--region", "bottom", "--max-images", "3", "--method", "exact", "--data", str(data_dir)]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert main([*argv, "--random-subset", "--seed", "2"]) == 0
    drawn = capsys.readouterr().out
    assert "over 3 images" in first and "randomly drawn" not in first
    assert "over 3 randomly drawn images" in drawn
    assert "\nmethod: exact: every known pixel precedes every hidden one" in first and "exact -- exact" not in first


# ------------------------------------------------------------------ errors a newcomer meets first
ROOT = Path(__file__).resolve().parents[2]
BUNDLED = ROOT / "resources" / "checkpoints" / "fvsbn-raster.safetensors"


def _two_line_error(capsys, argv, match):
    """``argv`` exits 2 with ``pixelchain: error: ...`` and a short usage hint: two lines, no traceback."""
    with pytest.raises(SystemExit) as info:
        launcher_main(argv)
    assert info.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 2, captured.err
    assert lines[0].startswith("pixelchain: error: ") and re.search(match, lines[0]), lines[0]
    assert lines[1].startswith("usage: pixelchain") and "--help" in lines[1], lines[1]
    assert captured.out == ""
    return lines


@pytest.mark.parametrize("argv, match", [
    (["eval", "m.safetensors", "--threads", "0"], "argument --threads: must be at least 1"),
    (["inpaint-eval", "m.safetensors", "--region", "top", "--split", "bogus"], "argument --split: invalid choice: 'bogus'"),
    (["sample", "m.safetensors", "--out", "g.png", "--temperature", "abc"], "argument --temperature: invalid float value: 'abc'"),
    (["train", "--out", "m.safetensors"], "the following arguments are required: --model"),
])
def test_argument_errors_take_two_lines(capsys, argv, match):
    lines = _two_line_error(capsys, argv, match)
    assert len(lines[1]) < 140  # the short usage, not argparse's screenful


def test_a_mistyped_subcommand_lists_the_subcommands_with_a_suggestion(capsys):
    """``pixelchain trian`` reaches the engine's parser (not the app's usage) and suggests ``train``."""
    lines = _two_line_error(capsys, ["trian", "--model", "made"], "unknown command 'trian'")
    assert "did you mean 'train'?" in lines[0]
    assert all(name in lines[0] for name in ENGINE_COMMANDS)
    lines = _two_line_error(capsys, ["xyzzy"], "unknown command 'xyzzy'")
    assert "did you mean" not in lines[0]


def test_a_closed_pipe_ends_quietly(tmp_path):
    """``pixelchain info X | head``: the reader goes away first; no ``Broken pipe`` error, no traceback."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for argv in (["info", str(BUNDLED)], ["--help"]):
        p = subprocess.Popen([sys.executable, "-m", "app.launcher", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=env, cwd=tmp_path)
        p.stdout.close()  # like `head` that has read enough: every write now fails with EPIPE
        with p.stderr:
            err = p.stderr.read().decode()
        p.wait(timeout=120)
        assert "Broken pipe" not in err and "Traceback" not in err and "Exception ignored" not in err, err
        assert p.returncode in (0, 141), (argv, p.returncode, err)


def test_device_meta_is_refused_in_one_line(capsys):
    assert main(["eval", str(BUNDLED), "--device", "meta", "--max-images", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--device 'meta'" in err[0] and "cpu, cuda" in err[0]


DEEP = "[" * 5000 + "]" * 5000


@pytest.mark.parametrize("argv", [
    ["train", "--model", "fvsbn", "--out", "OUT", "--config", '{"a": ' + DEEP + "}"],
    ["train", "--model", "fvsbn", "--out", "OUT", "--ordering", '{"name": ' + DEEP + "}"],
    ["eval", str(BUNDLED), "--ordering", '{"perm": ' + DEEP + "}"],
    ["sample", str(BUNDLED), "--out", "OUT", "--ordering", "{" * 3000 + "}" * 3000],
])
def test_deeply_nested_json_options_are_one_line(capsys, tmp_path, argv):
    """JSON nested thousands deep in --config or --ordering: one line (it was a RecursionError)."""
    argv = [str(tmp_path / "x.out") if v == "OUT" else v for v in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nests deeper than" in err[0] and "Traceback" not in err[0], err


# ------------------------------------------------------------------ progress off a terminal
class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_progress_off_a_terminal_is_a_line_every_ten_seconds():
    import io

    clock, out = _Clock(), io.StringIO()
    p = Progress("eval test", stream=out, clock=clock)
    for done in range(1, 101):
        clock.now += 1.0  # a second per step: 100 s in all
        p(done * 100, 10_000)
    p.close()
    lines = out.getvalue().splitlines()
    assert 8 <= len(lines) <= 10 and "\r" not in out.getvalue()
    assert lines[0] == "eval test: 1,000 of 10,000 images (10%), 0:10 elapsed, about 1:30 left", lines[0]
    quick = io.StringIO()
    p = Progress("eval test", stream=quick, clock=_Clock())
    p(5, 10)
    p(10, 10)
    assert quick.getvalue() == ""  # a short run prints nothing


@pytest.mark.parametrize("command", ["eval", "inpaint-eval", "compress"])
def test_long_commands_report_progress_on_stderr_when_it_is_not_a_terminal(tmp_path, capsys, monkeypatch, data_dir, command):
    """`eval`, `inpaint-eval` and `compress` in a log file: progress lines on stderr, the result alone on stdout."""
    monkeypatch.setattr(Progress, "EVERY", 0.0)  # a line at every step, so a quick run shows them
    ck = str(BUNDLED)
    argv = {
        "eval": ["eval", ck, "--max-images", "40", "--batch-size", "10", "--json"],
        "inpaint-eval": ["inpaint-eval", ck, "--region", "bottom", "--max-images", "40", "--batch-size", "10", "--json"],
        "compress": ["compress", ck, "test", "--max-images", "40", "--chunk-size", "10", "--out", str(tmp_path / "c.pxcz"), "--json"],
    }[command]
    assert main([*argv, "--data", str(data_dir), "--threads", "1"]) == 0
    captured = capsys.readouterr()
    json.loads(captured.out)  # stdout holds the result only
    lines = captured.err.splitlines()
    assert [ln.split(": ", 1)[1].split(" images")[0] for ln in lines] == ["10 of 40", "20 of 40", "30 of 40"], captured.err
    assert all(ln.startswith(command) for ln in lines) and "\r" not in captured.err


def test_main_catches_every_pixelchain_error_once(monkeypatch, capsys):
    """A new engine error class needs no registration: deriving from PixelchainError is enough."""
    from engine.errors import PixelchainError

    class NewKindOfError(PixelchainError):
        pass

    def fail(a):
        raise NewKindOfError("a new kind of failure, explained")

    monkeypatch.setattr(clicommands, "_cmd_info", fail)
    assert main(["info", "x.safetensors"]) == 2
    assert capsys.readouterr().err == "pixelchain: error: a new kind of failure, explained\n"


def test_an_os_error_names_its_file(monkeypatch, capsys):
    import errno

    def fail(a):
        raise OSError(errno.EACCES, os.strerror(errno.EACCES), "/some/where/m.safetensors")

    monkeypatch.setattr(clicommands, "_cmd_info", fail)
    assert main(["info", "x.safetensors"]) == 2
    assert capsys.readouterr().err == "pixelchain: error: /some/where/m.safetensors: Permission denied\n"
