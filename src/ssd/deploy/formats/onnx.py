"""ONNX: written by PyTorch's exporter, run with onnxruntime on the CPU (optional extra `[onnx]`).

The checksum. An ONNX file is one protobuf message, `ModelProto`: a sequence of top-level fields, each a key
(field number and wire type) and its bytes. The file's SHA-256 is recorded in one top-level `metadata_props`
entry (field 14) with key `ssd.sha256`, and it is the SHA-256 of the file's bytes with that entry's record cut
out: it covers every other byte of the file (graph, weights, opsets, the `ssd` metadata with the classes).
`write_onnx` appends the record after the rest of the message, which protobuf allows for any field (a
repeated field's records may appear anywhere), so cutting it out gives back exactly the bytes that were
hashed. Checking needs no ONNX library: only the top-level fields are walked (the graph is skipped over by its
length), so it costs one pass of SHA-256 over the file.
"""

from __future__ import annotations

import hashlib
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
from ssd.deploy.predictor import (
    CHECKSUM_KEY,
    EXPORT_FORMAT,
    METADATA_KEY,
    ExportedPredictor,
    verify_checksum,
)
from ssd.deploy.threads import default_threads, torch_threads
from ssd.errors import UserError, require_extra
from ssd.models.postprocess import Detections

# onnxruntime 1.16+ runs opset 17 fully on the CPU; NonMaxSuppression needs 11, nothing here needs more.
ONNX_OPSET = 17
METADATA_PROPS_FIELD = 14  # ModelProto.metadata_props: repeated StringStringEntryProto (key = 1, value = 2)
_LENGTH_DELIMITED = 2


class OnnxBytesError(ValueError):
    """Bytes that are not a protobuf message: not an ONNX file, or a damaged one."""


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _read_varint(data: bytes | memoryview, position: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if position >= end or shift > 63:
            raise OnnxBytesError("a field key or length runs past the end")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, position


def _fields(data: bytes | memoryview, start: int = 0, end: int | None = None):
    """(field number, wire type, record start, value start, record end) of each field of one message."""
    end = len(data) if end is None else end
    position = start
    while position < end:
        record_start = position
        key, position = _read_varint(data, position, end)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, position = _read_varint(data, position, end)
            value_start = position
        elif wire == 1:
            value_start, position = position, position + 8
        elif wire == _LENGTH_DELIMITED:
            length, value_start = _read_varint(data, position, end)
            position = value_start + length
        elif wire == 5:
            value_start, position = position, position + 4
        else:  # groups (3, 4) are not used by ONNX, and 6, 7 do not exist
            raise OnnxBytesError(f"field {field} has wire type {wire}")
        if field == 0 or position > end:
            raise OnnxBytesError("a field runs past the end of the message")
        yield field, wire, record_start, value_start, position


def _metadata_entry(key: str, value: str) -> bytes:
    """One top-level `metadata_props` record (key, length, StringStringEntryProto) for `key: value`."""
    key_bytes, value_bytes = key.encode(), value.encode()
    entry = b"\x0a" + _varint(len(key_bytes)) + key_bytes + b"\x12" + _varint(len(value_bytes)) + value_bytes
    return _varint(METADATA_PROPS_FIELD << 3 | _LENGTH_DELIMITED) + _varint(len(entry)) + entry


def onnx_checksum(data: bytes) -> tuple[str | None, str]:
    """(the SHA-256 recorded in an ONNX file's bytes, or None; the SHA-256 of its bytes without that record),
    as the module docstring defines them. Raises `OnnxBytesError` for bytes that are not a protobuf message."""
    view = memoryview(data)
    recorded, cut = None, None
    for field, wire, record_start, value_start, record_end in _fields(view):
        if field != METADATA_PROPS_FIELD or wire != _LENGTH_DELIMITED:
            continue
        key = value = None
        for sub_field, sub_wire, _, sub_start, sub_end in _fields(view, value_start, record_end):
            if sub_wire == _LENGTH_DELIMITED and sub_field in (1, 2):
                text = bytes(view[sub_start:sub_end]).decode("utf-8", errors="replace")
                key, value = (text, value) if sub_field == 1 else (key, text)
        if key == CHECKSUM_KEY:
            if cut is not None:
                raise OnnxBytesError(f"two {CHECKSUM_KEY} entries")
            recorded, cut = value or "", (record_start, record_end)
    digest = hashlib.sha256()
    if cut is None:
        digest.update(view)
    else:
        digest.update(view[: cut[0]])
        digest.update(view[cut[1] :])
    return recorded, digest.hexdigest()


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
    path.write_bytes(onnx_file_bytes(onnx.load(str(path)), metadata))


def onnx_file_bytes(onnx_model: Any, metadata: str) -> bytes:
    """The bytes of an ONNX file of ours: `onnx_model` (an `onnx.ModelProto`, changed in place) with
    `metadata` as its `ssd` entry and, last, the checksum record the module docstring defines.

    Entries `ssd` and `ssd.sha256` it holds already are replaced, so a model rewritten from one of ours
    (the INT8 quantizer keeps the fp32 file's metadata) gets its own metadata and a checksum of its own bytes.
    """
    onnx = require_extra("onnx", "onnx", "writing an ONNX file")
    kept = [(e.key, e.value) for e in onnx_model.metadata_props if e.key not in (METADATA_KEY, CHECKSUM_KEY)]
    del onnx_model.metadata_props[:]
    for key, value in [*kept, (METADATA_KEY, metadata)]:
        entry = onnx_model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx_model.producer_name = "ssd"
    onnx.checker.check_model(onnx_model)
    content = onnx_model.SerializeToString()
    _, digest = onnx_checksum(content)
    return content + _metadata_entry(CHECKSUM_KEY, digest)


class OnnxPredictor(ExportedPredictor):
    """An exported ONNX file run with onnxruntime on the CPU."""

    backend = "onnx"

    def __init__(self, path: str | Path, threads: int | None = None):
        onnxruntime = require_extra("onnxruntime", "onnx", "running an ONNX model")
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: no such ONNX file")
        try:
            content = path.read_bytes()
        except OSError as error:
            raise UserError(f"{path}: cannot be read ({error.strerror or error})") from None
        try:
            recorded, actual = onnx_checksum(content)
        except OnnxBytesError as error:
            raise UserError(f"{path}: not an ONNX model, or a damaged one ({error})") from None
        if recorded is not None:  # checked before onnxruntime reads a byte of it
            verify_checksum(path, recorded, actual)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or default_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = onnxruntime.InferenceSession(content, options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own exception types for a bad file
            raise UserError(f"{path}: onnxruntime cannot load it ({error})") from error
        meta = self.session.get_modelmeta().custom_metadata_map
        try:
            metadata = json.loads(meta.get(METADATA_KEY, "{}"))
        except json.JSONDecodeError as error:
            raise UserError(f"{path}: its ssd metadata is not valid JSON ({error})") from error
        if not isinstance(metadata, dict):
            raise UserError(f"{path}: its ssd metadata is not a JSON object")
        if recorded is None and metadata.get("format") == EXPORT_FORMAT:
            # one of ours from before exports carried a checksum: it loads, with a warning
            verify_checksum(path, None, actual)
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
    require_packages=require_onnx_packages,
)
