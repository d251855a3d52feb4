"""`ssd eval` and the weights loading behind it, from error messages to the end-to-end BCCD figures."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import BCCD, FIXTURES, shared_path
from PIL import Image

from ssd.cli import main
from ssd.errors import UserError
from ssd.evaluation.model_loading import load_model_for_inference

BCCD_WEIGHTS = FIXTURES / "ssdlite320_bccd_trained.pt"


def needs_dataset_loaders():
    data = pytest.importorskip("ssd.data", reason="needs the package's dataset loaders")
    if not hasattr(data, "build_dataset"):
        pytest.skip("ssd.data.build_dataset is not available")


@pytest.fixture(scope="module")
def fresh_model():
    """One freshly initialised two-class model for the module: building one takes seconds."""
    import ssd

    return ssd.build_model("mobilenetv3_ssd", num_classes=3)


def write_training_checkpoint(path, model, class_names=("cell", "dot")):
    """A checkpoint as training writes it: architecture, classes and weights in one dict."""
    content = {"arch": "mobilenetv3_ssd", "num_classes": 3, "class_names": list(class_names)}
    torch.save({**content, "model": model.state_dict()}, path)


def write_voc_dataset(root, pictures=3):
    """A small Pascal VOC folder: two classes, a difficult box, one split called `test`."""
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    (root / "ImageSets" / "Main").mkdir(parents=True)
    names = []
    for index in range(pictures):
        name = f"picture_{index:03d}"
        names.append(name)
        Image.new("RGB", (160, 120), (40 * index, 90, 160)).save(root / "JPEGImages" / f"{name}.jpg")
        objects = "".join(
            f"<object><name>{label}</name><difficult>{difficult}</difficult><bndbox><xmin>{x}</xmin>"
            f"<ymin>20</ymin><xmax>{x + 40}</xmax><ymax>70</ymax></bndbox></object>"
            for label, difficult, x in (("cell", 0, 10), ("dot", index % 2, 90))
        )
        (root / "Annotations" / f"{name}.xml").write_text(
            f"<annotation><filename>{name}.jpg</filename><size><width>160</width><height>120</height>"
            f"<depth>3</depth></size>{objects}</annotation>"
        )
    (root / "ImageSets" / "Main" / "test.txt").write_text("\n".join(names) + "\n")
    return root


def test_missing_and_unreadable_weights_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="no such weights file"):
        load_model_for_inference(tmp_path / "absent.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(UserError, match="corrupt.pt: cannot be read"):
        load_model_for_inference(corrupt)


def test_torchvision_weights_need_arch_and_num_classes(tmp_path):
    weights = tmp_path / "tv.pt"
    torch.save({"backbone.features.0.weight": torch.zeros(1), "head.x": torch.zeros(1)}, weights)
    with pytest.raises(UserError, match="pass --arch and --num-classes"):
        load_model_for_inference(weights, num_classes=4)
    with pytest.raises(UserError, match="pass --arch and --num-classes"):
        load_model_for_inference(weights, arch="mobilenetv3_ssd")


def test_training_checkpoint_rebuilds_the_model(tmp_path, fresh_model):
    path = tmp_path / "trained.pt"
    write_training_checkpoint(path, fresh_model)
    loaded = load_model_for_inference(path)
    assert (loaded.arch, loaded.num_classes, loaded.class_names, loaded.source) == (
        "mobilenetv3_ssd",
        3,
        ["cell", "dot"],
        "checkpoint",
    )
    assert not loaded.model.training
    for key, value in fresh_model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key
    with pytest.raises(UserError, match="is a mobilenetv3_ssd model, not vgg16_ssd300"):
        load_model_for_inference(path, arch="vgg16_ssd300")
    with pytest.raises(UserError, match="num_classes=3, not 5"):
        load_model_for_inference(path, num_classes=5)


def test_torchvision_checkpoint_loads(tmp_path):
    loaded = load_model_for_inference(shared_path(BCCD_WEIGHTS), arch="mobilenetv3_ssd", num_classes=4)
    assert (loaded.arch, loaded.num_classes, loaded.class_names, loaded.source) == (
        "mobilenetv3_ssd",
        4,
        None,
        "torchvision",
    )
    assert not loaded.model.training


@pytest.mark.slow
def test_cli_writes_the_report(tmp_path, capsys, fresh_model):
    needs_dataset_loaders()
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
    assert [c["name"] for c in metrics["per_class"]] == ["cell", "dot"]
    # Only one picture's "dot" box is not difficult: 3 cells and 1 dot to find.
    assert [c["objects"] for c in metrics["per_class"]] == [3, 2]
    assert sorted(p.name for p in (out / "pr_curves").iterdir()) == ["pr_001_cell.png", "pr_002_dot.png"]
    assert isinstance(json.loads((out / "detections_coco.json").read_text()), list)


def test_cli_errors_are_one_line(tmp_path, capsys, fresh_model):
    needs_dataset_loaders()
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


@pytest.mark.slow
def test_end_to_end_bccd_matches_torchvision(tmp_path, capsys):
    """Our mobilenetv3_ssd with torchvision's trained BCCD weights, through `ssd eval`, gives its figures."""
    needs_dataset_loaders()
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
    assert (tmp_path / "worst_pictures.png").is_file()
    assert "model time" in capsys.readouterr().out
