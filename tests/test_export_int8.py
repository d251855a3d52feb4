"""`ssd export --int8`: onnxruntime's static INT8 quantization of the ONNX export, calibrated on a dataset's
training split and checked by its mAP against fp32's.

A tiny model (mobilenetv3_small_ssd at 128 pixels) learns eight synthetic pictures by heart in a few dozen
steps, so its detections are decisive and its fp32 mAP high: quantization that broke the network would show.
The dataset's `val` split holds the same eight pictures, which the self-check and `ssd eval` measure on.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import BCCD, FIXTURES, shared_path
from PIL import Image

pytest.importorskip("onnx", reason="INT8 export needs the [onnx] extra (pip install onnx onnxruntime)")
pytest.importorskip("onnxruntime", reason="INT8 export needs the [onnx] extra (pip install onnx onnxruntime)")

import ssd  # noqa: E402
from ssd.cli.main import main  # noqa: E402
from ssd.data import build_dataset  # noqa: E402
from ssd.data.formats.synthetic import CLASS_NAMES, write_synthetic_coco  # noqa: E402
from ssd.deploy.formats.onnx import onnx_checksum  # noqa: E402
from ssd.deploy.loading import describe_detector  # noqa: E402
from ssd.deploy.predictor import CHECKSUM_KEY, METADATA_KEY  # noqa: E402
from ssd.models.checkpoint import model_checkpoint, save_checkpoint  # noqa: E402
from ssd.ops.boxes import box_iou  # noqa: E402
from ssd.training.loss import MultiBoxLoss  # noqa: E402

SIZE = 128
PICTURES = 8
CHECK_LINE = re.compile(
    r"mAP on split 'val' of .* \(8 pictures\): fp32 (\d\.\d{4}), int8 (\d\.\d{4}), drop (-?\d\.\d{4})"
)
POSTPROCESSING_OPS = {"NonMaxSuppression", "Softmax", "TopK", "Exp", "GatherElements", "ScatterElements"}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("int8")


@pytest.fixture(scope="module")
def dataset(folder) -> Path:
    """Eight synthetic pictures as a COCO dataset whose `train` and `val` splits are the same pictures."""
    root = folder / "synthetic"
    write_synthetic_coco(root, {"train": PICTURES}, image_size=SIZE)
    shutil.copytree(root / "train", root / "val")
    shutil.copy(root / "annotations" / "instances_train.json", root / "annotations" / "instances_val.json")
    return root


@pytest.fixture(scope="module")
def trained(dataset):
    """The tiny model after 40 steps on the eight pictures (about 3 s), BatchNorm statistics recomputed."""
    samples = build_dataset(dataset, "train")
    pictures = torch.stack([samples[i][0] for i in range(len(samples))])
    targets = [samples[i][1] for i in range(len(samples))]
    torch.manual_seed(0)
    model = ssd.build_model("mobilenetv3_small_ssd", num_classes=6, class_names=CLASS_NAMES, input_size=SIZE)
    criterion = MultiBoxLoss.for_model(model)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    model.train()
    for _ in range(40):
        out = model(pictures, targets)
        loss = criterion(out["cls_logits"], out["bbox_regression"], out["anchors"], out["targets"])["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for norm in norms:  # the running averages lag behind after so few steps: the exact statistics instead
        norm.reset_running_stats()
        norm.momentum = None
    with torch.no_grad():
        model(pictures)
    return model.eval(), list(pictures)


@pytest.fixture(scope="module")
def checkpoint(trained, folder) -> Path:
    return save_checkpoint(folder / "tiny.pt", model_checkpoint(trained[0]))


def _export(checkpoint, dataset, out, *extra: str) -> list[str]:
    return [
        "export",
        "--weights",
        str(checkpoint),
        "--int8",
        "--calibration",
        str(dataset),
        "--calibration-pictures",
        str(PICTURES),
        "--out",
        str(out),
        *extra,
    ]


@pytest.fixture(scope="module")
def int8_export(checkpoint, dataset, folder):
    """`ssd export --int8` of the tiny model, through the command, with what it printed."""
    out = folder / "tiny_int8.onnx"
    # A loose allowance: 8 calibration pictures for a model learnt in 40 steps; BCCD below holds the 0.01.
    captured = _run(_export(checkpoint, dataset, out, "--max-map-drop", "0.1"))
    assert captured[0] == 0, captured
    return out, captured[1]


@pytest.fixture(scope="module")
def int8_post_export(checkpoint, dataset, folder):
    out = folder / "tiny_post_int8.onnx"
    argv = _export(checkpoint, dataset, out, "--max-map-drop", "0.1", "--with-postprocess", "--dynamic-batch")
    captured = _run(argv)
    assert captured[0] == 0, captured
    assert f"wrote {out} (onnx, int8, network and post-processing, any batch size)" in captured[1]
    return out


def _run(argv: list[str]) -> tuple[int, str, str]:
    """`ssd ARGV` in this process, with its stdout and stderr (module fixtures cannot take capsys)."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def _graph(path: Path):
    import onnx

    return onnx.load(str(path))


