"""OpenVINO IR: the ONNX export converted by OpenVINO, run by its CPU plugin (optional extra `[openvino]`).

An IR is two files: `model.xml` (the graph) and `model.bin` beside it (the weights); `ssd export` writes
both, and the `.xml` is the name to give every command. The file is made by converting our ONNX graph
(`ssd.deploy.formats.onnx`, post-processing and NonMaxSuppression included when asked), so both formats
compute the same graph; OpenVINO fuses and schedules it for the CPU it runs on. One rewrite on the way:
HardSigmoid and HardSwish become the elementary operations OpenVINO fuses (`elementary_hard_activations`).

Precision. The IR holds fp32 weights. It runs in the precision its metadata names (`precision`, written by
`ssd export --precision`): fp32, or bf16 (OpenVINO's inference-precision hint) on a CPU with bf16
instructions (AVX512-BF16 or AMX), where OpenVINO would otherwise choose bf16 by itself: an fp32 export is
run in fp32 on every CPU. A bf16 file on a CPU without bf16 runs in fp32, with a warning. An INT8 IR is
the INT8 ONNX file (`ssd.deploy.quantize`) converted: OpenVINO runs its QuantizeLinear / DequantizeLinear
pairs as integer kernels. An INT8 IR is compiled to take the resized picture as it is, 8-bit values in HWC
order (`eight_bit_input`): the conversion to [0, 1] floats and to channel-planar order happen inside the
compiled graph.

The checksum. The `.xml` holds, in its `rt_info`, `<ssd value="..."/>` (the metadata JSON) and
`<ssd_sha256 value="HEX"/>`, the SHA-256 of: `xml`, a newline, the `.xml`'s length in decimal, a newline,
its bytes with HEX replaced by 64 zeros; then the same for `bin` and the `.bin`'s bytes. So it covers the
graph, the weights and the metadata. Both files are read once, checked, and handed to OpenVINO from memory:
what runs is what was checked. An `.xml` without the checksum is not one of ours and is refused.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ssd.deploy.formats.base import ExportFormat
from ssd.deploy.formats.onnx import write_onnx
from ssd.deploy.predictor import METADATA_KEY, ExportedPredictor, verify_checksum
from ssd.deploy.threads import default_threads, torch_threads
from ssd.errors import UserError, require_extra
from ssd.models.postprocess import Detections

CHECKSUM_ELEMENT = "ssd_sha256"  # an XML element name: the ONNX key `ssd.sha256` with an underscore
_PLACEHOLDER = b"0" * 64
_CHECKSUM_PATTERN = re.compile(rb"<" + CHECKSUM_ELEMENT.encode() + rb' value="([0-9a-fA-F]{64})"')
# OpenVINO's inference-precision hint for each precision an export runs in. An INT8 graph's quantized
# operators are integer whatever the hint; its float parts (the activations between them, post-processing)
# stay fp32 as in the INT8 ONNX file, rather than the bf16 OpenVINO picks by itself on a bf16 CPU.
INFERENCE_PRECISIONS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}


def weights_path(xml_path: Path) -> Path:
    """The `.bin` beside an IR's `.xml`."""
    return xml_path.with_suffix(".bin")


def _ir_digest(xml_without_checksum: bytes, weights: bytes) -> str:
    digest = hashlib.sha256()
    for name, content in (("xml", xml_without_checksum), ("bin", weights)):
        digest.update(f"{name}\n{len(content)}\n".encode())
        digest.update(content)
    return digest.hexdigest()


class Bf16UnavailableWarning(UserWarning):
    """A bf16 file on a CPU without bf16 instructions: it runs in fp32."""


def ir_checksum(xml: bytes, weights: bytes) -> tuple[str | None, str]:
    """(the SHA-256 recorded in an IR's `.xml`, or None; the SHA-256 of the pair as the docstring defines it).
    Raises ValueError for an `.xml` with two checksum entries."""
    found = list(_CHECKSUM_PATTERN.finditer(xml))
    if len(found) > 1:
        raise ValueError(f"two {CHECKSUM_ELEMENT} entries")
    if not found:
        return None, _ir_digest(xml, weights)
    start, end = found[0].span(1)
    return found[0].group(1).decode(), _ir_digest(xml[:start] + _PLACEHOLDER + xml[end:], weights)


def require_openvino() -> Any:
    return require_extra("openvino", "openvino", "OpenVINO export and inference")


