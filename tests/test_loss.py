"""MultiBoxLoss: values on hand-made cases, hard negative mining, and numerical safety on awkward targets."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import ssd
from ssd.errors import UserError
from ssd.ops.boxes import BoxCoder
from ssd.training.loss import MultiBoxLoss
from ssd.training.matching import HungarianMatcher, IoUMatcher, _picture_extent, pad_targets

NUM_CLASSES = 4
SIZE = 300

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
MATCHERS = {
    "iou": IoUMatcher,
    "hungarian": HungarianMatcher,
    "hungarian_default_boxes": lambda: HungarianMatcher(match_on="default_boxes", top_up_threshold=0.5),
}


def grid_anchors(size: int = SIZE) -> torch.Tensor:
    """Default boxes on a few square grids with two aspect ratios, like SSD's, clipped to the picture."""
    boxes = []
    for cells, scale in ((19, 0.1), (10, 0.25), (5, 0.45), (3, 0.65), (1, 0.9)):
        centres = (torch.arange(cells, dtype=torch.float32) + 0.5) * size / cells
        cy, cx = torch.meshgrid(centres, centres, indexing="ij")
        for ratio in (1.0, 2.0, 0.5):
            w, h = scale * size * math.sqrt(ratio), scale * size / math.sqrt(ratio)
            boxes.append(torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), -1).reshape(-1, 4))
    return torch.cat(boxes).clamp(0, size)


ANCHORS = grid_anchors()


def target(boxes, labels=None, crowd=None) -> dict:
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    n = len(boxes)
    labels = torch.tensor(labels if labels is not None else [1 + i % (NUM_CLASSES - 1) for i in range(n)])
    return {"boxes": boxes, "labels": labels, "iscrowd": torch.tensor(crowd or [False] * n, dtype=torch.bool)}


def random_predictions(batch: int, device="cpu", anchors=ANCHORS):
    cls_logits = torch.randn(batch, len(anchors), NUM_CLASSES, device=device, requires_grad=True)
    bbox_regression = torch.randn(batch, len(anchors), 4, device=device, requires_grad=True)
    return cls_logits, bbox_regression


def perfect_predictions(criterion: MultiBoxLoss, targets, anchors=ANCHORS, confidence: float = 30.0):
    """Offsets that decode exactly onto each default box's matched object, and sure, right class scores."""
    matches = criterion.matcher(anchors, pad_targets(targets, NUM_CLASSES, "cpu"))
    bbox_regression = criterion.box_coder.encode(matches.boxes, anchors.expand_as(matches.boxes))
    cls_logits = F.one_hot(matches.labels.clamp(min=0), NUM_CLASSES).float() * confidence
    return cls_logits.requires_grad_(), bbox_regression.requires_grad_(), matches


TARGETS = [
    target([[10, 10, 90, 120], [150, 160, 290, 280]], [1, 3]),
    target([[100, 40, 180, 70]], [2]),
]


# ---- Values ----


@pytest.mark.parametrize("loc_loss", ["smooth_l1", "l1", "giou"])
def test_perfect_predictions_give_zero_loss_and_full_accuracy(loc_loss):
    criterion = MultiBoxLoss(NUM_CLASSES, loc_loss=loc_loss)
    cls_logits, bbox_regression, matches = perfect_predictions(criterion, TARGETS)
    out = criterion(cls_logits, bbox_regression, ANCHORS, TARGETS)
    assert float(out["loc_loss"]) == pytest.approx(0.0, abs=1e-4)
    assert float(out["conf_loss"]) == pytest.approx(0.0, abs=1e-6)
    assert float(out["train_acc"]) == 1.0
    assert int(out["num_positives"]) == int((matches.labels > 0).sum()) >= 3


def test_encode_decode_round_trip_through_the_loss_coder():
    criterion = MultiBoxLoss(NUM_CLASSES)
    _, bbox_regression, matches = perfect_predictions(criterion, TARGETS)
    decoded = criterion.box_coder.decode(bbox_regression.detach(), ANCHORS)
    positive = matches.labels > 0
    torch.testing.assert_close(decoded[positive], matches.boxes[positive], atol=1e-3, rtol=0)


