"""What a person reads in the terminal: the run's set-up, one line per epoch, and where everything went."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ssd.training.hooks.base import Hook

if TYPE_CHECKING:
    from ssd.training.trainer import Trainer, TrainResult


class ConsoleReport(Hook):
    """Rank 0 only; each line goes to the trainer's `emit` (print by default)."""

    def before_run(self, trainer: Trainer) -> None:
        options, context, parts = trainer.options, trainer.context, trainer.parts
        data, model = parts.data, parts.model
        say = trainer.emit
        place = f"{context.device}" + (f" x {context.world_size} processes" if context.enabled else "")
        say(
            f"training {options.arch} on {options.datapath} ('{data.train_split}': {len(data.train_set)} pictures, "
            f"{data.train_boxes} boxes; classes: {', '.join(data.train_set.class_names)}; "
            f"num_classes={model.num_classes} with background)"
        )
        say(
            f"  {options.epochs} epochs x {parts.steps_per_epoch} steps, batch {options.batch_size}"
            + (f" per process ({options.batch_size * context.world_size} global)" if context.enabled else "")
            + f", {options.optimizer} lr {parts.lr:g}, {options.scheduler}, input {model.config.input_size[0]}, "
            f"augment '{options.augment}', {options.cls_loss} loss, matcher {options.matcher}, on {place}"
            + ({torch.float16: ", AMP fp16", torch.bfloat16: ", AMP bf16"}.get(parts.amp_dtype, ""))
            + (", EMA" if parts.ema is not None else "")
        )
        if options.batch_size == 1 and any(
            isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()
        ):
            say(
                "  batch 1: BatchNorm layers keep their running statistics (one picture cannot give them: the "
                "last maps are 1x1) and train only their scale and shift; --batch-size 2 or more updates them"
            )
        split_note = data.split_note(options)
        if split_note:
            say(f"  {split_note}")
        if options.anchor_scales != "default":
            say(f"  default-box scales: {', '.join(f'{s:g}' for s in model.config.scales)}")
        for note in [*parts.weight_notes, *parts.output_notes]:
            say(f"  {note}")
        progress = trainer.resumed_progress
        if progress is not None:
            say(
                f"  resuming from {options.resume} at step {progress['batches_done']}/{parts.steps_per_epoch} "
                f"of epoch {trainer.start_epoch + 1}"
            )
        elif trainer.start_epoch:
            say(f"  resuming from {options.resume} after epoch {trainer.start_epoch}")
        say(f"  outputs: {parts.run_dir}/ (a checkpoint: about {parts.checkpoint_bytes / 1e6:.0f} MB)")

    def after_epoch(self, trainer: Trainer, row: dict[str, Any]) -> None:
        trainer.emit(epoch_line(row, trainer.options.epochs, trainer.improved))

    def after_run(self, trainer: Trainer, result: TrainResult) -> None:
        say = trainer.emit
        if not result.history:
            say(f"nothing to do: the checkpoint already holds {trainer.options.epochs} epochs")
            return
        last = result.history[-1]
        val_split = trainer.parts.data.val_split
        say(f"done in {result.seconds:.0f} s.")
        if last.get("mAP") is not None:
            say(
                f"  validation ('{val_split}'): mAP {last['mAP']:.3f}, mAP@0.5 {last['mAP50']:.3f} "
                f"(best mAP {result.best_map:.3f})"
            )
        say(f"  run folder: {result.run_dir}/ ({', '.join(run_folder_files(result.run_dir))})")
        say(
            f"  checkpoints: {result.last_checkpoint}"
            + (f", {result.best_checkpoint} (best mAP)" if result.best_checkpoint else "")
        )
        periodic = sorted(result.run_dir.glob("epoch_*.pt"))
        if periodic:
            say(f"  every {trainer.options.save_period} epochs: {', '.join(p.name for p in periodic)}")
        if result.final_checkpoint is not None:
            say(f"  final checkpoint: {result.final_checkpoint}")
        weights = result.final_checkpoint or result.best_checkpoint or result.last_checkpoint
        # The checkpoint records the split it validated on, and `ssd eval` takes it without being told.
        say(f"  next: ssd eval --weights {weights} --datapath {trainer.options.datapath}")


# What a person looks at first, in this order; checkpoints have a line of their own.
RUN_FOLDER_FILES = (
    "args.yaml",
    "results.csv",
    "results.png",
    "labels.png",
    "train_batch0.jpg",
    "confusion_matrix.png",
    "PR_curve.png",
    "F1_curve.png",
    "pictures",
)


def run_folder_files(run_dir: Path) -> list[str]:
    """The files of RUN_FOLDER_FILES this run wrote (no validation: no plots of it), with train_batch0..2."""
    names = []
    for name in RUN_FOLDER_FILES:
        if (run_dir / name).exists():
            names.append(
                "train_batch0..2.jpg"
                if name == "train_batch0.jpg"
                else name + ("/" if name == "pictures" else "")
            )
    return names


def epoch_line(row: dict[str, Any], epochs: int, improved: bool) -> str:
    line = (
        f"epoch {row['epoch']}/{epochs}: loss {row['loss']:.4f} (loc {row['loc_loss']:.4f}, conf "
        f"{row['conf_loss']:.4f}), train_acc {row['train_acc']:.3f}, lr {row['lr']:.2e}, "
        f"{row['pictures_per_s']:.1f} img/s, {row['train_seconds']:.0f} s"
    )
    if row.get("bad_steps"):
        line += f", {row['bad_steps']} skipped steps"
    if row.get("mAP") is not None:
        line += f" | val mAP {row['mAP']:.3f}, mAP@0.5 {row['mAP50']:.3f}" + (" (best)" if improved else "")
    return line
