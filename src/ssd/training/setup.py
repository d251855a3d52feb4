"""Setting up a run: its model, where it runs, its loader, loss, optimiser and schedule, and its folder.

Everything here happens once, before the first step; the trainer then only loops. A resumed run rebuilds
the same parts from its checkpoint and continues with their saved state.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ssd.data import build_transforms
from ssd.data.loader import AugmentedDataset, SeededSampler, collate_detection
from ssd.device import torch_has_bf16
from ssd.errors import UserError
from ssd.evaluation import Evaluator
from ssd.models.checkpoint import load_weights_for_finetuning
from ssd.models.config import SSDConfig
from ssd.models.registry import build_model, make_config
from ssd.models.ssd import SSD
from ssd.models.weights.resolve import pretrained_config_overrides
from ssd.training.anchor_fit import fit_scales, parse_scales
from ssd.training.datasets import TrainingData
from ssd.training.distributed import (
    DistributedContext,
    ShardedBatchSampler,
    convert_sync_batchnorm,
    use_global_normaliser,
)
from ssd.training.ema import ModelEMA
from ssd.training.freed_memory import keep_freed_memory
from ssd.training.interruption import ignore_interrupts
from ssd.training.loss import build_loss, start_with_background_prior
from ssd.training.optim import build_optimizer, build_scheduler, scaled_lr
from ssd.training.options import TrainOptions
from ssd.training.outputs import (
    check_free_space,
    check_save_path,
    checkpoint_bytes,
    make_writable_folder,
    remove_stale_temporaries,
)
from ssd.training.recipes import architecture_defaults
from ssd.training.resume import LAST, ResumePoint


@dataclass
class TrainingParts:
    """What a run is made of; built once by `set_up_training`."""

    data: TrainingData
    model: SSD  # the module whose weights are trained and saved (not wrapped)
    ddp_model: nn.Module  # what the steps call: `model`, or DistributedDataParallel around it
    ema: ModelEMA | None
    device: torch.device
    amp_dtype: torch.dtype | None  # float16 (CUDA), bfloat16 (a CPU with bf16 instructions), None: fp32
    channels_last: bool
    batch_sampler: ShardedBatchSampler
    loader: torch.utils.data.DataLoader
    criterion: nn.Module
    lr: float  # the rate the schedule starts from, scaled to the global batch
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    evaluator: Evaluator | None  # rank 0 only, and only with a validation split
    run_dir: Path
    checkpoint_bytes: int = 0  # about the size of one checkpoint of this run
    weight_notes: list[str] = field(default_factory=list)  # what loading --weights did
    output_notes: list[str] = field(default_factory=list)  # what checking the outputs found

    @property
    def steps_per_epoch(self) -> int:
        return len(self.batch_sampler)


# How many times the input side the shorter side of a decoded training picture keeps (see AugmentedDataset).
DECODED_SIDE_PER_INPUT_SIDE = 2


def set_up_training(
    options: TrainOptions,
    data: TrainingData,
    context: DistributedContext,
    resume: ResumePoint | None,
    progress: bool,
) -> TrainingParts:
    run_dir = _run_dir(options, resume, context)  # checked writable first: a run that cannot save stops here
    output_notes = _check_outputs(options, run_dir, resume) if context.is_main else []
    model, notes = _training_model(options, data, resume)
    size = checkpoint_bytes(model, options.ema, options.optimizer)
    if context.is_main:
        # last.pt is written beside the previous one before replacing it, and best.pt beside both.
        check_free_space(run_dir, 2 * size, "a new last.pt and best.pt")
        if options.save:
            check_free_space(Path(options.save).parent, size, f"--save {options.save}")
    device = context.device
    cuda = device.type == "cuda"
    if device.type == "cpu":
        keep_freed_memory()  # the step's activations are the CPU's: reuse them instead of page-faulting anew
    amp_dtype = _amp_dtype(options.amp, device)
    channels_last = options.channels_last
    if channels_last is None:
        channels_last = cuda or architecture_defaults(model.config.arch).cpu_channels_last

    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if options.sync_bn and context.enabled:
        model = convert_sync_batchnorm(model, device)
    ema = ModelEMA(model, options.ema_decay) if options.ema else None

    # The loader: the data package's seeded order, cut into this process's share of each global batch.
    transform = build_transforms(options.augment, model.config.input_size)
    sampler = SeededSampler(len(data.train_set), shuffle=True, seed=options.seed)
    batch_sampler = ShardedBatchSampler(sampler, options.batch_size, context.rank, context.world_size)
    workers = options.workers if options.workers is not None else _default_workers(device, context)
    # Large JPEGs decode at a fraction of their size, keeping twice the input side: a 2000 px picture costs
    # about half the decoding and a quarter of the augmenting; only the smallest IoU crops (0.3 of the side)
    # are then upsampled a little.
    decoded_side = DECODED_SIDE_PER_INPUT_SIDE * max(model.config.input_size)
    loader = torch.utils.data.DataLoader(
        AugmentedDataset(data.train_set, transform, shorter_side_at_least=decoded_side),
        batch_sampler=batch_sampler,
        num_workers=workers,
        collate_fn=collate_detection,
        persistent_workers=workers > 0,
        pin_memory=cuda,
        worker_init_fn=ignore_interrupts if workers > 0 else None,
        # Its own generator for the workers' base seed, which the per-sample seeds make unused: drawn from the
        # global one, each new pass would move that stream, and a mid-epoch resume would be a draw apart.
        generator=torch.Generator().manual_seed(options.seed),
    )

    criterion = build_loss(model, options)
    use_global_normaliser(criterion, context)
    lr = scaled_lr(options, context.world_size)
    optimizer = build_optimizer(model, options, lr)
    scheduler = build_scheduler(optimizer, options, len(batch_sampler))
    # fp16 needs its gradients scaled (they would underflow); bf16 has fp32's range and needs no scaler.
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    ddp_model = model
    if context.enabled:
        ddp_model = DistributedDataParallel(
            model,
            device_ids=[device.index] if cuda else None,
            find_unused_parameters=options.freeze_backbone > 0,
        )
    evaluator = None
    if data.val_set is not None and context.is_main:
        evaluator = Evaluator(data.val_set, batch_size=options.eval_batch_size, progress=progress)

    if resume is not None:
        state = resume.checkpoint
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        if ema is not None and state.get("ema") is not None:
            ema.load_state_dict(state["ema"], state.get("ema_updates", 0))

    return TrainingParts(
        data=data,
        model=model,
        ddp_model=ddp_model,
        ema=ema,
        device=device,
        amp_dtype=amp_dtype,
        channels_last=channels_last,
        batch_sampler=batch_sampler,
        loader=loader,
        criterion=criterion,
        lr=lr,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        evaluator=evaluator,
        run_dir=run_dir,
        checkpoint_bytes=size,
        weight_notes=notes,
        output_notes=output_notes,
    )


def _training_model(
    options: TrainOptions, data: TrainingData, resume: ResumePoint | None
) -> tuple[SSD, list[str]]:
    """The model to train, and notes on the weights it starts from."""
    class_names = list(data.train_set.class_names)
    if resume is not None:
        state = resume.checkpoint
        stored = state.get("class_names")
        if stored is not None and list(stored) != class_names:
            raise UserError(
                f"{resume.path} was trained on classes {list(stored)}, but {options.datapath} has {class_names}"
            )
        config = SSDConfig.from_dict(state["config"])
        model = build_model(
            state["arch"], num_classes=state["num_classes"], class_names=class_names, config=config
        )
        model.load_state_dict(state["model"])
        return model, []
    num_classes = options.num_classes or len(class_names) + 1
    size = {"input_size": options.input_size} if options.input_size else {}
    # A pretrained name may need the model built its way (MobileNetV3's full tail for its ImageNet file).
    config = make_config(options.arch, **pretrained_config_overrides(options.weights, options.arch), **size)
    if options.anchor_scales != "default":
        config = config.replace(scales=_default_box_scales(options, config, data))
    if num_classes != len(class_names) + 1:
        raise UserError(
            f"--num-classes {num_classes}, but {options.datapath} has {len(class_names)} classes "
            f"({', '.join(class_names)}); num_classes counts the background, so it must be "
            f"{len(class_names) + 1}"
        )
    model = build_model(options.arch, num_classes=num_classes, class_names=class_names, config=config)
    if options.cls_loss == "focal":
        start_with_background_prior(model)  # heads loaded from --weights below replace it
    notes = load_weights_for_finetuning(model, options.weights) if options.weights else []
    return model, notes


def _default_box_scales(options: TrainOptions, config: SSDConfig, data: TrainingData) -> tuple[float, ...]:
    if options.anchor_scales != "auto":
        return parse_scales(options.anchor_scales, config.num_feature_maps)
    # The first feature map's side, from a dry run of the architecture at this input size.
    cells = min(build_model(options.arch, num_classes=2, config=config).feature_sizes[0])
    return fit_scales(data.train_set.targets, config.scales, options.augment == "ssd", cells)


def _amp_dtype(asked: bool | None, device: torch.device) -> torch.dtype | None:
    """The autocast precision of the forward pass: fp16 on CUDA unless `--no-amp`; bf16 on a CPU with bf16
    instructions (AVX512-BF16 or AMX) only when `--amp` asks (it is not reproducible from one process to
    the next there, docs/training.md); None for fp32. The weights, the optimiser and the loss stay fp32."""
    if device.type == "cuda":
        return torch.float16 if asked in (None, True) else None
    if not asked:
        return None
    if device.type == "cpu" and torch_has_bf16():
        return torch.bfloat16
    raise UserError(
        f"--amp needs a CUDA device or a CPU with bf16 instructions (AVX512-BF16 or AMX); this run is on "
        f"{device}{' without them' if device.type == 'cpu' else ''}"
    )


def _run_dir(options: TrainOptions, resume: ResumePoint | None, context: DistributedContext) -> Path:
    """A resumed run keeps its folder; a new one gets `--name`, or `<arch>_<dataset>`, numbered when taken.

    A `--name` folder counts as taken only once it holds a run's checkpoint, so repeating a run from its
    `args.yaml` (which names it) leaves the first run's files alone.
    """
    if resume is not None:
        return resume.path.parent

    def taken(folder: Path) -> bool:
        return (folder / LAST).exists() if options.name else folder.exists()

    dataset = Path(options.datapath).name or "data"
    base = Path(options.project) / (options.name or f"{options.arch}_{dataset}")
    run_dir, number = base, 1
    while taken(run_dir):
        number += 1
        run_dir = base.with_name(f"{base.name}{number}")
    return run_dir


def _check_outputs(options: TrainOptions, run_dir: Path, resume: ResumePoint | None) -> list[str]:
    """The run folder and --save can be written (one line if not); a resumed run's stale temporaries go."""
    make_writable_folder(
        run_dir, f"--project {options.project}" if resume is None else f"--resume {resume.path}"
    )
    check_save_path(options.save)
    removed = remove_stale_temporaries(run_dir) if resume is not None else []
    if removed:
        return [
            f"removed {len(removed)} temporary file(s) of an interrupted checkpoint write: "
            + ", ".join(path.name for path in removed)
        ]
    return []


def _default_workers(device: torch.device, context: DistributedContext) -> int:
    """On a CPU the step is the bottleneck and loader processes would take its cores; on a GPU, load ahead."""
    if device.type == "cpu":
        return 0
    return max(1, min(8, (os.cpu_count() or 2) // context.world_size - 1))