def _metadata(path: Path) -> dict:
    entries = {entry.key: entry.value for entry in _graph(path).metadata_props}
    return json.loads(entries[METADATA_KEY])


def _assert_one_line(code: int, out: str, err: str, *words: str) -> str:
    assert code == 2, (out, err)
    assert "Traceback" not in err and "Traceback" not in out
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), lines[0]
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


# The file: it loads, detects as fp32 does, says what it is, and carries its checksum


def test_the_int8_file_loads_and_finds_what_fp32_finds(trained, int8_export):
    model, pictures = trained
    path, _ = int8_export
    detector = ssd.load(path, device="cpu")
    assert detector.class_names == CLASS_NAMES and detector.input_size == (SIZE, SIZE)
    assert detector.num_classes == 6
    compared = 0
    for ours, theirs in zip(model.predict(pictures), detector.predict(pictures), strict=True):
        assert len(theirs["result_scores"]) > 0
        for box, label, score in zip(
            ours["result_boxes"], ours["result_labels"], ours["result_scores"], strict=True
        ):
            if score < 0.5:  # the decisive detections; below them quantization may reorder near-equal ones
                break
            same = theirs["result_labels"] == label
            assert same.any(), f"no INT8 detection of class {int(label)}"
            overlap = box_iou(box[None], theirs["result_boxes"][same])[0]
            best = int(overlap.argmax())
            assert overlap[best] > 0.8, (box, theirs["result_boxes"][same][best])
            assert abs(float(theirs["result_scores"][same][best]) - float(score)) < 0.1
            compared += 1
    assert compared >= PICTURES  # every picture holds objects the model found with confidence


def test_the_export_prints_both_maps_and_the_drop_in_one_line(int8_export):
    path, out = int8_export
    lines = [line for line in out.splitlines() if CHECK_LINE.search(line)]
    assert len(lines) == 1, out
    fp32, int8, drop = (float(v) for v in CHECK_LINE.search(lines[0]).groups())
    assert fp32 > 0.7  # the model learnt its pictures: a figure worth checking INT8 by
    assert int8 > fp32 - 0.1 and drop == pytest.approx(fp32 - int8, abs=2e-4)
    check = _metadata(path)["int8_check"]
    assert check["split"] == "val" and check["pictures"] == PICTURES
    assert check["fp32_map"] == pytest.approx(fp32, abs=1e-4) and check["int8_map"] == pytest.approx(
        int8, abs=1e-4
    )
    assert f"wrote {path} (onnx, int8, network only, batch of 1)" in out


