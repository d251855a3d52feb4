"""Matching rules of the IoU (SSD), ATSS and Hungarian matchers on hand-made and random cases."""

from __future__ import annotations

import itertools

import pytest
import torch

from ssd.errors import UserError
from ssd.ops.boxes import box_iou
from ssd.training.matching import (
    BACKGROUND,
    IGNORED,
    ATSSMatcher,
    HungarianMatcher,
    IoUMatcher,
    pad_targets,
)

NUM_CLASSES = 5


def target(boxes, labels=None, crowd=None) -> dict:
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    n = len(boxes)
    labels = torch.tensor(labels if labels is not None else [1] * n, dtype=torch.int64)
    crowd = torch.tensor(crowd if crowd is not None else [False] * n, dtype=torch.bool)
    return {"boxes": boxes, "labels": labels, "iscrowd": crowd}


def match(matcher, anchors, targets, **predictions):
    anchors = torch.tensor(anchors, dtype=torch.float32)
    return matcher(anchors, pad_targets(targets, NUM_CLASSES, "cpu"), **predictions)


def random_boxes(n: int, size: float = 100.0, generator=None) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=generator) * size * 0.8
    wh = torch.rand(n, 2, generator=generator) * size * 0.4 + 2
    return torch.cat((xy, xy + wh), dim=1)


# ---- IoUMatcher: hand-made cases ----


def test_object_under_threshold_still_gets_its_best_default_box():
    # IoU with the first default box is 100/225 = 0.44 < 0.5; with the second it is 0.
    m = match(IoUMatcher(), [[0, 0, 10, 10], [20, 20, 30, 30]], [target([[0, 0, 15, 15]], [3])])
    assert m.gt_index.tolist() == [[0, BACKGROUND]]
    assert m.labels.tolist() == [[3, 0]]
    assert m.boxes[0, 0].tolist() == [0, 0, 15, 15]
    assert m.boxes[0, 1].tolist() == [20, 20, 30, 30]  # non-positives carry their default box


def test_threshold_is_inclusive_and_lower_overlaps_are_background():
    # Default boxes with IoU exactly 0.5, just under 0.5, and 1 with the object [0, 0, 10, 10].
    anchors = [[0, 0, 10, 5], [0, 0, 10, 4.9], [0, 0, 10, 10]]
    m = match(IoUMatcher(), anchors, [target([[0, 0, 10, 10]], [2])])
    assert m.labels.tolist() == [[2, 0, 2]]


def test_two_objects_competing_for_one_default_box_both_get_one():
    # Both objects overlap default box 0 most (IoU 1.0 and 0.82); the second moves to default box 1
    # (IoU 0.43, under the threshold) instead of being left without a positive.
    anchors = [[0, 0, 10, 10], [5, 0, 15, 10], [50, 50, 60, 60]]
    m = match(IoUMatcher(), anchors, [target([[0, 0, 10, 10], [1, 0, 11, 10]], [1, 2])])
    assert m.gt_index.tolist() == [[0, 1, BACKGROUND]]
    assert m.labels.tolist() == [[1, 2, 0]]


def test_default_box_above_threshold_for_two_objects_takes_the_closer_one():
    # Default box 2 overlaps object 0 with IoU 0.54 and object 1 with IoU 0.82; it is neither object's best.
    anchors = [[0, 0, 10, 10], [4, 0, 14, 10], [3, 0, 13, 10], [50, 0, 60, 10]]
    objects = [[0, 0, 10, 10], [4, 0, 14, 10]]
    iou = box_iou(torch.tensor(anchors[2:3], dtype=torch.float32), torch.tensor(objects, dtype=torch.float32))
    assert 0.5 <= float(iou[0, 0]) < float(iou[0, 1])
    m = match(IoUMatcher(), anchors, [target(objects, [1, 2])])
    assert m.gt_index.tolist() == [[0, 1, 1, BACKGROUND]]
    assert m.labels.tolist() == [[1, 2, 2, 0]]


def test_crowd_box_is_never_positive_and_default_boxes_inside_it_are_ignored():
    anchors = [
        [0, 0, 10, 10],  # inside the crowd box entirely, IoU 1 with it
        [0, 0, 10, 20],  # half inside the crowd box: ignored
        [0, 0, 10, 40],  # a quarter inside: ordinary background
        [50, 50, 60, 60],  # exactly on the ordinary object
        [100, 100, 110, 110],  # far from everything
    ]
    targets = [target([[0, 0, 10, 10], [50, 50, 60, 60]], [4, 2], [True, False])]
    m = match(IoUMatcher(), anchors, targets)
    assert m.gt_index.tolist() == [[IGNORED, IGNORED, BACKGROUND, 1, BACKGROUND]]
    assert m.labels.tolist() == [[-1, -1, 0, 2, 0]]
    assert m.ignored.tolist() == [[True, True, False, False, False]]


