"""ONNX: written by PyTorch's exporter, run with onnxruntime on the CPU (optional extra `[onnx]`)."""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ssd.deploy.formats.base import ExportFormat
from ssd.deploy.graphs import GRAPH_OUTPUTS, DetectionGraph, NetworkGraph
from ssd.deploy.predictor import METADATA_KEY, ExportedPredictor
from ssd.deploy.threads import default_threads, torch_threads
from ssd.errors import UserError, require_extra
from ssd.models.postprocess import Detections

# onnxruntime 1.16+ runs opset 17 fully on the CPU; NonMaxSuppression needs 11, nothing here needs more.
ONNX_OPSET = 17


def write_onnx(
    model: nn.Module, path: Path, example: Tensor, with_postprocess: bool, dynamic_batch: bool, metadata: str
) -> None:
    onnx = require_extra("onnx", "onnx", "exporting to ONNX")

    graph = (DetectionGraph(model) if with_postprocess else NetworkGraph(model)).eval()
    outputs = list(GRAPH_OUTPUTS) if with_postprocess else ["cls_logits", "bbox_regression"]
    dynamic_axes = {name: {0: "batch"} for name in ["images", *outputs]} if dynamic_batch else None
    with warnings.catch_warnings():
        # The TorchScript-based exporter is the one that takes a custom operator (NonMaxSuppression)
        # without onnxscript; it warns that a newer exporter exists, and about traced shapes.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph,
            (example,),
            str(path),
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=["images"],
            output_names=outputs,
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
        )
    onnx_model = onnx.load(str(path))
    entry = onnx_model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, metadata
    onnx_model.producer_name = "ssd"
    onnx.checker.check_model(onnx_model)
    onnx.save(onnx_model, str(path))


class OnnxPredictor(ExportedPredictor):
    """An exported ONNX file run with onnxruntime on the CPU."""

    backend = "onnx"

    def __init__(self, path: str | Path, threads: int | None = None):
        onnxruntime = require_extra("onnxruntime", "onnx", "running an ONNX model")
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: no such ONNX file")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or default_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = onnxruntime.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as error:  # onnxruntime raises its own exception types for a bad file
            raise UserError(f"{path}: onnxruntime cannot load it ({error})") from error
        meta = self.session.get_modelmeta().custom_metadata_map
        try:
            metadata = json.loads(meta.get(METADATA_KEY, "{}"))
        except json.JSONDecodeError as error:
            raise UserError(f"{path}: its ssd metadata is not valid JSON ({error})") from error
        batch_dim = self.session.get_inputs()[0].shape[0]
        super().__init__(path, metadata, batch_dim if isinstance(batch_dim, int) else None)
        self.input_name = self.session.get_inputs()[0].name

    def predict(self, images: Tensor | Sequence[Any]) -> list[Detections]:
        """Detections like `SSD.predict`; the resize and the post-processing run on the calling thread.

        onnxruntime's threads run the network; PyTorch only does the work around it, on one thread. A
        PyTorch (OpenMP) worker spins for milliseconds after each parallel operation, and on two cores
        that spinning thread slows the onnxruntime graph that follows it. Measured on the fixture picture
        (2 cores): graph 13.5-14 ms after two-thread PyTorch work, 8.2 ms after one-thread work; a whole
        call 21 ms against 14.5 ms.
        """
        with torch_threads(1):
            return super().predict(images)

    def run_graph(self, batch: Tensor) -> list[Tensor]:
        outputs = self.session.run(None, {self.input_name: np.ascontiguousarray(batch.numpy())})
        return [torch.from_numpy(o) for o in outputs]


def is_onnx_file(path: Path) -> bool:
    return path.suffix.lower() == ".onnx"


def require_onnx_packages() -> None:
    """Writing a file needs onnx, and its check (every export is checked) needs onnxruntime."""
    require_extra("onnx", "onnx", "exporting to ONNX")
    require_extra("onnxruntime", "onnx", "checking an ONNX export")


ONNX = ExportFormat(
    name="onnx",
    suffix=".onnx",
    any_batch_size=False,
    write=write_onnx,
    predictor=OnnxPredictor,
    claims=is_onnx_file,
    require_packages=require_onnx_packages,
)
