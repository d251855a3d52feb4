"""PostProcessor: raw header outputs to detections (softmax, score threshold, per-class top-k, NMS).

The candidates are laid out as a `(classes, top-k)` grid from the start: a per-class top-k over all default
boxes gives every class's candidates already sorted by score, which is exactly the layout the vectorised
greedy NMS in `nms.py` resolves, so no sorting or grouping happens in between and no Python loop visits a box.

Pruning before NMS, exactly: only the best `detections_per_image` kept boxes are returned, and whether a box
survives greedy NMS depends only on the higher-scoring boxes of its class. So NMS first runs on the globally
best few candidates; if enough of them survive, lower-scoring candidates cannot change the answer. Otherwise
the cut is lowered and NMS runs again. With 90 classes x 300 candidates this resolves a few hundred boxes
instead of 27,000, and the result is identical to running NMS on every candidate.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ssd.ops.boxes import BoxCoder, clip_boxes
from ssd.ops.nms import resolve_greedy_suppression

Detections = dict[str, Tensor]

# How many candidates per returned detection the first NMS round takes (and by how much later rounds grow).
_PRUNE_FACTOR = 4


class PostProcessor(nn.Module):
    """Turns `cls_logits` `(B, A, C)` and `bbox_regression` `(B, A, 4)` into one detections dict per picture.

    Each dict holds `result_boxes` (xyxy in the original picture's pixels), `result_labels` (1..C-1),
    `result_scores` and `result_confs` (the softmax vector of each kept box), sorted by decreasing score.
    """

    def __init__(
        self,
        score_threshold: float,
        nms_threshold: float,
        detections_per_image: int,
        topk_candidates: int,
        box_coder: BoxCoder | None = None,
    ):
        super().__init__()
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.detections_per_image = detections_per_image
        self.topk_candidates = topk_candidates
        self.box_coder = box_coder or BoxCoder()

    def forward(
        self,
        cls_logits: Tensor,
        bbox_regression: Tensor,
        anchors: Tensor,
        input_size: tuple[int, int],
        original_sizes: Sequence[tuple[int, int]] | None = None,
    ) -> list[Detections]:
        """`anchors` are xyxy in the input picture's pixels; `original_sizes` (H, W) map boxes back."""
        probabilities = torch.softmax(cls_logits.float(), dim=-1)
        boxes = self.box_coder.decode(bbox_regression.float(), anchors)
        input_h, input_w = input_size
        boxes = clip_boxes(boxes, input_h, input_w)
        original_sizes = original_sizes or [tuple(input_size)] * len(boxes)
        results = []
        for image_boxes, image_probabilities, (orig_h, orig_w) in zip(
            boxes, probabilities, original_sizes, strict=True
        ):
            detections = self._select(image_boxes, image_probabilities)
            scale = image_boxes.new_tensor(
                [orig_w / input_w, orig_h / input_h, orig_w / input_w, orig_h / input_h]
            )
            detections["result_boxes"] = detections["result_boxes"] * scale
            results.append(detections)
        return results

    def _select(self, boxes: Tensor, probabilities: Tensor) -> Detections:
        classes, scores, anchor_index, selected, complete = self._globally_best_candidates(probabilities)
        keep = resolve_greedy_suppression(boxes[anchor_index], selected, self.nms_threshold)
        if complete or int(keep.sum()) >= self.detections_per_image:
            return self._detections(boxes, probabilities, keep, classes, scores, anchor_index)
        # Too few survived the first round: widen it round by round, on the per-class top-k grid.
        num_anchors, num_classes = probabilities.shape
        object_scores = probabilities[:, 1:].T  # (C-1, A): background is never a detection
        k = min(self.topk_candidates, num_anchors)
        scores, anchor_index = object_scores.topk(k, dim=1)  # each class's candidates, best first
        valid = scores > self.score_threshold
        num_valid = int(valid.sum())
        budget = self.detections_per_image * _PRUNE_FACTOR**2  # the first round's budget did not suffice
        while True:
            if budget < num_valid:
                cut = scores[valid].topk(budget).values[-1]
                selected = valid & (scores >= cut)
            else:
                selected = valid
            keep, classes, scores_grid, anchors_grid = self._nms_on(boxes, scores, anchor_index, selected)
            if budget >= num_valid or int(keep.sum()) >= self.detections_per_image:
                break
            budget *= _PRUNE_FACTOR
        return self._detections(boxes, probabilities, keep, classes, scores_grid, anchors_grid)

    def _globally_best_candidates(self, probabilities: Tensor):
        """The first pruning round, without a per-class top-k over every default box (the costliest step).

        Takes the `budget` best (anchor, class) scores of the whole picture (or every valid one, if the
        per-class top-k grid holds no more than that) and lays them out as the `(classes, rank)` grid, each class capped at its top-k. Every candidate
        left out scores below every one taken, so if NMS on these keeps `detections_per_image` boxes, the
        answer is final (see the module docstring); `complete` says that no valid candidate was left out.
        """
        num_anchors = probabilities.shape[0]
        object_scores = probabilities[:, 1:]
        budget = self.detections_per_image * _PRUNE_FACTOR
        k = min(self.topk_candidates, num_anchors)
        taken = object_scores > self.score_threshold
        # The per-class top-k grid holds min(valid, k) candidates of each class: all of them fit the budget?
        complete = int(taken.sum(dim=0).clamp(max=k).sum()) <= budget
        if complete:
            anchors, classes = taken.nonzero(as_tuple=True)
        else:
            anchors, classes = _best_entries(object_scores, budget)
        scores = object_scores[anchors, classes]
        # Class by class, best first; equal scores keep anchor order (the stable sorts).
        by_score = torch.sort(scores, descending=True, stable=True).indices
        order = by_score[torch.sort(classes[by_score], stable=True).indices]
        present, counts = torch.unique_consecutive(classes[order], return_counts=True)
        row = torch.repeat_interleave(torch.arange(len(present), device=counts.device), counts)
        rank = torch.arange(len(order), device=counts.device) - (counts.cumsum(0) - counts)[row]
        in_topk = rank < k
        order, row, rank = order[in_topk], row[in_topk], rank[in_topk]
        width = int(rank.max()) + 1 if len(rank) else 0
        grid_scores = scores.new_zeros(len(present), width)
        grid_anchors = anchors.new_zeros(len(present), width)
        grid_selected = torch.zeros(len(present), width, dtype=torch.bool, device=scores.device)
        grid_scores[row, rank] = scores[order]
        grid_anchors[row, rank] = anchors[order]
        grid_selected[row, rank] = True
        return present, grid_scores, grid_anchors, grid_selected, complete

    def _detections(
        self,
        boxes: Tensor,
        probabilities: Tensor,
        keep: Tensor,
        classes: Tensor,
        scores: Tensor,
        anchor_index: Tensor,
    ) -> Detections:
        """The kept candidates of a `(classes, rank)` grid, best first, at most `detections_per_image`."""
        kept_scores = scores[keep]
        kept_anchors = anchor_index[keep]
        kept_labels = (classes[:, None] + 1).expand_as(keep)[keep]
        order = torch.sort(kept_scores, descending=True, stable=True).indices[: self.detections_per_image]
        kept_anchors = kept_anchors[order]
        return {
            "result_boxes": boxes[kept_anchors],
            "result_labels": kept_labels[order],
            "result_scores": kept_scores[order],
            "result_confs": probabilities[kept_anchors],
        }

    def _nms_on(self, boxes: Tensor, scores: Tensor, anchor_index: Tensor, selected: Tensor):
        """Greedy NMS on the selected candidates of the `(classes, k)` grid, trimmed to what is selected.

        Selected candidates form a prefix of each (score-sorted) row, so the grid is cut to the longest
        prefix and to the classes that have any.
        """
        longest = int(selected.sum(dim=1).max()) if selected.numel() else 0
        classes = selected[:, 0].nonzero()[:, 0] if longest else selected.new_zeros(0, dtype=torch.long)
        scores = scores[classes, :longest]
        anchor_index = anchor_index[classes, :longest]
        selected = selected[classes, :longest]
        keep = resolve_greedy_suppression(boxes[anchor_index], selected, self.nms_threshold)
        return keep, classes, scores, anchor_index


def _best_entries(scores: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Row and column indices of the entries of an `(A, C)` score matrix at or above its k-th best entry.

    Ties at the k-th best are included; indices come in row-major order. The k best row maxima are k
    distinct entries, so the k-th best entry is at least the k-th best row maximum: only the rows whose
    maximum reaches that bound, and their entries at or above it, can be among the k best. On the fixture
    picture that leaves 1,600 of 291,060 entries in 1,200 of 3,234 rows (0.45 ms instead of 1.05 ms on
    one core, against a mask over the whole matrix).
    """
    row_max = scores.amax(dim=1)
    bound = row_max.topk(k, sorted=False).values.min() if len(row_max) >= k else scores.min()
    rows = (row_max >= bound).nonzero()[:, 0]
    in_rows, columns = (scores[rows] >= bound).nonzero(as_tuple=True)
    rows = rows[in_rows]
    values = scores[rows, columns]
    if len(values) > k:
        at_or_above = values >= values.topk(k, sorted=False).values.min()
        rows, columns = rows[at_or_above], columns[at_or_above]
    return rows, columns
