"""The SSD inference path as fixed-shape graphs that ONNX and TorchScript can hold.

`NetworkGraph` is the network alone: pictures already resized to the input size (0-1 floats) in, the raw
`cls_logits` and `bbox_regression` out. Normalisation is inside, so a user of the file needs only the input
size. `DetectionGraph` adds the post-processing: softmax, box decoding, per-class top-k, greedy NMS and the
best `detections_per_image` boxes, giving padded tensors and a count per picture.

`PostProcessor` returns lists of different lengths and prunes candidates with a data-dependent loop, which
neither format holds. `DetectionGraph` computes the same detections without either: NMS runs on every
per-class candidate (exactly what the pruning is proven to reproduce). In ONNX, NMS is the standard
`NonMaxSuppression` operator (greedy, ties by index, `IoU > threshold` suppresses), applied to each class's
score-sorted candidates; in TorchScript it is the same vectorised fixed-point greedy NMS as `ssd.ops.nms`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ssd.ops.nms import fixed_point_passes

GRAPH_OUTPUTS = ("boxes", "scores", "labels", "confs", "num_detections")


class NetworkGraph(nn.Module):
    """`images` `(B, 3, H, W)` in [0, 1] at the input size -> (`cls_logits`, `bbox_regression`)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.register_buffer("image_mean", model.preprocess.image_mean.clone(), persistent=False)
        self.register_buffer("image_std", model.preprocess.image_std.clone(), persistent=False)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        return self.model.head_outputs((images - self.image_mean) / self.image_std)


def pairwise_iou(boxes: Tensor) -> Tensor:
    """IoU of every pair within each group, `(G, K, 4)` -> `(G, K, K)`: `ssd.ops.boxes.box_iou`'s arithmetic,
    step by step in the same order (so the same float results). Its own form because TorchScript compiles
    neither `box_iou`'s generator expressions nor its `out=` buffers."""
    ax1 = boxes[:, :, 0].unsqueeze(-1)
    ay1 = boxes[:, :, 1].unsqueeze(-1)
    ax2 = boxes[:, :, 2].unsqueeze(-1)
    ay2 = boxes[:, :, 3].unsqueeze(-1)
    bx1 = boxes[:, :, 0].unsqueeze(-2)
    by1 = boxes[:, :, 1].unsqueeze(-2)
    bx2 = boxes[:, :, 2].unsqueeze(-2)
    by2 = boxes[:, :, 3].unsqueeze(-2)
    width = (torch.minimum(ax2, bx2) - torch.maximum(ax1, bx1)).clamp(min=0)
    height = (torch.minimum(ay2, by2) - torch.maximum(ay1, by1)).clamp(min=0)
    intersection = width * height
    area1 = (ax2 - ax1).clamp(min=0) * (ay2 - ay1).clamp(min=0)
    area2 = (bx2 - bx1).clamp(min=0) * (by2 - by1).clamp(min=0)
    union = (area1 + area2) - intersection
    return intersection / union.clamp(min=1.1754943508222875e-38)  # float32 tiny, as box_iou


