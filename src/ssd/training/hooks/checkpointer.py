"""Checkpoints of a run: `last.pt` after every epoch (and at the step where Ctrl-C stopped it), `best.pt` when validation mAP improves, `epoch_NNN.pt`
every `--save-period` epochs, `--save` at the end.

Only rank 0 writes. A checkpoint holds everything an exact resume needs (see `training_checkpoint`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ssd.models.checkpoint import CheckpointWriteError, model_checkpoint, save_checkpoint
from ssd.training.hooks.base import Hook
from ssd.training.random_state import rng_state
from ssd.training.resume import LAST

if TYPE_CHECKING:
    from ssd.training.trainer import Trainer, TrainResult

BEST = "best.pt"


class Checkpointer(Hook):
    def after_epoch(self, trainer: Trainer, row: dict) -> None:
        checkpoint = training_checkpoint(trainer, row["epoch"])
        run_dir = trainer.parts.run_dir
        save_checkpoint(run_dir / LAST, checkpoint)
        if trainer.improved:
            save_checkpoint(run_dir / BEST, checkpoint)
        period = trainer.options.save_period
        if period and row["epoch"] % period == 0:
            save_checkpoint(run_dir / periodic_checkpoint_name(row["epoch"]), checkpoint)

    def on_interrupt(self, trainer: Trainer, progress: dict[str, Any]) -> None:
        """A mid-epoch `last.pt`: the epochs done so far, and how far the current one got."""
        checkpoint = training_checkpoint(trainer, progress["epoch"])
        checkpoint["epoch_progress"] = progress
        save_checkpoint(trainer.parts.run_dir / LAST, checkpoint)

    def after_run(self, trainer: Trainer, result: TrainResult) -> None:
        if result.final_checkpoint is not None:
            # The epochs done, fewer than --epochs when the run stopped early.
            done = trainer.history[-1]["epoch"] if trainer.history else trainer.options.epochs
            try:
                save_checkpoint(result.final_checkpoint, training_checkpoint(trainer, done))
            except CheckpointWriteError as error:
                raise CheckpointWriteError(
                    f"{error}; the trained run is in {result.last_checkpoint}"
                ) from None


def periodic_checkpoint_name(epoch: int) -> str:
    return f"epoch_{epoch:03d}.pt"


def training_checkpoint(trainer: Trainer, epochs_done: int) -> dict[str, Any]:
    """The model (and its EMA), the optimiser, schedule and scaler, the counters, every random generator's
    state, the history and the options: a resumed run ends with the same weights as an unbroken one."""
    parts = trainer.parts
    ema = parts.ema
    return model_checkpoint(
        parts.model,
        ema=ema.state_dict() if ema is not None else None,
        ema_updates=ema.updates if ema is not None else 0,
        optimizer=parts.optimizer.state_dict(),
        scheduler=parts.scheduler.state_dict(),
        scaler=parts.scaler.state_dict() if parts.scaler.is_enabled() else None,
        epoch=epochs_done,
        step=trainer.step,
        rng=rng_state(),
        metrics=trainer.history,
        best_map=trainer.best_map,
        stopped_early=trainer.stop_reason,  # a resume then has nothing to do, unless --patience changes
        options=trainer.options.to_dict(),
        data=parts.data.split_record(trainer.options),
        command=trainer.command,
    )


def best_checkpoint(run_dir: Path) -> Path | None:
    path = run_dir / BEST
    return path if path.exists() else None
