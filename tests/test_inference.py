"""The inference speed-ups keep results: BatchNorm folding, the IoU kernel, the pruned post-processing."""

import pytest
import torch
from conftest import FIXTURES, shared_path
from test_postprocess import ANCHORS, naive_postprocess

import ssd
from ssd.models.fold import (
    find_conv_batchnorm_pairs,
    fold_batchnorm_into_conv,
    fuse_batchnorm,
    prepare_for_inference,
)
from ssd.models.postprocess import PostProcessor
from ssd.ops.boxes import box_iou
from ssd.ops.nms import iou_above


def randomise_batchnorm(model: torch.nn.Module) -> None:
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(n, generator=generator) * 0.1)


def test_folding_one_layer_is_exact_in_eval_mode():
    conv = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
    bn = torch.nn.BatchNorm2d(8)
    randomise_batchnorm(bn)
    bn.eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(fold_batchnorm_into_conv(conv, bn)(x), bn(conv(x)), atol=1e-5)


@pytest.mark.parametrize("arch,size", [("mobilenetv3_ssd", 320), ("resnet50_ssd300", 300)])
def test_fused_model_computes_the_same_outputs(arch, size):
    model = ssd.build_model(arch, num_classes=5).eval()
    randomise_batchnorm(model)
    count = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    fused = fuse_batchnorm(model)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules()) == 0
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == count  # original untouched
    batch = torch.randn(1, 3, size, size)
    with torch.no_grad():
        for ours, theirs in zip(model.head_outputs(batch), fused.head_outputs(batch), strict=True):
            assert (ours - theirs).abs().max() <= 1e-4 * max(1.0, float(ours.abs().max()))


def test_pairs_are_found_through_the_data_flow_not_names():
    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.first = torch.nn.Conv2d(3, 4, 1)
            self.norm_of_second = torch.nn.BatchNorm2d(4)
            self.second = torch.nn.Conv2d(4, 4, 1)
            self.norm_of_first = torch.nn.BatchNorm2d(4)

        def forward(self, x):
            return self.norm_of_second(self.second(self.norm_of_first(self.first(x))))

    pairs = find_conv_batchnorm_pairs(Odd(), torch.zeros(1, 3, 4, 4))
    assert sorted(pairs) == [("first", "norm_of_first"), ("second", "norm_of_second")]


@pytest.mark.parametrize(
    "file_name,arch,num_classes",
    [("ssdlite320_mobilenet_v3_large.pt", "mobilenetv3_ssd", 91), ("ssd300_vgg16.pt", "vgg16_ssd300", 21)],
)
def test_prepared_fixture_model_keeps_torchvision_parity(file_name, arch, num_classes):
    """Folded BatchNorm and channels-last: still torchvision's numbers."""
    path = shared_path(FIXTURES / file_name)
    fixture = torch.load(path, weights_only=True)
    model = ssd.build_model(arch, num_classes=num_classes)
    model.load_torchvision(path)
    prepared = prepare_for_inference(model)
    with torch.no_grad():
        cls_logits, bbox_regression = prepared.head_outputs(fixture["preprocessed"])
    assert (cls_logits - fixture["cls_logits"]).abs().max() < 1e-4
    assert (bbox_regression - fixture["bbox_regression"]).abs().max() < 1e-4


def test_iou_kernel_equals_box_iou_exactly():
    generator = torch.Generator().manual_seed(0)
    corner = torch.rand(3, 50, 2, generator=generator) * 100
    boxes = torch.cat((corner, corner + torch.rand(3, 50, 2, generator=generator) * 40), dim=-1)
    boxes[0, :5, 2:] = boxes[0, :5, :2]  # degenerate boxes too
    for threshold in (0.1, 0.45, 0.7):
        assert torch.equal(iou_above(boxes, threshold), box_iou(boxes, boxes) > threshold)


