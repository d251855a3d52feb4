"""OpenVINO IR exports: written, checked, loaded by every command, refused when damaged; bf16 and INT8.

Skipped where the optional `openvino` package is not installed (`pip install -e .[openvino]`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import BCCD, FIXTURES, shared_path
from PIL import Image

import ssd
from ssd.cli.main import main
from ssd.data.formats.synthetic import CLASS_NAMES, write_synthetic_coco
from ssd.deploy.compare import compare_detections, compare_top_detections
from ssd.deploy.export import export_model
from ssd.errors import UserError
from ssd.models.checkpoint import model_checkpoint, save_checkpoint

openvino = pytest.importorskip("openvino", reason="the optional openvino package is not installed")
from ssd.deploy.formats.openvino import (  # noqa: E402  (needs openvino, checked just above)
    CHECKSUM_ELEMENT,
    OpenVinoPredictor,
    cpu_has_bf16,
    elementary_hard_activations,
    ir_checksum,
    weights_path,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("openvino")


@pytest.fixture(scope="module")
def checkpoint(tiny_model, folder) -> Path:
    return save_checkpoint(folder / "tiny.pt", model_checkpoint(tiny_model))


@pytest.fixture(scope="module")
def ir(tiny_model, folder) -> Path:
    path = folder / "tiny.xml"
    export_model(tiny_model, path, "openvino")
    return path


def _pictures(count: int = 2) -> list[torch.Tensor]:
    return [
        torch.randint(0, 256, (3, 48, 64), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
        for seed in range(10, 10 + count)
    ]


def _one_line_error(capfd, *words: str) -> None:
    out, err = capfd.readouterr()
    err = err.strip()
    assert "Traceback" not in err and "\n" not in err, err
    for word in words:
        assert word in err, err


def test_the_ir_is_two_files_and_predicts_what_pytorch_predicts(tiny_model, ir):
    assert ir.is_file() and weights_path(ir).is_file()
    recorded, actual = ir_checksum(ir.read_bytes(), weights_path(ir).read_bytes())
    assert recorded == actual and len(actual) == 64
    detector = ssd.load(ir)
    assert isinstance(detector, OpenVinoPredictor) and detector.backend == "openvino"
    assert detector.class_names == CLASS_NAMES and detector.input_size == (64, 64)
    assert detector.num_classes == 6 and detector.precision == "fp32"
    for ours, theirs in zip(tiny_model.predict(_pictures()), detector.predict(_pictures()), strict=True):
        assert compare_detections(theirs, ours).ok


def test_hard_activations_become_elementary_ops_that_openvino_fuses(tmp_path):
    """The IR's HardSigmoid / HardSwish are rewritten as Add, Clip, Div (and Mul): equal outputs in
    onnxruntime, and in OpenVINO's compiled graph no reference kernel (`Math`) is left for them."""
    onnx = pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    conv = helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1])
    sigmoid = helper.make_node("HardSigmoid", ["c"], ["s"], alpha=0.2, beta=0.4)
    swish = helper.make_node("HardSwish", ["c"], ["h"])
    total = helper.make_node("Add", ["s", "h"], ["y"])
    weights = onnx.numpy_helper.from_array(
        torch.randn(8, 3, 3, 3, generator=torch.Generator().manual_seed(0)).numpy(), "w"
    )
    graph = helper.make_graph(
        [conv, sigmoid, swish, total],
        "hard",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])],
        [weights],
    )
    original = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    rewritten = onnx.ModelProto.FromString(original.SerializeToString())
    assert elementary_hard_activations(rewritten) == 2
    assert {n.op_type for n in rewritten.graph.node} == {"Conv", "Add", "Clip", "Div", "Mul"}
    onnx.checker.check_model(rewritten)

    x = (
        4 * torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    ).numpy()  # every clip region
    run = lambda model: onnxruntime.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]  # noqa: E731
    assert torch.allclose(torch.from_numpy(run(rewritten)), torch.from_numpy(run(original)), atol=1e-6)

    path = tmp_path / "hard.onnx"
    onnx.save(rewritten, str(path))
    compiled = openvino.Core().compile_model(openvino.convert_model(str(path)), "CPU")
    layer_types = {
        op.get_rt_info()["layerType"].astype(str) for op in compiled.get_runtime_model().get_ordered_ops()
    }
    assert "Math" not in layer_types, layer_types


