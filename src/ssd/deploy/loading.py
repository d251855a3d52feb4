"""One way to open any model file for inference: our checkpoints, torchvision SSD files and exported files.

`ssd.load`, `ssd detect`, `ssd eval`, `ssd bench` and `ssd serve` all go through `load_detector`, so a file
that detects on the command line evaluates, benchmarks and serves the same detections. What a file is read
as comes from the ending of its name alone (`ssd.models.model_files`): `.onnx` runs with onnxruntime,
`.xml` (an OpenVINO IR) with OpenVINO, `.torchscript` / `.ts` with TorchScript (a program: only files you
trust), and anything else is read as weights with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ssd.deploy.formats import format_of_file
from ssd.deploy.threads import set_inference_threads
from ssd.device import choose_device
from ssd.errors import UserError
from ssd.models.checkpoint import load_model
from ssd.models.fold import prepare_for_inference
from ssd.models.weights.resolve import weights_and_arch


def load(path: str | Path, arch: str | None = None, device: str | torch.device | None = None):
    """A detector for any model file the toolkit knows, ready for inference: `ssd.load("best.pt")`.

    `path` is a checkpoint of ours (it says its architecture and classes), a torchvision SSD file (say its
    `arch`), a pretrained name (`ssd weights list`, downloaded once), or a file `ssd export` wrote: `.onnx`
    (onnxruntime) or `.torchscript` / `.ts` (TorchScript; such a file is a program, so only load files you
    trust; a TorchScript file under any other name is refused, never run). `device` (default: the GPU if
    torch sees one, else the CPU) is where a PyTorch model runs; exported files run on the CPU.

    The result has `predict(images)`, returning `SSD.predict`'s detections (one dict per picture:
    `result_boxes` in the picture's own pixels, `result_labels`, `result_scores`, `result_confs`),
    `class_names` (labels 1..K; None where the file names none), `num_classes` and `input_size`.
    """
    chosen = choose_device(str(device) if device is not None else "auto")
    threads = torch.get_num_threads()  # the caller's thread count is the caller's: left as it was
    try:
        return load_detector(path, arch=arch, device=chosen)
    finally:
        torch.set_num_threads(threads)


def load_detector(
    weights: str | Path,
    arch: str | None = None,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    threads: int | None = None,
    device: torch.device | str = "cpu",
    prepare: bool = True,
):
    """Anything with `predict(images)`, `class_names`, `num_classes` and `input_size` for a weights or
    exported file, or a pretrained name (`ssd weights list`), downloaded the first time.

    `prepare`: a PyTorch model is folded and channels-last (`prepare_for_inference`) and PyTorch's thread
    count set, as `ssd detect` and `ssd serve` run it; with False it is the model as the file rebuilds it
    (its `predict` still runs the folded inference form, see `SSD.inference_form`) and the thread count is
    left alone, for `ssd eval` and `ssd bench` (which prepares it as asked). Exported files are already
    folded either way.
    """
    weights, arch = weights_and_arch(weights, arch)
    if prepare:
        set_inference_threads(threads)
    export_format = format_of_file(weights)
    if export_format is None:
        model = load_model(
            weights, arch=arch, num_classes=num_classes, class_names=class_names, device=device
        )
        return prepare_for_inference(model) if prepare else model
    detector = export_format.predictor(weights, threads)
    if arch is not None and arch != detector.arch:
        raise UserError(
            f"{weights}: holds a {detector.arch} model, not {arch} (an exported file says its architecture; "
            "--arch is for torchvision files)"
        )
    if num_classes is not None and num_classes != detector.num_classes:
        raise UserError(
            f"{weights}: holds a model with num_classes={detector.num_classes}, not {num_classes} (an exported "
            "file says its classes; --num-classes is for torchvision files)"
        )
    if class_names is not None:
        detector.class_names = list(class_names)
    return detector


def describe_detector(detector, weights: str | Path) -> dict[str, Any]:
    """What a client may want to know of a loaded detector: its classes, input size, backend, precision."""
    config = detector.config
    backend = getattr(detector, "backend", "") or "pytorch"
    if isinstance(detector, torch.nn.Module):
        parameter = next(detector.parameters())
        precision = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}.get(
            parameter.dtype, str(parameter.dtype)
        )
        device = str(parameter.device)
    else:  # an exported file: the precision it runs in (a bf16 file on a CPU without bf16 runs fp32)
        precision, device = detector.precision, "cpu"
    return {
        "file": Path(weights).name,
        "arch": config.arch,
        "classes": list(detector.class_names) if detector.class_names is not None else None,
        "num_classes": int(detector.num_classes),
        "input_size": list(config.input_size),
        "backend": backend,
        "precision": precision,
        "device": device,
    }
