"""Data-parallel training: two gloo processes under torchrun take the same steps as one process
on the same batches, only rank 0 writes and prints, and the validation NLL is reduced over both."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from engine.checkpoint import read_metadata
from engine.distributed import DistContext, context, is_distributed_env

# float32: the runs are compared to 1e-4, finer than bf16 rounding, which --precision auto would
# choose for MADE on a CPU with native bf16
ARGS = ["train", "--model", "made", "--hidden", "24", "--epochs", "2", "--batch-size", "40", "--max-train", "200",
        "--max-valid", "61", "--threads", "1", "--device", "cpu", "--lr", "0.01", "--precision", "float32"]


def _run(cmd: list[str], cwd) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)


@pytest.mark.timeout(300)
def test_two_gloo_processes_match_single_process_training(tmp_path):
    single = _run([sys.executable, "-m", "engine", *ARGS, "--out", str(tmp_path / "one.safetensors")], tmp_path)
    assert single.returncode == 0, single.stderr
    multi = _run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "engine", *ARGS,
         "--out", str(tmp_path / "two.safetensors")],
        tmp_path,
    )
    assert multi.returncode == 0, multi.stdout + multi.stderr
    # one process prints, one process writes
    assert multi.stdout.count("completed after 2 epochs") == 1, multi.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "one.resume.safetensors", "one.safetensors", "two.resume.safetensors", "two.safetensors"
    ]
    a = load_file(str(tmp_path / "one.resume.safetensors"))
    b = load_file(str(tmp_path / "two.resume.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)
    ha = read_metadata(tmp_path / "one.resume.safetensors")["history"]
    hb = read_metadata(tmp_path / "two.resume.safetensors")["history"]
    # the validation NLL of both processes' shards, reduced, equals the single-process one
    for ea, eb in zip(ha, hb, strict=True):
        assert eb["valid_nll"] == pytest.approx(ea["valid_nll"], rel=1e-6)
        assert eb["train_nll"] == pytest.approx(ea["train_nll"], rel=1e-3)
    assert ha[1]["valid_nll"] < ha[0]["valid_nll"]  # training did something


def test_single_process_context_is_a_no_op():
    if is_distributed_env():
        pytest.skip("running under torchrun")
    ctx = context("cpu")
    assert not ctx.enabled and ctx.is_main
    idx = torch.arange(7)
    assert torch.equal(ctx.shard(idx), idx)
    assert ctx.mean(3.5) == 3.5
    x = np.arange(10).reshape(5, 2)
    assert np.array_equal(ctx.eval_shard(x), x)
    assert ctx.combine_nll(80.5, 0.25, 5) == (80.5, 0.25)


def test_shards_split_a_batch_between_processes():
    idx = torch.tensor([5, 1, 9, 4, 7])
    parts = [DistContext(rank=r, world_size=2).shard(idx) for r in range(2)]
    assert parts[0].tolist() == [5, 9, 7] and parts[1].tolist() == [1, 4]
    tiny = [DistContext(rank=r, world_size=3).shard(torch.tensor([8, 2])) for r in range(3)]
    assert all(len(t) >= 1 for t in tiny) and sorted(set(torch.cat(tiny).tolist())) == [2, 8]


def test_evaluation_shards_cover_the_set_once():
    x = np.arange(7)
    parts = [DistContext(rank=r, world_size=3).eval_shard(x) for r in range(3)]
    assert [p.tolist() for p in parts] == [[0, 3, 6], [1, 4], [2, 5]]