def test_object_inside_a_crowd_box_keeps_its_positives():
    anchors = [[0, 0, 10, 10], [20, 20, 30, 30]]
    targets = [target([[0, 0, 100, 100], [0, 0, 10, 10]], [1, 3], [True, False])]
    m = match(IoUMatcher(), anchors, targets)
    assert m.labels.tolist() == [[3, -1]]


def test_only_crowd_boxes_give_no_positive():
    m = match(IoUMatcher(), [[0, 0, 10, 10], [50, 50, 60, 60]], [target([[0, 0, 10, 10]], [1], [True])])
    assert m.labels.tolist() == [[-1, 0]]


def test_no_ground_truth_makes_every_default_box_background():
    anchors = [[0, 0, 10, 10], [5, 5, 20, 20]]
    for targets in ([target([])], [target([]), target([])]):
        m = match(IoUMatcher(), anchors, targets)
        assert (m.gt_index == BACKGROUND).all() and (m.labels == 0).all()
        assert m.boxes.shape == (len(targets), 2, 4)


def test_images_without_objects_next_to_images_with_objects():
    anchors = [[0, 0, 10, 10], [50, 50, 60, 60]]
    m = match(IoUMatcher(), anchors, [target([]), target([[50, 50, 60, 60]], [2]), target([])])
    assert m.labels.tolist() == [[0, 0], [0, 2], [0, 0]]


def test_degenerate_object_overlapping_nothing_gets_no_default_box():
    m = match(IoUMatcher(), [[0, 0, 10, 10], [20, 20, 30, 30]], [target([[5, 5, 5, 9], [20, 20, 30, 30]])])
    assert m.gt_index.tolist() == [[BACKGROUND, 1]]


def test_more_objects_than_default_boxes():
    anchors = [[0, 0, 10, 10], [10, 0, 20, 10]]
    objects = [[0, 0, 10, 10], [1, 0, 11, 10], [10, 0, 20, 10], [11, 0, 21, 10]]
    m = match(IoUMatcher(), anchors, [target(objects, [1, 2, 3, 4])])
    assert m.gt_index.tolist() == [[0, 2]]


# ---- IoUMatcher: rules checked on random batches ----


@pytest.mark.parametrize("seed", range(5))
def test_iou_matcher_rules_on_random_batches(seed):
    generator = torch.Generator().manual_seed(seed)
    anchors = random_boxes(60, generator=generator)
    counts = [0, 1, 4, 9]
    targets = [
        {"boxes": random_boxes(n, generator=generator), "labels": torch.randint(1, NUM_CLASSES, (n,))}
        for n in counts
    ]
    m = IoUMatcher()(anchors, pad_targets(targets, NUM_CLASSES, "cpu"))
    for b, t in enumerate(targets):
        gt_index = m.gt_index[b]
        if len(t["boxes"]) == 0:
            assert (gt_index == BACKGROUND).all()
            continue
        iou = box_iou(anchors, t["boxes"])  # (A, N)
        best_iou, best_gt = iou.max(1)
        # Every object has a default box; those given one under the threshold each have their own.
        assert set(gt_index[gt_index >= 0].tolist()) == set(range(len(t["boxes"])))
        # Every default box over the threshold is positive, and it is matched to its best object unless that
        # default box was the one an object claimed as its best.
        over = best_iou >= 0.5
        assert (gt_index[over] >= 0).all()
        forced = gt_index >= 0
        forced &= iou[torch.arange(len(anchors)), gt_index.clamp(min=0)] < best_iou
        assert forced.sum() <= len(t["boxes"])
        assert (gt_index[over & ~forced] == best_gt[over & ~forced]).all()
        # Nothing under the threshold is positive except one default box per object.
        under_positive = (~over) & (gt_index >= 0)
        assert len(set(gt_index[under_positive].tolist())) == int(under_positive.sum())
        # Labels follow the matched object.
        positive = gt_index >= 0
        assert (m.labels[b][positive] == t["labels"][gt_index[positive]]).all()
        assert (m.labels[b][~positive] == 0).all()