def test_loss_matches_a_direct_computation():
    criterion = MultiBoxLoss(NUM_CLASSES, neg_pos_ratio=3)
    cls_logits, bbox_regression = random_predictions(2)
    out = criterion(cls_logits, bbox_regression, ANCHORS, TARGETS)

    matches = IoUMatcher()(ANCHORS, pad_targets(TARGETS, NUM_CLASSES, "cpu"))
    coder = BoxCoder()
    loc, conf, correct, counted, num_pos = 0.0, 0.0, 0, 0, 0
    for b in range(2):
        positive = matches.labels[b] > 0
        p = int(positive.sum())
        num_pos += p
        offsets = coder.encode(matches.boxes[b][positive], ANCHORS[positive])
        loc += F.smooth_l1_loss(bbox_regression[b][positive], offsets, reduction="sum").item()
        ce = F.cross_entropy(cls_logits[b], matches.labels[b].clamp(min=0), reduction="none")
        negatives = ce.detach().clone()
        negatives[matches.labels[b] != 0] = -1
        hardest = negatives.sort(descending=True).indices[: 3 * p]
        chosen = positive.clone()
        chosen[hardest] = True
        conf += ce[chosen].sum().item()
        correct += int((cls_logits[b].argmax(-1) == matches.labels[b])[chosen].sum())
        counted += int(chosen.sum())
    assert float(out["loc_loss"]) == pytest.approx(loc / num_pos, rel=1e-5)
    assert float(out["conf_loss"]) == pytest.approx(conf / num_pos, rel=1e-5)
    assert float(out["loss"].detach()) == pytest.approx((loc + conf) / num_pos, rel=1e-5)
    assert float(out["train_acc"]) == pytest.approx(correct / counted)
    assert int(out["num_positives"]) == num_pos


def test_quality_classification_targets_the_iou_of_each_positives_box():
    """cls_loss="quality": a positive's target is its class with probability IoU(decoded box, object) and
    the background with the rest; the negatives and the localisation are those of plain cross-entropy."""
    torch.manual_seed(0)
    plain, quality = MultiBoxLoss(NUM_CLASSES), MultiBoxLoss(NUM_CLASSES, cls_loss="quality")
    cls_logits, bbox_regression = random_predictions(2)
    bbox_regression = (bbox_regression * 0.1).detach().requires_grad_()  # boxes near their default boxes
    ce, qfl = (
        plain(cls_logits, bbox_regression, ANCHORS, TARGETS),
        quality(cls_logits, bbox_regression, ANCHORS, TARGETS),
    )
    assert float(qfl["loc_loss"]) == pytest.approx(float(ce["loc_loss"]))

    matches = IoUMatcher()(ANCHORS, pad_targets(TARGETS, NUM_CLASSES, "cpu"))
    decoded = BoxCoder().decode(bbox_regression.detach(), ANCHORS)
    difference = 0.0
    for b in range(2):
        positive = matches.labels[b] > 0
        iou = torch.diag(ssd.ops.boxes.box_iou(decoded[b][positive], matches.boxes[b][positive]))
        log_p = F.log_softmax(cls_logits[b][positive].detach(), -1)
        on_label = log_p.gather(1, matches.labels[b][positive][:, None]).squeeze(1)
        # soft target minus hard target, on the positives only
        difference += float((-(iou * on_label + (1 - iou) * log_p[:, 0]) + on_label).sum())
    num_pos = int(ce["num_positives"])
    assert float(qfl["conf_loss"]) == pytest.approx(float(ce["conf_loss"]) + difference / num_pos, rel=1e-5)
    qfl["loss"].backward()
    assert torch.isfinite(cls_logits.grad).all() and bbox_regression.grad.abs().sum() > 0
    with pytest.raises(UserError, match="cls_loss must be one of ce, quality, focal; got 'qfl'"):
        MultiBoxLoss(NUM_CLASSES, cls_loss="qfl")


