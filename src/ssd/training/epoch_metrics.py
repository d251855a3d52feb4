"""One epoch's running losses, by name, summed over processes at the end of the epoch."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ssd.training.distributed import DistributedContext, all_reduce_sum


@dataclass(frozen=True)
class StepLosses:
    """What one optimizer step reports (plain floats, detached from the graph)."""

    loss: float
    loc_loss: float
    conf_loss: float
    train_acc: float


LOSS_NAMES = ("loss", "loc_loss", "conf_loss", "train_acc")


class EpochMeter:
    """Sums of the steps' losses, and counts of good steps, skipped steps and pictures."""

    def __init__(self) -> None:
        self.sums = dict.fromkeys(LOSS_NAMES, 0.0)
        self.good_steps = 0
        self.bad_steps = 0
        self.pictures = 0

    def add(self, losses: StepLosses) -> None:
        for name in LOSS_NAMES:
            self.sums[name] += getattr(losses, name)
        self.good_steps += 1

    def mean(self, name: str) -> float:
        return self.sums[name] / max(1, self.good_steps)

    def summed_over_processes(self, context: DistributedContext) -> EpochMeter:
        """The whole epoch's meter: every process's sums and counts added up (pictures are already global)."""
        values = [*(self.sums[name] for name in LOSS_NAMES), self.good_steps, self.bad_steps]
        totals = all_reduce_sum(torch.tensor(values, dtype=torch.float64), context).tolist()
        total = EpochMeter()
        total.sums = dict(zip(LOSS_NAMES, totals[: len(LOSS_NAMES)], strict=True))
        total.good_steps, total.bad_steps = int(totals[-2]), int(totals[-1])
        total.pictures = self.pictures
        return total
