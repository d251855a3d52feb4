"""The training loop: epochs of steps, each an optimizer step guarded against non-finite losses.

One `Trainer` runs one run, from `TrainOptions`. Setting the run up is `ssd.training.setup`; every job
around the loop (checkpoints, evaluation, records, the console, pictures) is a hook in `ssd.training.hooks`,
called at fixed points. What a run guarantees:
- a checkpoint after every epoch, written atomically, holding everything an exact resume needs; a resumed
  run (same seed, CPU, no workers) ends with the same weights as one that was never stopped;
- Ctrl-C or SIGTERM lets the current step finish, writes a resumable checkpoint at that step (mid-epoch:
  how far the epoch got, see `epoch_progress`) and ends with the command that resumes the run;
- a non-finite loss never reaches the weights: the step is skipped and logged with its pictures, and the
  run stops with a clear message after `max_bad_steps` in a row (the last good checkpoint stays);
- under torchrun, every process computes and only rank 0 writes or prints.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ssd.errors import RunInterrupted, UserError
from ssd.evaluation.evaluator import EvaluationResult
from ssd.training.datasets import load_training_data
from ssd.training.distributed import (
    DistributedContext,
    all_reduce_sum,
    barrier,
    cleanup_distributed,
    setup_distributed,
)
from ssd.training.epoch_metrics import EpochMeter, StepLosses
from ssd.training.hooks import (
    ArgsFile,
    BadStep,
    BadStepLog,
    Checkpointer,
    ConsoleReport,
    EarlyStopping,
    Evaluation,
    EvaluationPlots,
    Hook,
    LabelsPlot,
    MetricsLog,
    PreciseBatchNorm,
    ProgressBar,
    TensorBoardLog,
    TrainBatchPictures,
    ValidationPictures,
)
from ssd.training.hooks.bad_steps import too_many_bad_steps_message
from ssd.training.hooks.checkpointer import best_checkpoint
from ssd.training.interruption import StopRequests, resume_command
from ssd.training.options import TrainOptions
from ssd.training.random_state import restore_rng_state
from ssd.training.resume import LAST, read_resume
from ssd.training.setup import TrainingParts, set_up_training


class NonFiniteLossError(UserError):
    """Several non-finite losses in a row: the run stops; its last good checkpoint stays."""


@dataclass
class TrainResult:
    run_dir: Path
    last_checkpoint: Path | None
    best_checkpoint: Path | None
    final_checkpoint: Path | None
    history: list[dict[str, Any]] = field(default_factory=list)
    best_map: float | None = None
    seconds: float = 0.0
    stopped_early: str | None = None  # why the run ended before its last epoch (--patience)


def _print(message: str) -> None:
    print(message, flush=True)


class Trainer:
    """Train as `options` say; `fit()` returns where everything went.

    `command` is stored in the checkpoints (the command line by default); `emit` receives each line a person
    should read (rank 0 only); `hooks` run after the built-in ones; `resume_changes` are the options a
    resumed run was given again (only some may change, see `ssd.training.resume`).
    """

    def __init__(
        self,
        options: TrainOptions,
        command: list[str] | None = None,
        emit: Callable[[str], None] = _print,
        progress: bool = True,
        resume_changes: dict[str, Any] | None = None,
        hooks: Sequence[Hook] = (),
    ):
        self.options = options
        self.command = list(command) if command is not None else list(sys.argv)
        self._emit = emit
        self.progress = progress
        self.resume_changes = dict(resume_changes or {})
        self.extra_hooks = list(hooks)
        # Set up by `fit`:
        self.context = DistributedContext()
        self.parts: TrainingParts | None = None
        self.hooks: list[Hook] = []
        # The run's state, saved in every checkpoint:
        self.start_epoch = 0  # epochs done before this process started (a resumed run)
        self.step = 0  # optimizer steps, skipped ones included
        self.history: list[dict[str, Any]] = []  # one row per epoch
        self.best_map: float | None = None
        # Within an epoch:
        self.first_batch = 0  # where this process starts the epoch: 0, or where a mid-epoch resume goes on
        self.pictures_before = 0  # pictures the epoch had seen before this process started it
        self.backbone_frozen = False
        self.improved = False  # this epoch's validation mAP is the best so far
        self.evaluation: EvaluationResult | None = None  # this epoch's validation result, if it evaluated
        self.stop_reason: str | None = None  # set by a hook (rank 0) to end the run after this epoch
        self.stop_requests = StopRequests()  # Ctrl-C and SIGTERM, while the epochs run
        self.resumed = False  # this process continues a stopped run
        self.resumed_progress: dict[str, Any] | None = None  # a mid-epoch checkpoint's `epoch_progress`

    @property
    def model(self) -> nn.Module:
        return self.parts.model

    def emit(self, message: str) -> None:
        """A line for the person running this (printed by rank 0 only)."""
        if self.context.is_main:
            self._emit(message)

    # -- the run ---------------------------------------------------------------------------------------------

    def fit(self) -> TrainResult:
        self.context = setup_distributed(self.options.device)
        try:
            return self._fit()
        finally:
            for hook in self.hooks:
                hook.close()
            cleanup_distributed(self.context)

    def _fit(self) -> TrainResult:
        started = time.perf_counter()
        self.stop_requests = StopRequests(announce=self.context.is_main)
        self.options, resume = read_resume(self.options, self.resume_changes)
        _seed_everything(self.options.seed)
        data = load_training_data(self.options)
        self.parts = set_up_training(self.options, data, self.context, resume, self.progress)
        if resume is not None:
            state = resume.checkpoint
            self.resumed = True
            self.start_epoch, self.step = resume.epochs_done, int(state["step"])
            self.history = list(state.get("metrics") or [])
            self.best_map = state.get("best_map")
            self.resumed_progress = state.get("epoch_progress")
            restore_rng_state(state["rng"])
        self.hooks = self._default_hooks() + self.extra_hooks
        self._call("before_run")

        # A run that stopped early, resumed without a new --patience, has nothing left to do.
        stopped = None
        if resume is not None and "patience" not in self.resume_changes:
            stopped = resume.checkpoint.get("stopped_early")
        if stopped is not None:
            self.stop_reason = stopped  # kept in a --save checkpoint too
            self.emit(
                f"nothing to do: this run stopped early after epoch {self.start_epoch}: {stopped}. "
                "To train on, resume with a larger --patience (0: never stop)"
            )
        epochs = range(self.start_epoch, self.options.epochs) if stopped is None else range(0)
        with self.stop_requests:
            for epoch in epochs:
                self.improved, self.evaluation = False, None
                row = self.train_one_epoch(epoch)
                self.history.append(row)
                self._call("after_epoch", row)
                barrier(self.context)
                if self._stops_early():
                    stopped = self.stop_reason
                    self.emit(f"stopped early after epoch {row['epoch']}/{self.options.epochs}: {stopped}")
                    break
                signal_number = self.stop_requests.agreed(self.context)
                if signal_number is not None and epoch + 1 < self.options.epochs:
                    raise self._interrupted(signal_number, f"after epoch {epoch + 1}/{self.options.epochs}")

        run_dir = self.parts.run_dir
        result = TrainResult(
            run_dir=run_dir,
            last_checkpoint=run_dir / LAST,
            best_checkpoint=best_checkpoint(run_dir),
            final_checkpoint=Path(self.options.save) if self.options.save else None,
            history=self.history,
            best_map=self.best_map,
            seconds=time.perf_counter() - started,
            stopped_early=stopped,
        )
        self._call("after_run", result)
        barrier(self.context)
        return result

    def _default_hooks(self) -> list[Hook]:
        """In the order they run. Rank 0 alone evaluates, writes and prints."""
        options, parts, main = self.options, self.parts, self.context.is_main
        run_dir = parts.run_dir
        hooks: list[Hook] = [BadStepLog()]
        if main:
            hooks += [ArgsFile(run_dir), LabelsPlot(run_dir), TrainBatchPictures(run_dir)]
        if main and self.progress:
            hooks.append(ProgressBar())
        # At batch 1 BatchNorm keeps its statistics (`keep_batchnorm_statistics`): the weights trained with them.
        if options.precise_bn > 0 and parts.data.val_set is not None and options.batch_size > 1:
            hooks.append(PreciseBatchNorm(options.precise_bn))
        if parts.evaluator is not None:
            hooks += [Evaluation(parts.evaluator), EvaluationPlots(run_dir)]
            if options.val_pictures > 0:
                hooks.append(ValidationPictures(options.val_pictures))
            hooks.append(EarlyStopping(options.patience))
        if main:
            hooks += [
                Checkpointer(),
                MetricsLog(run_dir),
                TensorBoardLog(run_dir, options.tensorboard),
                ConsoleReport(),
            ]
        return hooks

    def _interrupted(self, signal_number: int, where: str) -> RunInterrupted:
        """The run stopped on a signal, its checkpoint written: how to go on."""
        run_dir = self.parts.run_dir
        return RunInterrupted(
            f"stopped {where}; {run_dir / LAST} holds the run so far. To continue it: "
            f"{resume_command(self.command, run_dir, self.context.world_size)}",
            signal_number,
        )

    def _stops_early(self) -> bool:
        """Whether a hook on rank 0 ended the run; every process learns it, so all leave the loop together."""
        flag = torch.tensor([1.0 if self.stop_reason else 0.0])
        return bool(all_reduce_sum(flag, self.context).item() > 0)

    def _call(self, point: str, *arguments: Any) -> None:
        for hook in self.hooks:
            getattr(hook, point)(self, *arguments)

    def evaluates_after(self, epoch: int) -> bool:
        """Whether the run validates after `epoch` (0-based): every `eval_every` epochs, and after the last."""
        if self.parts.data.val_set is None:
            return False
        return (epoch + 1) % self.options.eval_every == 0 or epoch + 1 == self.options.epochs

    def inference_model(self) -> nn.Module:
        """What evaluation measures: the EMA weights when the run keeps them, else the trained model."""
        return self.parts.ema.module if self.parts.ema is not None else self.parts.model

    def current_lr(self) -> float:
        return self.parts.optimizer.param_groups[0]["lr"]

    # -- one epoch -------------------------------------------------------------------------------------------

    def set_backbone_frozen(self, frozen: bool) -> None:
        self.backbone_frozen = frozen
        for parameter in self.model.backbone.parameters():
            parameter.requires_grad_(not frozen)
        # A frozen backbone also keeps its BatchNorm statistics: fine-tuning on a few pictures would skew them.
        self.model.backbone.train(not frozen)

    def train_one_epoch(self, epoch: int) -> dict[str, Any]:
        """One pass over the training split; returns the epoch's row of the history."""
        options, parts = self.options, self.parts
        parts.ddp_model.train()
        self.set_backbone_frozen(epoch < options.freeze_backbone)
        if options.batch_size == 1:
            keep_batchnorm_statistics(self.model)
        parts.batch_sampler.set_epoch(epoch)
        meter, batches_done, seconds_before = EpochMeter(), 0, 0.0
        if self.resumed_progress is not None:  # resumed mid-epoch: go on from the batch it stopped at
            meter, batches_done, seconds_before = self._restore_epoch_progress(epoch)
            parts.batch_sampler.skip_batches(batches_done)
        self.first_batch, self.pictures_before = batches_done, meter.pictures
        bad_in_a_row = 0
        self._call("before_epoch", epoch)
        started = time.perf_counter()
        for images, targets in parts.loader:
            self._call("before_step", images, targets)
            losses = self.train_step(images, targets)
            batches_done += 1
            meter.pictures += len(targets) * self.context.world_size
            if losses is None:
                meter.bad_steps += 1
                bad_in_a_row += 1
                if bad_in_a_row >= options.max_bad_steps:
                    raise NonFiniteLossError(too_many_bad_steps_message(self, bad_in_a_row))
            else:
                bad_in_a_row = 0
                meter.add(losses)
                self._call("after_step", meter)
            signal_number = self.stop_requests.agreed(self.context)
            if signal_number is not None and batches_done < parts.steps_per_epoch:
                seconds = seconds_before + time.perf_counter() - started
                self._call("on_interrupt", self.epoch_progress(epoch, batches_done, meter, seconds))
                barrier(self.context)
                where = (
                    f"at step {batches_done}/{parts.steps_per_epoch} of epoch {epoch + 1}/{options.epochs}"
                )
                raise self._interrupted(signal_number, where)
        seconds = seconds_before + time.perf_counter() - started
        total = meter.summed_over_processes(self.context)
        return {
            "epoch": epoch + 1,
            "step": self.step,
            "lr": self.current_lr(),
            "loss": total.mean("loss"),
            "loc_loss": total.mean("loc_loss"),
            "conf_loss": total.mean("conf_loss"),
            "train_acc": total.mean("train_acc"),
            "bad_steps": total.bad_steps,
            "pictures_per_s": total.pictures / max(seconds, 1e-9),
            "train_seconds": seconds,
        }

    def epoch_progress(
        self, epoch: int, batches_done: int, meter: EpochMeter, seconds: float
    ) -> dict[str, Any]:
        """How far epoch `epoch` (0-based) got: what a mid-epoch checkpoint holds to go on from there.
        The losses are summed over processes (a collective), so a resumed run restores them on rank 0 only."""
        total = meter.summed_over_processes(self.context)
        return {
            "epoch": epoch,
            "batches_done": batches_done,  # per process: with `world_size`, where the epoch's order stands
            "world_size": self.context.world_size,
            "sums": dict(total.sums),
            "good_steps": total.good_steps,
            "bad_steps": total.bad_steps,
            "pictures": total.pictures,
            "seconds": seconds,
        }

    def _restore_epoch_progress(self, epoch: int) -> tuple[EpochMeter, int, float]:
        progress, self.resumed_progress = self.resumed_progress, None
        if int(progress["epoch"]) != epoch:
            raise UserError(
                f"{self.options.resume}: its mid-epoch record is for epoch {int(progress['epoch']) + 1}, "
                f"not {epoch + 1}: the checkpoint is inconsistent"
            )
        written_by = int(progress.get("world_size", 1))
        if written_by != self.context.world_size:
            raise UserError(
                f"{self.options.resume} stopped mid-epoch in a run of {written_by} process(es); it goes on only "
                f"with as many (this run has {self.context.world_size}): "
                f"{resume_command(self.command, self.parts.run_dir, written_by)}"
            )
        meter = EpochMeter()
        if self.context.is_main:
            meter.sums = {name: float(progress["sums"][name]) for name in meter.sums}
            meter.good_steps, meter.bad_steps = int(progress["good_steps"]), int(progress["bad_steps"])
        meter.pictures = int(progress["pictures"])
        return meter, int(progress["batches_done"]), float(progress["seconds"])

    def compute_losses(self, images, targets: list[dict]) -> dict[str, torch.Tensor]:
        """The loss dict of one batch (forward pass only)."""
        outputs = self.parts.ddp_model(images, targets)
        return self.parts.criterion(
            outputs["cls_logits"], outputs["bbox_regression"], outputs["anchors"], outputs["targets"]
        )

    def train_step(self, images, targets: list[dict]) -> StepLosses | None:
        """One optimizer step; None when the loss (or the gradient) was not finite and the step was skipped."""
        parts, context = self.parts, self.context
        device = parts.device
        images = (
            images.to(device, non_blocking=True)
            if isinstance(images, torch.Tensor)
            else [image.to(device, non_blocking=True) for image in images]
        )
        autocast = torch.autocast(device.type, dtype=parts.amp_dtype) if parts.amp_dtype else nullcontext()
        with autocast:
            losses = self.compute_losses(images, targets)
        loss = losses["loss"]
        finite = torch.tensor([float(torch.isfinite(loss.detach()).all())])
        all_finite = bool(all_reduce_sum(finite, context).item() == context.world_size)
        parts.optimizer.zero_grad(set_to_none=True)
        if not all_finite:
            return self._skip_step(targets, loss, "loss")
        parts.scaler.scale(loss).backward()
        if self.options.clip_grad > 0:
            parts.scaler.unscale_(parts.optimizer)
            norm = torch.nn.utils.clip_grad_norm_(
                [p for p in self.model.parameters() if p.grad is not None], self.options.clip_grad
            )
            # With fp16 the scaler skips steps with infinite gradients itself (and lowers its scale).
            if not parts.scaler.is_enabled() and not bool(torch.isfinite(norm)):
                parts.optimizer.zero_grad(set_to_none=True)
                return self._skip_step(targets, loss, "gradient")
        parts.scaler.step(parts.optimizer)
        parts.scaler.update()
        parts.scheduler.step()
        self.step += 1
        if parts.ema is not None:
            parts.ema.update(self.model)
        return StepLosses(
            float(loss.detach()),
            float(losses["loc_loss"]),
            float(losses["conf_loss"]),
            float(losses["train_acc"]),
        )

    def _skip_step(self, targets: list[dict], loss: torch.Tensor, what: str) -> None:
        """The schedule still advances, so a skipped step leaves the learning rate where an unbroken run has it."""
        self._call("on_bad_step", BadStep(self.step + 1, what, float(loss.detach()), list(targets)))
        self.parts.scheduler.step()
        self.step += 1
        return None


def keep_batchnorm_statistics(model: nn.Module) -> None:
    """BatchNorm layers normalise with their running statistics and do not update them; their scale and
    shift still train. For batches of one picture: the last extra layers' maps are 1x1, a single value per
    channel, from which no variance can be estimated (the fix detectors fine-tuned at small batches use)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