def test_focal_classification_weighs_every_default_box_by_how_wrong_it_is():
    """cls_loss="focal": every default box but the ignored ones learns, with no mining, each cross-entropy
    term weighed by (1 - p)^2 and 0.25 for objects, 0.75 for the background, over the positives."""
    torch.manual_seed(0)
    focal = MultiBoxLoss(NUM_CLASSES, cls_loss="focal")
    cls_logits, bbox_regression = random_predictions(2)
    out = focal(cls_logits, bbox_regression, ANCHORS, TARGETS)
    matches = IoUMatcher()(ANCHORS, pad_targets(TARGETS, NUM_CLASSES, "cpu"))
    labels = matches.labels.reshape(-1)
    probabilities = F.softmax(cls_logits.detach().reshape(-1, NUM_CLASSES), -1)
    p = probabilities.gather(1, labels.clamp(min=0)[:, None]).squeeze(1)  # of each box's label
    alpha = torch.where(labels > 0, 0.25, 0.75)
    expected = (-(alpha * (1 - p) ** 2 * p.log())[labels >= 0]).sum() / (labels > 0).sum()
    assert float(out["conf_loss"]) == pytest.approx(float(expected), rel=1e-5)
    assert float(out["loc_loss"]) == pytest.approx(
        float(MultiBoxLoss(NUM_CLASSES)(cls_logits, bbox_regression, ANCHORS, TARGETS)["loc_loss"])
    )
    out["loss"].backward()
    # no mining: every background box gets a gradient, the more the more confidently it is wrong
    background = matches.labels == 0
    assert (cls_logits.grad[background].abs().sum(-1) > 0).all()
    # an easy background box (p = 0.99) adds over 1000 times less than under plain cross-entropy, a hard one not
    easy, hard = torch.tensor([[6.0, 0.0, 0.0, 0.0]]), torch.tensor([[0.0, 3.0, 0.0, 0.0]])
    background_label = torch.zeros(1, dtype=torch.long)
    for logits, most in ((easy, 1e-3), (hard, 0.75)):
        ratio = MultiBoxLoss._focal(logits, background_label) / F.cross_entropy(logits, background_label)
        assert float(ratio) < most


@pytest.mark.parametrize("ratio", [1, 3, 7])
def test_hard_negative_mining_keeps_the_hardest_negatives_per_image(ratio):
    criterion = MultiBoxLoss(NUM_CLASSES, neg_pos_ratio=ratio)
    cls_logits, bbox_regression, matches = perfect_predictions(criterion, TARGETS)
    cls_logits = cls_logits.detach().clone()
    # Make some background default boxes wrong to a known degree: they are the ones that must be mined.
    background = (matches.labels == 0).nonzero()
    hard = background[torch.randperm(len(background))[:40]]
    cls_logits[hard[:, 0], hard[:, 1], 0] = 0.0
    cls_logits[hard[:, 0], hard[:, 1], 2] = torch.linspace(1, 20, len(hard))
    # Positives scored as background have a higher loss still, yet are not negatives to mine.
    cls_logits[..., 0] += 50.0 * (matches.labels > 0)
    cls_logits.requires_grad_()
    out = criterion(cls_logits, bbox_regression, ANCHORS, TARGETS)
    out["loss"].backward()
    grad = cls_logits.grad.abs().sum(-1)
    for b in range(2):
        num_pos = int((matches.labels[b] > 0).sum())
        mined = (grad[b] > 0) & (matches.labels[b] == 0)
        in_image = hard[hard[:, 0] == b, 1]
        strength = cls_logits[b, in_image, 2]
        expected = in_image[strength.argsort(descending=True)[: ratio * num_pos]]
        # Only the hardest negatives get a gradient: `ratio` per positive, and those of highest loss.
        assert set(mined.nonzero().flatten().tolist()) >= set(expected.tolist())
        assert int(mined.sum()) == ratio * num_pos


