"""Our checkpoint files: written atomically, read with `weights_only=True`, and enough to rebuild the model alone.

A checkpoint is a dict of plain types and tensors:
  format, format_version, ssd_version   what wrote it
  arch, config, num_classes, class_names  everything needed to rebuild the model without other files
  model                                 the model's state dict (what inference uses, unless `ema` is present)
  ema                                   the EMA weights' state dict, or absent
  optimizer, scheduler, scaler, epoch, step, rng, metrics, command   training state, for an exact resume
                                       (written by `ssd.training`, which reads it back to resume)
  data                                  the splits it trained and validated on (datapath, train_split,
                                       val_split, automatic, val_fraction, split_seed, split_options):
                                       `ssd eval` without --split evaluates the same pictures
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ssd.errors import UserError
from ssd.models.config import SSDConfig
from ssd.models.registry import build_model, get_architecture
from ssd.models.weights.resolve import pretrained_config_overrides, resolve_weights, weights_and_arch
from ssd.models.weights.safe_load import load_pt_file, non_finite_tensor, refuse_non_finite
from ssd.models.weights.torchvision import load_mapped_weights, read_state_dict
from ssd.ops.anchors import boxes_per_location
from ssd.version import __version__

CHECKPOINT_FORMAT = "ssd-checkpoint"
CHECKPOINT_VERSION = 1
# What a checkpoint must hold to rebuild its model (`model_checkpoint` writes them).
MODEL_KEYS = ("arch", "config", "num_classes", "model")


def save_checkpoint(path: str | Path, checkpoint: Mapping[str, Any]) -> Path:
    """Write to a temporary file in the same folder, then rename: a crash never leaves a half-written file."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CheckpointWriteError(f"could not write {path}: {error.strerror or error}") from None
    content = {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, "ssd_version": __version__}
    content.update(checkpoint)
    for part in ("model", "ema"):  # weights with a NaN would only ever detect nothing: never written
        state = content.get(part)
        name = non_finite_tensor(state) if isinstance(state, Mapping) else None
        if name is not None:
            kept = f"; {path} keeps its previous content" if path.exists() else ""
            raise NonFiniteWeightsError(
                f"refused to write {path}: the {part} weights hold NaN or infinity ({name}){kept}"
            )
    kept = f"{path} keeps its previous content" if path.exists() else "nothing was written"
    try:
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise CheckpointWriteError(f"could not write {path}: {error.strerror or error}; {kept}") from None
    try:
        # mkstemp makes the file 0600; a checkpoint gets the mode of any file the user makes (their umask),
        # so that a teammate can read it where the umask allows.
        os.chmod(temporary, 0o666 & ~_umask())
        with os.fdopen(handle, "wb") as stream:
            torch.save(content, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except (OSError, RuntimeError) as error:
        # A full disk surfaces as OSError (errno 28) or as the zip writer's RuntimeError ("file write failed").
        Path(temporary).unlink(missing_ok=True)
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise CheckpointWriteError(f"could not write {path}: {reason}; {kept}") from None
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


class CheckpointWriteError(UserError):
    """A checkpoint that could not be written (a full or read-only disk); the previous file stays."""


class NonFiniteWeightsError(UserError):
    """Weights with NaN or infinity, refused before they are written."""


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


def model_checkpoint(model: torch.nn.Module, **extra: Any) -> dict[str, Any]:
    """The part of a checkpoint that describes the model; training adds its own state through `extra`."""
    return {
        "arch": model.config.arch,
        "config": model.config.to_dict(),
        "num_classes": model.num_classes,
        "class_names": list(model.class_names) if model.class_names is not None else None,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **extra,
    }


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A file of ours, read safely; a clear error for a missing, corrupt or foreign file."""
    path = Path(path)
    content = load_pt_file(path, "checkpoint")
    if not is_ssd_checkpoint(content):
        raise UserError(f"{path}: not a checkpoint written by ssd")
    _refuse_non_finite_weights(content, path)
    return content


def is_ssd_checkpoint(content: Any) -> bool:
    return isinstance(content, Mapping) and content.get("format") == CHECKPOINT_FORMAT


def _check_model_keys(content: Mapping[str, Any], path: Path) -> None:
    """A file marked as ours but lacking a part names the part, rather than failing on it as a KeyError;
    one whose weights are not finite is refused."""
    missing = [key for key in MODEL_KEYS if key not in content]
    if missing:
        raise UserError(
            f"{path}: an ssd checkpoint without its {', '.join(missing)} (damaged, or not written by ssd)"
        )
    _refuse_non_finite_weights(content, path)


def _refuse_non_finite_weights(content: Mapping[str, Any], path: Path) -> None:
    """Weights with NaN or infinity detect nothing, silently: every reader refuses them in one line."""
    for part in ("model", "ema"):
        if isinstance(content.get(part), Mapping):
            refuse_non_finite(content[part], path, f"{part} weights")


def checkpoint_arch(path: str | Path) -> str | None:
    """The architecture in one of our checkpoint files; None for anything else (a torchvision file, a
    pretrained name), whose architecture the user says."""
    path = Path(path)
    if not path.is_file():
        return None
    content = load_pt_file(path)
    return str(content["arch"]) if is_ssd_checkpoint(content) and "arch" in content else None


def load_model(
    path: str | Path,
    arch: str | None = None,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    device: str | torch.device | None = None,
    use_ema: bool = True,
) -> torch.nn.Module:
    """A model ready for inference from any weights file the toolkit knows.

    Our checkpoints rebuild themselves (architecture, config, classes). A torchvision SSD checkpoint needs
    `arch`, unless it is a pretrained name (`ssd weights list`), which is downloaded once and says its
    architecture; its class count is read from the file unless given.
    """
    given = path
    path, arch = weights_and_arch(path, arch)
    content = load_pt_file(path)
    if is_ssd_checkpoint(content):
        _check_model_keys(content, path)
        if arch is not None and arch != content["arch"]:
            raise UserError(
                f"{path}: holds a {content['arch']} model, not {arch} (a checkpoint says its architecture; "
                "--arch is for torchvision files)"
            )
        model = _rebuild(content, path, use_ema)
    else:
        # A file of neither kind (a list, a mapping of numbers) is named as such before --arch is asked for.
        state_dict = read_state_dict(path)
        if arch is None:
            raise UserError(f"{path}: a torchvision weights file; say which architecture it is (--arch)")
        if num_classes is None:
            num_classes = _class_count_of_torchvision_checkpoint(state_dict, arch, path)
        overrides = pretrained_config_overrides(given, arch)
        model = build_model(arch, num_classes=num_classes, class_names=class_names, **overrides)
        model.load_torchvision(path)
    if class_names is not None and model.class_names is None:
        model.class_names = list(class_names)
    return model.to(device or "cpu").eval()


def _rebuild(content: Mapping[str, Any], path: Path, use_ema: bool) -> torch.nn.Module:
    """The model one of our checkpoints describes, with its weights (the EMA ones when present and wanted)."""
    _check_model_keys(content, path)
    try:
        config = SSDConfig.from_dict(content["config"])
    except (TypeError, ValueError, KeyError, AttributeError):
        raise UserError(f"{path}: its model config is not one this version of ssd reads") from None
    model = build_model(
        content["arch"],
        num_classes=content["num_classes"],
        class_names=content.get("class_names"),
        config=config,
    )
    weights = content.get("ema") if use_ema and content.get("ema") is not None else content["model"]
    try:
        model.load_state_dict(weights)
    except (RuntimeError, TypeError, AttributeError):
        # torch's message lists every key; the point for a user is that the file is not whole.
        raise UserError(
            f"{path}: its weights do not fit the {content['arch']} model it describes (damaged or edited)"
        ) from None
    return model


def _class_count_of_torchvision_checkpoint(
    state_dict: Mapping[str, torch.Tensor], arch: str, path: Path
) -> int:
    head = [
        k
        for k in state_dict
        if k.startswith("head.classification_head.module_list.0.") and k.endswith("bias")
    ]
    if not head:
        raise UserError(f"{path}: no classification head found; give the number of classes (--num-classes)")
    outputs = state_dict[sorted(head)[-1]].shape[0]
    per_location = boxes_per_location(get_architecture(arch).config.aspect_ratios)[0]
    if outputs % per_location:
        raise UserError(f"{path}: its classification head does not fit {arch}")
    return outputs // per_location


def load_weights_for_finetuning(model: torch.nn.Module, path: str | Path) -> list[str]:
    """Start `model` from a weights file: one of our checkpoints, a torchvision SSD checkpoint or an ImageNet
    backbone file, or a pretrained name (downloaded once). Classification headers trained for another number
    of classes stay freshly initialised; anything else that does not fit is an error listing every
    difference. Returns notes for the user."""
    path = resolve_weights(path, model.config.arch)
    content = load_pt_file(path)
    if not is_ssd_checkpoint(content):
        return model.load_torchvision(path)
    _check_model_keys(content, path)
    if content["arch"] != model.config.arch:
        raise UserError(f"{path}: a {content['arch']} checkpoint cannot start a {model.config.arch} model")
    weights = content.get("ema") if content.get("ema") is not None else content["model"]
    return load_mapped_weights(model, dict(weights), [], path, "all")