def test_the_metadata_says_int8_and_the_checksum_verifies(int8_export, dataset):
    path, _ = int8_export
    metadata = _metadata(path)
    assert metadata["format"] == "ssd-export" and metadata["graph"] == "network"
    assert metadata["precision"] == "int8" and metadata["class_names"] == CLASS_NAMES
    assert metadata["calibration"] == {"datapath": str(dataset), "split": "train", "pictures": PICTURES}
    assert metadata["quantization"]["format"] == "QDQ"
    assert metadata["quantization"]["op_types"] == ["Conv", "MatMul", "Gemm"]
    entries = [entry.key for entry in _graph(path).metadata_props]
    assert entries.count(CHECKSUM_KEY) == 1 and entries.count(METADATA_KEY) == 1  # the fp32 ones replaced
    recorded, actual = onnx_checksum(path.read_bytes())
    assert recorded == actual and len(actual) == 64
    assert describe_detector(ssd.load(path), path)["precision"] == "int8"


def test_an_edited_int8_file_is_refused(int8_export, tmp_path):
    path, _ = int8_export
    content = bytearray(path.read_bytes())
    at = bytes(content).index(b'"precision": "int8"')
    content[at : at + 19] = b'"precision": "fp32"'
    edited = tmp_path / "edited.onnx"
    edited.write_bytes(bytes(content))
    with pytest.raises(ssd.errors.UserError, match="content does not match its checksum"):
        ssd.load(edited)


def _producers(graph) -> dict[str, str]:
    return {output: node.op_type for node in graph.node for output in node.output}


def test_every_convolution_is_quantized_per_channel_with_uint8_activations(int8_export):
    import onnx

    graph = _graph(int8_export[0]).graph
    produced_by = _producers(graph)
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    convolutions = [node for node in graph.node if node.op_type == "Conv"]
    assert convolutions
    for node in convolutions:
        data, weight = node.input[0], node.input[1]
        assert produced_by.get(data) == "DequantizeLinear" and produced_by.get(weight) == "DequantizeLinear"
    dequantized_weights = [
        node
        for node in graph.node
        if node.op_type == "DequantizeLinear"
        and initializers.get(node.input[0]) is not None
        and initializers[node.input[0]].data_type == onnx.TensorProto.INT8
        and len(initializers[node.input[0]].dims) == 4
    ]
    assert len(dequantized_weights) == len(convolutions)
    for node in dequantized_weights:  # one scale per output channel
        assert initializers[node.input[1]].dims[0] == initializers[node.input[0]].dims[0]
    quantize = [node for node in graph.node if node.op_type == "QuantizeLinear"]
    assert quantize and all(
        initializers[node.input[2]].data_type == onnx.TensorProto.UINT8 for node in quantize
    )


def test_post_processing_in_the_graph_stays_float(trained, int8_post_export):
    graph = _graph(int8_post_export).graph
    produced_by = _producers(graph)
    kinds = {node.op_type for node in graph.node}
    assert "NonMaxSuppression" in kinds and "QuantizeLinear" in kinds
    for node in graph.node:
        if node.op_type in POSTPROCESSING_OPS:
            assert all(produced_by.get(name) != "DequantizeLinear" for name in node.input), node.op_type
    assert _metadata(int8_post_export)["graph"] == "detections"
    model, pictures = trained
    detector = ssd.load(int8_post_export)
    assert detector.fixed_batch_size is None  # --dynamic-batch survives quantization
    (ours,), (theirs,) = model.predict(pictures[:1]), detector.predict(pictures[:1])
    assert torch.equal(ours["result_labels"][:2].sort().values, theirs["result_labels"][:2].sort().values)
    assert box_iou(ours["result_boxes"][:1], theirs["result_boxes"]).max() > 0.8


def test_without_onnxruntimes_pre_processing_it_quantizes_the_export_as_it_is(
    checkpoint, dataset, tmp_path, monkeypatch
):
    import onnxruntime.quantization.shape_inference

    def failing(*args, **kwargs):
        raise RuntimeError("symbolic shape inference failed")

    monkeypatch.setattr(onnxruntime.quantization.shape_inference, "quant_pre_process", failing)
    out = tmp_path / "int8.onnx"
    code, stdout, err = _run(_export(checkpoint, dataset, out, "--max-map-drop", "0.1"))
    assert code == 0, err
    assert "note: onnxruntime's pre-processing failed (symbolic shape inference failed)" in stdout
    assert _metadata(out)["precision"] == "int8" and ssd.load(out).predict(
        [torch.zeros(3, 64, 64, dtype=torch.uint8)]
    )


