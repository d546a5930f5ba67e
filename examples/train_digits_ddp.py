"""The digits example with plain PyTorch DDP: the reference Tidal's result is compared to.

Same model, data, optimizer, schedule, clipping and augmentation as ``train_digits.py``;
one process per logical rank, written the way a DDP user would::

    torchrun --standalone --nproc-per-node 4 examples/train_digits_ddp.py --out ddp.pt

Tidal with W = 4 (on any number of workers) ends within floating-point tolerance of this:
only the order of the gradient sum differs (gloo's all-reduce vs Tidal's fixed tree).
"""

from __future__ import annotations

import logging
import random

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from train_digits import (
    accuracy,
    build_dataset,
    build_model,
    logger,
    parse_args,
    seed_everything,
    train_step,
)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    seed_everything(args.seed)
    dataset = build_dataset(args.data)
    model = build_model()
    ddp = DistributedDataParallel(model)  # broadcast_buffers=True: rank 0's BN statistics
    optimizer = torch.optim.AdamW(ddp.parameters(), lr=args.lr, weight_decay=1e-2)
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=0)
    loader = DataLoader(dataset, batch_size=args.batch_size, sampler=sampler, drop_last=True)
    total = args.epochs * len(loader)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=total)
    # what tidal.prepare(..., seed=args.seed + 1) does for logical rank `rank`
    torch.manual_seed(args.seed + 1 + rank)
    np.random.seed((args.seed + 1 + rank) % 2**32)
    random.seed(args.seed + 1 + rank)

    loss = torch.tensor(float("nan"))
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        ddp.train()
        for x, y in loader:
            loss = train_step(ddp, x, y)
            torch.nn.utils.clip_grad_norm_(ddp.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
        if rank == 0:
            logger.info(
                "epoch %d: last loss %.4f, accuracy %.4f",
                epoch,
                loss.item(),
                accuracy(model, dataset),
            )
    if rank == 0 and args.out is not None:
        torch.save(model.state_dict(), args.out)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
