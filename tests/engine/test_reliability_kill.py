"""Killing the process (SIGKILL) while it saves checkpoints in a loop never leaves a file that
cannot be loaded: saves write a temporary file and rename it into place."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]

# One process imports torch once, then forks a fresh saver for every kill (fast and realistic:
# the saver is a whole process that dies by SIGKILL at an arbitrary point of a save).
CHILD = r"""
import os, sys, torch
torch.set_num_threads(1)
from engine.checkpoint import save_checkpoint
from engine.models import build_model
path = sys.argv[1]
torch.manual_seed(0)
model = build_model("made", {"hidden": (500,)})  # about 6.5 MB a save
for command in sys.stdin:
    pid = os.fork()
    if pid:
        os.waitpid(pid, 0)
        continue
    i, me = 0, os.getpid()
    while True:
        with torch.no_grad():
            model.out.bias.fill_(float(i))
        os.write(1, f"begin {i} {me}\n".encode())  # one write: lines never interleave
        save_checkpoint(path, model, {"i": i})
        os.write(1, f"end {i} {me}\n".encode())
        i += 1
"""


def kill_one_saver(proc: subprocess.Popen, path: Path, rng: random.Random, max_sleep: float = 0.04) -> tuple[int, int]:
    """Start a saver, SIGKILL it during save number ``target``; (target, save the file holds).

    Lines of earlier, killed savers may still sit in the pipe: only the newest saver's (the one
    that announced ``begin 0`` after this call) are read.
    """
    proc.stdin.write("go\n")
    proc.stdin.flush()
    target = rng.randint(1, 3)  # after at least one complete save
    current = None
    for line in proc.stdout:
        word, i, pid = line.split()
        if word == "begin" and i == "0":
            current = pid
        if pid == current and word == "begin" and int(i) == target:
            time.sleep(rng.uniform(0, max_sleep))  # somewhere inside the write, fsync or rename
            os.kill(int(pid), signal.SIGKILL)
            break
    ck = load_checkpoint(path)  # the assertion of this whole file: it never raises
    held = ck.meta["i"]
    assert held >= target - 1, (held, target)  # never older than the last complete save
    assert float(ck.model.out.bias.detach()[0]) == float(held)  # weights and metadata from the same save
    return target, held


@pytest.mark.skipif(not hasattr(signal, "SIGKILL") or not hasattr(os, "fork"), reason="needs SIGKILL and fork")
def test_sigkill_during_saves_always_leaves_a_loadable_checkpoint(tmp_path):
    path = tmp_path / "model.safetensors"
    rng = random.Random(1)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    outcomes = []
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=env, cwd=ROOT)
    try:
        for _ in range(6):
            target, held = kill_one_saver(proc, path, rng)
            outcomes.append("previous" if held < target else "new")
    finally:
        proc.kill()
        proc.wait(10)
        proc.stdin.close()
        proc.stdout.close()
    # the killed saves' temporary files go with the next save of the same file, however young
    from engine.atomic import temporary_files
    from engine.checkpoint import save_checkpoint

    save_checkpoint(path, load_checkpoint(path).model, {"i": -1})
    assert temporary_files(path) == [] and sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    print("after SIGKILL mid-save the file held the", ", ".join(outcomes), "checkpoint")
