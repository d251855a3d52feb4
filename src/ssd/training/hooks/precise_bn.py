"""Precise BatchNorm: the exact statistics of a few training batches, recomputed before each evaluation."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from ssd.data import build_transforms
from ssd.data.loader import load_sample
from ssd.training.hooks.base import Hook

if TYPE_CHECKING:
    from ssd.training.trainer import Trainer


class PreciseBatchNorm(Hook):
    """Replace BatchNorm's running averages by the exact statistics of `batches` training batches.

    The running averages trail the weights (momentum 0.03 in SSDLite): early in a run, or in a short one,
    they describe a network that no longer exists and evaluation suffers for it. The pictures are the
    first of the training split, resized only, in a fixed order: the same in every run. It runs on every
    process, before rank 0 evaluates: synchronised BatchNorm exchanges statistics between processes, so a
    recompute on rank 0 alone would wait for the others forever.
    """

    def __init__(self, batches: int) -> None:
        self.batches = batches

    def after_epoch(self, trainer: Trainer, row: dict) -> None:
        if trainer.evaluates_after(row["epoch"] - 1):
            recompute_batchnorm_statistics(trainer, trainer.inference_model(), self.batches)


@torch.no_grad()
def recompute_batchnorm_statistics(trainer: Trainer, model: nn.Module, batches: int) -> None:
    parts = trainer.parts
    # A frozen backbone keeps its statistics (see `Trainer.set_backbone_frozen`); only the rest is recomputed.
    frozen = {id(m) for m in model.backbone.modules()} if trainer.backbone_frozen else set()
    norms = [
        m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and id(m) not in frozen
    ]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the batches
    transform = build_transforms("none", model.config.input_size)
    was_training = model.training
    model.train()
    train_set = parts.data.train_set
    size = trainer.options.batch_size
    count = min(len(train_set), batches * size)
    try:
        for start in range(0, count, size):
            images = [load_sample(train_set, i, transform)[0] for i in range(start, min(count, start + size))]
            batch = torch.stack(images).to(parts.device)
            if parts.channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            model.head_outputs(model.preprocess(batch)[0])
    finally:
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum
        model.train(was_training)
