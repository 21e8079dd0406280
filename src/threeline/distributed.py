"""Several processes, one per GPU (or per CPU share, with gloo), started by ``torchrun``.

The same script runs unchanged on one device or on N:

    torchrun --nproc-per-node=4 train.py          # or: threeline train DIR --gpus 4

A learner made under ``torchrun`` joins its process group (NCCL on CUDA, gloo on a CPU) and
the loop does the rest: every process draws the same seeded batch order and trains on its own
share of the batches (the batch size per process stays what it is on one device, so the global
batch is N times larger), gradients are averaged by ``DistributedDataParallel``, validation
sums are added up over the processes so the table shows the whole validation set once, and only
the first process (rank 0) prints the table and writes checkpoints and caches.

Applications know nothing of this, except that one whose ``train_batches`` can skip the other
processes' batches cheaply may take its share itself (:func:`share`) and say so with
``Learner.shards_batches``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta

import torch
from torch import nn


@dataclass(frozen=True)
class World:
    """Which process this is (``rank``) of how many (``size``); ``local_rank`` picks its GPU.

    Example:
        >>> World().main, World(rank=1, size=2).main
        (True, False)
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """True for the process that prints and writes files (rank 0)."""
        return self.rank == 0


def from_environment(env: dict | None = None) -> World:
    """The world ``torchrun`` describes (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), or one process.

    Example:
        >>> from_environment({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"})
        World(rank=1, size=2, local_rank=1)
        >>> from_environment({}).size
        1
    """
    env = os.environ if env is None else env
    try:
        size = int(env.get("WORLD_SIZE", "1"))
        rank, local = int(env.get("RANK", "0")), int(env.get("LOCAL_RANK", "0"))
    except ValueError as err:
        raise ValueError(f"WORLD_SIZE, RANK and LOCAL_RANK must be whole numbers (torchrun sets "
                         f"them); got {err}. Unset them to train in one process.") from None
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"RANK must be in [0, WORLD_SIZE), got RANK={rank}, WORLD_SIZE={size}.")
    return World(rank, size, local)


def join(world: World, device: torch.device) -> None:
    """Join torchrun's process group once (NCCL for CUDA devices, gloo otherwise)."""
    if world.size == 1 or torch.distributed.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if "MASTER_ADDR" not in os.environ:
        raise RuntimeError(f"WORLD_SIZE={world.size} is set but MASTER_ADDR is not: start "
                           f"several processes with torchrun (torchrun --nproc-per-node=N "
                           f"train.py), which sets both, or unset WORLD_SIZE.")
    torch.distributed.init_process_group(backend, rank=world.rank, world_size=world.size)
    # leave the group before the interpreter tears down: left to the C++ destructors at exit,
    # gloo's threads can abort the process ("terminate called without an active exception")
    # after every file was written, and torchrun reports the whole run as failed
    atexit.register(leave)
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        # torchrun stops the other processes with SIGTERM when one fails or on Ctrl-C: end the
        # fit as Ctrl-C does (the last finished epoch's checkpoint is written out, not cut off)
        signal.signal(signal.SIGTERM, _interrupt)


def leave(wait_s: float = 30.0) -> None:
    """Leave the process group (nothing when none was joined), together: every process first
    waits (at most ``wait_s``) for the others to get here, so none tears its connections down
    while a peer still uses them (under load that aborted a process after its work was done:
    "terminate called without an active exception"). A peer that died does not hold it up."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    with contextlib.suppress(RuntimeError):  # a peer is gone or late: leave anyway
        torch.distributed.barrier(async_op=True).wait(timeout=timedelta(seconds=wait_s))
    torch.distributed.destroy_process_group()


def _interrupt(signum: int, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def wrap(module: nn.Module, world: World, device: torch.device) -> nn.Module:
    """``module`` in ``DistributedDataParallel`` when there are several processes (it copies
    rank 0's weights to every process and averages gradients); else ``module`` itself."""
    if world.size == 1 or not any(p.requires_grad for p in module.parameters()):
        return module
    ids = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids,
                                               gradient_as_bucket_view=True)


def share(positions: Sequence, world: World) -> Sequence:
    """This process's batches out of ``positions`` (the same list in every process): every
    ``size``-th, from its rank, and the same number in each (the last few that would not go
    round are left out, as a sampler that drops the last batch does).

    Example:
        >>> share(range(7), World(rank=1, size=3))
        range(1, 6, 3)
    """
    if world.size == 1:
        return positions
    end = len(positions) - len(positions) % world.size
    return positions[world.rank:end:world.size]


def share_count(steps: int, world: World) -> int:
    """How many training steps each process takes in an epoch of ``steps`` batches."""
    if world.size > 1 and steps < world.size:
        raise ValueError(f"An epoch has {steps} training batch(es), fewer than the "
                         f"{world.size} processes: use a smaller batch_size or fewer processes.")
    return steps // world.size


def shard(batches: Iterable, world: World, count: int | None = None) -> Iterator:
    """The items of ``batches`` this process takes: with ``count`` (training), its
    :func:`share` of the first ``count``; without (validation), every ``size``-th, none left
    out."""
    end = None if count is None else count - count % world.size
    for i, batch in enumerate(batches):
        if end is not None and i >= end:
            return
        if world.size == 1 or i % world.size == world.rank:
            yield batch


def add_up(tensors: Sequence[torch.Tensor], world: World) -> None:
    """Sum each tensor over the processes, in place."""
    if world.size > 1:
        for t in tensors:
            torch.distributed.all_reduce(t)


def mean(value: torch.Tensor, world: World) -> torch.Tensor:
    """The mean of a tensor over the processes (itself in a world of one)."""
    if world.size == 1:
        return value
    total = value.detach().clone().float()
    torch.distributed.all_reduce(total)
    return total / world.size


@contextlib.contextmanager
def main_first(world: World) -> Iterator[None]:
    """Rank 0 runs the block first (e.g. computing and writing a cache); the others wait for it,
    then run it themselves (reading what it wrote)."""
    if world.size > 1 and not world.main:
        torch.distributed.barrier()
    yield
    if world.size > 1 and world.main:
        torch.distributed.barrier()
