"""Exports (ONNX and TorchScript, with and without post-processing) give PyTorch's detections."""

import numpy as np
import pytest
import torch
from conftest import BCCD, FIXTURES, shared_path

from ssd.deploy.compare import compare_detections
from ssd.deploy.export import ExportMismatchError, export_model
from ssd.deploy.formats import EXPORT_FORMATS, is_exported_model, load_predictor
from ssd.deploy.formats.onnx import OnnxPredictor
from ssd.deploy.formats.torchscript import TorchScriptPredictor
from ssd.errors import UserError

EXPORTS = [("onnx", False), ("onnx", True), ("torchscript", False), ("torchscript", True)]


pytestmark = pytest.mark.usefixtures("one_thread")


def bccd_pictures(count: int) -> list[torch.Tensor]:
    from PIL import Image

    fixture = torch.load(shared_path(FIXTURES / "ssdlite320_bccd_trained.pt"), weights_only=True)
    folder = shared_path(BCCD / "JPEGImages")
    ids = fixture["test_ids"][::9][:count]
    return [
        torch.from_numpy(np.asarray(Image.open(folder / f"{i}.jpg").convert("RGB")).copy()).permute(2, 0, 1)
        for i in ids
    ]


@pytest.fixture(scope="module")
def bccd_model():
    from ssd.models.checkpoint import load_model

    path = shared_path(FIXTURES / "ssdlite320_bccd_trained.pt")
    names = torch.load(path, weights_only=True)["class_names"]
    return load_model(path, arch="mobilenetv3_ssd", class_names=names)


