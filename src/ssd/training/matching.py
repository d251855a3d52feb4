"""Matching default boxes to ground truth: which default box learns which object, and which learns background.

Three matchers share one return type (`Matches`) so `MultiBoxLoss` takes any of them:

- `IoUMatcher` is SSD's rule: every ground-truth box first takes the default box it overlaps most, then every
  default box with IoU >= threshold takes the ground truth it overlaps most. Many default boxes per object.
- `ATSSMatcher` is adaptive training sample selection (Zhang et al., CVPR 2020): each object's IoU threshold
  is set from the default boxes near it (the mean plus the standard deviation of their IoUs), so a small
  object, which overlaps no default box by 0.5, still gets several positives.
- `HungarianMatcher` is the one-to-one assignment of set-prediction detectors: one default box per object,
  chosen by `scipy.optimize.linear_sum_assignment` on a cost between the model's predictions and the ground
  truth (or between the default boxes and the ground truth), optionally topped up with IoU >= threshold
  matches.

Both work on a whole batch at once: targets are padded to the largest number of boxes in the batch and every
step is a tensor operation over (pictures, default boxes, ground-truth boxes); the Hungarian solve alone runs
per picture, on the CPU, as scipy requires.

Crowd boxes (`iscrowd`) are never matched. A default box lying mostly inside a crowd box (at least
`crowd_threshold` of its area) and not matched to an ordinary object is *ignored*: neither positive nor
negative, since it may well show one of the crowd's members.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ssd.errors import UserError
from ssd.ops.boxes import box_area, box_iou, xyxy_to_cxcywh

# Values of `Matches.gt_index` for default boxes that are not matched to an object.
BACKGROUND = -1
IGNORED = -2


@dataclass
class PaddedTargets:
    """A batch's ground truth padded to the largest number of boxes `M` in the batch.

    `boxes` `(B, M, 4)` xyxy, `labels` `(B, M)` int64, `crowd` `(B, M)` bool, `valid` `(B, M)` bool (False on
    padding). Column `m` of picture `b` is `targets[b]["boxes"][m]`, so indices point back into the targets.
    """

    boxes: Tensor
    labels: Tensor
    crowd: Tensor
    valid: Tensor

    @property
    def num_boxes(self) -> int:
        return self.boxes.shape[1]


@dataclass
class Matches:
    """What each default box is matched to, for every picture of a batch.

    `gt_index` `(B, A)` int64: index of the matched box in the picture's targets, `BACKGROUND` (-1) or `IGNORED`
    (-2). `labels` `(B, A)` int64: the class to learn, 0 for background, -1 for ignored default boxes.
    `boxes` `(B, A, 4)`: the matched ground-truth box on positives; elsewhere the default box itself.
    """

    gt_index: Tensor
    labels: Tensor
    boxes: Tensor

    @property
    def positive(self) -> Tensor:
        return self.gt_index >= 0

    @property
    def ignored(self) -> Tensor:
        return self.gt_index == IGNORED


def pad_targets(targets: list[dict], num_classes: int, device: torch.device | str) -> PaddedTargets:
    """Stack per-picture targets into padded tensors on `device`, checking boxes and labels on the way.

    Broken ground truth is refused here with a clear message, rather than turning into a NaN loss or a
    device-side assertion deep inside the cross-entropy.
    """
    batch = len(targets)
    counts = [len(t["boxes"]) for t in targets]
    most = max(counts, default=0)
    boxes = torch.zeros(batch, most, 4, device=device)
    labels = torch.zeros(batch, most, dtype=torch.int64, device=device)
    crowd = torch.zeros(batch, most, dtype=torch.bool, device=device)
    valid = torch.zeros(batch, most, dtype=torch.bool, device=device)
    for b, (target, count) in enumerate(zip(targets, counts, strict=True)):
        if count == 0:
            continue
        image_boxes = torch.as_tensor(target["boxes"])
        image_labels = torch.as_tensor(target["labels"])
        if image_boxes.shape != (count, 4) or image_labels.shape != (count,):
            raise UserError(
                f"target {b}: boxes must be (N, 4) and labels (N,), got {tuple(image_boxes.shape)} "
                f"and {tuple(image_labels.shape)}"
            )
        boxes[b, :count] = image_boxes.to(device=device, dtype=boxes.dtype, non_blocking=True)
        labels[b, :count] = image_labels.to(device=device, non_blocking=True)
        if "iscrowd" in target:
            crowd[b, :count] = torch.as_tensor(target["iscrowd"]).to(device=device, dtype=torch.bool)
        valid[b, :count] = True
    if most:
        _check_targets(boxes, labels, valid, num_classes)
    return PaddedTargets(boxes, labels, crowd, valid)


def _check_targets(boxes: Tensor, labels: Tensor, valid: Tensor, num_classes: int) -> None:
    # One host-device synchronisation for the whole batch; the details are only worked out on failure.
    bad_box = valid & ~torch.isfinite(boxes).all(-1)
    bad_label = valid & ((labels < 1) | (labels >= num_classes))
    if not bool((bad_box | bad_label).any()):
        return
    if bool(bad_box.any()):
        b, m = (int(i) for i in bad_box.nonzero()[0])
        raise UserError(f"target {b}: box {m} is not finite: {boxes[b, m].tolist()}")
    b, m = (int(i) for i in bad_label.nonzero()[0])
    raise UserError(
        f"target {b}: box {m} has label {int(labels[b, m])}, outside 1..{num_classes - 1} "
        f"(num_classes={num_classes} counts the background, class 0)"
    )


class _MatcherBase:
    """What both matchers share: the crowd rule and turning per-default-box indices into `Matches`."""

    # Whether the matcher needs the model's predictions (decoded boxes, class logits) to match.
    needs_predictions = False

    def __init__(self, threshold: float, crowd_threshold: float):
        if not 0.0 < threshold <= 1.0:
            raise UserError(f"matching threshold must be in (0, 1], got {threshold}")
        if not 0.0 < crowd_threshold <= 1.0:
            raise UserError(f"crowd threshold must be in (0, 1], got {crowd_threshold}")
        self.threshold = threshold
        self.crowd_threshold = crowd_threshold

    def _finish(self, gt_index: Tensor, iou: Tensor, anchors: Tensor, gt: PaddedTargets) -> Matches:
        """Mark default boxes inside crowd boxes as ignored; gather labels and boxes of the matches."""
        batch, num_anchors = gt_index.shape
        if gt.num_boxes == 0:
            labels = torch.zeros_like(gt_index)
            return Matches(gt_index, labels, anchors.expand(batch, num_anchors, 4))
        crowd = gt.crowd & gt.valid
        if bool(crowd.any()):
            # The share of each default box's area inside a crowd box, derived from the IoU:
            # inter = iou * union and union = area_a + area_g - inter,
            # so inter = iou / (1 + iou) * (area_a + area_g).
            anchor_area = box_area(anchors)[None, :, None]
            areas = anchor_area + box_area(gt.boxes)[:, None, :]
            inside = iou / (1 + iou) * areas / anchor_area.clamp(min=torch.finfo(iou.dtype).tiny)
            inside_crowd = inside.masked_fill(~crowd[:, None, :], 0).amax(-1) >= self.crowd_threshold
            gt_index = torch.where(inside_crowd & (gt_index < 0), IGNORED, gt_index)
        positive = gt_index >= 0
        safe = gt_index.clamp(min=0)
        labels = torch.gather(gt.labels, 1, safe)
        labels = torch.where(positive, labels, torch.where(gt_index == IGNORED, -1, 0))
        boxes = torch.gather(gt.boxes, 1, safe[..., None].expand(-1, -1, 4))
        boxes = torch.where(positive[..., None], boxes, anchors.expand_as(boxes))
        return Matches(gt_index, labels, boxes)


def _object_iou(anchors: Tensor, gt: PaddedTargets) -> tuple[Tensor, Tensor]:
    """IoU `(B, A, M)` of default boxes with every ground-truth box, and the same with crowd/padding at -1."""
    iou = box_iou(anchors, gt.boxes)  # (A, 4) x (B, M, 4) broadcasts to (B, A, M)
    objects = gt.valid & ~gt.crowd
    return iou, iou.masked_fill(~objects[:, None, :], -1.0)


def _best_default_box_per_gt(object_iou: Tensor) -> Tensor:
    """For each ground-truth box, its own default box: `(B, M)` index into the default boxes, -1 for none.

    Each box takes the default box it overlaps most; where several claim the same default box, the one with
    the higher IoU keeps it (the lower index on a tie) and the others move to their best free default box in
    the next round. So two objects never share a forced default box, and the rounds are few (one when nothing
    competes). A box that overlaps no free default box at all (a degenerate box) gets none.
    """
    batch, num_anchors, num_gt = object_iou.shape
    gt_ids = torch.arange(num_gt, device=object_iou.device).expand(batch, num_gt)
    assigned = torch.full((batch, num_gt), -1, dtype=torch.int64, device=object_iou.device)
    pending = object_iou.amax(1) > 0
    taken = torch.zeros(batch, num_anchors, dtype=torch.bool, device=object_iou.device)
    for _ in range(num_gt):  # rounds of conflict resolution, not a loop over boxes: usually one
        free_iou = object_iou.masked_fill(taken[..., None], -1.0)
        best_iou, best_box = free_iou.max(1)
        pending = pending & (best_iou > 0)
        if not bool(pending.any()):
            break
        score = best_iou.masked_fill(~pending, -1.0)
        top = score.new_full((batch, num_anchors), -1.0).scatter_reduce(1, best_box, score, "amax")
        contender = pending & (score == top.gather(1, best_box))
        rank = torch.where(contender, gt_ids, num_gt)
        first = rank.new_full((batch, num_anchors), num_gt).scatter_reduce(1, best_box, rank, "amin")
        wins = contender & (gt_ids == first.gather(1, best_box))
        assigned = torch.where(wins, best_box, assigned)
        taken |= (
            taken.new_zeros(batch, num_anchors, dtype=torch.int8)
            .scatter_reduce(1, best_box, wins.to(torch.int8), "amax")
            .bool()
        )
        pending = pending & ~wins
    return assigned


def _scatter_assignment(gt_index: Tensor, assigned: Tensor) -> Tensor:
    """Write `gt_index[b, assigned[b, m]] = m` for every `assigned[b, m] >= 0`, in one scatter."""
    batch, num_anchors = gt_index.shape
    gt_ids = torch.arange(assigned.shape[1], device=gt_index.device).expand_as(assigned)
    # Unassigned entries are sent to a spare column that is dropped afterwards.
    target_column = torch.where(assigned >= 0, assigned, num_anchors)
    spare = torch.cat((gt_index, gt_index.new_full((batch, 1), BACKGROUND)), dim=1)
    return spare.scatter(1, target_column, gt_ids)[:, :num_anchors]


class IoUMatcher(_MatcherBase):
    """SSD's matching: each object takes its best default box, then every default box with IoU >= `threshold`
    takes the object it overlaps most. Objects under the threshold everywhere still get one default box."""

    def __init__(self, threshold: float = 0.5, crowd_threshold: float = 0.5):
        super().__init__(threshold, crowd_threshold)

    def __call__(self, anchors: Tensor, gt: PaddedTargets, **_predictions: Tensor) -> Matches:
        batch, num_anchors = gt.boxes.shape[0], anchors.shape[0]
        if gt.num_boxes == 0:
            gt_index = torch.full((batch, num_anchors), BACKGROUND, dtype=torch.int64, device=anchors.device)
            return self._finish(gt_index, anchors.new_zeros(batch, num_anchors, 0), anchors, gt)
        iou, object_iou = _object_iou(anchors, gt)
        best_iou, best_gt = object_iou.max(-1)
        gt_index = torch.where(best_iou >= self.threshold, best_gt, BACKGROUND)
        gt_index = _scatter_assignment(gt_index, _best_default_box_per_gt(object_iou))
        return self._finish(gt_index, iou, anchors, gt)


class ATSSMatcher(_MatcherBase):
    """Adaptive training sample selection: an IoU threshold per object, from the default boxes near it.

    For each object: on every feature map, the `candidates_per_map` default boxes whose centres are nearest
    the object's centre are its candidates (9, the paper's; with several boxes per location, those of the
    nearest one or two locations); the object's threshold is the mean plus the
    standard deviation of the candidates' IoUs with it; the candidates at or over it whose centre lies inside
    the object become its positives. A default box claimed by several objects goes to the one it overlaps
    most; as in SSD's rule, every object also takes the default box it overlaps most, so none is left
    without a positive.

    Why: on BCCD at 320 pixels a platelet (about 20 x 26 pixels) overlaps its best default box by 0.45 on
    the median, so under SSD's 0.5 threshold 72% of platelets learn from that one forced box only (red cells
    3 positives on average, white cells 8). `maps` gives the layout of the default boxes: (locations,
    boxes per location) for each feature map, in the order the boxes are laid out.
    """

    def __init__(
        self, maps: list[tuple[int, int]], candidates_per_map: int = 9, crowd_threshold: float = 0.5
    ):
        if candidates_per_map < 1:
            raise UserError(f"ATSS needs at least one candidate per map, got {candidates_per_map}")
        if not maps or any(locations < 1 or boxes < 1 for locations, boxes in maps):
            raise UserError(f"ATSS needs the feature maps' (locations, boxes per location), got {maps}")
        super().__init__(0.5, crowd_threshold)  # the threshold is each object's own; 0.5 is unused
        self.maps = [(int(locations), int(boxes)) for locations, boxes in maps]
        self.candidates_per_map = candidates_per_map

    def __call__(self, anchors: Tensor, gt: PaddedTargets, **_predictions: Tensor) -> Matches:
        batch, num_anchors = gt.boxes.shape[0], anchors.shape[0]
        expected = sum(locations * boxes for locations, boxes in self.maps)
        if expected != num_anchors:
            raise UserError(
                f"ATSS was set up for {expected} default boxes ({self.maps}) but the model has {num_anchors}"
            )
        if gt.num_boxes == 0:
            gt_index = torch.full((batch, num_anchors), BACKGROUND, dtype=torch.int64, device=anchors.device)
            return self._finish(gt_index, anchors.new_zeros(batch, num_anchors, 0), anchors, gt)
        iou, object_iou = _object_iou(anchors, gt)
        anchor_centres = (anchors[:, :2] + anchors[:, 2:]) / 2
        gt_centres = (gt.boxes[..., :2] + gt.boxes[..., 2:]) / 2  # (B, M, 2)
        distance = torch.cdist(gt_centres, anchor_centres.expand(batch, -1, -1))  # (B, M, A)
        candidates = []
        start = 0
        for locations, boxes in self.maps:
            size = locations * boxes
            k = min(self.candidates_per_map, size)
            nearest = distance[..., start : start + size].topk(k, dim=-1, largest=False).indices
            candidates.append(nearest + start)
            start += size
        candidate = torch.cat(candidates, dim=-1)  # (B, M, K) indices into the default boxes
        candidate_iou = object_iou.transpose(1, 2).gather(2, candidate)  # (B, M, K); -1 on crowd/padding
        threshold = candidate_iou.mean(-1, keepdim=True) + candidate_iou.std(-1, keepdim=True)
        centre = anchor_centres[candidate]  # (B, M, K, 2)
        inside = (centre > gt.boxes[..., None, :2]).all(-1) & (centre < gt.boxes[..., None, 2:]).all(-1)
        chosen = (candidate_iou >= threshold) & inside & (candidate_iou > 0)
        positive = torch.zeros(batch, gt.num_boxes, num_anchors, dtype=torch.bool, device=anchors.device)
        positive.scatter_(2, candidate, chosen)
        claimed_iou = object_iou.masked_fill(~positive.transpose(1, 2), -1.0)  # (B, A, M)
        best_iou, best_gt = claimed_iou.max(-1)
        gt_index = torch.where(best_iou > 0, best_gt, BACKGROUND)
        gt_index = _scatter_assignment(gt_index, _best_default_box_per_gt(object_iou))
        return self._finish(gt_index, iou, anchors, gt)


def _picture_extent(anchors: Tensor) -> Tensor:
    """The (width, height) of the picture the default boxes tile, from their centres.

    Default boxes may reach past the picture, but their centres are laid out symmetrically inside it (at
    (i + 0.5) * step), so the smallest and the largest centre add up to the picture's size.
    """
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    return (centres.amin(0) + centres.amax(0)).clamp(min=1e-6)


class HungarianMatcher(_MatcherBase):
    """One-to-one matching: each object gets exactly one default box, the one whose prediction fits it best.

    The cost of giving object `m` to default box `a` is

        class_weight * (1 - p_a(label_m)) + l1_weight * |box_a - box_m|_1 + iou_weight * (1 - IoU(a, m))

    with `box_a` the model's decoded prediction at `a` (or the default box itself when `match_on` is
    "default_boxes", where the class term is left out) and `|.|_1` taken on (cx, cy, w, h) in units of the
    picture (its size found from the default boxes' centres). `linear_sum_assignment` finds the assignment
    of least total cost per picture. With `top_up_threshold`, default boxes not chosen by the assignment but with
    an IoU of at least that much with an object (default box against box, as in SSD) become positives too.
    """

    def __init__(
        self,
        class_weight: float = 1.0,
        l1_weight: float = 5.0,
        iou_weight: float = 2.0,
        match_on: str = "predictions",
        top_up_threshold: float | None = None,
        crowd_threshold: float = 0.5,
    ):
        if match_on not in ("predictions", "default_boxes"):
            raise UserError(f"match_on must be 'predictions' or 'default_boxes', got {match_on!r}")
        if min(class_weight, l1_weight, iou_weight) < 0:
            raise UserError("Hungarian cost weights must not be negative")
        super().__init__(top_up_threshold if top_up_threshold is not None else 0.5, crowd_threshold)
        self.class_weight = class_weight
        self.l1_weight = l1_weight
        self.iou_weight = iou_weight
        self.match_on = match_on
        self.top_up = top_up_threshold is not None
        self.needs_predictions = match_on == "predictions"

    def cost(
        self,
        anchors: Tensor,
        gt: PaddedTargets,
        pred_boxes: Tensor | None = None,
        cls_logits: Tensor | None = None,
    ) -> Tensor:
        """The assignment cost `(B, A, M)`; padding and crowd columns are left as they come (never used)."""
        if self.match_on == "predictions":
            if pred_boxes is None or cls_logits is None:
                raise UserError("HungarianMatcher(match_on='predictions') needs pred_boxes and cls_logits")
            boxes = pred_boxes.detach()
        else:
            boxes = anchors.expand(gt.boxes.shape[0], -1, -1)
        picture = _picture_extent(anchors).repeat(2)  # (w, h, w, h)
        l1 = torch.cdist(xyxy_to_cxcywh(boxes) / picture, xyxy_to_cxcywh(gt.boxes) / picture, p=1)
        cost = self.l1_weight * l1 + self.iou_weight * (1 - box_iou(boxes, gt.boxes))
        if self.match_on == "predictions" and self.class_weight:
            probs = cls_logits.detach().float().softmax(-1)
            index = gt.labels[:, None, :].expand(-1, probs.shape[1], -1)
            cost = cost + self.class_weight * (1 - torch.gather(probs, 2, index))
        return cost

    def __call__(
        self,
        anchors: Tensor,
        gt: PaddedTargets,
        pred_boxes: Tensor | None = None,
        cls_logits: Tensor | None = None,
    ) -> Matches:
        batch, num_anchors = gt.boxes.shape[0], anchors.shape[0]
        gt_index = torch.full((batch, num_anchors), BACKGROUND, dtype=torch.int64, device=anchors.device)
        if gt.num_boxes == 0:
            return self._finish(gt_index, anchors.new_zeros(batch, num_anchors, 0), anchors, gt)
        iou, object_iou = _object_iou(anchors, gt)
        if self.top_up:
            best_iou, best_gt = object_iou.max(-1)
            gt_index = torch.where(best_iou >= self.threshold, best_gt, BACKGROUND)
        # Imported here: scipy.optimize takes 0.3 s to import, and only this matcher needs it.
        from scipy.optimize import linear_sum_assignment

        cost = self.cost(anchors, gt, pred_boxes, cls_logits).float().cpu().numpy()
        objects = (gt.valid & ~gt.crowd).cpu().numpy()
        assigned = np.full(objects.shape, -1, dtype=np.int64)
        for b in range(batch):  # scipy solves one image at a time
            columns = np.flatnonzero(objects[b])
            if columns.size == 0:
                continue
            image_cost = cost[b][:, columns]
            if not np.isfinite(image_cost).all():
                # Non-finite predictions (a diverged model) must not stop the solver: they are never chosen.
                image_cost = np.nan_to_num(image_cost, nan=1e6, posinf=1e6, neginf=-1e6)
            rows, picked = linear_sum_assignment(image_cost)
            assigned[b, columns[picked]] = rows
        gt_index = _scatter_assignment(gt_index, torch.from_numpy(assigned).to(anchors.device))
        return self._finish(gt_index, iou, anchors, gt)
