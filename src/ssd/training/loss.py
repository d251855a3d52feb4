"""MultiBoxLoss: SSD's training objective, localisation on matched default boxes plus mined classification.

Per batch:

1. a matcher (`ssd.training.matching`) decides which default boxes learn which object (positives), which learn the
   background (candidate negatives) and which are ignored (inside crowd boxes);
2. localisation: smooth L1 (or L1) on the encoded offsets of the positives, or 1 - GIoU on their decoded
   boxes;
3. classification: cross-entropy on the positives and on the hardest negatives of each picture, ranked by
   their cross-entropy and kept at most `neg_pos_ratio` per positive (hard negative mining); a picture
   without objects keeps `negatives_per_empty_image` of them so that it still teaches where nothing is.
   With `cls_loss="quality"` a positive's target is soft: its class gets the IoU of its decoded box with
   the object, the background the rest, so that the score learnt ranks boxes by how well they fit (the
   idea of quality focal loss, kept on SSD's softmax so that post-processing is unchanged). With
   `cls_loss="focal"` there is no mining: every default box that is not ignored learns, each weighed by
   `(1 - p)^2` of its own class (RetinaNet's focal loss on SSD's softmax), so that the many easy
   background boxes add little;
4. both sums are divided by the number of positives, guarded against zero (see `_normaliser`).

Background is class 0 and `num_classes` counts it: a dataset with 3 object classes trains with num_classes=4.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssd.errors import UserError, did_you_mean
from ssd.ops.anchors import boxes_per_location
from ssd.ops.boxes import BoxCoder, box_area, elementwise_generalized_box_iou
from ssd.training.matching import ATSSMatcher, HungarianMatcher, IoUMatcher, pad_targets
from ssd.training.options import CLS_LOSSES, LOC_LOSSES, TrainOptions

FOCAL_GAMMA = 2.0  # RetinaNet's
FOCAL_ALPHA = 0.25  # the weight of an object's term; the background's is 1 - FOCAL_ALPHA (RetinaNet's)
FOCAL_PRIOR = 0.01  # the probability of an object class that a fresh classification header starts with


class MultiBoxLoss(nn.Module):
    """SSD's loss with a choice of matcher and localisation loss.

    Args:
        num_classes: number of classes *including the background* (class 0): K object classes -> K + 1.
        matcher: an `IoUMatcher` (default: SSD's, threshold 0.5), an `ATSSMatcher` or a `HungarianMatcher`.
        neg_pos_ratio: at most this many mined negatives per positive, per picture.
        loc_loss: "smooth_l1" (SSD's), "l1", or "giou" (1 - GIoU between decoded and ground-truth boxes).
        loc_weight: weight of the localisation term in the total (SSD's alpha).
        cls_loss: "ce" (SSD's: a positive's target is its class), "quality" (its class with the IoU of its
            decoded box as the target probability, the background with the rest) or "focal" (every default
            box not ignored, each term weighed by (1 - p)^2, no mining).
        negatives_per_empty_image: hardest negatives kept in a picture with no positive.
        box_coder: must be the post-processor's coder so that what is learnt decodes the same way.

    `forward` returns a dict of 0-d tensors: `loss` (to backpropagate), `loc_loss`, `conf_loss`, `train_acc`
    (accuracy over the positives and the mined negatives) and `num_positives`.
    """

    def __init__(
        self,
        num_classes: int,
        matcher: IoUMatcher | ATSSMatcher | HungarianMatcher | None = None,
        neg_pos_ratio: float = 3.0,
        loc_loss: str = "smooth_l1",
        loc_weight: float = 1.0,
        cls_loss: str = "ce",
        negatives_per_empty_image: int = 16,
        box_coder: BoxCoder | None = None,
    ):
        super().__init__()
        if num_classes < 2:
            raise UserError(
                f"num_classes={num_classes}: it counts the background (class 0), so one object class "
                "needs num_classes=2"
            )
        if loc_loss not in LOC_LOSSES:
            raise UserError(
                f"loc_loss must be one of {', '.join(LOC_LOSSES)}; got {loc_loss!r}"
                + did_you_mean(str(loc_loss), LOC_LOSSES)
            )
        if cls_loss not in CLS_LOSSES:
            raise UserError(
                f"cls_loss must be one of {', '.join(CLS_LOSSES)}; got {cls_loss!r}"
                + did_you_mean(str(cls_loss), CLS_LOSSES)
            )
        if neg_pos_ratio <= 0:
            raise UserError(f"neg_pos_ratio must be positive, got {neg_pos_ratio}")
        if negatives_per_empty_image < 0:
            raise UserError(f"negatives_per_empty_image must be >= 0, got {negatives_per_empty_image}")
        self.num_classes = num_classes
        self.matcher = matcher if matcher is not None else IoUMatcher()
        self.neg_pos_ratio = neg_pos_ratio
        self.loc_loss = loc_loss
        self.loc_weight = loc_weight
        self.cls_loss = cls_loss
        self.negatives_per_empty_image = negatives_per_empty_image
        self.box_coder = box_coder if box_coder is not None else BoxCoder()

    @classmethod
    def for_model(cls, model: nn.Module, **options) -> MultiBoxLoss:
        """The loss for an `SSD` model: its `num_classes` and the box coder of its post-processor."""
        return cls(model.num_classes, box_coder=model.box_coder, **options)

    def forward(
        self, cls_logits: Tensor, bbox_regression: Tensor, anchors: Tensor, targets: list[dict]
    ) -> dict[str, Tensor]:
        """`cls_logits` `(B, A, C)`, `bbox_regression` `(B, A, 4)` encoded offsets, `anchors` `(A, 4)` xyxy in
        pixels of the model's input, `targets` one dict per picture with `boxes` (same pixels), `labels`
        (1..C-1) and optionally `iscrowd`."""
        batch, num_anchors, num_classes = cls_logits.shape
        if num_classes != self.num_classes:
            raise UserError(
                f"the model scores {num_classes} classes but the loss was built for num_classes="
                f"{self.num_classes} (both count the background)"
            )
        if bbox_regression.shape != (batch, num_anchors, 4) or anchors.shape != (num_anchors, 4):
            raise UserError(
                f"shapes do not fit: cls_logits {tuple(cls_logits.shape)}, bbox_regression "
                f"{tuple(bbox_regression.shape)}, anchors {tuple(anchors.shape)}"
            )
        if len(targets) != batch:
            raise UserError(f"{len(targets)} targets for a batch of {batch} pictures")
        # Matching and box coding in float32 even under mixed precision: areas of pixel boxes overflow float16.
        anchors = anchors.float()
        gt = pad_targets(targets, self.num_classes, cls_logits.device)
        predictions = {}
        if self.matcher.needs_predictions or self.cls_loss == "quality":
            with torch.no_grad():
                predictions = {
                    "pred_boxes": self.box_coder.decode(bbox_regression.detach().float(), anchors),
                    "cls_logits": cls_logits.detach(),
                }
        matches = self.matcher(anchors, gt, **predictions)
        positive = matches.labels > 0
        num_positives = positive.sum()

        # Negatives are ranked by the loss they would have as background, without a graph: the gradient is
        # then taken only on the few default boxes that are kept, not on every box of every picture.
        with torch.no_grad():
            background_loss = -F.log_softmax(cls_logits.detach().float(), dim=-1)[..., 0]
        mined = self._hard_negatives(background_loss, matches.labels, positive)
        selected = positive | mined
        normaliser = self._normaliser(num_positives, mined.sum())
        selected_logits = cls_logits[selected].float()
        selected_labels = matches.labels[selected]
        if self.cls_loss == "quality":
            quality = self._fit_quality(predictions["pred_boxes"], matches.boxes, positive)[selected]
            conf_loss = self._soft_cross_entropy(selected_logits, selected_labels, quality) / normaliser
        elif self.cls_loss == "focal":
            learning = matches.labels >= 0  # all but the ignored; the mined ones only count for train_acc
            conf_loss = self._focal(cls_logits[learning].float(), matches.labels[learning]) / normaliser
        else:
            conf_loss = F.cross_entropy(selected_logits, selected_labels, reduction="sum") / normaliser

        loc_loss = self._localisation(bbox_regression, anchors, matches.boxes, positive) / normaliser
        with torch.no_grad():
            correct = (selected_logits.argmax(-1) == selected_labels).sum()
            train_acc = correct / max(len(selected_labels), 1)
        return {
            "loss": self.loc_weight * loc_loss + conf_loss,
            "loc_loss": loc_loss.detach(),
            "conf_loss": conf_loss.detach(),
            "train_acc": train_acc,
            "num_positives": num_positives,
        }

    def _hard_negatives(self, background_loss: Tensor, labels: Tensor, positive: Tensor) -> Tensor:
        """Per image, the `neg_pos_ratio * positives` background default boxes of highest cross-entropy."""
        candidate = labels == 0
        num_pos = positive.sum(1)
        wanted = torch.where(
            num_pos > 0,
            (num_pos * self.neg_pos_ratio).floor().long(),
            torch.full_like(num_pos, self.negatives_per_empty_image),
        )
        wanted = torch.minimum(wanted, candidate.sum(1))
        k = int(wanted.max())
        if k == 0:
            return torch.zeros_like(candidate)
        # topk over the candidates only: cheaper than sorting every default box of every picture.
        ranked = background_loss.masked_fill(~candidate, -1.0)
        top = ranked.topk(k, dim=1, sorted=True).indices
        keep = torch.arange(k, device=labels.device)[None, :] < wanted[:, None]
        return torch.zeros_like(candidate).scatter(1, top, keep) & candidate

    @staticmethod
    def _fit_quality(pred_boxes: Tensor, gt_boxes: Tensor, positive: Tensor) -> Tensor:
        """Per default box, the IoU of its decoded box with its object (1 where it is not a positive)."""
        top_left = torch.maximum(pred_boxes[..., :2], gt_boxes[..., :2])
        bottom_right = torch.minimum(pred_boxes[..., 2:], gt_boxes[..., 2:])
        intersection = (bottom_right - top_left).clamp(min=0).prod(-1)
        union = box_area(pred_boxes) + box_area(gt_boxes) - intersection
        iou = intersection / union.clamp(min=torch.finfo(union.dtype).eps)
        return torch.where(positive, iou, torch.ones_like(iou))

    @staticmethod
    def _soft_cross_entropy(logits: Tensor, labels: Tensor, quality: Tensor) -> Tensor:
        """Summed cross-entropy against `quality` on the label and `1 - quality` on the background.

        A negative (label 0) has quality 1 on the background: plain cross-entropy."""
        log_p = F.log_softmax(logits, dim=-1)
        on_label = log_p.gather(1, labels[:, None]).squeeze(1)
        return -(quality * on_label + (1 - quality) * log_p[:, 0]).sum()

    @staticmethod
    def _focal(logits: Tensor, labels: Tensor) -> Tensor:
        """Summed focal loss, `-alpha_t (1 - p_t)^gamma log p_t`, with `p_t` the softmax probability of the label."""
        log_p = F.log_softmax(logits, dim=-1).gather(1, labels[:, None]).squeeze(1)
        alpha = torch.where(labels > 0, FOCAL_ALPHA, 1 - FOCAL_ALPHA)
        return -(alpha * (1 - log_p.exp()).pow(FOCAL_GAMMA) * log_p).sum()

    def _normaliser(self, num_positives: Tensor, num_mined: Tensor) -> Tensor:
        """The number of positives; where a batch has few or none, the mined negatives count in their place.

        `max(positives, mined / neg_pos_ratio, 1)`: equal to the positives whenever every picture has objects,
        and for a batch of empty pictures it keeps the loss per mined negative on the same scale as in an
        ordinary batch instead of dividing a sum of many terms by 1.
        """
        return torch.maximum(num_positives.float(), num_mined.float() / self.neg_pos_ratio).clamp(min=1.0)

    def _localisation(
        self, bbox_regression: Tensor, anchors: Tensor, gt_boxes: Tensor, positive: Tensor
    ) -> Tensor:
        pred = bbox_regression[positive].float()
        if pred.numel() == 0:
            # Keep the graph connected so that backward works and gives zero gradients.
            return bbox_regression.sum() * 0.0
        pos_anchors = anchors.expand_as(bbox_regression)[positive].float()
        pos_boxes = gt_boxes[positive].float()
        if self.loc_loss == "giou":
            decoded = self.box_coder.decode(pred, pos_anchors)
            return (1 - elementwise_generalized_box_iou(decoded, pos_boxes)).sum()
        target = self.box_coder.encode(pos_boxes, pos_anchors)
        if self.loc_loss == "smooth_l1":
            return F.smooth_l1_loss(pred, target, beta=1.0, reduction="sum")
        return F.l1_loss(pred, target, reduction="sum")


def start_with_background_prior(model: nn.Module, prior: float = FOCAL_PRIOR) -> None:
    """Biases of the classification headers' last convolutions such that every default box starts scoring the
    background at `1 - prior` and each object class at `prior / K` (RetinaNet's initialisation for its focal
    loss). With zero biases, the first steps of a focal loss over every default box are spent pushing tens of
    thousands of background boxes down from 1/(K + 1); loading weights afterwards overwrites these biases."""
    num_classes = model.num_classes
    bias = torch.full((num_classes,), math.log(prior / (num_classes - 1)))
    bias[0] = math.log(1 - prior)
    for header in model.classification_headers:
        last = [module for module in header.modules() if isinstance(module, nn.Conv2d)][-1]
        with torch.no_grad():
            # output channel a * C + c scores class c of the cell's default box a
            last.bias.copy_(bias.repeat(last.out_channels // num_classes))


def default_box_maps(model: nn.Module) -> list[tuple[int, int]]:
    """(locations, boxes per location) of each feature map of an `SSD`, in the order its default boxes run."""
    per_location = boxes_per_location(model.config.aspect_ratios)
    return [(h * w, boxes) for (h, w), boxes in zip(model.feature_sizes, per_location, strict=True)]


def build_loss(model: nn.Module, options: TrainOptions) -> MultiBoxLoss:
    """MultiBoxLoss with the matcher and loss options of a training run."""
    if options.matcher == "hungarian":
        # one default box per object, chosen on the model's own predictions (no IoU threshold)
        matcher = HungarianMatcher()
    elif options.matcher == "atss":
        matcher = ATSSMatcher(default_box_maps(model))
    else:
        matcher = IoUMatcher(threshold=options.iou_threshold)
    return MultiBoxLoss.for_model(
        model,
        matcher=matcher,
        neg_pos_ratio=options.neg_pos_ratio,
        loc_loss=options.loc_loss,
        loc_weight=options.loc_weight,
        cls_loss=options.cls_loss,
    )
