"""Optimizer and learning-rate schedule.

Weight decay pulls weights towards zero; on BatchNorm scales and on biases that only fights the
normalisation (and makes small-batch runs unstable), so every parameter with fewer than two dimensions gets
none. The schedule is a function of the optimizer step, not the epoch, so warm-up is smooth even when an
epoch holds few steps: a linear ramp from `warmup_factor * lr` to `lr`, then cosine down to
`min_lr_ratio * lr`, or steps of `gamma` at the milestones.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ssd.training.options import TrainOptions


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: weights with decay; BatchNorm parameters and biases (ndim < 2) without."""
    decay, no_decay = [], []
    for _, parameter in model.named_parameters():
        (no_decay if parameter.ndim < 2 else decay).append(parameter)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, options: TrainOptions, lr: float) -> torch.optim.Optimizer:
    groups = parameter_groups(model, options.resolved_weight_decay())
    if options.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(options.momentum, 0.999))
    return torch.optim.SGD(groups, lr=lr, momentum=options.momentum, nesterov=options.momentum > 0)


def lr_factor_function(options: TrainOptions, steps_per_epoch: int) -> Callable[[int], float]:
    """The multiplier of the base lr after `step` optimizer steps."""
    total = max(1, options.epochs * steps_per_epoch)
    warmup = min(total - 1, round(options.warmup_epochs * steps_per_epoch))
    milestones = _milestone_steps(options.milestones, options.epochs, steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return options.warmup_factor + (1 - options.warmup_factor) * step / warmup
        if options.scheduler == "multistep":
            return options.gamma ** sum(step >= m for m in milestones)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        cosine = 0.5 * (1 + math.cos(math.pi * progress))
        return options.min_lr_ratio + (1 - options.min_lr_ratio) * cosine

    return factor


def _milestone_steps(milestones: Sequence[float], epochs: int, steps_per_epoch: int) -> list[int]:
    """Milestones under 1 are fractions of the run, others epochs; both become optimizer steps."""
    return [round((m * epochs if m < 1 else m) * steps_per_epoch) for m in milestones]


def build_scheduler(
    optimizer: torch.optim.Optimizer, options: TrainOptions, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Stepped once per optimizer step (skipped steps included, so the schedule keeps to the clock)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor_function(options, steps_per_epoch))


def scaled_lr(options: TrainOptions, world_size: int) -> float:
    """The linear scaling rule: `lr` was chosen for a global batch of `lr_batch` pictures (default: one
    process's `batch_size`); the run's global batch is `batch_size * world_size`."""
    reference = options.lr_batch or options.batch_size
    return options.lr * options.batch_size * world_size / reference