@pytest.mark.parametrize("detections", [2, 10, 40])
def test_post_processing_falls_back_exactly_when_the_first_round_keeps_too_few(detections):
    """Boxes crowded on a few spots: NMS removes most candidates, so the first pruning round is not enough."""
    generator = torch.Generator().manual_seed(detections)
    cls_logits = torch.randn(len(ANCHORS), 5, generator=generator) * 3
    bbox_regression = torch.randn(len(ANCHORS), 4, generator=generator) * 0.05
    crowded = ANCHORS.clone()
    crowded[:] = ANCHORS[torch.randint(0, 3, (len(ANCHORS),), generator=generator)]
    post = PostProcessor(0.01, 0.5, detections, 30)
    (result,) = post(cls_logits[None], bbox_regression[None], crowded, (128, 128))
    boxes, scores, labels = naive_postprocess(cls_logits, bbox_regression, crowded, 0.01, 0.5, detections, 30)
    assert torch.equal(result["result_labels"], labels)
    assert torch.allclose(result["result_scores"], scores)
    assert torch.allclose(result["result_boxes"], boxes, atol=1e-5)


@pytest.mark.parametrize("layout", ["chw", "hwc_view", "float_batch"])
def test_preprocess_resizes_exactly_like_a_three_channel_bilinear_resize(layout):
    from ssd.models.preprocess import Preprocess

    generator = torch.Generator().manual_seed(0)
    hwc = torch.randint(0, 256, (123, 217, 3), dtype=torch.uint8, generator=generator)
    chw = hwc.permute(2, 0, 1)
    picture = {"chw": chw.contiguous(), "hwc_view": chw, "float_batch": chw[None].float() / 255}[layout]
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    batch, sizes = Preprocess((64, 80), mean, std)([picture] if layout != "float_batch" else picture)
    expected = torch.nn.functional.interpolate(
        chw[None].float() / 255, size=(64, 80), mode="bilinear", align_corners=False
    )
    expected = (expected - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert sizes == [(123, 217)]
    # Dividing by 255 after the (linear) resize instead of before changes only the last bits.
    assert (batch - expected).abs().max() < 1e-5


@pytest.mark.parametrize("layout", ["chw", "hwc_view", "float", "grey", "rgba", "batch"])
def test_the_eight_bit_resize_is_within_one_level_of_the_float_resize(layout):
    """What INT8 files' predictors resize with: each value at most one of 255 levels from the float resize,
    in channels-last memory (so its HWC view needs no copy); float pictures are rounded to 8 bits first."""
    from ssd.models.preprocess import Preprocess

    generator = torch.Generator().manual_seed(1)
    hwc = torch.randint(0, 256, (123, 217, 4), dtype=torch.uint8, generator=generator)
    chw = hwc[..., :3].permute(2, 0, 1)
    pictures = {
        "chw": [chw.contiguous()],
        "hwc_view": [chw],
        "float": [chw.float() / 255],
        "grey": [chw[:1]],
        "rgba": [hwc.numpy()],
        "batch": chw[None].float() / 255,
    }[layout]
    expected_input = chw[:1].expand(3, -1, -1) if layout == "grey" else chw
    preprocess = Preprocess((64, 80), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), eight_bit=True)
    batch, sizes = preprocess.resized_uint8(pictures)
    expected = torch.nn.functional.interpolate(
        expected_input[None].float(), size=(64, 80), mode="bilinear", align_corners=False
    )
    assert batch.dtype == torch.uint8 and batch.shape == (1, 3, 64, 80) and sizes == [(123, 217)]
    assert batch.is_contiguous(memory_format=torch.channels_last)
    assert (batch.float() - expected).abs().max() <= 1.0
    floats, _ = preprocess(pictures)  # what an INT8 onnxruntime file is given: the same values in [0, 1]
    assert torch.equal(floats, batch.float() / 255)