def test_normalised_by_positives_so_a_repeated_batch_gives_the_same_loss():
    criterion = MultiBoxLoss(NUM_CLASSES)
    cls_logits, bbox_regression = random_predictions(2)
    once = criterion(cls_logits, bbox_regression, ANCHORS, TARGETS)
    twice = criterion(
        torch.cat((cls_logits, cls_logits)),
        torch.cat((bbox_regression, bbox_regression)),
        ANCHORS,
        TARGETS * 2,
    )
    for key in ("loss", "loc_loss", "conf_loss", "train_acc"):
        assert float(twice[key].detach()) == pytest.approx(float(once[key].detach()), rel=1e-5)
    assert int(twice["num_positives"]) == 2 * int(once["num_positives"])


def test_ignored_default_boxes_do_not_count():
    criterion = MultiBoxLoss(NUM_CLASSES)
    targets = [target([[0, 0, 150, 150], [200, 200, 280, 280]], [1, 2], [True, False])]
    cls_logits, bbox_regression = random_predictions(1)
    out = criterion(cls_logits, bbox_regression, ANCHORS, targets)
    out["loss"].backward()
    matches = criterion.matcher(ANCHORS, pad_targets(targets, NUM_CLASSES, "cpu"))
    ignored = matches.ignored[0]
    assert ignored.sum() > 5
    assert (cls_logits.grad[0][ignored] == 0).all()
    assert (bbox_regression.grad[0][~(matches.labels[0] > 0)] == 0).all()


def test_hungarian_matcher_in_the_loss_gives_one_positive_per_object():
    criterion = MultiBoxLoss(NUM_CLASSES, matcher=HungarianMatcher())
    cls_logits, bbox_regression = random_predictions(2)
    out = criterion(cls_logits, bbox_regression, ANCHORS, TARGETS)
    assert int(out["num_positives"]) == 3
    out["loss"].backward()
    assert torch.isfinite(cls_logits.grad).all()
    # The predictions only steer the matching: no gradient flows through the assignment's cost.
    assert int((bbox_regression.grad.abs().sum(-1) > 0).sum()) == 3


# ---- Numerical safety ----


def awkward_targets() -> dict[str, list[dict]]:
    generator = torch.Generator().manual_seed(3)
    xy = torch.rand(100, 2, generator=generator) * (SIZE - 40)
    wh = torch.rand(100, 2, generator=generator) * 60 + 1
    crowded = torch.cat((xy, (xy + wh).clamp(max=SIZE)), 1)
    return {
        "empty": [target([]), target([])],
        "one_empty": [target([]), target([[20, 30, 80, 90]])],
        "whole_picture": [target([[0, 0, SIZE, SIZE]]), target([[0, 0, SIZE, SIZE]])],
        "one_pixel": [target([[150, 150, 151, 151]]), target([[0, 0, 1, 1]])],
        "border": [
            target([[0, 0, 30, SIZE], [SIZE - 2, 0, SIZE, 50], [0, SIZE - 5, SIZE, SIZE]]),
            target([[SIZE - 40, SIZE - 40, SIZE, SIZE]]),
        ],
        "hundred_objects": [target(crowded.tolist()), target([[10, 10, 50, 50]])],
        "only_crowd": [target([[0, 0, 200, 200]], [1], [True]), target([])],
    }


