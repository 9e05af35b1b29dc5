"""Distributed helpers: the same code runs single-process or under `torchrun --nproc_per_node=N`."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> tuple[DistInfo, torch.device]:
    """Init the process group when WORLD_SIZE>1 (torchrun); pick this rank's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo(), torch.device(device)
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
        backend = "nccl"
    else:
        dev = torch.device("cpu")
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world_size), dev


def shutdown_distributed(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def mean_metrics(metrics: dict[str, torch.Tensor], info: DistInfo) -> dict[str, float]:
    """Average scalar metric tensors across ranks (one all_reduce), return python floats."""
    if not metrics:
        return {}
    keys = sorted(metrics)
    vec = torch.stack([metrics[k].detach().float().reshape(()) for k in keys])
    if info.enabled:
        dist.all_reduce(vec, op=dist.ReduceOp.SUM)
        vec /= info.world_size
    return dict(zip(keys, vec.tolist()))


def average_grads(grads: list[torch.Tensor | None], info: DistInfo) -> None:
    """Average gradients over ranks in place, for a module DDP does not wrap (the decoder phase's discriminator)."""
    if not info.enabled:
        return
    flat = [g for g in grads if g is not None]
    if flat:
        buf = torch.cat([g.reshape(-1) for g in flat])
        dist.all_reduce(buf, op=dist.ReduceOp.SUM)
        buf /= info.world_size
        i = 0
        for g in flat:
            g.copy_(buf[i:i + g.numel()].view_as(g))
            i += g.numel()


def rank0_flags(flags: list[bool], info: DistInfo, device: torch.device) -> list[bool]:
    """Rank 0's flags on every rank (its clock decides time limits and timed saves/logs): one all_reduce."""
    if not info.enabled:
        return list(flags)
    t = torch.tensor([1.0 if (f and info.is_main) else 0.0 for f in flags], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v > 0) for v in t.tolist()]


def min_over_ranks(value: torch.Tensor, info: DistInfo) -> int:
    """The smallest of every rank's integer scalar tensor, as a python int (a host sync)."""
    t = value.detach().reshape(1).to(torch.int64)
    if info.enabled:
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def gather_objects(obj, info: DistInfo) -> list:
    """Every rank's `obj` on every rank (used for per-rank RNG states in checkpoints)."""
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()
