"""The data side of replica splicing: one shard per logical rank, exactly as DDP's.

Logical rank r reads the batches ``DistributedSampler(num_replicas=W, rank=r, shuffle,
seed, drop_last)`` would give it, epoch by epoch (``set_epoch``). Each hosted rank gets
its own copy of the user's ``DataLoader`` (same dataset, batch size, collate function,
workers, ...) over that sampler, so everything a DDP process's loader does, including the
random draw it makes when an epoch's iterator is created, happens per rank.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    DistributedSampler,
    IterableDataset,
    RandomSampler,
    Sampler,
    SequentialSampler,
)

from tidal.runtime.errors import PrepareError

__all__ = ["LoopDriver", "ShardSpec", "SplicedLoader", "move_to_device"]


@dataclass(frozen=True, slots=True)
class ShardSpec:
    """How the user's loader is sharded: DistributedSampler's shuffle, seed and drop_last."""

    shuffle: bool
    seed: int
    drop_last: bool

    @classmethod
    def of(cls, loader: DataLoader[Any]) -> ShardSpec:
        if isinstance(loader.dataset, IterableDataset):
            raise PrepareError(
                "prepare needs a map-style dataset (with __len__ and __getitem__) to shard it "
                f"per logical rank; got the IterableDataset {type(loader.dataset).__name__}"
            )
        if loader.batch_size is None:
            raise PrepareError(
                "prepare needs a DataLoader with batch_size set (automatic batching); a custom "
                f"batch_sampler {type(loader.batch_sampler).__name__} cannot be re-sharded"
            )
        if type(loader.batch_sampler) is not BatchSampler:
            raise PrepareError(
                f"cannot re-shard the custom batch sampler {type(loader.batch_sampler).__name__}"
            )
        sampler = loader.sampler
        if isinstance(sampler, DistributedSampler):
            return cls(shuffle=sampler.shuffle, seed=sampler.seed, drop_last=sampler.drop_last)
        if type(sampler) is RandomSampler:
            if sampler.replacement or sampler._num_samples is not None:
                raise PrepareError(
                    "RandomSampler with replacement or num_samples cannot be sharded like "
                    "DistributedSampler; use shuffle=True or a DistributedSampler"
                )
            return cls(shuffle=True, seed=0, drop_last=False)
        if type(sampler) is SequentialSampler:
            return cls(shuffle=False, seed=0, drop_last=False)
        raise PrepareError(
            f"cannot shard the sampler {type(sampler).__name__} per logical rank; use "
            "shuffle=True/False or a DistributedSampler (Tidal sets its num_replicas and rank)"
        )


class _RankSampler(Sampler[int]):
    """DistributedSampler for one logical rank, with a number of leading samples skipped."""

    def __init__(self, dataset: Any, world: int, rank: int, spec: ShardSpec) -> None:
        self.inner: DistributedSampler[int] = DistributedSampler(
            dataset,
            num_replicas=world,
            rank=rank,
            shuffle=spec.shuffle,
            seed=spec.seed,
            drop_last=spec.drop_last,
        )
        self.skip = 0

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(iter(self.inner), self.skip, None)

    def __len__(self) -> int:
        return max(0, len(self.inner) - self.skip)


_LOADER_ARGS = set(inspect.signature(DataLoader.__init__).parameters)


def _rank_loader(loader: DataLoader[Any], sampler: _RankSampler) -> DataLoader[Any]:
    generator = None
    if loader.generator is not None:
        generator = torch.Generator(device=loader.generator.device)
        generator.set_state(loader.generator.get_state())
    kwargs: dict[str, Any] = {
        "batch_size": loader.batch_size,
        "sampler": sampler,
        "num_workers": loader.num_workers,
        "collate_fn": loader.collate_fn,
        "pin_memory": loader.pin_memory,
        "drop_last": loader.drop_last,
        "timeout": loader.timeout,
        "worker_init_fn": loader.worker_init_fn,
        "multiprocessing_context": loader.multiprocessing_context,
        "generator": generator,
        "persistent_workers": loader.persistent_workers,
    }
    if loader.num_workers > 0:
        kwargs["prefetch_factor"] = loader.prefetch_factor
    for optional in ("pin_memory_device", "in_order"):
        if optional in _LOADER_ARGS and hasattr(loader, optional):
            kwargs[optional] = getattr(loader, optional)
    return DataLoader(loader.dataset, **kwargs)


class LoopDriver(Protocol):
    def iterate(self, loader: SplicedLoader) -> Iterator[Any]: ...


class SplicedLoader:
    """What ``prepare`` returns for the user's DataLoader.

    Iterating yields, for every step, the batch of each hosted logical rank in turn.
    ``len()`` is the number of *steps* per epoch: what one DDP rank's loader would report.
    """

    def __init__(
        self,
        loader: DataLoader[Any],
        *,
        world: int,
        hosted: Sequence[int],
        driver: LoopDriver,
        device: torch.device,
    ) -> None:
        self.spec = ShardSpec.of(loader)
        self._original = loader
        self.world = world
        self.hosted = list(hosted)
        self.device = device
        self._driver = driver
        self.samplers = [_RankSampler(loader.dataset, world, r, self.spec) for r in self.hosted]
        self.loaders = [_rank_loader(loader, s) for s in self.samplers]
        self.steps_per_epoch = len(self.loaders[0])

    @property
    def dataset(self) -> Any:
        return self._original.dataset

    @property
    def batch_size(self) -> int | None:
        return self._original.batch_size

    def __len__(self) -> int:
        return self.steps_per_epoch

    def __iter__(self) -> Iterator[Any]:
        return self._driver.iterate(self)

    def open_rank(self, index: int, epoch: int, start_step: int) -> Iterator[Any]:
        """Iterator over hosted rank ``index``'s batches of ``epoch``, from ``start_step`` on.

        Call it with that rank's random stream active: the DataLoader draws from it.
        """
        sampler = self.samplers[index]
        sampler.inner.set_epoch(epoch)
        bs = self._original.batch_size or 1
        sampler.skip = start_step * bs
        return iter(self.loaders[index])

    def generator_states(self) -> dict[int, torch.Tensor]:
        """Per hosted logical rank: its loader generator's state (if the user gave one)."""
        out = {}
        for r, loader in zip(self.hosted, self.loaders, strict=True):
            if loader.generator is not None:
                out[r] = loader.generator.get_state()
        return out

    def set_generator_state(self, rank: int, state: torch.Tensor) -> None:
        loader = self.loaders[self.hosted.index(rank)]
        if loader.generator is not None:
            loader.generator.set_state(state)


def move_to_device(batch: Any, device: torch.device) -> Any:
    """Tensors inside lists, tuples (named too) and dicts, moved to ``device``."""
    if device.type == "cpu":
        return batch
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return type(batch)({k: move_to_device(v, device) for k, v in batch.items()})  # type: ignore[call-arg]
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(move_to_device(v, device) for v in batch))
    if isinstance(batch, list | tuple):
        return type(batch)(move_to_device(v, device) for v in batch)
    return batch
