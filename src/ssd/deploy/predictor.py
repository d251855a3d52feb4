"""What every exported model's predictor shares: reading the file's metadata, resizing, post-processing.

An exported file carries a small description of the model (architecture config, classes, feature-map
sizes, and whether post-processing is in the graph). The predictor resizes pictures with the same code as the
model (`Preprocess`; as 8-bit values for an INT8 file, whose graph quantizes its input to 8 bits anyway),
runs the graph, and either reads the detections from it or, for a network-only export,
decodes them with our `PostProcessor`. Either way it returns `model.predict`'s detections: one dict per
picture with `result_boxes` (original pixels), `result_labels`, `result_scores` and `result_confs`.

Every file `ssd export` writes also carries a SHA-256 of its content (how each format defines it: the
format's file), checked before the file is run: a damaged or edited file is refused in one line, and a file
exported before the checksum existed loads with a warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ssd.errors import UserError
from ssd.models.config import SSDConfig
from ssd.models.postprocess import Detections, PostProcessor
from ssd.models.preprocess import Preprocess
from ssd.ops.anchors import default_boxes_xyxy
from ssd.ops.boxes import BoxCoder

EXPORT_FORMAT = "ssd-export"
METADATA_KEY = "ssd"  # ONNX metadata_props key, and the TorchScript extra file's name (ssd.json)
CHECKSUM_KEY = "ssd.sha256"  # the same for the content's SHA-256 (hex), kept apart from what it covers


class UnverifiedExportWarning(UserWarning):
    """An exported file without a checksum (written before exports carried one): it loads unchecked."""


def verify_checksum(path: Path, recorded: str | None, actual: str) -> None:
    """Refuse a file whose content's SHA-256 is not the one recorded in it; warn where none is recorded."""
    if recorded is None:
        warnings.warn(
            f"{path}: exported without a checksum (by an older ssd), so damage to it cannot be detected; "
            "export it again to add one",
            UnverifiedExportWarning,
            stacklevel=3,
        )
        return
    if recorded.strip().lower() != actual:
        raise UserError(f"{path}: content does not match its checksum: damaged or edited")


def export_metadata(model: torch.nn.Module, graph: str) -> dict[str, Any]:
    """What a predictor needs besides the graph: written into every exported file."""
    return {
        "format": EXPORT_FORMAT,
        "version": 1,
        "graph": graph,  # "network" (raw header outputs) or "detections" (post-processing inside)
        "arch": model.config.arch,
        "config": model.config.to_dict(),
        "num_classes": model.num_classes,
        "class_names": list(model.class_names) if model.class_names is not None else None,
        "feature_sizes": [list(size) for size in model.feature_sizes],
    }


def detections_from_graph(
    outputs: Sequence[Tensor],
    input_size: tuple[int, int],
    original_sizes: Sequence[tuple[int, int]],
) -> list[Detections]:
    """`DetectionGraph`'s padded outputs -> one detections dict per picture, boxes in original pixels."""
    boxes, scores, labels, confs, counts = (torch.as_tensor(o) for o in outputs)
    input_h, input_w = input_size
    results = []
    for index, (orig_h, orig_w) in enumerate(original_sizes):
        n = int(counts[index])
        scale = torch.tensor(
            [orig_w / input_w, orig_h / input_h, orig_w / input_w, orig_h / input_h], dtype=torch.float32
        )
        results.append(
            {
                "result_boxes": boxes[index, :n].float() * scale,
                "result_labels": labels[index, :n].long(),
                "result_scores": scores[index, :n].float(),
                "result_confs": confs[index, :n].float(),
            }
        )
    return results


class ExportedPredictor:
    """Base of every exported file's predictor (ONNX, TorchScript, OpenVINO): preprocessing,
    post-processing, the model's metadata."""

    backend = ""

    def __init__(self, path: Path, metadata: dict[str, Any], batch_size: int | None):
        if metadata.get("format") != EXPORT_FORMAT:
            raise UserError(f"{path}: not a model exported by `ssd export` (no ssd metadata in it)")
        self.path = path
        self.metadata = metadata
        self.graph = metadata["graph"]
        self.config = SSDConfig.from_dict(metadata["config"])
        self.arch = self.config.arch
        self.num_classes = int(metadata["num_classes"])
        self.class_names = metadata.get("class_names")
        self.fixed_batch_size = batch_size  # None: any batch size
        # what the file runs in: "fp32", "int8" (an INT8 export), "bf16" (an OpenVINO file run in bf16)
        self.precision = str(metadata.get("precision", "fp32"))
        # Mean 0 and std 1: the graph normalises, so the predictor only resizes (with the model's own code).
        # An INT8 graph quantizes its input to 8 bits, so its pictures are resized as 8-bit values, faster.
        self.preprocess = Preprocess(
            self.config.input_size, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), eight_bit=self.precision == "int8"
        )
        self.postprocessor = PostProcessor(
            self.config.score_threshold,
            self.config.nms_threshold,
            self.config.detections_per_image,
            self.config.topk_candidates,
            BoxCoder(self.config.variances),
        )
        self._anchors: Tensor | None = None

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) the graph takes, as `SSD.input_size`."""
        return tuple(self.config.input_size)

    @property
    def anchors(self) -> Tensor:
        if self._anchors is None:
            config = self.config
            self._anchors = default_boxes_xyxy(
                [tuple(s) for s in self.metadata["feature_sizes"]],
                config.input_size,
                config.scales,
                config.aspect_ratios,
                config.steps,
                config.clip_default_boxes,
            )
        return self._anchors

    def graph_input(self, images: Sequence[Any]) -> tuple[Tensor, list[tuple[int, int]]]:
        """The batch `run_graph` takes, and each picture's original (height, width)."""
        return self.preprocess(images)

    def run_graph(self, batch: Tensor) -> list[Tensor]:
        raise NotImplementedError

    def _run_batched(self, batch: Tensor) -> list[Tensor]:
        if self.fixed_batch_size is None or len(batch) == self.fixed_batch_size:
            return self.run_graph(batch)
        # A graph exported without --dynamic-batch takes its own batch size only: run in pieces.
        parts = [
            self.run_graph(batch[i : i + self.fixed_batch_size])
            for i in range(0, len(batch), self.fixed_batch_size)
        ]
        return [torch.cat(outputs) for outputs in zip(*parts, strict=True)]

    @torch.inference_mode()
    def predict(self, images: Tensor | Sequence[Any]) -> list[Detections]:
        """Detections for a list of pictures of any size (or one picture), like `SSD.predict`."""
        if isinstance(images, Tensor) and images.ndim == 3 or not isinstance(images, (list, tuple, Tensor)):
            images = [images]
        batch, original_sizes = self.graph_input(images)
        if len(batch) == 0:
            return []
        outputs = self._run_batched(batch)
        if self.graph == "detections":
            return detections_from_graph(outputs, self.config.input_size, original_sizes)
        cls_logits, bbox_regression = outputs
        return self.postprocessor(
            cls_logits, bbox_regression, self.anchors, self.config.input_size, original_sizes
        )
