"""Train a small classifier on scikit-learn's bundled digits with the Tidal runtime.

The model has dropout and BatchNorm; training uses AdamW, a one-cycle LR schedule,
gradient clipping, and a little random augmentation drawn from NumPy and Python's
``random`` (so every kind of random stream is exercised). Everything is seeded: the
result depends only on the logical world size W, never on how many workers ran it, or on
how often the run was stopped and resumed.

    python examples/train_digits.py --out final.pt                      # W = 1
    TIDAL_WORLD=4 torchrun --standalone --nproc-per-node 2 examples/train_digits.py
    tidal run examples/train_digits.py --world 4 --workers 2 --checkpoint-dir ckpt

``examples/train_digits_ddp.py`` trains the same model with plain PyTorch DDP.
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import tidal

logger = logging.getLogger("train_digits")


def build_model() -> nn.Module:
    # No bias before BatchNorm: it would be a parameter with a (numerically) zero gradient,
    # which AdamW turns into rounding noise, making any two summation orders drift apart.
    return nn.Sequential(
        nn.Linear(64, 128, bias=False),
        nn.BatchNorm1d(128),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(128, 128, bias=False),
        nn.BatchNorm1d(128),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(128, 10),
    )


def build_dataset(cache: Path | None = None) -> TensorDataset:
    """The 1797 8x8 digits, pixels scaled to [0, 1]; ``cache`` (a .pt file) skips sklearn."""
    if cache is not None and cache.exists():
        x, y = torch.load(cache, weights_only=True)
        return TensorDataset(x, y)
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    data = TensorDataset(
        torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y, dtype=torch.int64)
    )
    if cache is not None:
        torch.save(data.tensors, cache)
    return data


def steps_per_epoch(n_samples: int, world: int, batch_size: int) -> int:
    """What one DDP rank's loader yields: DistributedSampler pads to ceil(N / W), drop_last."""
    return math.ceil(n_samples / world) // batch_size


def augment(x: torch.Tensor) -> torch.Tensor:
    """Pixel noise from NumPy and a brightness jitter from Python's ``random``."""
    noise = torch.from_numpy(np.random.normal(0.0, 0.05, size=tuple(x.shape))).to(x.dtype)
    return (x + noise) * (0.9 + 0.2 * random.random())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=16, help="per logical rank")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="where worker 0 saves the state dict")
    p.add_argument("--step-delay", type=float, default=0.0, help="sleep per micro-batch (tests)")
    p.add_argument("--data", type=Path, default=None, help="dataset cache file (.pt)")
    return p.parse_args(argv)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    loss = F.cross_entropy(model(augment(x)), y)
    loss.backward()
    return loss


@torch.no_grad()
def accuracy(model: nn.Module, dataset: TensorDataset) -> float:
    was_training = model.training
    model.eval()
    x, y = dataset.tensors
    acc = float((model(x).argmax(1) == y).float().mean().item())
    model.train(was_training)
    return acc


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    seed_everything(args.seed)
    dataset = build_dataset(args.data)
    model = build_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-2)
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True, drop_last=True)
    total = args.epochs * steps_per_epoch(len(dataset), tidal.world(), args.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=total)

    # seed=: logical rank r draws its dropout masks and augmentations from streams seeded
    # (args.seed + 1) + r, like a DDP script calling torch.manual_seed(seed + rank)
    model, optimizer, loader, scheduler = tidal.prepare(
        model, optimizer, loader, scheduler, seed=args.seed + 1
    )

    loss = torch.tensor(float("nan"))
    for epoch in tidal.epochs(args.epochs):
        model.train()
        for x, y in loader:
            loss = train_step(model, x, y)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            if args.step_delay:
                time.sleep(args.step_delay)
        if tidal.is_main():
            logger.info(
                "epoch %d: last loss %.4f, accuracy %.4f",
                epoch,
                loss.item(),
                accuracy(model, dataset),
            )
    if tidal.is_main() and args.out is not None:
        torch.save(model.state_dict(), args.out)


if __name__ == "__main__":
    main()