def test_a_dataset_without_splits_calibrates_on_its_training_part_and_checks_on_the_rest(
    trained, dataset, tmp_path
):
    from ssd.deploy.quantize import export_int8

    unsplit = dataset / "annotations" / "instances_train.json"  # one COCO JSON: divided by the fixed rule
    report = export_int8(
        trained[0], tmp_path / "int8.onnx", unsplit, calibration_pictures=64, max_map_drop=1.0
    )
    assert report.calibration_split == "train" and report.evaluation_split == "val"
    assert report.calibration_pictures + report.evaluation_pictures == PICTURES  # no picture in both
    assert any("fewer than the 64 asked for" in note for note in report.notes)
    assert _metadata(report.path)["calibration"]["pictures"] == report.calibration_pictures


# It runs with every command that reads a model file


def test_ssd_eval_detect_and_bench_run_the_int8_file(int8_export, dataset, folder, tmp_path):
    path, out = int8_export
    report = tmp_path / "report"
    code, _, err = _run(["eval", "--weights", str(path), "--datapath", str(dataset), "--out", str(report)])
    assert code == 0, err
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["num_images"] == PICTURES  # `val`, as the export's own check chose it
    _, int8, _ = (float(v) for v in CHECK_LINE.search(out).groups())
    assert metrics["coco"]["AP"] == pytest.approx(int8, abs=2e-4)

    picture = tmp_path / "picture.png"
    Image.fromarray(np.asarray(build_dataset(dataset, "val")[0][0].permute(1, 2, 0))).save(picture)
    detections = tmp_path / "detections"
    code, _, err = _run(
        ["detect", "--weights", str(path), str(picture), "--out", str(detections), "--threads", "1"]
    )
    assert code == 0, err
    assert json.loads((detections / "detections.json").read_text())

    bench = tmp_path / "bench.json"
    code, _, err = _run(
        ["bench", "--weights", str(path), "--runs", "5", "--threads", "1", "--json", str(bench)]
    )
    assert code == 0, err
    (result,) = json.loads(bench.read_text())["results"]
    assert result["backend"] == "onnx" and result["precision"] == "int8" and result["batch1"]["p50_ms"] > 0


# The self-check fails in one line and writes nothing


def test_a_map_drop_over_the_limit_fails_in_one_line_and_writes_nothing(
    checkpoint, dataset, tmp_path, monkeypatch
):
    import ssd.deploy.quantize

    figures = iter([0.9, 0.5])  # fp32's mAP, then INT8's
    monkeypatch.setattr(ssd.deploy.quantize, "_map", lambda predictor, evaluator: next(figures))
    out = tmp_path / "int8.onnx"
    code, stdout, err = _run(_export(checkpoint, dataset, out, "--max-map-drop", "0.05"))
    line = _assert_one_line(code, stdout, err, str(out), "not written", "0.9000", "0.5000", "0.4000")
    assert "--max-map-drop 0.05" in line and "--calibration-pictures" in line and "fp32" in line
    assert list(tmp_path.iterdir()) == []  # neither the file nor a partial one


def test_the_default_allowance_is_one_hundredth(checkpoint, dataset, tmp_path, monkeypatch):
    import ssd.deploy.quantize

    figures = iter([0.9, 0.885])
    monkeypatch.setattr(ssd.deploy.quantize, "_map", lambda predictor, evaluator: next(figures))
    out = tmp_path / "int8.onnx"
    code, stdout, err = _run(_export(checkpoint, dataset, out))
    _assert_one_line(code, stdout, err, "--max-map-drop 0.01")
    assert not out.exists()


# Bad settings: one line each, before any work


