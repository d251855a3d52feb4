"""INT8 ONNX and OpenVINO exports: onnxruntime's post-training static quantization of the fp32 ONNX export,
checked by its mAP; for OpenVINO, the INT8 ONNX graph converted to an IR (`ssd.deploy.formats.openvino`).

`export_int8` writes the fp32 ONNX file as `ssd export` does (same graph, same check against PyTorch), runs
onnxruntime's pre-processing on it (`quant_pre_process`: shape inference and graph clean-up, which its
quantizer works best after), and quantizes it with `quantize_static`:

- QDQ format (QuantizeLinear / DequantizeLinear around the quantized operators), which onnxruntime's CPU
  provider fuses into integer kernels;
- only the network's heavy operators (`QUANTIZED_OP_TYPES`: convolutions and matrix products), so the
  rest stays float: the activations between them, and all of the post-processing a `--with-postprocess`
  graph holds (softmax, box decoding, NonMaxSuppression), where 8 bits would move boxes and scores;
- weights per output channel, int8 in a 7-bit range, symmetric; activations uint8 with one scale per
  tensor, from the minimum and maximum each tensor takes on the calibration pictures (why: `_quantize`).

The calibration pictures are the training split of a dataset in any layout the toolkit reads, spread
evenly over it, resized as the INT8 file's predictor resizes them (as 8-bit values, `Preprocess.eight_bit`):
exactly the `images` input the graph receives (RGB in [0, 1] at the input size; normalisation is inside the
graph).

Every INT8 export then evaluates itself: the fp32 file and the INT8 file on the dataset's evaluation split
(chosen as `ssd eval` chooses it without --split, but never the pictures calibration used when the dataset
has no splits of its own), COCO mAP@[.5:.95] as training logs it. When INT8 loses more than `max_map_drop`,
the export fails in one line and nothing is written under the final name; otherwise the file is written
atomically, with the fp32 file's metadata plus `precision: int8`, the calibration set and the check's figures,
and the SHA-256 of its own content (`ssd.deploy.formats.onnx`, or `openvino` for an IR, whose `.bin` is
renamed into place before its `.xml`).
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor, nn

from ssd.data import available_splits, build_dataset
from ssd.data.splits import WHOLE, default_training_split
from ssd.deploy.export import export_model
from ssd.deploy.formats import load_predictor, require_export_name
from ssd.deploy.formats.onnx import onnx_file_bytes, require_onnx_packages
from ssd.deploy.formats.openvino import require_openvino, weights_path, write_ir_from_onnx
from ssd.deploy.predictor import ExportedPredictor
from ssd.errors import DatasetError, UserError, require_extra
from ssd.evaluation.evaluator import Evaluator
from ssd.evaluation.split_choice import SplitChoice, split_to_evaluate
from ssd.models.preprocess import Preprocess

DEFAULT_CALIBRATION_PICTURES = 64
DEFAULT_MAX_MAP_DROP = 0.01
# The operators whose weights and inputs are quantized: nearly all of the network's multiply-adds.
QUANTIZED_OP_TYPES = ("Conv", "MatMul", "Gemm")
ACTIVATIONS = "uint8, asymmetric, one scale per tensor, min-max calibration"
WEIGHTS = "int8 in a 7-bit range (reduce_range), symmetric, one scale per output channel"


class MapDropError(UserError):
    """The INT8 file's mAP is lower than the fp32 file's by more than allowed; nothing was written."""


@dataclass
class Int8Report:
    path: Path
    with_postprocess: bool
    dynamic_batch: bool
    calibration: str  # the dataset, as given
    calibration_split: str
    calibration_pictures: int  # used (fewer than asked when the split holds fewer)
    evaluation_split: str
    evaluation_pictures: int
    fp32_map: float
    int8_map: float
    max_map_drop: float
    fp32_checks: list[str] = field(default_factory=list)  # the fp32 export's own check against PyTorch
    notes: list[str] = field(default_factory=list)

    @property
    def map_drop(self) -> float:
        return self.fp32_map - self.int8_map

    def describe_check(self) -> str:
        """The self-check in one line: both figures and the drop."""
        return (
            f"mAP on split '{self.evaluation_split}' of {self.calibration} ({self.evaluation_pictures} pictures): "
            f"fp32 {self.fp32_map:.4f}, int8 {self.int8_map:.4f}, drop {round(self.map_drop, 4) + 0.0:.4f} "
            f"(allowed {self.max_map_drop:g})"
        )


def check_int8_settings(calibration_pictures: int, max_map_drop: float) -> None:
    """One line for a setting that cannot work, before anything is built."""
    if isinstance(calibration_pictures, bool) or not isinstance(calibration_pictures, int):
        raise UserError(f"--calibration-pictures must be a whole number, got {calibration_pictures!r}")
    if calibration_pictures < 1:
        raise UserError(f"--calibration-pictures must be at least 1, got {calibration_pictures}")
    if not isinstance(max_map_drop, (int, float)) or not math.isfinite(max_map_drop) or max_map_drop < 0:
        raise UserError(f"--max-map-drop must be a finite number of at least 0, got {max_map_drop}")


def require_quantization_packages() -> None:
    """The fp32 export needs onnx and onnxruntime; quantizing needs onnxruntime's quantization tools."""
    require_onnx_packages()
    require_extra("onnxruntime.quantization", "onnx", "INT8 quantization")


