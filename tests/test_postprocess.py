import torch

from ssd.models.postprocess import PostProcessor
from ssd.ops.anchors import default_boxes_xyxy
from ssd.ops.boxes import BoxCoder, clip_boxes
from ssd.ops.nms import batched_nms

ANCHORS = default_boxes_xyxy([(8, 8), (4, 4), (2, 2)], (128, 128), (0.1, 0.3, 0.6, 0.9), [(2,), (2,), (2,)])


def naive_postprocess(cls_logits, bbox_regression, anchors, score, iou, detections, topk):
    """Every candidate through batched NMS, no pruning: the definition the PostProcessor must equal."""
    probabilities = cls_logits.softmax(-1)
    boxes = clip_boxes(BoxCoder().decode(bbox_regression, anchors), 128, 128)
    all_boxes, all_scores, all_labels = [], [], []
    for label in range(1, probabilities.shape[1]):
        scores = probabilities[:, label]
        index = (scores > score).nonzero()[:, 0]
        top = scores[index].topk(min(topk, len(index))).indices
        all_boxes.append(boxes[index[top]])
        all_scores.append(scores[index[top]])
        all_labels.append(torch.full((len(top),), label))
    boxes, scores, labels = torch.cat(all_boxes), torch.cat(all_scores), torch.cat(all_labels)
    keep = batched_nms(boxes, scores, labels, iou)[:detections]
    return boxes[keep], scores[keep], labels[keep]


def test_pruned_postprocessing_equals_nms_on_every_candidate():
    generator = torch.Generator().manual_seed(0)
    for detections in (3, 20, 500):  # small caps force the pruning rounds, a large one disables them
        cls_logits = torch.randn(len(ANCHORS), 6, generator=generator) * 2
        bbox_regression = torch.randn(len(ANCHORS), 4, generator=generator)
        post = PostProcessor(0.05, 0.5, detections, 100)
        (result,) = post(cls_logits[None], bbox_regression[None], ANCHORS, (128, 128))
        boxes, scores, labels = naive_postprocess(
            cls_logits, bbox_regression, ANCHORS, 0.05, 0.5, detections, 100
        )
        assert torch.equal(result["result_labels"], labels)
        assert torch.allclose(result["result_scores"], scores)
        assert torch.allclose(result["result_boxes"], boxes, atol=1e-5)


def test_outputs_are_consistent_and_mapped_to_original_size():
    generator = torch.Generator().manual_seed(1)
    cls_logits = torch.randn(2, len(ANCHORS), 4, generator=generator)
    bbox_regression = torch.randn(2, len(ANCHORS), 4, generator=generator) * 0.1
    post = PostProcessor(0.2, 0.45, 50, 200)
    results = post(cls_logits, bbox_regression, ANCHORS, (128, 128), [(256, 64), (128, 128)])
    for result, (height, width) in zip(results, [(256, 64), (128, 128)], strict=True):
        assert set(result) == {"result_boxes", "result_labels", "result_scores", "result_confs"}
        assert len(result["result_scores"]) <= 50
        assert (result["result_scores"] > 0.2).all()
        assert (result["result_scores"][:-1] >= result["result_scores"][1:]).all()
        assert (result["result_labels"] >= 1).all()
        confs = result["result_confs"]
        assert torch.allclose(confs.sum(1), torch.ones(len(confs)))
        assert torch.equal(confs.gather(1, result["result_labels"][:, None])[:, 0], result["result_scores"])
        boxes = result["result_boxes"]
        assert (boxes[:, [0, 2]] <= width + 1e-4).all() and (boxes[:, [1, 3]] <= height + 1e-4).all()
    # The first picture is 2x taller and 0.5x as wide as the input: boxes scale accordingly.
    (unscaled,) = post(cls_logits[:1], bbox_regression[:1], ANCHORS, (128, 128))
    assert torch.allclose(
        results[0]["result_boxes"], unscaled["result_boxes"] * torch.tensor([0.5, 2, 0.5, 2])
    )


def test_only_background_gives_empty_detections():
    cls_logits = torch.zeros(1, len(ANCHORS), 3)
    cls_logits[..., 0] = 20.0
    (result,) = PostProcessor(0.01, 0.45, 100, 100)(
        cls_logits, torch.zeros(1, len(ANCHORS), 4), ANCHORS, (128, 128)
    )
    assert result["result_boxes"].shape == (0, 4)
    assert result["result_confs"].shape == (0, 3)
    assert result["result_labels"].dtype == torch.long


def test_best_entries_are_every_entry_at_or_above_the_kth_best_ties_included():
    from ssd.models.postprocess import _best_entries

    generator = torch.Generator().manual_seed(2)
    for rows, columns, k in ((50, 7, 20), (50, 7, 120), (5, 30, 40)):  # k below and above the row count
        scores = (torch.rand(rows, columns, generator=generator) * 20).floor() / 20  # many ties
        kth_best = scores.flatten().topk(k).values[-1]
        expected = (scores >= kth_best).nonzero(as_tuple=True)
        found = _best_entries(scores, k)
        assert torch.equal(found[0], expected[0]) and torch.equal(found[1], expected[1])
