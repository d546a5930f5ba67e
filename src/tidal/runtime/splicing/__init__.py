"""Replica splicing: a worker runs its W/P logical ranks one after another inside each step.

* :mod:`.data`: each logical rank's shard and loader, exactly as a DDP process's;
* :mod:`.rng`: each logical rank's random streams, swapped in and out;
* :mod:`.grads`: each micro-batch's gradients stashed, and the reduction triggered;
* :mod:`.buffers`: DDP's ``broadcast_buffers`` rule for BatchNorm statistics;
* :mod:`.wrap`: ``step()`` of optimizers, schedulers and the GradScaler once per real step.

These know nothing of sessions or checkpoints; the summation order is :mod:`tidal.runtime.
reduction`'s.
"""