@pytest.mark.parametrize(
    "extra,words",
    [
        (["--int8"], ["--int8 needs --calibration DATAPATH"]),
        (["--int8", "--calibration", "D", "--format", "torchscript"], ["--format torchscript"]),
        (
            ["--int8", "--calibration", "D", "--calibration-pictures", "0"],
            ["--calibration-pictures", "at least 1, got 0"],
        ),
        (["--int8", "--calibration", "D", "--max-map-drop", "-0.1"], ["--max-map-drop", "got -0.1"]),
        (["--int8", "--calibration", "D", "--max-map-drop", "nan"], ["--max-map-drop", "finite", "got nan"]),
        (["--int8", "--calibration", "D", "--max-map-drop", "inf"], ["--max-map-drop", "finite", "got inf"]),
        (["--calibration", "D"], ["--calibration is for INT8 exports", "--int8"]),
        (["--max-map-drop", "0.5"], ["--max-map-drop is for INT8 exports"]),
    ],
    ids=[
        "no-calibration",
        "torchscript",
        "no-pictures",
        "negative-drop",
        "nan-drop",
        "inf-drop",
        "no-int8",
        "drop-alone",
    ],
)
def test_bad_int8_settings_are_one_line(checkpoint, dataset, tmp_path, extra, words):
    extra = [str(dataset) if word == "D" else word for word in extra]
    out = tmp_path / "model.onnx"
    code, stdout, err = _run(["export", "--weights", str(checkpoint), "--out", str(out), *extra])
    _assert_one_line(code, stdout, err, *words)
    assert not out.exists()


def test_a_calibration_dataset_that_is_not_there_is_one_line(checkpoint, tmp_path):
    out = tmp_path / "model.onnx"
    absent = tmp_path / "absent"
    code, stdout, err = _run(_export(checkpoint, absent, out))
    _assert_one_line(code, stdout, err, str(absent), "no such file or folder")
    assert not out.exists()


@pytest.mark.parametrize("missing", ["onnxruntime", "onnxruntime.quantization"])
def test_int8_without_onnxruntime_names_the_pip_install(checkpoint, dataset, tmp_path, monkeypatch, missing):
    monkeypatch.setitem(sys.modules, missing, None)  # as if it were not installed
    out = tmp_path / "model.onnx"
    code, stdout, err = _run(_export(checkpoint, dataset, out))
    _assert_one_line(
        code, stdout, err, f"needs {missing}, which is not installed", "pip install onnx onnxruntime"
    )
    assert not out.exists()


def test_the_command_and_the_module_agree_on_the_defaults():
    from ssd.cli.commands import export
    from ssd.deploy import quantize

    assert export.DEFAULT_CALIBRATION_PICTURES == quantize.DEFAULT_CALIBRATION_PICTURES
    assert export.DEFAULT_MAX_MAP_DROP == quantize.DEFAULT_MAX_MAP_DROP
    assert quantize.spread_indices(10, 4) == [0, 2, 5, 7] and quantize.spread_indices(3, 8) == [0, 1, 2]
    assert not math.isnan(quantize.DEFAULT_MAX_MAP_DROP)


# The real model: torchvision's BCCD-trained SSDLite keeps its mAP within the default 0.01


@pytest.mark.slow
def test_bccd_ssdlite_keeps_its_map_within_the_default_allowance(tmp_path):
    weights = shared_path(FIXTURES / "ssdlite320_bccd_trained.pt")
    data = shared_path(BCCD)
    out = tmp_path / "bccd_int8.onnx"
    argv = [
        "export",
        "--weights",
        str(weights),
        "--arch",
        "mobilenetv3_ssd",
        "--int8",
        "--calibration",
        str(data),
    ]
    code, stdout, err = _run([*argv, "--calibration-pictures", "32", "--out", str(out)])
    assert code == 0, err
    found = re.search(r"mAP on split 'val' .* \(87 pictures\): fp32 (\d\.\d{4}), int8 (\d\.\d{4})", stdout)
    assert found, stdout
    fp32, int8 = float(found[1]), float(found[2])
    assert fp32 == pytest.approx(0.5202, abs=2e-3) and fp32 - int8 <= 0.01
    assert _metadata(out)["calibration"]["pictures"] == 32
