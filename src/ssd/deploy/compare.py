"""Do two runtimes give the same detections? The check behind every export and the parity tests.

Two detections agree when they have the same label, boxes within `box_rtol` (relative, at least
`box_rtol` pixels) and scores within `score_atol`. Detections are matched one to one regardless of order,
because detections with equal scores may come out in either order.

Float rounding differs between runtimes (onnxruntime and PyTorch sum in different orders), and candidates
with equal scores come out of a top-k in an order each runtime chooses. So where two detections' scores are
within `tie_atol` of each other, which one NMS keeps (and, through it, which lower-scoring boxes it
suppresses) is not defined by the model. Detections are therefore required to match down to the highest
such tie; below it they are compared and counted but may differ. Trained models rarely have ties (their
scores are decisive), untrained ones often do (saturated layers give many boxes exactly equal scores).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ssd.ops.boxes import box_iou


@dataclass
class Agreement:
    count_a: int
    count_b: int
    matched: int
    unmatched_decisive: int  # unmatched detections scoring above the highest tie
    max_box_error: float  # over matched pairs, pixels
    max_score_error: float  # over matched pairs
    tie_score: float  # the highest score shared (within tie_atol) by two detections; -inf if none

    @property
    def ok(self) -> bool:
        return self.unmatched_decisive == 0

    def describe(self) -> str:
        return (
            f"{self.matched} of {self.count_a} / {self.count_b} detections matched, "
            f"{self.unmatched_decisive} unmatched above the highest tie ({self.tie_score:.4g}), "
            f"max box error {self.max_box_error:.3g} px, "
            f"max score error {self.max_score_error:.3g}"
        )


def compare_detections(
    a: dict[str, Tensor],
    b: dict[str, Tensor],
    box_rtol: float = 1e-3,
    score_atol: float = 1e-4,
    tie_atol: float = 1e-5,
) -> Agreement:
    """Match the detections of one picture from two runtimes; see the module's docstring."""
    from scipy.optimize import linear_sum_assignment

    boxes_a, boxes_b = a["result_boxes"].double(), b["result_boxes"].double()
    scores_a, scores_b = a["result_scores"].double(), b["result_scores"].double()
    labels_a, labels_b = a["result_labels"], b["result_labels"]
    box_error = (boxes_a[:, None] - boxes_b[None]).abs()
    box_tolerance = box_rtol * torch.maximum(boxes_b.abs(), torch.ones_like(boxes_b))[None]
    score_error = (scores_a[:, None] - scores_b[None]).abs()
    compatible = (
        (labels_a[:, None] == labels_b[None])
        & (box_error <= box_tolerance).all(dim=-1)
        & (score_error <= score_atol)
    )
    matched_pairs: list[tuple[int, int]] = []
    if compatible.numel():
        rows, cols = linear_sum_assignment((~compatible).numpy().astype(np.float64))
        matched_pairs = [(r, c) for r, c in zip(rows, cols, strict=True) if compatible[r, c]]
    matched_a = {r for r, _ in matched_pairs}
    matched_b = {c for _, c in matched_pairs}
    tie = max(_highest_tie(scores_a, tie_atol), _highest_tie(scores_b, tie_atol))
    decisive = score_atol + tie
    unmatched = sum(
        1 for i, score in enumerate(scores_a.tolist()) if i not in matched_a and score > decisive
    ) + sum(1 for i, score in enumerate(scores_b.tolist()) if i not in matched_b and score > decisive)
    pairs = torch.tensor(matched_pairs, dtype=torch.long).reshape(-1, 2)
    return Agreement(
        count_a=len(scores_a),
        count_b=len(scores_b),
        matched=len(matched_pairs),
        unmatched_decisive=unmatched,
        tie_score=tie,
        max_box_error=float(box_error[pairs[:, 0], pairs[:, 1]].max()) if len(pairs) else 0.0,
        max_score_error=float(score_error[pairs[:, 0], pairs[:, 1]].max()) if len(pairs) else 0.0,
    )


def _highest_tie(scores: Tensor, tie_atol: float) -> float:
    """The highest score that another detection of the same list comes within `tie_atol` of."""
    ordered = torch.sort(scores, descending=True).values
    close = (ordered[:-1] - ordered[1:]) <= tie_atol
    return float(ordered[:-1][close][0]) if bool(close.any()) else float("-inf")


@dataclass
class TopAgreement:
    """How many of a reference's best detections another runtime also finds (same label, IoU >= min_iou)."""

    compared: int
    found: int
    min_iou: float
    min_share: float

    @property
    def share(self) -> float:
        return self.found / self.compared if self.compared else 1.0

    @property
    def ok(self) -> bool:
        return self.share >= self.min_share

    def describe(self) -> str:
        return (
            f"{self.found} of the reference's top {self.compared} found with the same label at IoU >= "
            f"{self.min_iou:g} ({self.share:.1%}, at least {self.min_share:.0%} needed)"
        )


def compare_top_detections(
    candidate: dict[str, Tensor],
    reference: dict[str, Tensor],
    top: int = 100,
    min_iou: float = 0.9,
    min_share: float = 0.95,
) -> TopAgreement:
    """The agreement asked of a lower precision (bf16, INT8) with fp32: of `reference`'s `top` best
    detections, the share for which `candidate` holds one of the same label at IoU >= `min_iou`, each
    candidate detection used once. Scores are not compared: rounding moves them, and with them the order
    of near-equal ones, which is why a match is looked for anywhere in the candidate's list."""
    from scipy.optimize import linear_sum_assignment

    order = torch.argsort(reference["result_scores"], descending=True)[:top]
    ref_boxes, ref_labels = reference["result_boxes"][order].double(), reference["result_labels"][order]
    iou = box_iou(ref_boxes, candidate["result_boxes"].double())
    eligible = (ref_labels[:, None] == candidate["result_labels"][None]) & (iou >= min_iou)
    found = 0
    if eligible.numel():
        rows, cols = linear_sum_assignment((~eligible).numpy().astype(np.float64))
        found = int(eligible[rows, cols].sum())
    return TopAgreement(compared=len(order), found=found, min_iou=min_iou, min_share=min_share)
