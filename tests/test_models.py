import numpy as np
import pytest
import torch
from PIL import Image

import ssd
from ssd.errors import UserError


@pytest.fixture(scope="module")
def mobilenet():
    return ssd.build_model("mobilenetv3_ssd", num_classes=4, class_names=["a", "b", "c"]).eval()


def test_registry_lists_architectures_and_rejects_unknown():
    assert {"mobilenetv3_ssd", "vgg16_ssd300", "vgg16_ssd512", "resnet50_ssd300"} <= set(
        ssd.available_architectures()
    )
    with pytest.raises(UserError, match="unknown architecture 'yolo'"):
        ssd.build_model("yolo")
    with pytest.raises(UserError, match="unknown option 'bogus'"):
        ssd.build_model("mobilenetv3_ssd", bogus=1)


def test_num_classes_counts_background():
    with pytest.raises(UserError, match="counts the background"):
        ssd.build_model("mobilenetv3_ssd", num_classes=1)
    with pytest.raises(UserError, match="expected 3 names"):
        ssd.build_model("mobilenetv3_ssd", num_classes=4, class_names=["a", "b", "c", "d"])


def test_parts_carry_the_names_of_the_system_description(mobilenet):
    for part in ("backbone", "extras", "classification_headers", "regression_headers", "postprocessor"):
        assert hasattr(mobilenet, part)
    assert len(mobilenet.classification_headers) == len(mobilenet.feature_sizes) == 6


def test_predict_accepts_every_picture_type(mobilenet):
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
    pictures = [
        torch.from_numpy(hwc).permute(2, 0, 1),  # uint8 CHW
        torch.from_numpy(hwc).permute(2, 0, 1).float() / 255,  # float CHW in [0, 1]
        hwc,  # numpy HWC
        Image.fromarray(hwc),  # PIL
        Image.fromarray(hwc[:, :, 0]),  # grey PIL
    ]
    results = mobilenet.predict(pictures)
    assert len(results) == 5
    for result in results[:4]:
        assert torch.allclose(result["result_scores"], results[0]["result_scores"], atol=1e-5)
    for result in results:
        assert result["result_confs"].shape[1] == 4
        assert (result["result_boxes"][:, [0, 2]] <= 320).all() and (
            result["result_boxes"][:, [1, 3]] <= 240
        ).all()
    # One picture on its own is accepted too.
    assert len(mobilenet.predict(hwc)) == 1


def test_predict_restores_training_mode():
    model = ssd.build_model("mobilenetv3_ssd", num_classes=3).train()
    model.predict([torch.zeros(3, 100, 100, dtype=torch.uint8)])
    assert model.training


def test_train_mode_returns_loss_inputs_with_targets_scaled():
    model = ssd.build_model("mobilenetv3_ssd", num_classes=3).train()
    pictures = [torch.zeros(3, 160, 640, dtype=torch.uint8), torch.zeros(3, 320, 320, dtype=torch.uint8)]
    targets = [
        {"boxes": torch.tensor([[64.0, 16, 128, 32]]), "labels": torch.tensor([1])},
        {"boxes": torch.tensor([[10.0, 10, 20, 20]]), "labels": torch.tensor([2])},
    ]
    out = model(pictures, targets)
    assert out["cls_logits"].shape == (2, 3234, 3)
    assert out["bbox_regression"].shape == (2, 3234, 4)
    assert out["anchors"].shape == (3234, 4)
    assert out["targets"][0]["boxes"].tolist() == [[32.0, 32.0, 64.0, 64.0]]
    assert out["targets"][1]["boxes"].tolist() == [[10.0, 10.0, 20.0, 20.0]]


@pytest.mark.parametrize(
    "arch, size, maps",
    [
        ("mobilenetv3_ssd", 512, [(32, 32), (16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]),
        ("mobilenetv3_ssd", (256, 384), [(16, 24), (8, 12), (4, 6), (2, 3), (1, 2), (1, 1)]),
        ("vgg16_ssd300", 512, [(64, 64), (32, 32), (16, 16), (8, 8), (6, 6), (4, 4)]),
    ],
)
def test_any_input_size_works_end_to_end(arch, size, maps):
    model = ssd.build_model(arch, num_classes=3, input_size=size).eval()
    assert model.feature_sizes == maps
    assert model.config.steps is None  # the SSD300 steps do not apply at another size
    cls_logits, _ = model.head_outputs(torch.zeros(1, 3, *model.config.input_size))
    assert cls_logits.shape[1] == model.num_default_boxes
    (result,) = model.predict([torch.zeros(3, 200, 300, dtype=torch.uint8)])
    assert result["result_boxes"].shape[1] == 4


def test_too_small_input_size_is_a_clear_error():
    with pytest.raises(UserError, match="too small"):
        ssd.build_model("vgg16_ssd300", num_classes=3, input_size=64)


def test_summary_matches_torchvisions_published_size():
    summary = ssd.build_model("mobilenetv3_ssd", num_classes=91).summary()
    assert summary["default_boxes"] == 3234
    assert summary["feature_maps"][0] == [20, 20]
    # torchvision publishes 3,440,060 parameters and 0.58 G multiply-adds for ssdlite320_mobilenet_v3_large.
    assert summary["parameters"] == 3_440_060
    assert summary["gflops"] / 2 == pytest.approx(0.58, abs=0.01)


def test_architecture_added_in_one_file_trains_and_predicts():
    # mobilenetv3_small_ssd is the README's example: one file with a block table, a builder and a config.
    model = ssd.build_model("mobilenetv3_small_ssd", num_classes=3)
    assert model.backbone.out_channels == [288, 288]
    assert model.num_default_boxes == 3234
    out = model.train()(torch.zeros(2, 3, 320, 320, dtype=torch.uint8), [{"boxes": torch.zeros(0, 4)}] * 2)
    out["cls_logits"].sum().backward()
    assert model.classification_headers[0][1].weight.grad is not None
    (result,) = model.predict([torch.zeros(3, 90, 160, dtype=torch.uint8)])
    assert result["result_confs"].shape[1] == 3


def test_an_empty_batch_gives_no_detections(mobilenet):
    assert mobilenet.predict([]) == []
    out = mobilenet.train()(torch.zeros(0, 3, 320, 320, dtype=torch.uint8), [])
    mobilenet.eval()
    assert out["cls_logits"].shape == (0, 3234, 4)
