"""Every setting of a training run in one typed record, and how a YAML file and the command line fill it.

Precedence, lowest first: the defaults below, the synthetic recipe (only when training on the built-in
synthetic data), a YAML config file (`--config`), then the flags a user typed. A checkpoint stores the
resolved options, so `--resume` needs nothing but the checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
import typing
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ssd.data.transforms import PRESETS
from ssd.errors import UserError, did_you_mean
from ssd.models.checkpoint import checkpoint_arch
from ssd.models.registry import get_architecture
from ssd.training.recipes import SYNTHETIC_RECIPE, architecture_defaults

OPTIMIZERS = ("sgd", "adamw")
SCHEDULERS = ("cosine", "multistep")
MATCHERS = ("iou", "atss", "hungarian")
LOC_LOSSES = ("smooth_l1", "l1", "giou")
CLS_LOSSES = ("ce", "quality", "focal")
IOU_THRESHOLD = 0.5  # SSD's


@dataclass
class TrainOptions:
    """One training run. `num_classes`, when given, counts the background and must fit the dataset."""

    # what to train, on what
    arch: str = "mobilenetv3_ssd"
    datapath: str = "synthetic"
    train_split: str | None = None  # matched by meaning (ssd.data.splits); None: the training split
    val_split: str | None = (
        None  # None: the validation split, else the test split; "none" turns evaluation off
    )
    val_fraction: float = 0.1  # of a dataset without splits, the part held out for validation
    image_root: str | None = None  # where a COCO JSON's pictures are, when not beside it
    max_pixels: int | None = None  # larger pictures are refused as decompression bombs (None: PIL's limit)
    num_classes: int | None = None
    input_size: int | None = None  # None: the architecture's own
    anchor_scales: str = (
        "auto"  # "auto" (fitted to the training boxes), "default" (the paper's) or "s1,...,s_{m+1}"
    )
    synthetic_train: int | None = None  # pictures in the synthetic splits (None: the dataset's default)
    synthetic_val: int | None = None
    synthetic_image_size: int | None = None
    # schedule
    epochs: int = 80
    batch_size: int = 16  # per process
    lr: float = 0.003  # for AdamW; see LR_RANGES
    lr_batch: int | None = None  # the global batch `lr` was chosen for (None: `batch_size`); see docs
    optimizer: str = "adamw"
    momentum: float = 0.9
    weight_decay: float | None = 4e-5  # never on BatchNorm parameters or biases (None: see below)
    scheduler: str = "cosine"
    milestones: tuple[float, ...] = (0.67, 0.89)  # multistep: epochs, or fractions of the run when < 1
    gamma: float = 0.1
    warmup_epochs: float = 2.0
    warmup_factor: float = 0.001
    min_lr_ratio: float = 0.01  # cosine ends at lr * this
    clip_grad: float = 10.0  # max gradient norm; 0 turns clipping off
    ema: bool = True
    ema_decay: float = 0.9998
    precise_bn: int = 0  # batches of training pictures that recompute BatchNorm statistics before evaluating
    # loss and data
    # ATSS: measured against SSD's IoU rule on BCCD and chess (docs/training.md, "What each default is worth")
    matcher: str = "atss"
    iou_threshold: float = IOU_THRESHOLD  # the IoU rule's threshold (--matcher iou)
    loc_loss: str = "smooth_l1"
    loc_weight: float = 1.0
    cls_loss: str = "ce"
    neg_pos_ratio: float = 3.0
    augment: str | None = None  # None: the architecture's recipe for the run's length (ssd.training.recipes)
    # fine-tuning
    weights: str | None = None
    freeze_backbone: int = 0  # epochs
    # machinery
    device: str = "auto"
    # None: fp16 on CUDA, fp32 elsewhere; True on a CPU: bf16 (needs its instructions)
    amp: bool | None = None
    channels_last: bool | None = None  # None: on for CUDA, and on a CPU where the architecture says
    sync_bn: bool = False
    workers: int | None = None  # None: 0 on a CPU (loading is cheap next to a CPU step), else up to 8
    seed: int = 0
    eval_every: int = 1
    patience: int = 0  # stop after this many evaluations without a better mAP; 0: never stop early
    eval_batch_size: int = 8
    max_bad_steps: int = 5  # non-finite losses in a row before the run stops
    val_pictures: int = 4  # validation pictures drawn with their predictions each evaluation
    tensorboard: bool | None = None  # None: when the tensorboard package is installed
    strict_data: bool = False
    # where things go
    project: str = "runs"
    name: str | None = None  # None: <arch>_<dataset>, numbered when taken
    save: str | None = None  # the final checkpoint, in addition to runs/<name>/last.pt
    save_period: int | None = None  # also keep runs/<name>/epoch_NNN.pt every this many epochs; None: never
    resume: str | None = None

    def __post_init__(self) -> None:
        get_architecture(self.arch)  # an unknown name fails here, before any work
        if self.augment is None:
            # A mistyped `epochs` is reported by `validate`; until then it counts as a short run.
            epochs = self.epochs if isinstance(self.epochs, int) else 0
            self.augment = architecture_defaults(self.arch).augment_for(epochs)

    def validate(self) -> None:
        def choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
            if value not in allowed:
                raise UserError(
                    f"--{name.replace('_', '-')} must be one of {', '.join(allowed)}; got {value!r}"
                    + did_you_mean(str(value), allowed)
                )

        # A YAML file can hold any type: counts must be whole numbers (True is not one, although Python
        # says it is an int).
        for name, least in (("patience", 0), ("save_period", 1)):
            value = getattr(self, name)
            if value is None and name == "save_period":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise UserError(
                    f"--{name.replace('_', '-')} must be a whole number >= {least}, got {value!r}"
                )
        choice("optimizer", self.optimizer, OPTIMIZERS)
        choice("scheduler", self.scheduler, SCHEDULERS)
        choice("matcher", self.matcher, MATCHERS)
        choice("augment", self.augment, PRESETS)
        choice("loc_loss", self.loc_loss, LOC_LOSSES)
        choice("cls_loss", self.cls_loss, CLS_LOSSES)
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "eval_every": self.eval_every}
        positive |= {"eval_batch_size": self.eval_batch_size, "max_bad_steps": self.max_bad_steps}
        for name, value in positive.items():
            if value < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        for name in (
            "lr",
            "momentum",
            "warmup_epochs",
            "clip_grad",
            "freeze_backbone",
            "gamma",
            "precise_bn",
        ):
            if getattr(self, name) < 0:
                raise UserError(f"--{name.replace('_', '-')} cannot be negative, got {getattr(self, name)}")
        if self.workers is not None and self.workers < 0:
            raise UserError(f"--workers cannot be negative, got {self.workers}")
        if self.lr == 0:
            raise UserError("--lr must be positive")
        if self.weight_decay is not None and self.weight_decay < 0:
            raise UserError(f"--weight-decay cannot be negative, got {self.weight_decay}")
        if not 0 <= self.momentum < 1:
            raise UserError(f"--momentum must be at least 0 and below 1, got {self.momentum}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise UserError(f"--min-lr-ratio must be between 0 and 1, got {self.min_lr_ratio}")
        if not 0 < self.warmup_factor <= 1:
            raise UserError(f"--warmup-factor must be above 0 and at most 1, got {self.warmup_factor}")
        for name in ("gamma", "loc_weight", "neg_pos_ratio"):
            if getattr(self, name) <= 0:
                raise UserError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.matcher != "iou" and self.iou_threshold != IOU_THRESHOLD:
            raise UserError(
                f"--iou-threshold is the threshold of --matcher iou; --matcher {self.matcher} sets its own "
                "(give --matcher iou with it)"
            )
        if not 0 < self.ema_decay < 1:
            raise UserError(f"--ema-decay must be between 0 and 1, got {self.ema_decay}")
        if self.lr_batch is not None and self.lr_batch < 1:
            raise UserError(f"--lr-batch must be at least 1, got {self.lr_batch}")
        if not 0 < self.val_fraction < 1:
            raise UserError(f"--val-fraction must be between 0 and 1, got {self.val_fraction}")
        if self.max_pixels is not None and self.max_pixels < 1:
            raise UserError(f"--max-pixels must be at least 1, got {self.max_pixels}")
        if self.name is not None and (
            self.name in ("", ".", "..") or any(sep in self.name for sep in ("/", "\\"))
        ):
            # The run folder is --project/--name: a name with a path in it would write somewhere else.
            raise UserError(
                f"--name must be a folder name inside --project, without / or .., got {self.name!r}"
            )
        if self.input_size is not None and self.input_size < 32:
            raise UserError(f"--input-size {self.input_size} is too small")

    def resolved_weight_decay(self) -> float:
        if self.weight_decay is not None:
            return self.weight_decay
        # None: the rule of the versions before 4e-5 was measured best for both optimisers; their checkpoints
        # store None, and resume as they started.
        return 0.05 if self.optimizer == "adamw" else 4e-5

    def to_dict(self) -> dict[str, Any]:
        """Plain types only, so a checkpoint holding them loads with `weights_only=True`."""
        values = dataclasses.asdict(self)
        values["milestones"] = list(self.milestones)
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "options") -> TrainOptions:
        return cls(**_checked(values, source))


def _field_types() -> dict[str, Any]:
    return {f.name: f for f in dataclasses.fields(TrainOptions)}


def _checked(values: Mapping[str, Any], source: str) -> dict[str, Any]:
    known = _field_types()
    types = typing.get_type_hints(TrainOptions)
    checked = {}
    for raw_key, value in values.items():
        key = str(raw_key).replace("-", "_")
        if key not in known:
            raise UserError(
                f"{source}: unknown option {raw_key!r}{did_you_mean(key, known)}; known: {', '.join(sorted(known))}"
            )
        checked[key] = _typed(key, value, types[key], source)
    return checked


def _typed(key: str, value: Any, annotation: Any, source: str) -> Any:
    """`value` as the option's type, or one line naming the option and the value: a YAML file can hold
    anything, and a flag can say nan or inf, which would only poison the weights later."""
    name = f"--{key.replace('_', '-')}" if source == "command line" else f"{source}: {key}"
    arguments = typing.get_args(annotation)
    optional = type(None) in arguments
    kind = next((a for a in arguments if a is not type(None)), annotation) if optional else annotation
    if value is None:
        if optional:
            return None
        raise UserError(f"{name} needs a value")
    if kind is bool:
        if not isinstance(value, bool):
            raise UserError(f"{name} must be true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{name} must be a whole number, got {value!r}")
        return value
    if kind is float:
        return _finite(name, value)
    if kind is str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise UserError(f"{name} must be a text, got {value!r}")
        return str(value)
    if key == "milestones":
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not items:
            raise UserError(f"{name} must be a list of numbers, got {value!r}")
        return tuple(_finite(name, item) for item in items)
    return value


def _finite(name: str, value: Any) -> float:
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, (list, tuple, dict)) or not math.isfinite(number):
        raise UserError(f"{name} must be a finite number, got {value!r}")
    return number


def read_yaml_options(path: str | Path) -> dict[str, Any]:
    """The options in a YAML config file: a mapping of option names (dashes or underscores) to values."""
    import yaml

    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not a config file")
    if not path.is_file():
        raise UserError(f"{path}: no such config file")
    try:
        content = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise UserError(f"{path}: not valid YAML ({error})") from error
    if not isinstance(content, Mapping):
        raise UserError(f"{path}: a config file must map option names to values")
    return _checked(content, str(path))


def write_yaml_options(options: TrainOptions, path: str | Path) -> Path:
    """The options as a YAML config file that `read_yaml_options` reads back into the same options.

    `resume` is left out (null): the file repeats the run from its start; `--resume` continues one.
    """
    import yaml

    values = options.to_dict()
    values["resume"] = None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "# the resolved options of this run: `ssd train --config THIS_FILE` repeats it\n"
    path.write_text(header + yaml.safe_dump(values, sort_keys=False, default_flow_style=None))
    return path


def resolve_options(given: Mapping[str, Any], config_file: str | Path | None = None) -> TrainOptions:
    """Defaults < synthetic recipe (synthetic data only) < YAML file < `given` (the flags a user typed)."""
    given = _checked({k: v for k, v in given.items() if v is not None}, "command line")
    from_file = read_yaml_options(config_file) if config_file is not None else {}
    values: dict[str, Any] = {}
    datapath = given.get("datapath", from_file.get("datapath", TrainOptions.datapath))
    if str(datapath) == "synthetic":
        values.update(SYNTHETIC_RECIPE)
    values.update(from_file)
    values.update(given)
    for key in ("datapath", "weights", "save", "resume", "project", "image_root"):
        if values.get(key) is not None:
            values[key] = str(values[key])
    if "arch" not in values and values.get("weights") is not None:
        # Fine-tuning one of our checkpoints trains its architecture unless another is asked for (and
        # then the checkpoint is refused as not fitting); other files take the default or --arch.
        values["arch"] = checkpoint_arch(values["weights"]) or TrainOptions.arch
    options = TrainOptions(**values)
    options.validate()
    warn_about_lr(options)
    return options


class SettingWarning(UserWarning):
    """A setting that is allowed but very likely a mistake."""


# Learning rates (at batch 16) that train from scratch or fine-tune, by optimiser: AdamW's step is about lr
# whatever the gradient's size, SGD's is lr times the gradient. A value 10x outside is worth a word.
LR_RANGES = {"adamw": (1e-4, 0.01), "sgd": (1e-3, 0.1)}


def warn_about_lr(options: TrainOptions) -> None:
    low, high = LR_RANGES.get(options.optimizer, (0.0, float("inf")))
    if not low / 10 <= options.lr <= high * 10:
        hint = ""
        if options.optimizer == "adamw" and options.lr > high:
            hint = " (a rate for SGD? add --optimizer sgd)"
        elif options.optimizer == "sgd" and options.lr < low:
            hint = " (a rate for AdamW? add --optimizer adamw)"
        warnings.warn(
            f"--lr {options.lr:g} is far outside {options.optimizer}'s usual range ({low:g} to {high:g}); "
            f"the run will likely not learn{hint}",
            SettingWarning,
            stacklevel=2,
        )