def greedy_nms_mask(boxes: Tensor, valid: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS on score-sorted groups `(G, K, 4)`; `valid` `(G, K)`; returns which boxes are kept.

    `ssd.ops.nms.resolve_greedy_suppression`'s fixed-point passes, on an IoU that TorchScript compiles.
    """
    if boxes.shape[1] == 0:
        return valid.clone()
    overlap = pairwise_iou(boxes) > iou_threshold
    earlier = torch.ones(overlap.shape[1], overlap.shape[2], dtype=torch.bool, device=boxes.device).triu(1)
    return fixed_point_passes(overlap & earlier & valid.unsqueeze(2), valid)


class _OnnxNonMaxSuppression(torch.autograd.Function):
    """Greedy NMS per group; in an ONNX graph, the `NonMaxSuppression` operator.

    Traced in PyTorch it computes `greedy_nms_mask`; the exported graph calls onnxruntime's implementation
    instead, which is the same greedy algorithm (candidates in score order, index breaking ties, a box
    suppressed by a kept box with IoU above the threshold). Boxes below the score threshold sit after every
    valid box in the sorted order, so they cannot suppress a valid one; the mask removes them afterwards.
    """

    @staticmethod
    def forward(ctx, boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
        valid = torch.ones_like(scores, dtype=torch.bool)
        return greedy_nms_mask(boxes, valid, iou_threshold)

    @staticmethod
    def symbolic(g, boxes, scores, iou_threshold: float):
        # boxes (G, K, 4), scores (G, K): each group is one "batch" of one class for the operator.
        shape = g.op("Shape", scores)
        k = g.op("Gather", shape, g.op("Constant", value_t=torch.tensor(1)), axis_i=0)
        onnx_scores = g.op("Unsqueeze", scores, g.op("Constant", value_t=torch.tensor([1])))
        selected = g.op(
            "NonMaxSuppression",
            boxes,
            onnx_scores,
            g.op("Unsqueeze", k, g.op("Constant", value_t=torch.tensor([0]))),
            g.op("Constant", value_t=torch.tensor([iou_threshold], dtype=torch.float32)),
            center_point_box_i=0,
        )  # (M, 3): group, class (always 0), box
        group = g.op("Gather", selected, g.op("Constant", value_t=torch.tensor(0)), axis_i=1)
        box = g.op("Gather", selected, g.op("Constant", value_t=torch.tensor(2)), axis_i=1)
        flat_index = g.op("Add", g.op("Mul", group, k), box)
        flat_size = g.op("Size", scores)
        ones = g.op(
            "Expand",
            g.op("Constant", value_t=torch.tensor([1.0])),
            g.op("Shape", flat_index),
        )
        zeros = g.op(
            "ConstantOfShape",
            g.op("Unsqueeze", flat_size, g.op("Constant", value_t=torch.tensor([0]))),
            value_t=torch.tensor([0.0]),
        )
        kept = g.op(
            "ScatterElements",
            zeros,
            flat_index,
            ones,
            axis_i=0,
        )
        kept = g.op("Reshape", kept, shape)
        return g.op("Greater", kept, g.op("Constant", value_t=torch.tensor(0.5)))


class DetectionGraph(nn.Module):
    """Network and post-processing with fixed-shape outputs, for ONNX and TorchScript.

    `images` as `NetworkGraph`'s. Outputs, `D` = detections per picture: `boxes` `(B, D, 4)` xyxy in pixels of
    the input size, `scores` `(B, D)`, `labels` `(B, D)` int64, `confs` `(B, D, C)` and `num_detections`
    `(B,)`; row `i < num_detections[b]` of picture `b` is its i-th detection by decreasing score, as
    `PostProcessor` orders them; the rows after it are zeros. Scale the boxes by (original / input size).
    """

    def __init__(self, model: nn.Module, network: nn.Module | None = None):
        super().__init__()
        # TorchScript takes the network traced (`network`) and compiles only this module's own code.
        self.network = network if network is not None else NetworkGraph(model)
        post = model.postprocessor
        self.register_buffer("anchors", model.anchors.clone(), persistent=False)
        self.center_variance = float(post.box_coder.center_variance)
        self.size_variance = float(post.box_coder.size_variance)
        self.score_threshold = float(post.score_threshold)
        self.nms_threshold = float(post.nms_threshold)
        self.num_classes = int(model.num_classes)
        self.topk = min(int(post.topk_candidates), len(model.anchors))
        self.detections = min(int(post.detections_per_image), (self.num_classes - 1) * self.topk)
        self.input_height = float(model.config.input_size[0])
        self.input_width = float(model.config.input_size[1])

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        cls_logits, bbox_regression = self.network(images)
        probabilities = torch.softmax(cls_logits, dim=-1)
        boxes = self._decode(bbox_regression)
        batch = probabilities.shape[0]
        k = self.topk
        # Each class's best candidates, best first: (B, C-1, k), as PostProcessor lays them out.
        object_scores = probabilities[:, :, 1:].transpose(1, 2)
        scores, anchor_index = object_scores.topk(k, dim=2)
        candidate_boxes = torch.gather(
            boxes.unsqueeze(1).expand(-1, self.num_classes - 1, -1, -1),
            2,
            anchor_index.unsqueeze(-1).expand(-1, -1, -1, 4),
        )
        valid = scores > self.score_threshold
        group_boxes = candidate_boxes.reshape(-1, k, 4)
        if torch.jit.is_scripting():
            keep = greedy_nms_mask(group_boxes, valid.reshape(-1, k), self.nms_threshold)
        else:
            keep = _OnnxNonMaxSuppression.apply(group_boxes, scores.reshape(-1, k), self.nms_threshold)
        keep = keep.reshape(valid.shape) & valid
        # The best detections over all classes; ties keep the (class, rank) order, like a stable sort.
        kept_scores = torch.where(keep, scores, torch.full_like(scores, -1.0)).reshape(batch, -1)
        if torch.jit.is_scripting():
            order = torch.sort(kept_scores, dim=1, descending=True, stable=True)[1][:, : self.detections]
            top_scores = torch.gather(kept_scores, 1, order)
        else:
            top_scores, order = kept_scores.topk(self.detections, dim=1)
        found = top_scores > -0.5
        num_detections = found.sum(dim=1)
        labels = torch.div(order, k, rounding_mode="floor") + 1
        anchors = torch.gather(anchor_index.reshape(batch, -1), 1, order)
        out_boxes = torch.gather(boxes, 1, anchors.unsqueeze(-1).expand(-1, -1, 4))
        confs = torch.gather(probabilities, 1, anchors.unsqueeze(-1).expand(-1, -1, self.num_classes))
        found_float = found.to(out_boxes.dtype)
        return (
            out_boxes * found_float.unsqueeze(-1),
            top_scores * found_float,
            labels * found.to(labels.dtype),
            confs * found_float.unsqueeze(-1),
            num_detections,
        )

    def _decode(self, offsets: Tensor) -> Tensor:
        """`BoxCoder.decode` then `clip_boxes`, with the same arithmetic."""
        anchors = self.anchors
        anchor_wh = anchors[:, 2:] - anchors[:, :2]
        anchor_center = (anchors[:, :2] + anchors[:, 2:]) / 2
        center = offsets[..., :2] * self.center_variance * anchor_wh + anchor_center
        log_size = (offsets[..., 2:] * self.size_variance).clamp(max=4.135166556742356)
        size = torch.exp(log_size) * anchor_wh
        x1y1 = center - size / 2
        x2y2 = center + size / 2
        return torch.stack(
            (
                x1y1[..., 0].clamp(0, self.input_width),
                x1y1[..., 1].clamp(0, self.input_height),
                x2y2[..., 0].clamp(0, self.input_width),
                x2y2[..., 1].clamp(0, self.input_height),
            ),
            dim=-1,
        )
