"""Export to ONNX, TorchScript or OpenVINO, with or without post-processing in the graph, checked against
PyTorch.

Every export ends with a check: the exported file is loaded by the predictor a user would use
(`ssd.deploy.formats`), run on sample pictures, and its outputs compared with the PyTorch model's. A mismatch
fails the export with the numbers (`ExportMismatchError`) and removes the file, so a file that exists is a
file that works. Every file carries the SHA-256 of its content (see each format's file), which the
predictor checks on load.

A file is read by the ending of its name (`ssd.models.model_files`), so an export must be named as its
format: `.onnx`, `.torchscript` / `.ts`, or `.xml` (OpenVINO); any other name is refused before anything is
written.

The graph's input is `images` `(B, 3, H, W)`: pictures resized to the input size, RGB in [0, 1]
(normalisation is inside). The outputs are `cls_logits`, `bbox_regression` for the network alone, or
`boxes`, `scores`, `labels`, `confs`, `num_detections` with post-processing (see `DetectionGraph`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from ssd.deploy.compare import compare_detections, compare_top_detections
from ssd.deploy.formats import EXPORT_FORMATS, load_predictor, require_export_name
from ssd.deploy.formats import openvino as openvino_format
from ssd.deploy.predictor import export_metadata
from ssd.errors import UserError, did_you_mean
from ssd.models.fold import prepare_for_inference

# Raw header outputs agree when within this, relative to their largest magnitude (and at least absolute).
NETWORK_TOLERANCE = 1e-4


class ExportMismatchError(UserError):
    """The exported model does not compute what the PyTorch model computes."""


@dataclass
class ExportReport:
    path: Path
    format: str
    with_postprocess: bool
    dynamic_batch: bool
    precision: str = "fp32"
    checks: list[str] = field(default_factory=list)


def sample_pictures(count: int = 2, seed: int = 0) -> list[Tensor]:
    """Pictures to check an export with when the user gives none: random pixels, two sizes.

    Random pixels give every default box its own features, so no two candidates share a score: flat
    regions in a picture make untrained networks give many boxes exactly equal scores, and the order of
    equal scores (hence which box NMS keeps) is an arbitrary choice of each runtime.
    """
    generator = torch.Generator().manual_seed(seed)
    sizes = [(480, 640), (375, 500)]
    return [
        torch.randint(0, 256, (3, *sizes[i % 2]), generator=generator, dtype=torch.uint8)
        for i in range(count)
    ]


def export_model(
    model: nn.Module,
    path: str | Path,
    format: str = "onnx",
    with_postprocess: bool = False,
    dynamic_batch: bool = False,
    pictures: list[Tensor] | None = None,
    check: bool = True,
    precision: str = "fp32",
) -> ExportReport:
    """Write `model` to `path` in `format`, then check the file against the model; see the module docstring.

    `pictures` (uint8 CHW) are what the check runs on (default: `sample_pictures()`); `check=False` skips
    it, for callers that compare the outputs themselves. `precision` "bf16" (OpenVINO only, on a CPU with
    bf16 instructions) is what the file runs in; its check asks what bf16 can give: of fp32's top 100
    detections of each picture, 95% found with the same label at IoU >= 0.9 (`compare_top_detections`).
    """
    if format not in EXPORT_FORMATS:
        raise UserError(
            f"unknown export format {format!r}; known: {', '.join(EXPORT_FORMATS)}"
            + did_you_mean(format, EXPORT_FORMATS)
        )
    EXPORT_FORMATS[format].require_packages()
    check_precision(format, precision)
    path = Path(path)
    require_export_name(path, format)  # before anything is built or written
    path.parent.mkdir(parents=True, exist_ok=True)
    # ONNX and TorchScript graphs carry no memory layout: export the folded model in the default one.
    prepared = prepare_for_inference(model, channels_last=False)
    pictures = pictures if pictures is not None else sample_pictures()
    example = _resized_batch(prepared, pictures[:1])
    graph_kind = "detections" if with_postprocess else "network"
    metadata = export_metadata(prepared, graph_kind)
    if precision != "fp32":
        metadata["precision"] = precision
    export_format = EXPORT_FORMATS[format]
    report = ExportReport(path, format, with_postprocess, dynamic_batch, precision)
    try:
        export_format.write(prepared, path, example, with_postprocess, dynamic_batch, json.dumps(metadata))
        if check:
            _check_export(model, prepared, report, pictures)
    except BaseException:  # a failed check, a failed write, Ctrl-C: only a checked file is left behind
        for written in (path, *export_format.companions(path)):
            written.unlink(missing_ok=True)
        raise
    return report


def check_precision(format: str, precision: str) -> None:
    """One line for a precision the format or this CPU cannot give, before anything is built."""
    if precision == "fp32":
        return
    if precision != "bf16":
        raise UserError(f"--precision must be fp32 or bf16, got {precision!r} (INT8: --int8)")
    if format != "openvino":
        raise UserError(
            f"--precision bf16 is an OpenVINO export's (--format openvino); a {format} file runs in fp32"
        )
    if not openvino_format.cpu_has_bf16():
        raise UserError(
            "--precision bf16: this CPU has no bf16 instructions (AVX512-BF16 or AMX), so the file could "
            "neither be checked nor run fast here"
        )


def _resized_batch(model: nn.Module, pictures: list[Tensor]) -> Tensor:
    """The graph's input for `pictures`: the model's preprocessing without the normalisation."""
    batch, _ = model.preprocess(pictures)
    return batch * model.preprocess.image_std + model.preprocess.image_mean


def _check_export(original: nn.Module, prepared: nn.Module, report: ExportReport, pictures: list[Tensor]):
    """Run the exported file on `pictures` and compare with the PyTorch model; raise on a mismatch."""
    predictor = load_predictor(report.path)
    failures = []
    # Raw header outputs are compared in fp32 only: bf16 rounds them by far more than any tolerance that
    # would still catch a wrong graph, so a bf16 file is judged by its detections.
    if not report.with_postprocess and report.precision == "fp32":
        batch = _resized_batch(prepared, pictures)
        exported = predictor._run_batched(batch)
        with torch.inference_mode():
            expected = original.head_outputs(original.preprocess(pictures)[0])
        for name, ours, theirs in zip(("cls_logits", "bbox_regression"), expected, exported, strict=True):
            error = float((ours - theirs).abs().max())
            scale = max(1.0, float(ours.abs().max()))
            line = f"{name}: max abs difference {error:.3g} (tolerance {NETWORK_TOLERANCE * scale:.3g})"
            report.checks.append(line)
            if not error <= NETWORK_TOLERANCE * scale:
                failures.append(line)
    expected_detections = original.predict(pictures)
    exported_detections = predictor.predict(pictures)
    for index, (ours, theirs) in enumerate(zip(expected_detections, exported_detections, strict=True)):
        if report.precision == "fp32":
            agreement = compare_detections(theirs, ours)
        else:
            agreement = compare_top_detections(theirs, ours)
        line = f"sample {index}: {agreement.describe()}"
        report.checks.append(line)
        if not agreement.ok:
            failures.append(line)
    batch_size = len(pictures) if predictor.fixed_batch_size is None else predictor.fixed_batch_size
    counted = f"{len(pictures)} picture" + ("s" if len(pictures) != 1 else "")
    report.checks.append(f"checked {counted} at batch size {batch_size} against PyTorch")
    if failures:
        raise ExportMismatchError(
            f"{report.path}: the exported model does not match PyTorch: " + "; ".join(failures)
        )