@pytest.mark.parametrize("case", list(awkward_targets()))
@pytest.mark.parametrize("loc_loss", ["smooth_l1", "giou"])
@pytest.mark.parametrize("matcher", list(MATCHERS))
def test_loss_and_gradients_are_finite(case, loc_loss, matcher):
    targets = awkward_targets()[case]
    criterion = MultiBoxLoss(NUM_CLASSES, matcher=MATCHERS[matcher](), loc_loss=loc_loss)
    cls_logits, bbox_regression = random_predictions(len(targets))
    out = criterion(cls_logits, bbox_regression, ANCHORS, targets)
    assert all(torch.isfinite(value).all() for value in out.values())
    out["loss"].backward()
    assert torch.isfinite(cls_logits.grad).all() and torch.isfinite(bbox_regression.grad).all()
    # Every image teaches something: background at least, objects where it has them.
    assert float(out["conf_loss"]) > 0
    assert (cls_logits.grad.abs().sum((1, 2)) > 0).all()
    objects = sum(int((~t["iscrowd"]).sum()) for t in targets)
    assert (int(out["num_positives"]) > 0) == (objects > 0)
    assert (float(out["loc_loss"]) > 0) == (objects > 0)


def test_a_batch_without_objects_trains_the_background_on_a_sensible_scale():
    criterion = MultiBoxLoss(NUM_CLASSES, negatives_per_empty_image=16)
    cls_logits, bbox_regression = random_predictions(4)
    empty = criterion(cls_logits, bbox_regression, ANCHORS, [target([])] * 4)
    empty["loss"].backward()
    mined = (cls_logits.grad.abs().sum(-1) > 0).sum(1)
    assert mined.tolist() == [16] * 4
    assert float(empty["loc_loss"]) == 0 and int(empty["num_positives"]) == 0
    # The loss per mined negative times the 3 negatives per positive: the scale of an ordinary batch.
    ce = F.cross_entropy(
        cls_logits.detach().reshape(-1, NUM_CLASSES),
        torch.zeros(4 * len(ANCHORS), dtype=torch.long),
        reduction="none",
    )
    hardest = ce.view(4, -1).topk(16, dim=1).values
    assert float(empty["conf_loss"]) == pytest.approx(float(hardest.mean()) * 3, rel=1e-5)
    assert float(bbox_regression.grad.abs().sum()) == 0


def test_extreme_predictions_stay_finite():
    criterion = MultiBoxLoss(NUM_CLASSES, loc_loss="giou")
    cls_logits = torch.full((2, len(ANCHORS), NUM_CLASSES), 1e4, requires_grad=True)
    bbox_regression = torch.full((2, len(ANCHORS), 4), 1e3, requires_grad=True)
    out = criterion(cls_logits, bbox_regression, ANCHORS, TARGETS)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and torch.isfinite(bbox_regression.grad).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_outputs_give_a_float32_loss(dtype):
    # Under autocast the headers give half-precision outputs; pixel areas (320^2) would overflow float16.
    criterion = MultiBoxLoss(NUM_CLASSES, matcher=HungarianMatcher(top_up_threshold=0.5))
    cls_logits = torch.randn(2, len(ANCHORS), NUM_CLASSES, dtype=dtype, requires_grad=True)
    bbox_regression = torch.randn(2, len(ANCHORS), 4, dtype=dtype, requires_grad=True)
    out = criterion(cls_logits, bbox_regression, ANCHORS, TARGETS)  # the model keeps its anchors in float32
    out["loss"].backward()
    assert out["loss"].dtype == torch.float32 and torch.isfinite(out["loss"])
    assert torch.isfinite(cls_logits.grad).all() and torch.isfinite(bbox_regression.grad).all()
    reference = criterion(cls_logits.float(), bbox_regression.float(), ANCHORS, TARGETS)
    assert int(out["num_positives"]) == int(reference["num_positives"])


@pytest.mark.parametrize("device", DEVICES)
def test_runs_on_the_device_of_the_predictions(device):
    criterion = MultiBoxLoss(NUM_CLASSES, matcher=HungarianMatcher(top_up_threshold=0.5))
    cls_logits, bbox_regression = random_predictions(2, device=device)
    out = criterion(cls_logits, bbox_regression, ANCHORS.to(device), TARGETS)  # targets stay on the CPU
    out["loss"].backward()
    assert out["loss"].device.type == device and torch.isfinite(cls_logits.grad).all()


# ---- Arguments ----


