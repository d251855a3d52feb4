"""The progress bar of each epoch: steps done, running losses, learning rate, pictures per second."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from tqdm import tqdm

from ssd.training.hooks.base import BadStep, Hook

if TYPE_CHECKING:
    from ssd.training.epoch_metrics import EpochMeter
    from ssd.training.trainer import Trainer


class ProgressBar(Hook):
    def __init__(self) -> None:
        self.bar: tqdm | None = None
        self.started = 0.0

    def before_epoch(self, trainer: Trainer, epoch: int) -> None:
        frozen = " (backbone frozen)" if trainer.backbone_frozen else ""
        self.bar = tqdm(
            total=trainer.parts.steps_per_epoch,
            initial=trainer.first_batch,
            desc=f"epoch {epoch + 1}/{trainer.options.epochs}{frozen}",
            unit="batch",
            dynamic_ncols=True,
            leave=False,
        )
        self.started = time.perf_counter()

    def after_step(self, trainer: Trainer, meter: EpochMeter) -> None:
        elapsed = time.perf_counter() - self.started
        self.bar.update(1)
        self.bar.set_postfix_str(
            f"loss {meter.mean('loss'):.3f} loc {meter.mean('loc_loss'):.3f} conf {meter.mean('conf_loss'):.3f} "
            f"acc {meter.mean('train_acc'):.3f} lr {trainer.current_lr():.2e} "
            f"{(meter.pictures - trainer.pictures_before) / max(elapsed, 1e-9):.1f} img/s"
        )

    def on_bad_step(self, trainer: Trainer, bad_step: BadStep) -> None:
        self.bar.update(1)

    def after_epoch(self, trainer: Trainer, row: dict) -> None:
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