def test_batched_matching_equals_matching_one_image_at_a_time():
    generator = torch.Generator().manual_seed(7)
    anchors = random_boxes(80, generator=generator)
    targets = [
        {"boxes": random_boxes(n, generator=generator), "labels": torch.randint(1, NUM_CLASSES, (n,))}
        for n in (3, 0, 7, 1)
    ]
    for matcher in (IoUMatcher(), HungarianMatcher(match_on="default_boxes", top_up_threshold=0.5)):
        batched = matcher(anchors, pad_targets(targets, NUM_CLASSES, "cpu"))
        for b, t in enumerate(targets):
            single = matcher(anchors, pad_targets([t], NUM_CLASSES, "cpu"))
            assert torch.equal(batched.gt_index[b], single.gt_index[0])
            assert torch.equal(batched.labels[b], single.labels[0])
            assert torch.equal(batched.boxes[b], single.boxes[0])


# ---- HungarianMatcher ----


def brute_force_cost(cost: torch.Tensor) -> float:
    """Least total cost of giving each column its own row, by trying every assignment."""
    num_rows, num_cols = cost.shape
    columns = range(num_cols)
    return min(
        sum(float(cost[r, c]) for r, c in zip(rows, columns, strict=True))
        for rows in itertools.permutations(range(num_rows), num_cols)
    )


@pytest.mark.parametrize("match_on", ["predictions", "default_boxes"])
@pytest.mark.parametrize("seed", range(4))
def test_hungarian_matches_brute_force_assignment(match_on, seed):
    generator = torch.Generator().manual_seed(seed)
    num_anchors, counts = 7, (3, 4, 1)
    anchors = random_boxes(num_anchors, generator=generator)
    targets = [
        {"boxes": random_boxes(n, generator=generator), "labels": torch.randint(1, NUM_CLASSES, (n,))}
        for n in counts
    ]
    pred_boxes = torch.stack([random_boxes(num_anchors, generator=generator) for _ in counts])
    cls_logits = torch.randn(len(counts), num_anchors, NUM_CLASSES, generator=generator)
    matcher = HungarianMatcher(match_on=match_on)
    gt = pad_targets(targets, NUM_CLASSES, "cpu")
    m = matcher(anchors, gt, pred_boxes=pred_boxes, cls_logits=cls_logits)
    cost = matcher.cost(anchors, gt, pred_boxes=pred_boxes, cls_logits=cls_logits)
    for b, n in enumerate(counts):
        positive = m.gt_index[b] >= 0
        # One default box per object, each object exactly once.
        assert sorted(m.gt_index[b][positive].tolist()) == list(range(n))
        chosen = sum(float(cost[b, a, m.gt_index[b, a]]) for a in positive.nonzero().flatten().tolist())
        assert chosen == pytest.approx(brute_force_cost(cost[b, :, :n]), rel=1e-5)


def test_hungarian_cost_terms_by_hand():
    # Default-box centres at 75 and 25: the picture is 100 x 100.
    anchors = torch.tensor([[50.0, 50, 100, 100], [0, 0, 50, 50]])
    gt = pad_targets([target([[0, 0, 50, 50]], [2])], NUM_CLASSES, "cpu")
    pred_boxes = torch.tensor([[[0.0, 0, 50, 100], [0, 0, 50, 50]]])
    cls_logits = torch.zeros(1, 2, NUM_CLASSES)
    cls_logits[0, 1, 2] = 10.0
    matcher = HungarianMatcher(class_weight=1.0, l1_weight=5.0, iou_weight=2.0)
    cost = matcher.cost(anchors, gt, pred_boxes=pred_boxes, cls_logits=cls_logits)
    # Prediction 0: probability 1/5 for class 2, L1 on (cx, cy, w, h) / 100 = 0 + 0.25 + 0 + 0.5, IoU 0.5.
    assert float(cost[0, 0, 0]) == pytest.approx(0.8 + 5 * 0.75 + 2 * 0.5, rel=1e-5)
    p = torch.softmax(cls_logits[0, 1], 0)[2]
    assert float(cost[0, 1, 0]) == pytest.approx(float(1 - p), rel=1e-4, abs=1e-6)
    m = matcher(anchors, gt, pred_boxes=pred_boxes, cls_logits=cls_logits)
    assert m.gt_index.tolist() == [[BACKGROUND, 0]]
    # Matching on default boxes ignores the predictions: default box 1 is the object itself.
    on_boxes = HungarianMatcher(match_on="default_boxes")(anchors, gt)
    assert on_boxes.gt_index.tolist() == [[BACKGROUND, 0]]


