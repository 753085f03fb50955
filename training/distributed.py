"""One process per GPU under ``torchrun`` (NCCL), or per CPU slot (gloo); a lone process needs nothing.

``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; a process started without them is
a world of one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from vsr_models.errors import VSRError


class DeviceError(VSRError, ValueError):
    """A device that is not available here."""


@dataclass(frozen=True)
class World:
    rank: int
    size: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def _device(choice: str, local_rank: int) -> torch.device:
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError("--device cuda: no CUDA GPU is visible to PyTorch here; use --device cpu")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if choice != "cpu":
        raise DeviceError(f"unknown device {choice!r}; use auto, cpu or cuda")
    return torch.device("cpu")


def setup(choice: str = "auto") -> World:
    """Join the process group if ``torchrun`` started this process; pick its device."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = _device(choice, local_rank)
    if size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return World(rank, size, local_rank, device)


def mean(world: World, value: torch.Tensor) -> float:
    """The mean of a scalar over all processes."""
    if not world.distributed:
        return float(value)
    t = value.detach().float().reshape(1).to(world.device if world.device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return float(t) / world.size


def gather(world: World, obj: Any) -> list[Any]:
    """Every process's ``obj``, in rank order (on every process)."""
    if not world.distributed:
        return [obj]
    out: list[Any] = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def broadcast(world: World, obj: Any) -> Any:
    """Rank 0's ``obj`` on every process."""
    if not world.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def teardown(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()