def test_the_eight_bit_resize_keeps_pictures_of_the_input_size_as_they_are():
    from ssd.models.preprocess import Preprocess

    picture = torch.randint(
        0, 256, (3, 64, 80), dtype=torch.uint8, generator=torch.Generator().manual_seed(2)
    )
    preprocess = Preprocess((64, 80), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), eight_bit=True)
    batch, _ = preprocess.resized_uint8([picture, picture.float() / 255])
    assert torch.equal(batch[0], picture) and torch.equal(batch[1], picture)
    empty, sizes = preprocess.resized_uint8([])
    assert empty.shape == (0, 3, 64, 80) and sizes == []


def test_thread_count_is_restored_after_a_block_with_fewer_threads():
    from ssd.deploy.threads import torch_threads

    before = torch.get_num_threads()
    with pytest.raises(RuntimeError), torch_threads(1):
        assert torch.get_num_threads() == 1
        raise RuntimeError("the count must come back even after an error")
    assert torch.get_num_threads() == before


def _same_network(model, form, pictures) -> bool:
    """The form computes the model's (eval-mode) header outputs, up to the rounding of folding."""
    with torch.no_grad():
        was_training = model.training
        expected = model.eval().head_outputs(model.preprocess(pictures)[0])
        model.train(was_training)
        got = form.head_outputs(form.preprocess(pictures)[0])
    return all(torch.allclose(a, b, atol=1e-3, rtol=1e-3) for a, b in zip(expected, got, strict=True))


def test_predict_runs_the_inference_form_and_remakes_it_when_the_weights_change():
    model = ssd.build_model("mobilenetv3_ssd", num_classes=3, input_size=128).train()
    randomise_batchnorm(model)
    generator = torch.Generator().manual_seed(1)
    pictures = [torch.randint(0, 256, (3, 120, 160), dtype=torch.uint8, generator=generator)]

    detections = model.predict(pictures)
    form = model.inference_form()
    assert model.training  # predict leaves the model's mode alone
    assert form is not model and form.is_inference_form and form.inference_form() is form
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in form.modules())  # folded
    assert "is_inference_form" not in model.__dict__
    assert set(model.state_dict()) == set(ssd.build_model("mobilenetv3_ssd", num_classes=3).state_dict())
    with torch.no_grad():
        assert all(
            torch.equal(a["result_scores"], b["result_scores"])
            for a, b in zip(detections, form(pictures), strict=True)
        )
    assert _same_network(model, form, pictures)
    assert model.inference_form() is form  # kept while the weights stay

    # An optimizer step changes the weights in place: the next predict remakes the form, which follows them.
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    outputs = model.eval().head_outputs(model.preprocess(pictures)[0])
    (outputs[0].sum() + outputs[1].sum()).backward()
    optimizer.step()
    assert model.inference_form() is not form
    assert _same_network(model, model.inference_form(), pictures)
    assert not _same_network(model, form, pictures)  # the old form was really out of date

    # So does load_state_dict (a resumed run, another checkpoint).
    form = model.inference_form()
    model.load_state_dict(ssd.build_model("mobilenetv3_ssd", num_classes=3, input_size=128).state_dict())
    assert model.inference_form() is not form


def test_predict_follows_replaced_weights_new_settings_and_inference_built_models():
    model = ssd.build_model("mobilenetv3_ssd", num_classes=3, input_size=128).eval()
    randomise_batchnorm(model)
    picture = torch.randint(
        0, 256, (3, 120, 160), dtype=torch.uint8, generator=torch.Generator().manual_seed(2)
    )
    model.postprocessor.score_threshold = 0.0
    many = len(model.predict([picture])[0]["result_scores"])
    model.postprocessor.score_threshold = 0.99  # a setting changed after the form was made applies at once
    assert len(model.predict([picture])[0]["result_scores"]) < many

    form = model.inference_form()
    weight = next(model.parameters())
    weight.data = weight.data * 2  # replaced, not changed in place: no version bump, a new storage
    assert model.inference_form() is not form

    with torch.inference_mode():  # a model built and used under inference mode (a server's start-up, say)
        built = ssd.build_model("mobilenetv3_ssd", num_classes=3, input_size=128).eval()
        assert isinstance(built.predict([picture]), list)
