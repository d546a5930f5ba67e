"""Devices and the process group: gloo on CPU, NCCL when CUDA is present."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

from tidal.runtime.errors import SettingsError
from tidal.runtime.settings import RuntimeSettings
from tidal.runtime.splicing.rng import RNGState, capture, restore

logger = logging.getLogger(__name__)

__all__ = ["Group", "broadcast_module_state", "broadcast_rng", "open_group", "pick_device"]


def pick_device(settings: RuntimeSettings) -> torch.device:
    if torch.cuda.is_available():
        device = torch.device("cuda", settings.local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
        return device
    return torch.device("cpu")


@dataclass
class Group:
    """The default process group, if the job has more than one worker."""

    workers: int
    owned: bool

    def close(self) -> None:
        if self.owned and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
            self.owned = False


def open_group(settings: RuntimeSettings, device: torch.device) -> Group:
    """Join the workers' process group (env:// rendezvous, as torchrun sets it up)."""
    if settings.workers == 1:
        return Group(1, owned=False)
    if not dist.is_available():
        raise SettingsError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    if dist.is_initialized():
        if dist.get_world_size() != settings.workers or dist.get_rank() != settings.worker:
            raise SettingsError(
                f"a process group of size {dist.get_world_size()} (rank {dist.get_rank()}) "
                f"already exists; expected WORLD_SIZE={settings.workers} RANK={settings.worker}"
            )
        return Group(settings.workers, owned=False)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(
        backend=backend,
        init_method="env://",
        world_size=settings.workers,
        rank=settings.worker,
        device_id=device if device.type == "cuda" else None,
    )
    logger.info(
        "worker %d/%d joined the %s process group", settings.worker, settings.workers, backend
    )
    return Group(settings.workers, owned=True)


def broadcast_module_state(modules: Sequence[torch.nn.Module]) -> None:
    """Every worker starts from worker 0's parameters and buffers (as DDP's constructor)."""
    seen: set[int] = set()
    groups: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
    for m in modules:
        for t in (*m.parameters(), *m.buffers()):
            if id(t) not in seen:
                seen.add(id(t))
                groups.setdefault((t.device, t.dtype), []).append(t)
    with torch.no_grad():
        for tensors in groups.values():
            flat = torch.cat([t.detach().reshape(-1) for t in tensors])
            dist.broadcast(flat, src=0)
            offset = 0
            for t in tensors:
                n = t.numel()
                t.copy_(flat[offset : offset + n].view_as(t))
                offset += n


def broadcast_rng(cuda_device: torch.device | None) -> None:
    """Every worker adopts worker 0's generator states (all logical ranks start equal)."""
    box: list[dict[str, object] | None] = [
        capture(cuda_device).to_dict() if dist.get_rank() == 0 else None
    ]
    dist.broadcast_object_list(box, src=0)
    if box[0] is None:
        raise SettingsError("random state broadcast from worker 0 came back empty")
    restore(RNGState.from_dict(box[0]), cuda_device)