def cpu_has_bf16() -> bool:
    """Whether OpenVINO's CPU plugin runs bf16 natively here (AVX512-BF16 or AMX)."""
    openvino = require_openvino()
    return "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def write_ir_from_onnx(onnx_path: Path, path: Path, metadata: str) -> None:
    """Convert an ONNX file to an IR at `path` (+ `.bin`) carrying `metadata` and the checksum.

    The ONNX file's own metadata entries (ours included, with the ONNX checksum) are dropped first:
    OpenVINO would copy them into the IR, where they would describe another file.
    """
    openvino = require_openvino()
    onnx = require_extra("onnx", "openvino", "converting to OpenVINO")
    source = onnx.load(str(onnx_path))
    del source.metadata_props[:]
    elementary_hard_activations(source)
    with tempfile.TemporaryDirectory(prefix="ssd-openvino-") as temporary:
        plain = Path(temporary) / "plain.onnx"
        onnx.save(source, str(plain))
        model = openvino.convert_model(str(plain))
        model.set_rt_info(metadata, [METADATA_KEY])
        model.set_rt_info(_PLACEHOLDER.decode(), [CHECKSUM_ELEMENT])
        staged = Path(temporary) / "model.xml"
        openvino.save_model(model, str(staged), compress_to_fp16=False)  # the weights stay fp32
        xml, weights = staged.read_bytes(), weights_path(staged).read_bytes()
    found = list(_CHECKSUM_PATTERN.finditer(xml))
    if len(found) != 1:
        raise UserError(f"{path}: OpenVINO did not write the checksum entry as expected")
    start, end = found[0].span(1)
    xml = xml[:start] + _ir_digest(xml, weights).encode() + xml[end:]
    weights_path(path).write_bytes(weights)
    path.write_bytes(xml)


def elementary_hard_activations(onnx_model: Any) -> int:
    """Rewrite each ONNX `HardSigmoid` and `HardSwish` node (changed in place) as the elementary ops
    `clip(x + beta / alpha, 0, 1 / alpha) / (1 / alpha)` (times `x` for HardSwish, whose alpha is 1/6 and
    beta 1/2); returns how many nodes were rewritten.

    Why: OpenVINO's CPU plugin has no fast kernel for the ONNX operators. It runs them with a reference
    implementation, and reorders the tensor to a plain layout and back around each one; and in an INT8
    graph, where the activation sits between a convolution's dequantize and the next quantize, nothing fuses
    them away. The elementary form is the one OpenVINO recognises as its own HSigmoid / HSwish and fuses
    into the convolution. Measured on SSDLite (BCCD-trained, 320 px, 2 threads, the graph alone): INT8
    3.4 -> 1.8 ms, fp32 3.6 -> 3.5 ms. Only the IR gets this form: onnxruntime runs the ONNX operators
    faster than the elementary ones (fp32 3.8 against 4.9 ms).
    """
    onnx = require_extra("onnx", "openvino", "converting to OpenVINO")
    numpy_helper, helper = onnx.numpy_helper, onnx.helper
    graph = onnx_model.graph
    rewritten, nodes = 0, []
    for index, node in enumerate(graph.node):
        if node.op_type not in ("HardSigmoid", "HardSwish"):
            nodes.append(node)
            continue
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        alpha, beta = (
            (1 / 6, 0.5)
            if node.op_type == "HardSwish"
            else (attributes.get("alpha", 0.2), attributes.get("beta", 0.5))
        )
        name = f"{node.name or node.op_type}_{index}_elementary"
        constants = {"shift": beta / alpha, "low": 0.0, "high": 1 / alpha}
        for key, value in constants.items():
            graph.initializer.append(
                numpy_helper.from_array(np.array(value, dtype=np.float32), f"{name}_{key}")
            )
        (x,), (y,) = node.input, node.output
        sigmoid = y if node.op_type == "HardSigmoid" else f"{name}_sigmoid"
        nodes += [
            helper.make_node("Add", [x, f"{name}_shift"], [f"{name}_shifted"], name=f"{name}_add"),
            helper.make_node(
                "Clip",
                [f"{name}_shifted", f"{name}_low", f"{name}_high"],
                [f"{name}_clipped"],
                name=f"{name}_clip",
            ),
            helper.make_node("Div", [f"{name}_clipped", f"{name}_high"], [sigmoid], name=f"{name}_div"),
        ]
        if node.op_type == "HardSwish":
            nodes.append(helper.make_node("Mul", [x, sigmoid], [y], name=f"{name}_mul"))
        rewritten += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return rewritten


def write_openvino(
    model: nn.Module, path: Path, example: Tensor, with_postprocess: bool, dynamic_batch: bool, metadata: str
) -> None:
    require_openvino()
    with tempfile.TemporaryDirectory(prefix="ssd-openvino-") as temporary:
        onnx_path = Path(temporary) / "model.onnx"
        write_onnx(model, onnx_path, example, with_postprocess, dynamic_batch, metadata)
        write_ir_from_onnx(onnx_path, path, metadata)


