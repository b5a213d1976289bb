"""Data-parallel training across processes (``torchrun --nproc_per_node=N pixelchain train ...``).

PyTorch's DistributedDataParallel (Li et al. 2020, "PyTorch Distributed: Experiences on
Accelerating Data Parallel Training"): every process holds a replica of the model, computes the
loss of its shard of each minibatch, and the gradients are averaged across processes during the
backward pass, so every replica takes the same optimizer step.

How :func:`engine.train.train` uses this module (a no-op in a single process). The module knows
nothing of training (models appear in type hints only), so the dependency runs one way, from
``train`` to here:

* :func:`context` reads torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), starts
  the process group once -- NCCL when training on CUDA (one GPU per process, ``cuda:LOCAL_RANK``),
  gloo on the CPU -- and says which process is the main one;
* every process draws the same shuffled order of the training set from the run's seed; each global
  minibatch of ``batch_size`` images is split across the processes (:meth:`DistContext.shard`,
  the interleaved sharding of ``DistributedSampler``), so N processes take the same steps as one
  process on the same batches (up to floating-point summation order);
* :meth:`DistContext.loss_fn` wraps the model in DDP so its ``training_loss`` synchronises
  gradients; the batch loss printed is the mean over processes;
* the validation NLL is computed on a shard per process (:meth:`DistContext.eval_shard`) and
  reduced (:meth:`DistContext.combine_nll`: sums of NLLs, of their squares, and counts);
* only the main process (rank 0) writes checkpoints and prints progress.
"""

from __future__ import annotations

import atexit
import datetime
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

if TYPE_CHECKING:
    from .models.base import ARModel

__all__ = ["DistContext", "context", "is_distributed_env", "shutdown"]


def is_distributed_env() -> bool:
    """Whether this process was started by torchrun (or similar) as one of several."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


class _Loss(nn.Module):
    """DDP synchronises gradients of what its ``forward`` computes; ours is the training loss."""

    def __init__(self, model: ARModel):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.model.training_loss(x, y)


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    device: torch.device | None = None  #: the process's device when distributed

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, idx: Tensor) -> Tensor:
        """This process's part of a global minibatch (never empty: a batch smaller than the number
        of processes is repeated, like ``DistributedSampler`` pads)."""
        if not self.enabled:
            return idx
        if len(idx) < self.world_size:
            idx = idx.repeat(math.ceil(self.world_size / len(idx)))
        return idx[self.rank :: self.world_size]

    def loss_fn(self, model: ARModel) -> Callable[[Tensor, Tensor | None], Tensor]:
        """What to call on a minibatch for the loss to minimise (gradient-synchronising under DDP)."""
        if not self.enabled:
            return model.training_loss
        ids = [self.device.index] if self.device is not None and self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(_Loss(model), device_ids=ids)

    def mean(self, value: float) -> float:
        """The mean of a number over the processes (every process gets it)."""
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(t)
        return float(t.item()) / self.world_size

    def eval_shard(self, x: np.ndarray) -> np.ndarray:
        """This process's interleaved share of an evaluation set (all of it in a single process)."""
        x = np.asarray(x)
        return x[self.rank :: self.world_size] if self.enabled else x

    def combine_nll(self, mean: float, se: float, n: int) -> tuple[float, float]:
        """Mean NLL and its standard error over all processes, from each process's mean and standard
        error over its ``n`` images (:meth:`eval_shard`); unchanged in a single process."""
        if not self.enabled:
            return mean, se
        if n:
            var = se * se * n if n > 1 else 0.0  # unbiased variance of the shard's NLLs
            sums = [mean * n, var * (n - 1) + n * mean * mean, float(n)]  # sum, sum of squares, count
        else:
            sums = [0.0, 0.0, 0.0]
        t = torch.tensor(sums, dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(t)
        total, sq, count = t.tolist()
        mean = total / count
        var = max(sq - count * mean * mean, 0.0) / max(count - 1, 1)
        return mean, math.sqrt(var / count) if count > 1 else float("nan")

    def _comm_device(self) -> torch.device:
        return self.device if self.backend == "nccl" and self.device is not None else torch.device("cpu")


_CONTEXT: DistContext | None = None


def context(device: str = "auto") -> DistContext:
    """The process group of this run, started on first use; a single-process context outside
    torchrun. ``device`` is the user's choice (``auto``, ``cpu``, ``cuda``...): NCCL and one GPU
    per process when it resolves to CUDA, gloo otherwise."""
    global _CONTEXT
    if _CONTEXT is not None:
        return _CONTEXT
    if not is_distributed_env():
        return DistContext()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and (device == "auto" or device.startswith("cuda"))
    if use_cuda:
        torch.cuda.set_device(local)
        backend, dev = "nccl", torch.device("cuda", local)
    elif device not in ("auto", "cpu"):
        raise RuntimeError(f"distributed training runs on CUDA (NCCL) or the CPU (gloo), not on {device!r}")
    else:
        backend, dev = "gloo", torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
        atexit.register(shutdown)
    _CONTEXT = DistContext(rank=rank, world_size=world, local_rank=local, backend=backend, device=dev)
    return _CONTEXT


def shutdown() -> None:
    """Leave the process group (end of a distributed run)."""
    global _CONTEXT
    if dist.is_available() and dist.is_initialized():
        if dist.get_backend() == "gloo":
            # leave together: a rank that tears gloo down while its peer still talks to it can abort
            # the peer at exit ("terminate called without an active exception"); a dead peer is
            # waited for 30 s at most
            try:
                dist.monitored_barrier(timeout=datetime.timedelta(seconds=30))
            except Exception:  # noqa: BLE001 -- a peer gone already: leave anyway
                pass
        dist.destroy_process_group()
    _CONTEXT = None