def test_hungarian_follows_the_predictions_not_the_default_boxes():
    # Default box 0 sits on the object, but the prediction of default box 1 does, with the right class.
    anchors = torch.tensor([[0.0, 0, 10, 10], [50, 50, 60, 60], [90, 90, 100, 100]])
    gt = pad_targets([target([[0, 0, 10, 10]], [1])], NUM_CLASSES, "cpu")
    pred_boxes = torch.tensor([[[40.0, 40, 60, 60], [0, 0, 10, 10], [90, 90, 100, 100]]])
    cls_logits = torch.zeros(1, 3, NUM_CLASSES)
    assert HungarianMatcher()(
        anchors, gt, pred_boxes=pred_boxes, cls_logits=cls_logits
    ).gt_index.tolist() == [[BACKGROUND, 0, BACKGROUND]]


def test_hungarian_top_up_adds_default_boxes_over_the_threshold():
    anchors = [[0, 0, 10, 10], [0, 0, 10, 9], [0, 0, 10, 3], [50, 50, 60, 60]]
    targets = [target([[0, 0, 10, 10], [50, 50, 60, 60]], [1, 2])]
    one_to_one = match(HungarianMatcher(match_on="default_boxes"), anchors, targets)
    assert one_to_one.gt_index.tolist() == [[0, BACKGROUND, BACKGROUND, 1]]
    topped_up = match(HungarianMatcher(match_on="default_boxes", top_up_threshold=0.5), anchors, targets)
    assert topped_up.gt_index.tolist() == [[0, 0, BACKGROUND, 1]]


def test_hungarian_skips_crowd_boxes_and_empty_images():
    anchors = [[0, 0, 10, 10], [0, 0, 10, 20], [50, 50, 60, 60], [80, 80, 90, 90]]
    targets = [target([[0, 0, 10, 10], [50, 50, 60, 60]], [1, 2], [True, False]), target([])]
    m = match(HungarianMatcher(match_on="default_boxes"), anchors, targets)
    assert m.gt_index.tolist() == [[IGNORED, IGNORED, 1, BACKGROUND], [BACKGROUND] * 4]


def test_hungarian_survives_non_finite_predictions():
    anchors = torch.tensor([[0.0, 0, 10, 10], [50, 50, 60, 60]])
    gt = pad_targets([target([[50, 50, 60, 60]], [1])], NUM_CLASSES, "cpu")
    pred_boxes = torch.tensor([[[float("nan")] * 4, [50.0, 50, 60, 60]]])
    m = HungarianMatcher()(anchors, gt, pred_boxes=pred_boxes, cls_logits=torch.zeros(1, 2, NUM_CLASSES))
    assert m.gt_index.tolist() == [[BACKGROUND, 0]]


def test_hungarian_on_predictions_needs_them():
    with pytest.raises(UserError, match="pred_boxes"):
        match(HungarianMatcher(), [[0, 0, 10, 10]], [target([[0, 0, 10, 10]])])


# ---- Checking the ground truth ----


@pytest.mark.parametrize(
    "bad, message",
    [
        (target([[0, 0, 10, 10]], [0]), "label 0, outside 1..4"),
        (target([[0, 0, 10, 10]], [5]), "label 5, outside 1..4"),
        (target([[0, 0, float("nan"), 10]], [1]), "not finite"),
        ({"boxes": torch.zeros(2, 3), "labels": torch.ones(2, dtype=torch.int64)}, r"\(N, 4\)"),
    ],
)
def test_broken_ground_truth_is_refused_with_a_clear_message(bad, message):
    with pytest.raises(UserError, match=message) as error:
        pad_targets([target([[0, 0, 5, 5]], [1]), bad], NUM_CLASSES, "cpu")
    assert str(error.value).startswith("target 1")


def test_bad_matcher_arguments():
    with pytest.raises(UserError):
        IoUMatcher(threshold=0)
    with pytest.raises(UserError):
        HungarianMatcher(match_on="anchors")
    with pytest.raises(UserError):
        HungarianMatcher(l1_weight=-1)


# ---- ATSSMatcher ----


