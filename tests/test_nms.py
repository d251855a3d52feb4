import pytest
import torch

from ssd.ops.boxes import box_iou
from ssd.ops.nms import batched_nms, nms


def reference_nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> list[int]:
    """Textbook greedy NMS, one box at a time; ties in score go to the lower index."""
    iou = box_iou(boxes, boxes).tolist()
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    kept: list[int] = []
    for i in order:
        if all(iou[i][j] <= threshold for j in kept):
            kept.append(i)
    return kept


def reference_batched_nms(boxes, scores, labels, threshold) -> list[int]:
    kept = []
    for label in labels.unique():
        members = (labels == label).nonzero()[:, 0]
        kept += [int(members[i]) for i in reference_nms(boxes[members], scores[members], threshold)]
    return sorted(kept, key=lambda i: (-float(scores[i]), i))


def random_boxes(n: int, generator: torch.Generator, spread: float = 100.0) -> torch.Tensor:
    corner = torch.rand(n, 2, generator=generator) * spread
    size = torch.rand(n, 2, generator=generator) * 40 + 1
    return torch.cat((corner, corner + size), dim=1)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_nms_matches_greedy_reference(seed, threshold):
    generator = torch.Generator().manual_seed(seed)
    boxes = random_boxes(60, generator)
    scores = torch.rand(60, generator=generator)
    assert nms(boxes, scores, threshold).tolist() == reference_nms(boxes, scores, threshold)


def test_nms_with_tied_scores_prefers_lower_index():
    generator = torch.Generator().manual_seed(3)
    boxes = random_boxes(50, generator, spread=30)
    scores = torch.randint(0, 4, (50,), generator=generator).float()  # many ties
    assert nms(boxes, scores, 0.4).tolist() == reference_nms(boxes, scores, 0.4)


def test_nms_identical_boxes_keeps_only_best():
    boxes = torch.tensor([[0.0, 0, 10, 10]] * 5)
    scores = torch.tensor([0.1, 0.9, 0.5, 0.9, 0.2])
    assert nms(boxes, scores, 0.5).tolist() == [1]


def test_nms_empty_and_single():
    empty = nms(torch.zeros(0, 4), torch.zeros(0), 0.5)
    assert empty.shape == (0,) and empty.dtype == torch.long
    assert nms(torch.tensor([[1.0, 1, 5, 5]]), torch.tensor([0.3]), 0.5).tolist() == [0]
    assert batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5).shape == (0,)


def test_nms_large_input_uses_blocks_and_stays_exact():
    generator = torch.Generator().manual_seed(11)
    boxes = random_boxes(2600, generator, spread=400)  # more than one block
    scores = torch.rand(2600, generator=generator)
    assert nms(boxes, scores, 0.5).tolist() == reference_nms(boxes, scores, 0.5)


@pytest.mark.parametrize("seed", range(6))
def test_batched_nms_matches_per_class_reference(seed):
    generator = torch.Generator().manual_seed(100 + seed)
    boxes = random_boxes(120, generator, spread=60)
    scores = torch.rand(120, generator=generator)
    labels = torch.randint(1, 5, (120,), generator=generator)
    assert batched_nms(boxes, scores, labels, 0.45).tolist() == reference_batched_nms(
        boxes, scores, labels, 0.45
    )


def test_batched_nms_single_class_equals_nms():
    generator = torch.Generator().manual_seed(7)
    boxes = random_boxes(80, generator, spread=50)
    scores = torch.rand(80, generator=generator)
    labels = torch.full((80,), 3)
    assert batched_nms(boxes, scores, labels, 0.5).tolist() == nms(boxes, scores, 0.5).tolist()


def test_batched_nms_never_suppresses_across_classes():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0.0, 0, 10, 10], [0.5, 0, 10, 10]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    labels = torch.tensor([1, 2, 1])
    assert batched_nms(boxes, scores, labels, 0.5).tolist() == [0, 1]


@pytest.mark.parametrize("seed", range(4))
def test_cpu_scan_and_device_passes_agree(seed):
    """The two resolutions of `resolve_greedy_suppression` (bitset scan on a CPU, matrix passes elsewhere)
    give the same boxes, on padded groups wider than one 64-bit word and with dense overlaps."""
    from ssd.ops.nms import _greedy_scan, fixed_point_passes, iou_above

    generator = torch.Generator().manual_seed(seed)
    groups, width = 5, 150
    boxes = torch.stack([random_boxes(width, generator, spread=40) for _ in range(groups)])
    valid = torch.rand(groups, width, generator=generator) < 0.9
    overlaps = iou_above(boxes, 0.4)
    scan = _greedy_scan(overlaps, valid)
    assert torch.equal(scan, fixed_point_passes(overlaps.triu(diagonal=1) & valid[:, :, None], valid))
    for group in range(groups):  # and both are the textbook result on the valid boxes (sorted by position)
        members = valid[group].nonzero()[:, 0]
        scores = -members.float()  # earlier box = higher score, as the grid is laid out
        expected = members[reference_nms(boxes[group, members], scores, 0.4)].sort().values
        assert scan[group].nonzero()[:, 0].tolist() == expected.tolist()