def spread_indices(total: int, count: int) -> list[int]:
    """`count` indices spread evenly over `range(total)` (all of them when `count >= total`)."""
    if count >= total:
        return list(range(total))
    return [i * total // count for i in range(count)]


def _evaluation_choice(datapath: str, weights: str | Path | None) -> SplitChoice:
    """The split `ssd eval` would evaluate without --split; of a dataset with no splits and no record, its
    automatic validation part rather than every picture, so the check never sees a calibration picture."""
    choice = split_to_evaluate(datapath, None, weights)
    if choice.split == WHOLE:
        return SplitChoice("val", "the dataset's fixed validation part (it has no splits)")
    return choice


def _check_classes(model: nn.Module, dataset, datapath: str, split: str) -> None:
    names = list(dataset.class_names)
    if model.num_classes != len(names) + 1:
        raise UserError(
            f"the model has num_classes={model.num_classes} (background included), but split '{split}' of "
            f"{datapath} has {len(names)} classes, so INT8 calibration and its check cannot use it"
        )
    if model.class_names is not None and list(model.class_names) != names:
        raise UserError(
            f"the model was trained on classes {list(model.class_names)}, but {datapath} has {names}"
        )


def _calibration_reader(predictor: ExportedPredictor, dataset, indices: Sequence[int]):
    """onnxruntime's `CalibrationDataReader` over `dataset[indices]`: each picture read when asked for and
    resized as the INT8 file's predictor will resize it, so the inputs are exactly what the graph receives."""
    from onnxruntime.quantization import CalibrationDataReader

    resize = Preprocess(predictor.input_size, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), eight_bit=True)

    class PictureReader(CalibrationDataReader):
        def __init__(self):
            self.remaining = iter(indices)
            self.input_name = predictor.input_name

        def get_next(self) -> dict[str, Any] | None:
            index = next(self.remaining, None)
            if index is None:
                return None
            image, _ = dataset[index]
            batch, _ = resize([image])
            return {self.input_name: np.ascontiguousarray(batch.numpy())}

        def __len__(self) -> int:
            return len(indices)

    return PictureReader()