def grid_anchors(maps: list[tuple[int, float, list[float]]]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Default boxes of square feature maps over a 100-pixel picture, laid out as the model lays them:
    map by map, location by location (row-major), box by box. Each map is (cells per side, step, sizes)."""
    boxes, layout = [], []
    for cells, step, sizes in maps:
        for row in range(cells):
            for column in range(cells):
                cx, cy = (column + 0.5) * step, (row + 0.5) * step
                boxes += [[cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2] for s in sizes]
        layout.append((cells * cells, len(sizes)))
    return torch.tensor(boxes), layout


def atss_by_hand(anchors: torch.Tensor, layout, objects: torch.Tensor, k: int) -> torch.Tensor:
    """The paper's rule, object by object and map by map, in plain loops: (A,) index of the object each
    default box learns, -1 for background (before the forced best-default-box rule)."""
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    iou = box_iou(anchors, objects)  # (A, M)
    owner = torch.full((len(anchors),), -1)
    best = torch.full((len(anchors),), -1.0)
    for m, box in enumerate(objects):
        centre = (box[:2] + box[2:]) / 2
        candidates, start = [], 0
        for locations, boxes in layout:
            size = locations * boxes
            distance = (centres[start : start + size] - centre).norm(dim=1)
            candidates += (distance.argsort()[:k] + start).tolist()
            start += size
        values = iou[candidates, m]
        threshold = values.mean() + values.std()
        for a in candidates:
            inside = bool((centres[a] > box[:2]).all() and (centres[a] < box[2:]).all())
            if iou[a, m] >= threshold and inside and iou[a, m] > best[a]:
                owner[a], best[a] = m, iou[a, m]
    return owner


def test_atss_gives_a_small_object_several_positives_where_ssds_rule_gives_one():
    # A 20-pixel map of 10-pixel steps with boxes of 32 and 45 pixels: an 18 x 22 object overlaps none
    # of them by 0.5 (as a platelet on BCCD at 320 pixels), so SSD's rule leaves it its forced box alone.
    anchors, layout = grid_anchors([(10, 10.0, [32.0, 45.0]), (5, 20.0, [60.0, 80.0])])
    small = target([[41, 39, 59, 61]])
    iou_positives = int(match(IoUMatcher(), anchors.tolist(), [small]).positive.sum())
    atss = match(ATSSMatcher(layout), anchors.tolist(), [small])
    assert iou_positives == 1
    positives = atss.positive[0].nonzero().flatten()
    assert len(positives) >= 3
    centres = (anchors[positives, :2] + anchors[positives, 2:]) / 2
    assert ((centres > torch.tensor([41.0, 39.0])) & (centres < torch.tensor([59.0, 61.0]))).all()


@pytest.mark.parametrize("seed", range(6))
def test_atss_matches_the_papers_rule_computed_by_hand(seed):
    generator = torch.Generator().manual_seed(seed)
    anchors, layout = grid_anchors([(8, 12.5, [10.0, 20.0, 28.0]), (4, 25.0, [40.0, 55.0, 70.0])])
    objects = random_boxes(5, generator=generator)
    targets = [target(objects.tolist())]
    got = match(ATSSMatcher(layout, candidates_per_map=9), anchors.tolist(), targets).gt_index[0]
    expected = atss_by_hand(anchors, layout, objects, 9)
    # On top of the rule, each object keeps its forced default box (SSD's guarantee): the boxes SSD's rule
    # gives with a threshold no default box reaches. Everywhere else the two agree exactly.
    forced = match(IoUMatcher(threshold=1.0), anchors.tolist(), targets).gt_index[0]
    assert torch.equal(got[forced >= 0], forced[forced >= 0])
    elsewhere = forced < 0
    assert torch.equal(got[elsewhere], expected[elsewhere])
    assert set(got[got >= 0].tolist()) == set(range(5))


def test_atss_on_pictures_without_objects_and_with_crowds():
    anchors, layout = grid_anchors([(4, 25.0, [30.0])])
    matcher = ATSSMatcher(layout)
    empty = match(matcher, anchors.tolist(), [target([]), target([[10, 10, 40, 40]], [2])])
    assert not empty.positive[0].any() and empty.positive[1].any()
    assert set(empty.labels[1][empty.positive[1]].tolist()) == {2}
    crowd = match(matcher, anchors.tolist(), [target([[0, 0, 100, 100]], crowd=[True])])
    assert not crowd.positive.any() and crowd.ignored.any()


def test_atss_refuses_a_layout_that_does_not_fit_the_default_boxes():
    anchors, layout = grid_anchors([(4, 25.0, [30.0])])
    with pytest.raises(UserError, match="ATSS was set up for 32 default boxes"):
        match(ATSSMatcher([(16, 2)]), anchors.tolist(), [target([[10, 10, 40, 40]])])
    with pytest.raises(UserError, match="at least one candidate"):
        ATSSMatcher(layout, candidates_per_map=0)