@pytest.fixture(scope="module")
def bccd_exports(bccd_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("exports")
    pictures = bccd_pictures(1)
    paths = {}
    for fmt, post in EXPORTS:
        path = folder / f"bccd_{'post' if post else 'net'}.{'onnx' if fmt == 'onnx' else 'ts'}"
        report = export_model(
            bccd_model, path, fmt, with_postprocess=post, dynamic_batch=True, pictures=pictures
        )
        assert report.checks  # the export checked itself against PyTorch
        paths[(fmt, post)] = path
    return paths


@pytest.mark.parametrize("fmt,post", EXPORTS, ids=[f"{f}-{'post' if p else 'net'}" for f, p in EXPORTS])
def test_exports_reproduce_pytorch_detections_on_bccd(bccd_model, bccd_exports, fmt, post):
    pictures = bccd_pictures(5)[1:]  # pictures the export's own check did not see
    predictor = load_predictor(bccd_exports[(fmt, post)], threads=1)
    assert predictor.backend == fmt
    assert predictor.class_names == bccd_model.class_names
    expected = bccd_model.predict(pictures)
    threads = torch.get_num_threads()
    exported = predictor.predict(pictures)
    assert torch.get_num_threads() == threads  # the ONNX predictor's one-thread glue is undone after it
    for ours, theirs in zip(expected, exported, strict=True):
        # A trained model's scores are decisive: every detection must match, in the same order.
        assert torch.equal(ours["result_labels"], theirs["result_labels"])
        assert torch.allclose(theirs["result_boxes"], ours["result_boxes"], rtol=1e-3, atol=1e-3)
        assert (theirs["result_scores"] - ours["result_scores"]).abs().max() < 1e-4
        assert (theirs["result_confs"] - ours["result_confs"]).abs().max() < 1e-4


def test_exported_file_carries_metadata_and_detect_recognises_it(bccd_exports, bccd_model):
    path = bccd_exports[("onnx", True)]
    predictor = OnnxPredictor(path, threads=1)
    assert predictor.graph == "detections" and predictor.arch == "mobilenetv3_ssd"
    assert predictor.num_classes == 4 and predictor.fixed_batch_size is None
    assert isinstance(load_predictor(bccd_exports[("torchscript", False)]), TorchScriptPredictor)
    assert is_exported_model(path) and is_exported_model(bccd_exports[("torchscript", True)])
    assert not is_exported_model(shared_path(FIXTURES / "ssdlite320_bccd_trained.pt"))


@pytest.mark.slow
def test_fixed_batch_export_runs_any_number_of_pictures(bccd_model, tmp_path):
    pictures = bccd_pictures(3)
    path = tmp_path / "fixed.onnx"
    export_model(bccd_model, path, "onnx", with_postprocess=True, dynamic_batch=False, check=False)
    predictor = OnnxPredictor(path, threads=1)
    assert predictor.fixed_batch_size == 1
    for ours, theirs in zip(bccd_model.predict(pictures), predictor.predict(pictures), strict=True):
        assert compare_detections(theirs, ours).matched == len(ours["result_scores"])


def test_export_check_fails_with_numbers_when_the_file_disagrees(bccd_model, bccd_exports, monkeypatch):
    import ssd.deploy.predictor
    from ssd.deploy.export import ExportReport, _check_export
    from ssd.models.fold import prepare_for_inference

    original = ssd.deploy.predictor.ExportedPredictor.predict

    def shifted(self, images):
        results = original(self, images)
        for result in results:
            result["result_boxes"] = result["result_boxes"] + 5.0
        return results

    monkeypatch.setattr(ssd.deploy.predictor.ExportedPredictor, "predict", shifted)
    report = ExportReport(bccd_exports[("onnx", True)], "onnx", True, True)
    with pytest.raises(ExportMismatchError, match="does not match PyTorch.*max box error"):
        _check_export(bccd_model, prepare_for_inference(bccd_model), report, bccd_pictures(1))


@pytest.mark.slow
def test_untrained_fixture_model_agrees_up_to_tied_scores(tmp_path):
    """The random-weight fixture has many exactly tied scores; the network outputs must still agree."""
    from ssd.models.checkpoint import load_model

    path = shared_path(FIXTURES / "ssdlite320_mobilenet_v3_large.pt")
    fixture = torch.load(path, weights_only=True)
    model = load_model(path, arch="mobilenetv3_ssd")
    picture = fixture["image_uint8_hwc"].permute(2, 0, 1)
    for post in (False, True):
        out = tmp_path / f"fixture_{post}.onnx"
        export_model(model, out, "onnx", with_postprocess=post, check=False)
        predictor = OnnxPredictor(out, threads=1)
        if not post:
            # The graph takes 0-1 pictures and normalises inside: undo the fixture's normalisation.
            batch = fixture["preprocessed"] * model.preprocess.image_std + model.preprocess.image_mean
            cls_logits, bbox_regression = predictor.run_graph(batch)
            assert (cls_logits - fixture["cls_logits"]).abs().max() < 1e-4
            assert (bbox_regression - fixture["bbox_regression"]).abs().max() < 1e-4
        (ours,) = model.predict([picture])
        (theirs,) = predictor.predict([picture])
        agreement = compare_detections(theirs, ours)
        assert agreement.ok and agreement.count_a == agreement.count_b == len(ours["result_scores"])


@pytest.mark.slow
def test_vgg16_exports_match_pytorch(tmp_path):
    from ssd.models.checkpoint import load_model

    path = shared_path(FIXTURES / "ssd300_vgg16.pt")
    fixture = torch.load(path, weights_only=True)
    model = load_model(path, arch="vgg16_ssd300")
    picture = fixture["image_uint8_hwc"].permute(2, 0, 1)
    for fmt, post in [("onnx", False), ("onnx", True), ("torchscript", True)]:
        report = export_model(
            model,
            tmp_path / f"vgg_{fmt}_{post}{EXPORT_FORMATS[fmt].suffix}",  # a file is read by its name's ending
            fmt,
            with_postprocess=post,
            pictures=[picture],
        )
        assert report.checks


def test_compare_detections_tolerates_only_ties():
    a = {
        "result_boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]]),
        "result_labels": torch.tensor([1, 2, 2]),
        "result_scores": torch.tensor([0.9, 0.5, 0.5]),
    }
    swapped = {key: value[[0, 2, 1]] for key, value in a.items()}
    assert compare_detections(a, swapped).matched == 3
    other_box = {key: value.clone() for key, value in a.items()}
    other_box["result_boxes"][2] += 100  # a tied detection differs: allowed, and counted
    agreement = compare_detections(a, other_box)
    assert agreement.ok and agreement.matched == 2
    decisive = {key: value.clone() for key, value in a.items()}
    decisive["result_boxes"][0] += 1.0  # the best, untied detection moved by a pixel
    assert not compare_detections(a, decisive).ok
    relabelled = {key: value.clone() for key, value in a.items()}
    relabelled["result_labels"][0] = 3
    assert not compare_detections(a, relabelled).ok


def test_not_an_export_is_a_clear_error(tmp_path):
    bogus = tmp_path / "model.onnx"
    bogus.write_bytes(b"not onnx")
    with pytest.raises(UserError, match="model.onnx"):
        OnnxPredictor(bogus)
    with pytest.raises(UserError, match="no such"):
        load_predictor(tmp_path / "absent.onnx")


def test_the_onnx_export_rests_on_torchs_legacy_exporter(tmp_path):
    """`write_onnx` calls `torch.onnx.export(..., dynamo=False)`: the TorchScript-based exporter, which torch
    deprecates. It is kept because it is the one that turns `_OnnxNonMaxSuppression.symbolic` into ONNX's
    NonMaxSuppression without onnxscript; `torch.export` (dynamo=True) ignores an autograd Function's
    `symbolic`, and the post-processing would need an onnxscript translation instead.

    When torch removes the legacy exporter this test fails first. What breaks with it: `ssd export --format
    onnx` and `--format openvino` (converted from the ONNX graph), `--int8` (quantizes that graph), and
    `ssd bench --backend onnx|openvino|all`."""
    import inspect

    import onnx

    from ssd.deploy.formats.onnx import write_onnx
    from ssd.models.fold import prepare_for_inference
    from ssd.models.registry import build_model

    assert "dynamo" in inspect.signature(torch.onnx.export).parameters
    model = build_model("mobilenetv3_small_ssd", num_classes=3, input_size=64).eval()
    example = torch.rand(1, 3, 64, 64)
    path = tmp_path / "post.onnx"
    write_onnx(prepare_for_inference(model, channels_last=False), path, example, True, False, "{}")
    operators = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert "NonMaxSuppression" in operators