def test_post_processing_in_the_graph_and_any_batch_size(tiny_model, checkpoint, folder, capfd):
    path = folder / "tiny_post.xml"
    argv = ["export", "--weights", str(folder / "tiny.pt"), "--format", "openvino", "--out", str(path)]
    assert main([*argv, "--with-postprocess", "--dynamic-batch"]) == 0
    out, _ = capfd.readouterr()
    assert f"wrote {path} (openvino, fp32, network and post-processing, any batch size)" in out
    detector = ssd.load(path)
    assert detector.graph == "detections" and detector.fixed_batch_size is None
    pictures = _pictures(3)
    for ours, theirs in zip(tiny_model.predict(pictures), detector.predict(pictures), strict=True):
        assert compare_detections(theirs, ours).ok


def test_a_damaged_bin_or_edited_xml_is_refused_before_it_runs(ir, tmp_path, capfd):
    damaged = tmp_path / "damaged.xml"
    shutil.copy(ir, damaged)
    data = bytearray(weights_path(ir).read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights_path(damaged).write_bytes(bytes(data))
    with pytest.raises(UserError, match="does not match its checksum: damaged or edited"):
        OpenVinoPredictor(damaged)

    edited = tmp_path / "edited.xml"
    shutil.copy(weights_path(ir), weights_path(edited))
    edited.write_bytes(ir.read_bytes().replace(b"mobilenetv3_small_ssd", b"mobilenetv3_ssd", 1))
    assert main(["detect", "--weights", str(edited), str(tmp_path)]) == 2
    _one_line_error(capfd, str(edited), "does not match its checksum")


def test_a_missing_bin_and_an_xml_that_is_not_ours_are_one_line(ir, tmp_path, capfd):
    lonely = tmp_path / "lonely.xml"
    shutil.copy(ir, lonely)
    assert main(["detect", "--weights", str(lonely), str(tmp_path)]) == 2
    _one_line_error(capfd, "lonely.bin", "no such file", ".bin beside it")

    annotation = tmp_path / "BloodImage_00000.xml"  # a VOC annotation given by mistake
    annotation.write_text("<annotation><filename>a.jpg</filename></annotation>")  # and no .bin
    assert main(["detect", "--weights", str(annotation), str(tmp_path)]) == 2
    _one_line_error(capfd, str(annotation), f"no {CHECKSUM_ELEMENT} entry")


def test_eval_of_the_ir_gives_the_onnx_files_figures(tiny_model, ir, folder, tmp_path, capsys):
    data = tmp_path / "synthetic"
    write_synthetic_coco(data, {"test": 6}, image_size=64)
    onnx_path = folder / "tiny.onnx"
    export_model(tiny_model, onnx_path, "onnx")
    metrics = {}
    for path in (onnx_path, ir):
        out = tmp_path / f"report_{path.suffix[1:]}"
        argv = ["eval", "--weights", str(path), "--datapath", str(data), "--split", "test", "--out", str(out)]
        assert main([*argv, "--workers", "0", "--worst", "0"]) == 0
        metrics[path.suffix] = json.loads((out / "metrics.json").read_text())
    capsys.readouterr()
    assert metrics[".xml"]["num_images"] == metrics[".onnx"]["num_images"] == 6
    assert metrics[".xml"]["coco_stats"] == pytest.approx(metrics[".onnx"]["coco_stats"], abs=1e-3)
    assert metrics[".xml"]["run"]["arch"] == "mobilenetv3_small_ssd"


def test_bf16_is_openvinos_and_needs_the_instructions(tiny_model, tmp_path, monkeypatch):
    with pytest.raises(UserError, match=r"--precision bf16 is an OpenVINO export's \(--format openvino\)"):
        export_model(tiny_model, tmp_path / "tiny.onnx", "onnx", precision="bf16")
    with pytest.raises(UserError, match="--precision must be fp32 or bf16"):
        export_model(tiny_model, tmp_path / "tiny.xml", "openvino", precision="fp16")
    import ssd.deploy.formats.openvino as openvino_format

    monkeypatch.setattr(openvino_format, "cpu_has_bf16", lambda: False)
    with pytest.raises(UserError, match="this CPU has no bf16 instructions"):
        export_model(tiny_model, tmp_path / "tiny.xml", "openvino", precision="bf16")
    assert not (tmp_path / "tiny.xml").exists()


@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no bf16 instructions (AVX512-BF16 or AMX)")
def test_a_bf16_ir_of_a_trained_model_runs_in_bf16_and_agrees_with_fp32(tmp_path):
    """The check bf16 must pass, on torchvision's BCCD-trained SSDLite and a BCCD picture: of fp32's top 100
    detections, 95% found with the same label at IoU >= 0.9."""
    from ssd.data.pictures import read_picture
    from ssd.models.checkpoint import load_model

    model = load_model(shared_path(FIXTURES / "ssdlite320_bccd_trained.pt"), arch="mobilenetv3_ssd")
    picture = read_picture(shared_path(BCCD / "JPEGImages" / "BloodImage_00000.jpg"))
    path = tmp_path / "bccd_bf16.xml"
    report = export_model(
        model, path, "openvino", with_postprocess=True, precision="bf16", pictures=[picture]
    )
    assert report.precision == "bf16" and "of the reference's top 100" in report.checks[0]
    detector = ssd.load(path)
    assert detector.precision == "bf16" and detector.metadata["precision"] == "bf16"
    assert detector.compiled.get_property("INFERENCE_PRECISION_HINT") == openvino.Type.bf16
    fp32 = tmp_path / "bccd.xml"
    export_model(model, fp32, "openvino", with_postprocess=True, pictures=[picture])
    # fp32 runs in fp32, although OpenVINO would choose bf16 by itself on this CPU
    assert ssd.load(fp32).compiled.get_property("INFERENCE_PRECISION_HINT") == openvino.Type.f32
    (ours,), (theirs,) = model.predict([picture]), detector.predict([picture])
    assert compare_top_detections(theirs, ours).ok


def test_an_export_that_fails_its_check_leaves_no_file(tiny_model, tmp_path, monkeypatch):
    import ssd.deploy.export as export_module

    class Disagrees:
        ok = False

        def describe(self):
            return "made to disagree"

    monkeypatch.setattr(export_module, "compare_detections", lambda a, b: Disagrees())
    path = tmp_path / "tiny.xml"
    with pytest.raises(export_module.ExportMismatchError, match="made to disagree"):
        export_model(tiny_model, path, "openvino")
    assert not path.exists() and not weights_path(path).exists()


def test_top_detection_agreement_counts_label_and_overlap():
    reference = {
        "result_boxes": torch.tensor([[0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 5, 5.0]]),
        "result_labels": torch.tensor([1, 2, 1]),
        "result_scores": torch.tensor([0.9, 0.8, 0.1]),
    }
    candidate = {
        "result_boxes": torch.tensor([[20, 20, 30, 30.2], [0, 0, 10, 10.0]]),
        "result_labels": torch.tensor([2, 3]),  # the first box's label differs
        "result_scores": torch.tensor([0.7, 0.6]),
    }
    agreement = compare_top_detections(candidate, reference, top=2)
    assert (agreement.compared, agreement.found) == (2, 1) and not agreement.ok
    assert "1 of the reference's top 2" in agreement.describe()


def _export_int8_ir(checkpoint: Path, folder: Path) -> Path:
    """`ssd export --format openvino --int8` of the tiny model, calibrated on 4 synthetic pictures."""
    data = folder / "synthetic"
    write_synthetic_coco(data, {"train": 8, "val": 4}, image_size=64)
    out = folder / "tiny_int8.xml"
    argv = [
        "export",
        "--weights",
        str(checkpoint),
        "--format",
        "openvino",
        "--int8",
        "--calibration",
        str(data),
    ]
    assert main([*argv, "--calibration-pictures", "4", "--max-map-drop", "1", "--out", str(out)]) == 0
    return out


def test_int8_openvino_export_is_checked_by_its_map(checkpoint, tmp_path, capfd):
    out = _export_int8_ir(checkpoint, tmp_path)
    printed, _ = capfd.readouterr()
    assert f"wrote {out} (openvino, int8" in printed and "int8 check: mAP on split" in printed
    detector = ssd.load(out)
    assert detector.precision == "int8" and detector.metadata["calibration"]["pictures"] == 4
    assert len(detector.predict(_pictures(1))) == 1
    assert not list(tmp_path.glob(".*partial"))


def test_an_int8_ir_takes_eight_bit_pictures_and_detects_as_with_float_input(checkpoint, tmp_path):
    """An INT8 IR is compiled to take the 8-bit resized picture (HWC, uint8): its outputs are those of the
    same IR given the same values as [0, 1] floats in CHW order, the input it was exported with."""
    from ssd.deploy.formats import load_predictor

    out = _export_int8_ir(checkpoint, tmp_path)
    detector = load_predictor(out, threads=1)
    (graph_input,) = detector.compiled.inputs
    assert graph_input.get_element_type() == openvino.Type.u8
    assert list(graph_input.get_shape()) == [1, *detector.input_size, 3]
    batch, _ = detector.graph_input(_pictures(2))
    assert batch.dtype == torch.uint8 and len(batch) == 2
    # The IR as exported, read from memory as the predictor reads it, in this test's own OpenVINO Core
    core = openvino.Core()
    as_exported = core.compile_model(
        core.read_model(out.read_bytes(), out.with_suffix(".bin").read_bytes()),
        "CPU",
        {"INFERENCE_NUM_THREADS": 1},
    )
    request = as_exported.create_infer_request()
    for index in range(len(batch)):
        floats = np.ascontiguousarray(batch[index : index + 1].float().div(255).numpy())
        results = request.infer({0: floats})
        expected = [torch.from_numpy(np.array(results[output])) for output in as_exported.outputs]
        got = detector.run_graph(batch[index : index + 1])
        for value, reference in zip(got, expected, strict=True):
            assert torch.allclose(value, reference, atol=1e-4)
    del results, request, as_exported, core  # released here, on this thread, not by a later collection


def test_the_detect_command_draws_with_the_ir(ir, tmp_path, capfd):
    picture = tmp_path / "in" / "noise.png"
    picture.parent.mkdir()
    Image.fromarray(torch.randint(0, 256, (48, 64, 3), dtype=torch.uint8).numpy()).save(picture)
    out = tmp_path / "out"
    assert main(["detect", "--weights", str(ir), str(picture), "--out", str(out), "--threads", "1"]) == 0
    assert (out / "detections.json").is_file()


def test_a_bf16_export_goes_beside_the_fp32_one_by_default(checkpoint, monkeypatch, capsys):
    import ssd.deploy.export as export_module

    written = []

    def fake_export(model, out, format, **options):
        written.append(Path(out).name)
        return export_module.ExportReport(Path(out), format, False, False, options["precision"])

    monkeypatch.setattr(export_module, "export_model", fake_export)
    for precision in ("fp32", "bf16"):
        argv = ["export", "--weights", str(checkpoint), "--format", "openvino", "--precision", precision]
        assert main(argv) == 0
    assert written == ["tiny.xml", "tiny_bf16.xml"]
    assert "(openvino, bf16," in capsys.readouterr().out


def test_every_extra_named_in_messages_is_one_of_pyprojects():
    import tomllib

    from ssd.errors import EXTRAS

    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    extras = pyproject["project"]["optional-dependencies"]
    assert set(EXTRAS) == set(extras) - {"dev"}
    for name, packages in EXTRAS.items():
        listed = {package.split("[")[0].strip("'\"") for package in packages.split()}
        assert listed == {package.split("[")[0] for package in extras[name]}, name


def test_a_bf16_file_on_a_cpu_without_bf16_runs_in_fp32_with_a_warning(tiny_model, ir, tmp_path, monkeypatch):
    import ssd.deploy.formats.openvino as openvino_format

    assert "precision" not in OpenVinoPredictor(ir).metadata  # an fp32 file says nothing
    monkeypatch.setattr(openvino_format, "cpu_has_bf16", lambda: True)
    path = tmp_path / "tiny_bf16.xml"
    export_model(tiny_model, path, "openvino", precision="bf16", check=False)
    monkeypatch.setattr(openvino_format, "cpu_has_bf16", lambda: False)
    with pytest.warns(openvino_format.Bf16UnavailableWarning, match="running in fp32"):
        detector = OpenVinoPredictor(path)
    assert detector.precision == "fp32" and detector.metadata["precision"] == "bf16"
    assert detector.compiled.get_property("INFERENCE_PRECISION_HINT") == openvino.Type.f32
