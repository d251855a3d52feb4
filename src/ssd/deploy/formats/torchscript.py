"""TorchScript: the network traced and frozen (post-processing compiled), run with `torch.jit.load`.

A TorchScript file is a program: run only ones you trust.
"""

from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path

import torch
from torch import Tensor, nn

from ssd.deploy.formats.base import ExportFormat
from ssd.deploy.graphs import DetectionGraph, NetworkGraph
from ssd.deploy.predictor import METADATA_KEY, ExportedPredictor
from ssd.deploy.threads import set_inference_threads
from ssd.errors import UserError


def write_torchscript(
    model: nn.Module, path: Path, example: Tensor, with_postprocess: bool, dynamic_batch: bool, metadata: str
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript is in maintenance in PyTorch 2.x; it still runs
        network = torch.jit.trace(NetworkGraph(model).eval(), example, check_trace=False)
        if with_postprocess:
            module = torch.jit.script(DetectionGraph(model, network).eval())
        else:
            module = torch.jit.freeze(network)  # weights become constants: a faster, smaller graph
        torch.jit.save(module, str(path), _extra_files={f"{METADATA_KEY}.json": metadata})


class TorchScriptPredictor(ExportedPredictor):
    """An exported TorchScript file run with `torch.jit.load`."""

    backend = "torchscript"

    def __init__(self, path: str | Path, threads: int | None = None):
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: no such TorchScript file")
        extra = {f"{METADATA_KEY}.json": ""}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is in maintenance; it runs
                self.module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        except Exception as error:  # torch.jit raises RuntimeError and others for a foreign file
            raise UserError(f"{path}: not a TorchScript file ({error})") from error
        try:
            metadata = json.loads(extra[f"{METADATA_KEY}.json"] or "{}")
        except json.JSONDecodeError as error:
            raise UserError(f"{path}: its ssd metadata is not valid JSON ({error})") from error
        if threads:
            set_inference_threads(threads)
        super().__init__(path, metadata, None)

    def run_graph(self, batch: Tensor) -> list[Tensor]:
        return list(self.module(batch))


def is_torchscript_export(path: Path) -> bool:
    """A zip archive holding our metadata (`extra/ssd.json`), as `ssd export` writes it."""
    if not path.is_file() or not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith(f"extra/{METADATA_KEY}.json") for name in archive.namelist())


TORCHSCRIPT = ExportFormat(
    name="torchscript",
    suffix=".torchscript",
    any_batch_size=True,  # the traced graph takes any batch size
    write=write_torchscript,
    predictor=TorchScriptPredictor,
    claims=is_torchscript_export,
)