class OpenVinoPredictor(ExportedPredictor):
    """An OpenVINO IR run by OpenVINO's CPU plugin, in the precision its metadata names."""

    backend = "openvino"

    def __init__(self, path: str | Path, threads: int | None = None):
        openvino = require_openvino()
        path = Path(path)
        xml = self._read(path)
        if not _CHECKSUM_PATTERN.search(xml):  # before asking for a .bin: a VOC annotation has none
            raise UserError(
                f"{path}: not an OpenVINO IR written by `ssd export` (no {CHECKSUM_ELEMENT} entry in it)"
            )
        weights = self._read(weights_path(path))
        try:
            recorded, actual = ir_checksum(xml, weights)
        except ValueError as error:
            raise UserError(f"{path}: {error}") from None
        verify_checksum(path, recorded, actual)  # before OpenVINO reads a byte of it
        core = openvino.Core()
        try:
            model = core.read_model(xml, weights)
        except Exception as error:  # OpenVINO raises its own exception types for a bad file
            raise UserError(f"{path}: OpenVINO cannot read it ({error})") from error
        try:
            metadata = json.loads(model.get_rt_info([METADATA_KEY]).astype(str))
        except (RuntimeError, json.JSONDecodeError) as error:
            raise UserError(f"{path}: its ssd metadata is missing or not valid JSON ({error})") from error
        if not isinstance(metadata, dict):
            raise UserError(f"{path}: its ssd metadata is not a JSON object")
        batch_dim = model.inputs[0].get_partial_shape()[0]
        super().__init__(path, metadata, batch_dim.get_length() if batch_dim.is_static else None)
        self.precision = self._run_precision(str(metadata.get("precision", "fp32")))
        config = {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": threads or default_threads(),
            "INFERENCE_PRECISION_HINT": INFERENCE_PRECISIONS[self.precision],
        }
        if self.preprocess.eight_bit:
            model = eight_bit_input(model)
        try:
            self.compiled = core.compile_model(model, "CPU", config)
        except Exception as error:
            raise UserError(f"{path}: OpenVINO cannot compile it for the CPU ({error})") from error
        self.request = self.compiled.create_infer_request()
        self.outputs = list(self.compiled.outputs)
        self._request_lock = threading.Lock()  # a request runs one inference at a time

    @staticmethod
    def _read(part: Path) -> bytes:
        if not part.is_file():
            raise UserError(f"{part}: no such file (an OpenVINO IR is a .xml with its .bin beside it)")
        try:
            return part.read_bytes()
        except OSError as error:
            raise UserError(f"{part}: cannot be read ({error.strerror or error})") from None

    def _run_precision(self, precision: str) -> str:
        if precision not in INFERENCE_PRECISIONS:
            raise UserError(f"{self.path}: unknown precision {precision!r} in its metadata")
        if precision == "bf16" and not cpu_has_bf16():
            warnings.warn(
                f"{self.path}: exported for bf16, which this CPU does not run natively: running in fp32",
                Bf16UnavailableWarning,
                stacklevel=3,
            )
            return "fp32"
        return precision

    def predict(self, images: Tensor | Sequence[Any]) -> list[Detections]:
        """Detections like `SSD.predict`; the PyTorch work around the graph on one thread (see
        `OnnxPredictor.predict`: a spinning PyTorch worker slows the runtime's threads that follow)."""
        with torch_threads(1):
            return super().predict(images)

    def graph_input(self, images: Sequence[Any]) -> tuple[Tensor, list[tuple[int, int]]]:
        """Resized pictures: 8-bit ones for an INT8 file (see `eight_bit_input`), floats otherwise."""
        if self.preprocess.eight_bit:
            return self.preprocess.resized_uint8(images)
        return self.preprocess(images)

    def run_graph(self, batch: Tensor) -> list[Tensor]:
        # uint8 pictures are channels-last (`Preprocess.resized_uint8`): their HWC view is a free reshape
        array = batch.permute(0, 2, 3, 1) if batch.dtype == torch.uint8 else batch
        with self._request_lock:
            results = self.request.infer({0: np.ascontiguousarray(array.numpy())})
            # copied out: the request's output buffers are reused by its next inference
            return [torch.from_numpy(np.array(results[output])) for output in self.outputs]


def eight_bit_input(model):
    """The model, taking uint8 HWC pictures at its input size instead of [0, 1] floats in CHW order.

    For an INT8 graph, whose first layer quantizes its input to 8 bits anyway, so its predictor resizes as
    8-bit values (`Preprocess.resized_uint8`). Measured on SSDLite's BCCD-trained INT8 IR with NMS (a
    480x640 picture, 2 threads, medians of 8 alternated rounds): 3.4-3.7 ms a picture against 4.8-4.9 ms
    with the float resize and input. 0.6 ms of it is the resize; the rest, the graph running slower after
    the float resize's passes over memory.
    """
    from openvino import Layout, Type
    from openvino.preprocess import PrePostProcessor

    steps = PrePostProcessor(model)
    steps.input().tensor().set_element_type(Type.u8).set_layout(Layout("NHWC"))
    steps.input().model().set_layout(Layout("NCHW"))
    steps.input().preprocess().convert_element_type(Type.f32).scale(255.0)
    return steps.build()


def require_openvino_packages() -> None:
    """Writing an IR needs OpenVINO, and onnx for the ONNX graph it is converted from."""
    require_openvino()
    require_extra("onnx", "openvino", "exporting to OpenVINO")


OPENVINO = ExportFormat(
    name="openvino",
    suffix=".xml",
    any_batch_size=False,
    write=write_openvino,
    predictor=OpenVinoPredictor,
    require_packages=require_openvino_packages,
    companions=lambda path: [weights_path(path)],
)
