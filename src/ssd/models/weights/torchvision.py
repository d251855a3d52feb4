"""Loading torchvision's weight files into our models, through per-architecture key maps.

Two kinds of file are recognised by their keys: a torchvision SSD checkpoint (`backbone.*` and `head.*`) and
an ImageNet classification file for the backbone (`features.*`, `conv1.*`, ...). Files are read with
`weights_only=True`, so a downloaded file cannot run code. A file that does not fit gets one error listing
every missing key, unexpected key and shape that differs. When only the classification headers' shapes
differ (another number of classes), those headers keep their fresh initialisation and the notes say so.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from torch import Tensor, nn

from ssd.errors import UserError, WeightsMismatchError
from ssd.models.weights.key_maps import key_maps_for
from ssd.models.weights.safe_load import load_pt_file, refuse_non_finite

_CHECKPOINT_CONTAINER_KEYS = ("state_dict", "model", "model_state_dict")


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a weights file, unwrapped from a `{'state_dict': ...}`-style container if needed."""
    path = Path(path)
    content = load_pt_file(path)
    if isinstance(content, Mapping):
        for key in _CHECKPOINT_CONTAINER_KEYS:
            if isinstance(content.get(key), Mapping):
                content = content[key]
                break
    if not isinstance(content, Mapping) or not all(isinstance(v, Tensor) for v in content.values()):
        raise UserError(f"{path}: a PyTorch file, but not a weights file (it holds no tensors by name)")
    return {str(k).removeprefix("module."): v for k, v in content.items()}


def is_torchvision_ssd_checkpoint(state_dict: Mapping[str, Tensor]) -> bool:
    return any(k.startswith("head.") for k in state_dict) and any(
        k.startswith("backbone.") for k in state_dict
    )


def map_keys(
    state_dict: Mapping[str, Tensor], rules: Sequence[tuple[str, str]], ignore: Sequence[str] = ()
) -> tuple[dict[str, Tensor], list[str]]:
    """Rename keys with the first matching rule; returns the mapped dict and the keys no rule matched."""
    mapped: dict[str, Tensor] = {}
    unmatched = []
    for key, value in state_dict.items():
        if any(re.search(pattern, key) for pattern in ignore):
            continue
        for pattern, replacement in rules:
            if re.search(pattern, key):
                mapped[re.sub(pattern, replacement, key, count=1)] = value
                break
        else:
            unmatched.append(key)
    return mapped, unmatched


def load_torchvision_weights(model: nn.Module, path: str | Path) -> list[str]:
    """Load a torchvision SSD checkpoint or ImageNet backbone file into `model`; returns notes for the user."""
    arch = model.config.arch
    maps = key_maps_for(arch)
    state_dict = read_state_dict(path)
    if is_torchvision_ssd_checkpoint(state_dict):
        if not maps.torchvision:
            raise WeightsMismatchError(f"{path}: torchvision has no SSD checkpoint for {arch}")
        mapped, unmatched = map_keys(state_dict, maps.torchvision)
        scope = "all"
    else:
        mapped, unmatched = map_keys(state_dict, maps.imagenet, maps.imagenet_ignore)
        scope = "backbone"
    return load_mapped_weights(
        model, mapped, unmatched, path, scope, maps.imagenet_overrides, maps.imagenet_optional
    )


def load_mapped_weights(
    model: nn.Module,
    mapped: dict[str, Tensor],
    unmatched: list[str],
    path: str | Path,
    scope: str,
    imagenet_overrides: Mapping[str, object] | None = None,
    optional_patterns: Sequence[str] = (),
) -> list[str]:
    """Check `mapped` against the model, then load it. `scope` 'backbone' loads only `backbone.*` keys."""
    own = model.state_dict()
    expected = {k for k in own if scope == "all" or k.startswith("backbone.")}
    # A backbone file says nothing of BatchNorm's batch counter; that is no reason to refuse it.
    optional = {k for k in expected if k.endswith("num_batches_tracked")}
    if scope == "backbone":
        optional |= {k for k in expected if any(re.search(p, k) for p in optional_patterns)}
    missing = sorted(expected - mapped.keys() - optional)
    fresh = sorted(k for k in optional - mapped.keys() if not k.endswith("num_batches_tracked"))
    unexpected = sorted(unmatched + [k for k in mapped if k not in own])
    wrong_shapes = {
        k: (tuple(v.shape), tuple(own[k].shape))
        for k, v in mapped.items()
        if k in own and v.shape != own[k].shape
    }
    # Another class count changes only the classification headers' output layers: keep those fresh.
    other_class_count = {k for k in wrong_shapes if k.startswith("classification_headers.")}
    notes = []
    if other_class_count and len(other_class_count) == len(wrong_shapes):
        for key in other_class_count:
            del mapped[key]
        notes.append(
            f"{path}: classification headers were trained for another number of classes; they are re-initialised "
            f"for num_classes={model.num_classes} (the rest of the weights are loaded)"
        )
        wrong_shapes = {}
    if missing or unexpected or wrong_shapes:
        raise WeightsMismatchError(
            _mismatch_message(model, path, missing, unexpected, wrong_shapes, imagenet_overrides)
        )
    # Only the tensors the model takes: torchvision's VGG-16 features file has a NaN classifier it never uses.
    refuse_non_finite(mapped, path)
    mapped = {k: v.to(own[k].dtype) for k, v in mapped.items()}
    model.load_state_dict(mapped, strict=False)
    notes.insert(
        0, f"{path}: loaded {len(mapped)} tensors ({'whole model' if scope == 'all' else 'backbone only'})"
    )
    if fresh:
        notes.append(f"{path}: not in the file, kept at their initialisation: {', '.join(fresh)}")
    return notes


def _mismatch_message(model, path, missing, unexpected, wrong_shapes, imagenet_overrides) -> str:
    lines = [f"{path} does not fit {model.config.arch} (num_classes={model.num_classes}):"]
    if missing:
        lines.append(
            f"  missing in the file ({len(missing)}): "
            + ", ".join(missing[:20])
            + (" ..." if len(missing) > 20 else "")
        )
    if unexpected:
        lines.append(
            f"  not in the model ({len(unexpected)}): "
            + ", ".join(unexpected[:20])
            + (" ..." if len(unexpected) > 20 else "")
        )
    for key, (theirs, ours) in list(wrong_shapes.items())[:20]:
        lines.append(f"  shape of {key}: file {theirs}, model {ours}")
    if imagenet_overrides and wrong_shapes and all(k.startswith("backbone.") for k in wrong_shapes):
        options = ", ".join(f"{k}={v!r}" for k, v in imagenet_overrides.items())
        lines.append(f"  an ImageNet backbone file needs the model built with {options}")
    return "\n".join(lines)