def _preprocessed(source: Path, out: Path, notes: list[str]) -> Path:
    """onnxruntime's recommended pre-processing (shape inference, graph clean-up), or `source` where it fails."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(source), str(out))
    except Exception as error:  # an optional step, with errors of onnxruntime's own: quantize without it
        notes.append(f"onnxruntime's pre-processing failed ({error}); quantized the export as it is")
        return source
    return out


def _quantize(source: Path, out: Path, reader) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    quantize_static(
        str(source),
        str(out),
        reader,
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=list(QUANTIZED_OP_TYPES),
        per_channel=True,
        # uint8 activations with int8 weights (U8S8): what onnxruntime's quantizer recommends for its CPU
        # provider on x86, whose integer kernels are made for it. Weights in 7 bits (reduce_range): x86 CPUs
        # without VNNI (AVX2 only) add pairs of uint8 x int8 products in 16 bits, which 8-bit weights can
        # overflow (255 x 127 x 2 > 32767) and 7-bit ones cannot; the file may run on such a CPU even when
        # it was exported and checked on a VNNI one. It changes no kernel, so costs no speed. On BCCD
        # (SSDLite, 64 calibration pictures) the choices measured alike, within calibration noise; COCO mAP
        # on test (fp32 0.4619) and val (0.5202): U8S8 with 7-bit weights 0.4613 / 0.5202, U8S8 8-bit
        # 0.4595 / 0.5176, int8 activations (S8S8) 0.4586 / 0.5182; with another choice of 64 pictures
        # 0.4584 / 0.5147, 0.4594 / 0.5173 and 0.4595 / 0.5167.
        reduce_range=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )


def _map(predictor, evaluator: Evaluator) -> float:
    """COCO mAP@[.5:.95], what training logs as mAP."""
    return float(evaluator(predictor).coco.stats[0])


def export_int8(
    model: nn.Module,
    path: str | Path,
    calibration: str | Path,
    *,
    weights: str | Path | None = None,
    calibration_pictures: int = DEFAULT_CALIBRATION_PICTURES,
    max_map_drop: float = DEFAULT_MAX_MAP_DROP,
    with_postprocess: bool = False,
    dynamic_batch: bool = False,
    check_pictures: list[Tensor] | None = None,
    batch_size: int = 8,
    workers: int = 0,
    say: Callable[[str], None] | None = None,
    format: str = "onnx",
) -> Int8Report:
    """Write `model` as an INT8 ONNX file at `path`, calibrated on `calibration`; see the module docstring.

    `weights` is the file the model came from, whose record of its validation split (one of our
    checkpoints) chooses the check's split as `ssd eval` would. `check_pictures` go to the fp32 export's
    check. `say` gets a line at each stage (the command prints them). Raises `MapDropError` when INT8 mAP
    is below fp32's by more than `max_map_drop`, leaving nothing at `path`. `format` "openvino" converts
    the INT8 ONNX graph to an OpenVINO IR (`ssd.deploy.formats.openvino`); the IR is what is evaluated.
    """
    say = say or (lambda line: None)
    check_int8_settings(calibration_pictures, max_map_drop)
    require_quantization_packages()
    if format not in ("onnx", "openvino"):
        raise UserError(f"INT8 exports are ONNX or OpenVINO files, not {format}")
    if format == "openvino":
        require_openvino()
    path = Path(path)
    require_export_name(path, format)
    datapath = str(calibration)

    # Both datasets first: a wrong path or class list fails before any export work.
    evaluation = _evaluation_choice(datapath, weights)
    calibration_split = default_training_split(available_splits(datapath), datapath)  # as training picks it
    options = {"val_fraction": evaluation.val_fraction, "split_seed": evaluation.split_seed}
    calibration_set = build_dataset(datapath, calibration_split, **options)
    evaluation_set = build_dataset(datapath, evaluation.split, **options, **evaluation.dataset_options)
    for dataset, split in ((calibration_set, calibration_split), (evaluation_set, evaluation.split)):
        if len(dataset) == 0:
            raise DatasetError(
                f"{datapath}: split '{split}' holds no pictures, so it cannot be used for INT8"
            )
        _check_classes(model, dataset, datapath, split)
    indices = spread_indices(len(calibration_set), calibration_pictures)
    notes = []
    if len(indices) < calibration_pictures:
        notes.append(
            f"split '{calibration_split}' holds {len(indices)} pictures, fewer than the {calibration_pictures} "
            "asked for: calibrated on all of them"
        )
    if calibration_split == evaluation.split:
        notes.append(
            f"the check evaluates split '{evaluation.split}', the one calibration read pictures from"
        )

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"{path}: its folder cannot be made ({error.strerror or error})") from None
    if not os.access(path.parent, os.W_OK):  # found now, not after the calibration and both evaluations
        raise UserError(f"{path}: its folder {path.parent} is not writable")
    with tempfile.TemporaryDirectory(prefix="ssd-int8-") as temporary:
        folder = Path(temporary)
        fp32_path = folder / "fp32.onnx"
        say("exporting the fp32 graph and checking it against PyTorch")
        fp32_report = export_model(
            model,
            fp32_path,
            "onnx",
            with_postprocess=with_postprocess,
            dynamic_batch=dynamic_batch,
            pictures=check_pictures,
        )
        fp32 = load_predictor(fp32_path)
        say(f"calibrating on {len(indices)} pictures of split '{calibration_split}' of {datapath}")
        source = _preprocessed(fp32_path, folder / "preprocessed.onnx", notes)
        quantized_path = folder / "quantized.onnx"
        _quantize(source, quantized_path, _calibration_reader(fp32, calibration_set, indices))

        onnx = require_extra("onnx", "onnx", "INT8 quantization")
        import onnxruntime

        metadata = dict(fp32.metadata)
        metadata["precision"] = "int8"
        metadata["calibration"] = {"datapath": datapath, "split": calibration_split, "pictures": len(indices)}
        metadata["quantization"] = {
            "tool": f"onnxruntime {onnxruntime.__version__} quantize_static",
            "format": "QDQ",
            "op_types": list(QUANTIZED_OP_TYPES),
            "activations": ACTIVATIONS,
            "weights": WEIGHTS,
        }
        quantized = onnx.load(str(quantized_path))
        int8_onnx = folder / "int8.onnx"
        int8_onnx.write_bytes(onnx_file_bytes(quantized, json.dumps(metadata)))
        evaluated = int8_onnx  # the file of the asked format: what is checked is what is deployed
        if format == "openvino":
            evaluated = folder / "int8.xml"
            write_ir_from_onnx(int8_onnx, evaluated, json.dumps(metadata))
        int8 = load_predictor(evaluated)  # as every reader of the file will: checksum checked, metadata read

        say(
            f"evaluating fp32 and int8 on split '{evaluation.split}' of {datapath} ({len(evaluation_set)} pictures)"
        )
        evaluator = Evaluator(
            evaluation_set, batch_size=batch_size, num_workers=workers, progress=sys.stderr.isatty()
        )
        fp32_map, int8_map = _map(fp32, evaluator), _map(int8, evaluator)
        report = Int8Report(
            path=path,
            with_postprocess=with_postprocess,
            dynamic_batch=dynamic_batch,
            calibration=datapath,
            calibration_split=calibration_split,
            calibration_pictures=len(indices),
            evaluation_split=evaluation.split,
            evaluation_pictures=len(evaluation_set),
            fp32_map=fp32_map,
            int8_map=int8_map,
            max_map_drop=max_map_drop,
            fp32_checks=fp32_report.checks,
            notes=notes,
        )
        if not (math.isfinite(fp32_map) and fp32_map >= 0):
            raise UserError(
                f"{datapath}: split '{evaluation.split}' gives no mAP to check INT8 by (fp32 {fp32_map:.4f}: "
                "no ground-truth boxes?)"
            )
        if not report.map_drop <= max_map_drop:
            raise MapDropError(
                f"{path}: not written: INT8 mAP {int8_map:.4f} is {report.map_drop:.4f} below fp32's "
                f"{fp32_map:.4f} on split '{evaluation.split}' of {datapath}, more than --max-map-drop "
                f"{max_map_drop:g}; calibrate on more pictures (--calibration-pictures, now {len(indices)}) "
                "or deploy the fp32 export"
            )
        metadata["int8_check"] = {
            "datapath": datapath,
            "split": evaluation.split,
            "pictures": len(evaluation_set),
            "fp32_map": fp32_map,
            "int8_map": int8_map,
        }
        _write_final(quantized, json.dumps(metadata), path, format, folder)
    return report


def _write_final(quantized, metadata: str, path: Path, format: str, folder: Path) -> None:
    """The checked INT8 graph with its final metadata at `path`, written beside it and then renamed: the
    final name holds a whole, checked file or nothing new (an IR's `.bin` goes first, then its `.xml`)."""
    content = onnx_file_bytes(quantized, metadata)
    files = {path: content}
    if format == "openvino":
        (folder / "final.onnx").write_bytes(content)
        write_ir_from_onnx(folder / "final.onnx", folder / "final.xml", metadata)
        files = {
            weights_path(path): weights_path(folder / "final.xml").read_bytes(),
            path: (folder / "final.xml").read_bytes(),
        }
    partials = []
    try:
        for target, data in files.items():
            partial = target.with_name(f".{target.name}.partial")
            partials.append(partial)
            partial.write_bytes(data)
            os.replace(partial, target)
    except OSError as error:
        raise UserError(f"{path}: cannot be written ({error.strerror or error})") from None
    finally:
        for partial in partials:
            partial.unlink(missing_ok=True)


__all__ = [
    "DEFAULT_CALIBRATION_PICTURES",
    "DEFAULT_MAX_MAP_DROP",
    "QUANTIZED_OP_TYPES",
    "Int8Report",
    "MapDropError",
    "check_int8_settings",
    "export_int8",
    "require_quantization_packages",
    "spread_indices",
]