def test_num_classes_counts_the_background():
    with pytest.raises(UserError, match="counts the background"):
        MultiBoxLoss(1)
    criterion = MultiBoxLoss(NUM_CLASSES + 1)
    cls_logits, bbox_regression = random_predictions(2)
    with pytest.raises(UserError, match="num_classes=5"):
        criterion(cls_logits, bbox_regression, ANCHORS, TARGETS)


def test_label_outside_the_classes_is_refused():
    criterion = MultiBoxLoss(NUM_CLASSES)
    cls_logits, bbox_regression = random_predictions(1)
    with pytest.raises(UserError, match="label 4, outside 1..3"):
        criterion(cls_logits, bbox_regression, ANCHORS, [target([[0, 0, 10, 10]], [4])])


@pytest.mark.parametrize(
    "kwargs", [{"loc_loss": "mse"}, {"neg_pos_ratio": 0}, {"negatives_per_empty_image": -1}]
)
def test_bad_arguments_are_refused(kwargs):
    with pytest.raises(UserError):
        MultiBoxLoss(NUM_CLASSES, **kwargs)


def test_shapes_that_do_not_fit_are_refused():
    criterion = MultiBoxLoss(NUM_CLASSES)
    cls_logits, bbox_regression = random_predictions(2)
    with pytest.raises(UserError, match="shapes do not fit"):
        criterion(cls_logits, bbox_regression, ANCHORS[:-1], TARGETS)
    with pytest.raises(UserError, match="3 targets for a batch of 2"):
        criterion(cls_logits, bbox_regression, ANCHORS, TARGETS + TARGETS[:1])


# ---- Every architecture ----


@pytest.mark.slow
@pytest.mark.parametrize("arch", ssd.available_architectures())
def test_every_architecture_default_boxes_train(arch):
    # The default boxes of each registered architecture (which reach past the picture at its borders) match
    # objects of every size, and the loss built for the model is finite with gradients on its outputs.
    model = ssd.build_model(arch, num_classes=NUM_CLASSES)
    height, width = model.config.input_size
    targets = [
        target([[0, 0, width, height], [width / 2, height / 2, width / 2 + 8, height / 2 + 8]]),
        target([[width - 40, 0, width, 30]]),
    ]
    criterion = MultiBoxLoss.for_model(model, matcher=HungarianMatcher(top_up_threshold=0.5))
    cls_logits, bbox_regression = random_predictions(2, anchors=model.anchors)
    out = criterion(cls_logits, bbox_regression, model.anchors, targets)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and torch.isfinite(bbox_regression.grad).all()
    assert int(out["num_positives"]) >= 3
    assert criterion.box_coder is model.box_coder
    # The Hungarian cost measures L1 in units of the picture, whose size it reads off the default boxes.
    extent = _picture_extent(model.anchors)
    assert torch.allclose(extent, torch.tensor([width, height], dtype=extent.dtype), rtol=0.05)


@pytest.mark.parametrize("arch, size", [("mobilenetv3_ssd", 96), ("vgg16_ssd300", 300)])
def test_focal_training_starts_the_default_boxes_on_the_background_prior(arch, size):
    """RetinaNet's initialisation: a fresh model scores the background at about 0.99 and each of the K object
    classes at about 0.01 / K, with SSDLite's separable headers and SSD's plain convolutions alike."""
    from ssd.models.registry import build_model
    from ssd.training.loss import start_with_background_prior

    torch.manual_seed(0)
    model = build_model(arch, num_classes=NUM_CLASSES).eval()
    with torch.no_grad():
        before = model.head_outputs(torch.rand(1, 3, size, size))[0].softmax(-1)
        start_with_background_prior(model)
        probabilities = model.head_outputs(torch.rand(1, 3, size, size))[0].softmax(-1)
    assert float(before[..., 0].median()) < 0.5  # zero biases: about 1 / (K + 1)
    assert float(probabilities[..., 0].median()) == pytest.approx(0.99, abs=0.002)
    assert float(probabilities[..., 1:].mean()) == pytest.approx(0.01 / 3, rel=0.3)
