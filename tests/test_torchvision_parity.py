"""Our models against torchvision's exact numbers (../shared/fixtures/torchvision, see its README)."""

import numpy as np
import pytest
import torch
from conftest import BCCD, FIXTURES, shared_path

import ssd
from ssd.ops.boxes import box_iou

CASES = [
    ("ssdlite320_mobilenet_v3_large.pt", "mobilenetv3_ssd", 91),
    ("ssd300_vgg16.pt", "vgg16_ssd300", 21),
]


@pytest.fixture(scope="module", params=CASES, ids=[c[1] for c in CASES])
def loaded(request):
    file_name, arch, num_classes = request.param
    path = shared_path(FIXTURES / file_name)
    fixture = torch.load(path, weights_only=True)
    model = ssd.build_model(arch, num_classes=num_classes)
    model.load_torchvision(path)
    return model.eval(), fixture


def test_header_outputs_match(loaded):
    model, fixture = loaded
    with torch.no_grad():
        cls_logits, bbox_regression = model.head_outputs(fixture["preprocessed"])
    assert (cls_logits - fixture["cls_logits"]).abs().max() < 1e-4
    assert (bbox_regression - fixture["bbox_regression"]).abs().max() < 1e-4


def test_feature_maps_and_default_boxes_match(loaded):
    model, fixture = loaded
    assert model.feature_sizes == [tuple(s) for s in fixture["feature_shapes"].tolist()]
    assert model.anchors.shape == fixture["anchors_xyxy"].shape
    assert (model.anchors - fixture["anchors_xyxy"]).abs().max() < 1e-4


def test_preprocessing_matches(loaded):
    model, fixture = loaded
    picture = fixture["image_uint8_hwc"]
    batch, sizes = model.preprocess([picture.permute(2, 0, 1)])
    assert sizes == [tuple(picture.shape[:2])]
    assert (batch - fixture["preprocessed"]).abs().max() < 1e-4
    # The same picture as numpy HWC gives the same batch.
    batch_np, _ = model.preprocess([picture.numpy()])
    assert torch.equal(batch, batch_np)


def test_postprocessor_matches(loaded):
    model, fixture = loaded
    score, nms_iou, detections, topk = fixture["post_params"].tolist()
    post = ssd.PostProcessor(score, nms_iou, int(detections), int(topk))
    height, width = fixture["image_uint8_hwc"].shape[:2]
    (result,) = post(
        fixture["post_cls_logits"],
        fixture["post_bbox_regression"],
        fixture["anchors_xyxy"],
        tuple(fixture["preprocessed"].shape[-2:]),
        [(height, width)],
    )
    assert torch.equal(result["result_labels"], fixture["post_labels"])
    assert (result["result_boxes"] - fixture["post_boxes"]).abs().max() < 1e-3
    assert (result["result_scores"] - fixture["post_scores"]).abs().max() < 1e-6
    # The model's own config carries the same post-processing settings as torchvision's model.
    config = model.config
    assert (config.score_threshold, config.nms_threshold) == pytest.approx((score, nms_iou))
    assert (config.detections_per_image, config.topk_candidates) == (int(detections), int(topk))


@pytest.mark.slow
def test_trained_model_reproduces_torchvision_detections_on_bccd():
    from PIL import Image

    fixture_path = shared_path(FIXTURES / "ssdlite320_bccd_trained.pt")
    images_dir = shared_path(BCCD / "JPEGImages")
    fixture = torch.load(fixture_path, weights_only=True)
    model = ssd.build_model("mobilenetv3_ssd", num_classes=4, class_names=fixture["class_names"])
    model.load_torchvision(fixture_path)
    model.eval()
    total = matched = 0
    for start in range(0, len(fixture["test_ids"]), 8):
        ids = fixture["test_ids"][start : start + 8]
        pictures = [np.asarray(Image.open(images_dir / f"{i}.jpg").convert("RGB")) for i in ids]
        for ours, theirs in zip(
            model.predict(pictures), fixture["detections"][start : start + 8], strict=True
        ):
            total += len(theirs["scores"])
            if len(theirs["scores"]) == 0 or len(ours["result_scores"]) == 0:
                continue
            iou = box_iou(theirs["boxes"], ours["result_boxes"])
            same = (
                (iou >= 0.99)
                & (theirs["labels"][:, None] == ours["result_labels"][None])
                & ((theirs["scores"][:, None] - ours["result_scores"][None]).abs() <= 1e-3)
            )
            matched += int(same.any(dim=1).sum())
    assert total > 1000
    assert matched / total >= 0.99, f"{matched}/{total} torchvision detections reproduced"
