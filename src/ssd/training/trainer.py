"""The training loop: data -> model -> MultiBoxLoss -> optimizer, with evaluation, checkpoints and a record.

One `Trainer` runs one run, from `TrainOptions`. What it guarantees:
- a checkpoint after every epoch, written atomically, holding everything an exact resume needs; a resumed
  run (same seed, CPU, no workers) ends with the same weights as one that was never stopped;
- a non-finite loss never reaches the weights: the step is skipped and logged with its pictures, and the
  run stops with a clear message after `max_bad_steps` in a row (the last good checkpoint stays);
- under torchrun, every process computes and only rank 0 writes or prints.
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ssd.errors import DatasetError, UserError
from ssd.models.weights.checkpoint import (
    load_weights_for_finetuning,
    model_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from ssd.training.distributed import (
    ShardedBatchSampler,
    all_reduce_sum,
    barrier,
    cleanup_distributed,
    convert_sync_batchnorm,
    setup_distributed,
    use_global_normaliser,
)
from ssd.training.ema import ModelEMA
from ssd.training.optim import build_optimizer, build_scheduler, scaled_lr
from ssd.training.options import TrainOptions
from ssd.training.random_state import restore_rng_state, rng_state
from ssd.training.recipes import architecture_defaults

LAST = "last.pt"
RESUME_CHANGES = ("device", "workers", "epochs", "save")
BEST = "best.pt"


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


def _emit(message: str) -> None:
    print(message, flush=True)


class Trainer:
    """Train as `options` say; `fit()` returns where everything went.

    `command` is stored in the checkpoints (the command line by default); `emit` receives each line a person
    should read (rank 0 only).
    """

    def __init__(
        self,
        options: TrainOptions,
        command: list[str] | None = None,
        emit: Callable[[str], None] = _emit,
        progress: bool = True,
        resume_changes: dict[str, Any] | None = None,
    ):
        self.options = options
        self.resume_changes = dict(resume_changes or {})
        self.command = list(command) if command is not None else list(sys.argv)
        self._emit = emit
        self.progress = progress

    # -- the run ---------------------------------------------------------------------------------------------

    def fit(self) -> TrainResult:
        context = setup_distributed(self.options.device)
        self.context = context
        try:
            return self._fit()
        finally:
            if getattr(self, "metrics_log", None) is not None:
                self.metrics_log.close()
            cleanup_distributed(context)

    def say(self, message: str) -> None:
        if self.context.is_main:
            self._emit(message)

    def _fit(self) -> TrainResult:
        started = time.perf_counter()
        resume = self._read_resume()
        options = self.options
        _seed_everything(options.seed)
        self.train_set, self.val_set = self._datasets()
        self.model = self._build_model(resume)
        self._check_classes(resume)
        self._prepare_training(resume)
        self.run_dir = self._run_dir(resume)
        self.metrics_log = None
        if self.context.is_main:
            from ssd.training.metrics_log import MetricsLog

            self.metrics_log = MetricsLog(self.run_dir, options.tensorboard)
        self._announce()

        for epoch in range(self.start_epoch, options.epochs):
            row = self._train_one_epoch(epoch)
            evaluates = self.val_set is not None and (
                (epoch + 1) % options.eval_every == 0 or epoch + 1 == options.epochs
            )
            if evaluates and options.precise_bn > 0:
                # On every rank, before rank 0 evaluates: synchronised BatchNorm exchanges statistics
                # between processes, so a recompute on rank 0 alone would wait for the others forever.
                self._recompute_batchnorm_statistics(self.inference_model(), options.precise_bn)
            if evaluates and self.evaluator is not None:
                row.update(self._evaluate(epoch))
            self.history.append(row)
            self._end_of_epoch(epoch, row)

        final = None
        if self.context.is_main and options.save:
            final = Path(options.save)
            save_checkpoint(final, self._checkpoint(options.epochs))
        barrier(self.context)
        result = TrainResult(
            run_dir=self.run_dir,
            last_checkpoint=self.run_dir / LAST,
            best_checkpoint=(self.run_dir / BEST) if (self.run_dir / BEST).exists() else None,
            final_checkpoint=final,
            history=self.history,
            best_map=self.best_map,
            seconds=time.perf_counter() - started,
        )
        self._farewell(result)
        return result

    # -- set-up ----------------------------------------------------------------------------------------------

    def _read_resume(self) -> dict[str, Any] | None:
        if self.options.resume is None:
            return None
        path = Path(self.options.resume)
        if path.is_dir():
            path = path / LAST
        content = read_checkpoint(path)
        if "optimizer" not in content or "options" not in content:
            raise UserError(f"{path}: holds weights only, no training state to resume from (use --weights)")
        stored = TrainOptions.from_dict(content["options"], str(path))
        # The run continues as it was set up; only where it runs, where it saves and how far may change.
        for name, value in self.resume_changes.items():
            if name not in RESUME_CHANGES:
                raise UserError(
                    f"--resume continues a run with its own options; only {', '.join(RESUME_CHANGES)} may "
                    f"be given with it, not --{name.replace('_', '-')}"
                )
            if name == "epochs" and value < int(content["epoch"]):
                raise UserError(
                    f"{path} has already trained {content['epoch']} epochs; --epochs {value} is fewer"
                )
            setattr(stored, name, value)
        stored.resume = str(path)
        self.options = stored
        self.resume_path = path
        return content

    def _datasets(self):
        from ssd.data import available_splits, build_dataset

        options = self.options
        synthetic = options.datapath == "synthetic"
        splits = available_splits(options.datapath)
        train_split = options.train_split or _first_present(("train", "trainval"), splits, options.datapath)
        extra: dict[str, Any] = {}
        if synthetic and options.synthetic_image_size:
            extra["image_size"] = options.synthetic_image_size
        train_options = dict(extra, num_images=options.synthetic_train) if synthetic else {}
        train_set = build_dataset(
            options.datapath, train_split, strict=options.strict_data, **_without_none(train_options)
        )
        val_split = options.val_split
        if val_split is None:
            candidates = [s for s in ("val", "valid", "test") if s in splits and s != train_split]
            val_split = candidates[0] if candidates else "none"
        val_set = None
        if val_split != "none":
            val_options = dict(extra, num_images=options.synthetic_val) if synthetic else {}
            val_set = build_dataset(
                options.datapath, val_split, strict=options.strict_data, **_without_none(val_options)
            )
            if list(val_set.class_names) != list(train_set.class_names):
                raise DatasetError(
                    f"{options.datapath}: split '{val_split}' has classes {val_set.class_names} but "
                    f"'{train_split}' has {train_set.class_names}"
                )
        self.train_split, self.val_split = train_split, val_split
        boxes = sum(int((~t["iscrowd"]).sum()) for t in train_set.targets)
        if boxes == 0:
            raise DatasetError(
                f"{options.datapath} (split '{train_split}'): {len(train_set)} pictures but no boxes at all; "
                "a detector cannot learn from it (check the annotations with `ssd data check`)"
            )
        self.train_boxes = boxes
        return train_set, val_set

    def _build_model(self, resume: dict[str, Any] | None) -> nn.Module:
        from ssd.models.config import SSDConfig
        from ssd.models.registry import build_model, make_config

        options = self.options
        class_names = list(self.train_set.class_names)
        num_classes = options.num_classes or len(class_names) + 1
        if resume is not None:
            config = SSDConfig.from_dict(resume["config"])
            model = build_model(
                resume["arch"], num_classes=resume["num_classes"], class_names=class_names, config=config
            )
            model.load_state_dict(resume["model"])
            return model
        overrides: dict[str, Any] = {}
        if options.input_size is not None:
            overrides["input_size"] = options.input_size
        config = make_config(options.arch, **overrides)
        if options.anchor_scales != "default":
            from ssd.training.anchor_fit import fit_scales, parse_scales

            if options.anchor_scales == "auto":
                # The first feature map's side, from a dry run of the architecture at this input size.
                cells = min(build_model(options.arch, num_classes=2, config=config).feature_sizes[0])
                scales = fit_scales(self.train_set.targets, config.scales, options.augment == "ssd", cells)
            else:
                scales = parse_scales(options.anchor_scales, config.num_feature_maps)
            config = config.replace(scales=scales)
        if num_classes != len(class_names) + 1:
            raise UserError(
                f"--num-classes {num_classes}, but {options.datapath} has {len(class_names)} classes "
                f"({', '.join(class_names)}); num_classes counts the background, so it must be "
                f"{len(class_names) + 1}"
            )
        model = build_model(options.arch, num_classes=num_classes, class_names=class_names, config=config)
        self.weight_notes: list[str] = []
        if options.weights:
            self.weight_notes = load_weights_for_finetuning(model, options.weights)
        return model

    def _check_classes(self, resume: dict[str, Any] | None) -> None:
        if resume is None:
            return
        stored = resume.get("class_names")
        if stored is not None and list(stored) != list(self.train_set.class_names):
            raise UserError(
                f"{self.resume_path} was trained on classes {list(stored)}, but {self.options.datapath} has "
                f"{list(self.train_set.class_names)}"
            )

    def _prepare_training(self, resume: dict[str, Any] | None) -> None:
        from ssd.data import build_transforms
        from ssd.data.loader import AugmentedDataset, SeededSampler, collate_detection

        options, context = self.options, self.context
        device = context.device
        cuda = device.type == "cuda"
        self.amp = options.amp if options.amp is not None else cuda
        if self.amp and not cuda:
            raise UserError("--amp needs a CUDA device; this run is on " + str(device))
        if options.channels_last is not None:
            self.channels_last = options.channels_last
        else:
            self.channels_last = cuda or architecture_defaults(self.model.config.arch).cpu_channels_last

        model = self.model.to(device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if options.sync_bn and context.enabled:
            model = convert_sync_batchnorm(model, device)
        self.model = model
        self.ema = ModelEMA(model, options.ema_decay) if options.ema else None

        # The loader: the data package's seeded order, cut into this process's share of each global batch.
        transform = build_transforms(options.augment, model.config.input_size)
        sampler = SeededSampler(len(self.train_set), shuffle=True, seed=options.seed)
        self.batch_sampler = ShardedBatchSampler(
            sampler, options.batch_size, context.rank, context.world_size
        )
        workers = options.workers if options.workers is not None else _default_workers(device, context)
        self.loader = torch.utils.data.DataLoader(
            AugmentedDataset(self.train_set, transform),
            batch_sampler=self.batch_sampler,
            num_workers=workers,
            collate_fn=collate_detection,
            persistent_workers=workers > 0,
            pin_memory=cuda,
        )
        self.steps_per_epoch = len(self.batch_sampler)

        self.criterion = build_loss(model, options)
        use_global_normaliser(self.criterion, context)

        self.lr = scaled_lr(options, context.world_size)
        self.optimizer = build_optimizer(model, options, self.lr)
        self.scheduler = build_scheduler(self.optimizer, options, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)

        self.ddp_model = model
        if context.enabled:
            from torch.nn.parallel import DistributedDataParallel

            self.ddp_model = DistributedDataParallel(
                model,
                device_ids=[device.index] if cuda else None,
                find_unused_parameters=options.freeze_backbone > 0,
            )

        self.evaluator = None
        if self.val_set is not None and context.is_main:
            from ssd.evaluation import Evaluator

            self.evaluator = Evaluator(
                self.val_set, batch_size=options.eval_batch_size, progress=self.progress
            )

        self.start_epoch, self.step, self.history, self.best_map = 0, 0, [], None
        if resume is not None:
            self.optimizer.load_state_dict(resume["optimizer"])
            self.scheduler.load_state_dict(resume["scheduler"])
            if resume.get("scaler"):
                self.scaler.load_state_dict(resume["scaler"])
            if self.ema is not None and resume.get("ema") is not None:
                self.ema.load_state_dict(resume["ema"], resume.get("ema_updates", 0))
            self.start_epoch = int(resume["epoch"])
            self.step = int(resume["step"])
            self.history = list(resume.get("metrics") or [])
            self.best_map = resume.get("best_map")
            restore_rng_state(resume["rng"])

    def _run_dir(self, resume: dict[str, Any] | None) -> Path:
        if resume is not None:
            return self.resume_path.parent
        options = self.options
        if options.name:
            run_dir = Path(options.project) / options.name
        else:
            dataset = Path(options.datapath).name or "data"
            base = Path(options.project) / f"{options.arch}_{dataset}"
            run_dir, number = base, 1
            while run_dir.exists():
                number += 1
                run_dir = base.with_name(f"{base.name}{number}")
        if self.context.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
        return run_dir

    def _announce(self) -> None:
        options, context = self.options, self.context
        model = self.model
        place = f"{context.device}" + (f" x {context.world_size} processes" if context.enabled else "")
        self.say(
            f"training {options.arch} on {options.datapath} ('{self.train_split}': {len(self.train_set)} pictures, "
            f"{self.train_boxes} boxes; classes: {', '.join(self.train_set.class_names)}; "
            f"num_classes={model.num_classes} with background)"
        )
        self.say(
            f"  {options.epochs} epochs x {self.steps_per_epoch} steps, batch {options.batch_size}"
            + (f" per process ({options.batch_size * context.world_size} global)" if context.enabled else "")
            + f", {options.optimizer} lr {self.lr:g}, {options.scheduler}, input {model.config.input_size[0]}, "
            f"augment '{options.augment}', matcher {options.matcher}, on {place}"
            + (", AMP" if self.amp else "")
            + (", EMA" if self.ema is not None else "")
        )
        if options.anchor_scales != "default":
            self.say(f"  default-box scales: {', '.join(f'{s:g}' for s in model.config.scales)}")
        for note in getattr(self, "weight_notes", []):
            self.say(f"  {note}")
        if self.start_epoch:
            self.say(f"  resuming from {self.resume_path} after epoch {self.start_epoch}")
        self.say(f"  outputs: {self.run_dir}/")

    # -- one epoch -------------------------------------------------------------------------------------------

    def _set_backbone_frozen(self, frozen: bool) -> None:
        self._backbone_frozen = frozen
        for parameter in self.model.backbone.parameters():
            parameter.requires_grad_(not frozen)
        # A frozen backbone also keeps its BatchNorm statistics: fine-tuning on a few pictures would skew them.
        self.model.backbone.train(not frozen)

    def _train_one_epoch(self, epoch: int) -> dict[str, Any]:
        from tqdm import tqdm

        options, context = self.options, self.context
        self.ddp_model.train()
        frozen = epoch < options.freeze_backbone
        self._set_backbone_frozen(frozen)
        self.batch_sampler.set_epoch(epoch)
        sums = torch.zeros(5, dtype=torch.float64)  # loss, loc_loss, conf_loss, train_acc, good steps
        pictures, bad_steps, bad_in_a_row = 0, 0, 0
        started = time.perf_counter()
        bar = tqdm(
            self.loader,
            total=self.steps_per_epoch,
            desc=f"epoch {epoch + 1}/{options.epochs}" + (" (backbone frozen)" if frozen else ""),
            unit="batch",
            disable=not (self.progress and context.is_main),
            dynamic_ncols=True,
            leave=False,
        )
        for images, targets in bar:
            losses = self._train_step(images, targets)
            pictures += len(targets) * context.world_size
            if losses is None:
                bad_steps += 1
                bad_in_a_row += 1
                if bad_in_a_row >= options.max_bad_steps:
                    bar.close()
                    raise NonFiniteLossError(self._too_many_bad_steps_message(bad_in_a_row))
                continue
            bad_in_a_row = 0
            sums += torch.tensor([*losses, 1.0], dtype=torch.float64)
            done = max(1.0, float(sums[4]))
            elapsed = time.perf_counter() - started
            bar.set_postfix_str(
                f"loss {sums[0] / done:.3f} loc {sums[1] / done:.3f} conf {sums[2] / done:.3f} "
                f"acc {sums[3] / done:.3f} lr {self.optimizer.param_groups[0]['lr']:.2e} "
                f"{pictures / max(elapsed, 1e-9):.1f} img/s"
            )
        bar.close()
        seconds = time.perf_counter() - started
        totals = all_reduce_sum(torch.cat([sums, torch.tensor([bad_steps], dtype=torch.float64)]), context)
        good = max(1.0, float(totals[4]))
        return {
            "epoch": epoch + 1,
            "step": self.step,
            "lr": self.optimizer.param_groups[0]["lr"],
            "loss": float(totals[0] / good),
            "loc_loss": float(totals[1] / good),
            "conf_loss": float(totals[2] / good),
            "train_acc": float(totals[3] / good),
            "bad_steps": int(totals[5]),
            "pictures_per_s": pictures / max(seconds, 1e-9),
            "train_seconds": seconds,
        }

    def compute_losses(self, images, targets: list[dict]) -> dict[str, torch.Tensor]:
        """The loss dict of one batch (forward pass only)."""
        outputs = self.ddp_model(images, targets)
        return self.criterion(
            outputs["cls_logits"], outputs["bbox_regression"], outputs["anchors"], outputs["targets"]
        )

    def _train_step(self, images, targets: list[dict]) -> tuple[float, float, float, float] | None:
        """One optimizer step; None when the loss (or the gradient) was not finite and the step was skipped."""
        options, context = self.options, self.context
        device = context.device
        images = (
            images.to(device, non_blocking=True)
            if isinstance(images, torch.Tensor)
            else [image.to(device, non_blocking=True) for image in images]
        )
        autocast = torch.autocast(device_type="cuda", dtype=torch.float16) if self.amp else nullcontext()
        with autocast:
            losses = self.compute_losses(images, targets)
        loss = losses["loss"]
        finite = torch.tensor([float(torch.isfinite(loss.detach()).all())])
        all_finite = bool(all_reduce_sum(finite, context).item() == context.world_size)
        self.optimizer.zero_grad(set_to_none=True)
        if not all_finite:
            self._log_bad_step(targets, loss)
            self.scheduler.step()
            self.step += 1
            return None
        self.scaler.scale(loss).backward()
        skip = False
        if options.clip_grad > 0:
            self.scaler.unscale_(self.optimizer)
            norm = torch.nn.utils.clip_grad_norm_(
                [p for p in self.model.parameters() if p.grad is not None], options.clip_grad
            )
            # With AMP the scaler skips steps with infinite gradients itself (and lowers its scale).
            skip = not self.amp and not bool(torch.isfinite(norm))
        if skip:
            self.optimizer.zero_grad(set_to_none=True)
            self._log_bad_step(targets, loss, "gradient")
            self.scheduler.step()
            self.step += 1
            return None
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.step += 1
        if self.ema is not None:
            self.ema.update(self.model)
        return (
            float(loss.detach()),
            float(losses["loc_loss"]),
            float(losses["conf_loss"]),
            float(losses["train_acc"]),
        )

    def _log_bad_step(self, targets: list[dict], loss: torch.Tensor, what: str = "loss") -> None:
        ids = ", ".join(str(t.get("file_name") or t.get("image_id")) for t in targets)
        message = (
            f"step {self.step + 1}: non-finite {what} ({float(loss.detach()):g}); step skipped. "
            f"Pictures of this batch{' on rank ' + str(self.context.rank) if self.context.enabled else ''}: {ids}"
        )
        self.bad_step_messages = getattr(self, "bad_step_messages", []) + [message]
        print(message, file=sys.stderr, flush=True)
        if self.context.is_main and getattr(self, "run_dir", None) is not None:
            with open(self.run_dir / "bad_steps.log", "a") as stream:
                stream.write(message + "\n")

    def _too_many_bad_steps_message(self, count: int) -> str:
        last = self.run_dir / LAST
        kept = f"the last good checkpoint is {last}" if last.exists() else "no checkpoint was written yet"
        return (
            f"training stopped: {count} non-finite losses in a row at step {self.step}; {kept}. Usual causes: "
            f"a learning rate too high for this batch size (--lr, now {self.lr:g}), no warm-up "
            f"(--warmup-epochs), or broken boxes (`ssd data check {self.options.datapath}`); "
            f"see {self.run_dir / 'bad_steps.log'}"
        )

    # -- evaluation and records ------------------------------------------------------------------------------

    def inference_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def _evaluate(self, epoch: int) -> dict[str, Any]:
        started = time.perf_counter()
        result = self.evaluator(self.inference_model())
        summary = result.summary()
        row = {
            "mAP": summary["AP"],
            "mAP50": summary["AP50"],
            "mAP75": summary["AP75"],
            "VOC_mAP50": result.voc.map_area,
            "per_class_AP": {
                name: _plain_number(ap)
                for name, ap in zip(result.class_names, result.coco.ap_per_class, strict=True)
            },
            "eval_seconds": time.perf_counter() - started,
        }
        if self.options.val_pictures > 0:
            self._draw_val_pictures(epoch, result)
        return row

    @torch.no_grad()
    def _recompute_batchnorm_statistics(self, model: nn.Module, batches: int) -> None:
        """Replace BatchNorm's running averages by the exact statistics of `batches` training batches.

        The running averages trail the weights (momentum 0.03 in SSDLite): early in a run, or in a short one,
        they describe a network that no longer exists and evaluation suffers for it. The pictures are the
        first of the training split, resized only, in a fixed order: the same in every run.
        """
        from ssd.data import build_transforms
        from ssd.data.loader import load_sample

        # A frozen backbone keeps its statistics (see `_set_backbone_frozen`); only the rest is recomputed.
        frozen = {id(m) for m in model.backbone.modules()} if self._backbone_frozen else set()
        norms = [
            m
            for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and id(m) not in frozen
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
        device = self.context.device
        size = self.options.batch_size
        count = min(len(self.train_set), batches * size)
        try:
            for start in range(0, count, size):
                images = [
                    load_sample(self.train_set, i, transform)[0]
                    for i in range(start, min(count, start + size))
                ]
                batch = torch.stack(images).to(device)
                if self.channels_last:
                    batch = batch.contiguous(memory_format=torch.channels_last)
                model.head_outputs(model.preprocess(batch)[0])
        finally:
            for norm, momentum in zip(norms, momenta, strict=True):
                norm.momentum = momentum
            model.train(was_training)

    def _draw_val_pictures(self, epoch: int, result) -> None:
        from ssd.training.val_pictures import draw_predictions

        count = min(self.options.val_pictures, len(self.val_set))
        images = [self.val_set[i][0] for i in range(count)]
        draw_predictions(
            images,
            result.detections[:count],
            result.targets[:count],
            result.class_names,
            self.run_dir / "pictures" / f"epoch_{epoch + 1:03d}.jpg",
        )

    def _checkpoint(self, epochs_done: int) -> dict[str, Any]:
        return model_checkpoint(
            self.model,
            ema=self.ema.state_dict() if self.ema is not None else None,
            ema_updates=self.ema.updates if self.ema is not None else 0,
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            scaler=self.scaler.state_dict() if self.amp else None,
            epoch=epochs_done,
            step=self.step,
            rng=rng_state(),
            metrics=self.history,
            best_map=self.best_map,
            options=self.options.to_dict(),
            command=self.command,
        )

    def _end_of_epoch(self, epoch: int, row: dict[str, Any]) -> None:
        mAP = row.get("mAP")
        improved = mAP is not None and (self.best_map is None or mAP > self.best_map)
        if improved:
            self.best_map = mAP
        if self.context.is_main:
            checkpoint = self._checkpoint(epoch + 1)
            save_checkpoint(self.run_dir / LAST, checkpoint)
            if improved:
                save_checkpoint(self.run_dir / BEST, checkpoint)
            self.metrics_log.write(self.history)
        self.say(_summary_line(row, self.options.epochs, improved))
        barrier(self.context)

    def _farewell(self, result: TrainResult) -> None:
        if not self.history:
            self.say(f"nothing to do: the checkpoint already holds {self.options.epochs} epochs")
            return
        last = result.history[-1]
        self.say(f"done in {result.seconds:.0f} s.")
        if last.get("mAP") is not None:
            self.say(
                f"  validation ('{self.val_split}'): mAP {last['mAP']:.3f}, mAP@0.5 {last['mAP50']:.3f} "
                f"(best mAP {result.best_map:.3f})"
            )
        self.say(f"  run folder: {result.run_dir}/ (metrics.csv, loss.png, lr.png, map.png, pictures/)")
        self.say(
            f"  checkpoints: {result.last_checkpoint}"
            + (f", {result.best_checkpoint} (best mAP)" if result.best_checkpoint else "")
        )
        if result.final_checkpoint is not None:
            self.say(f"  final checkpoint: {result.final_checkpoint}")
        weights = result.final_checkpoint or result.best_checkpoint or result.last_checkpoint
        self.say(
            f"  next: ssd eval --weights {weights} --datapath {self.options.datapath}"
            + (f" --split {self.val_split}" if self.val_split != "none" else "")
        )


def _summary_line(row: dict[str, Any], epochs: int, improved: bool) -> str:
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


def build_loss(model: nn.Module, options: TrainOptions) -> nn.Module:
    """MultiBoxLoss with the matcher and loss options of the run."""
    from ssd.training.loss import MultiBoxLoss
    from ssd.training.matching import HungarianMatcher, IoUMatcher

    # Hungarian: one default box per object, chosen on the model's own predictions (no IoU threshold).
    matcher = (
        HungarianMatcher() if options.matcher == "hungarian" else IoUMatcher(threshold=options.iou_threshold)
    )
    return MultiBoxLoss.for_model(
        model,
        matcher=matcher,
        neg_pos_ratio=options.neg_pos_ratio,
        loc_loss=options.loc_loss,
        loc_weight=options.loc_weight,
    )


def _default_workers(device: torch.device, context) -> int:
    """On a CPU the step is the bottleneck and loader processes would take its cores; on a GPU, load ahead."""
    if device.type == "cpu":
        return 0
    import os

    return max(1, min(8, (os.cpu_count() or 2) // context.world_size - 1))


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _first_present(wanted: tuple[str, ...], splits: list[str], path: str) -> str:
    for split in wanted:
        if split in splits:
            return split
    if len(splits) == 1:
        return splits[0]
    raise DatasetError(
        f"{path}: no '{wanted[0]}' split (splits found: {', '.join(splits) or 'none'}); choose one with --train-split"
    )


def _without_none(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _plain_number(value: Any) -> float | None:
    """A float for the checkpoint and CSV; None where a metric is undefined (NaN: a class with no object)."""
    value = float(value)
    return value if math.isfinite(value) else None
