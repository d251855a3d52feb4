"""`ssd eval`: the report it writes, its one-line errors, and the end-to-end BCCD figures."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import BCCD, FIXTURES, shared_path
from data_writers import write_voc

from ssd.cli.main import main
from ssd.models.checkpoint import model_checkpoint, save_checkpoint

BCCD_WEIGHTS = FIXTURES / "ssdlite320_bccd_trained.pt"


@pytest.fixture(autouse=True)
def one_torch_thread():
    """On a busy 2-core machine, torch's spinning worker threads make inference several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def fresh_model():
    """One freshly initialised two-class model for the module: building one takes seconds."""
    import ssd

    return ssd.build_model("mobilenetv3_ssd", num_classes=3)


def write_training_checkpoint(path, model, class_names=("cell", "dot")):
    """A checkpoint as training writes it: architecture, config, classes and weights."""
    model.class_names = list(class_names)
    save_checkpoint(path, model_checkpoint(model))


def write_voc_dataset(root, pictures=3):
    """A small Pascal VOC folder: two classes, a difficult box in every other picture, one split `test`."""
    objects = {
        f"picture_{index:03d}": [("cell", 10, 20, 50, 70), ("dot", 90, 20, 130, 70, index % 2)]
        for index in range(pictures)
    }
    return write_voc(root, objects, splits={"test": list(objects)}, width=160, height=120)


def test_cli_writes_the_report(tmp_path, capsys, fresh_model):
    data = write_voc_dataset(tmp_path / "voc")
    weights = tmp_path / "trained.pt"
    write_training_checkpoint(weights, fresh_model)
    out = tmp_path / "report"
    argv = ["eval", "--weights", str(weights), "--datapath", str(data), "--split", "test"]
    code = main([*argv, "--out", str(out), "--batch-size", "2", "--workers", "0"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "COCO metrics (3 pictures)" in printed and "VOC mAP@0.5" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_images"] == 3
    assert metrics["run"] == {
        "weights": str(weights),
        "datapath": str(data),
        "split": "test",
        "arch": "mobilenetv3_ssd",
    }
    assert [c["name"] for c in metrics["per_class"]] == ["cell", "dot"]
    # The dot of picture 1 is difficult: 3 cells and 2 dots to find.
    assert [c["objects"] for c in metrics["per_class"]] == [3, 2]
    assert sorted(p.name for p in (out / "pr_curves").iterdir()) == ["pr_001_cell.png", "pr_002_dot.png"]
    assert isinstance(json.loads((out / "detections_coco.json").read_text()), list)


def test_cli_errors_are_one_line(tmp_path, capsys, fresh_model):
    data = write_voc_dataset(tmp_path / "voc")
    weights = tmp_path / "trained.pt"
    write_training_checkpoint(weights, fresh_model, class_names=("apple", "pear"))
    base = ["eval", "--datapath", str(data), "--split", "test", "--out", str(tmp_path / "out")]
    assert main([*base, "--weights", str(tmp_path / "absent.pt")]) == 2
    assert "absent.pt: no such weights file" in capsys.readouterr().err
    assert main([*base, "--weights", str(weights)]) == 2
    assert "was trained on classes ['apple', 'pear']" in capsys.readouterr().err
    assert main([*base, "--weights", str(weights), "--batch-size", "0"]) == 2
    assert "--batch-size must be at least 1" in capsys.readouterr().err
    coco_weights = shared_path(FIXTURES / "ssdlite320_mobilenet_v3_large.pt")
    assert main([*base, "--weights", str(coco_weights)]) == 2
    assert "say which architecture it is (--arch)" in capsys.readouterr().err
    assert main([*base, "--weights", str(coco_weights), "--arch", "mobilenetv3_ssd"]) == 2
    assert "the model has num_classes=91" in capsys.readouterr().err


@pytest.mark.slow
def test_end_to_end_bccd_matches_torchvision(tmp_path, capsys):
    """Our mobilenetv3_ssd with torchvision's trained BCCD weights, through `ssd eval`, gives its figures."""
    weights = shared_path(BCCD_WEIGHTS)
    argv = [
        "eval",
        "--weights",
        str(weights),
        "--arch",
        "mobilenetv3_ssd",
        "--datapath",
        str(shared_path(BCCD)),
    ]
    assert main([*argv, "--split", "test", "--out", str(tmp_path), "--worst", "4"]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["num_images"] == 72
    assert metrics["coco"]["AP"] == pytest.approx(0.462, abs=0.002)
    assert metrics["coco"]["AP50"] == pytest.approx(0.672, abs=0.002)
    # All 12 numbers, against pycocotools' own for torchvision's detections of the same pictures.
    reference = torch.load(weights, weights_only=True)["coco_stats"].tolist()
    assert metrics["coco_stats"] == pytest.approx(reference, abs=0.002)
    assert (tmp_path / "worst_pictures.png").is_file()
    assert "model time" in capsys.readouterr().out
