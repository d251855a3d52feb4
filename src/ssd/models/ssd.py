"""The SSD module: preprocess -> backbone -> extras -> headers -> (loss inputs | PostProcessor)."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ssd.errors import UserError
from ssd.models.config import SSDConfig
from ssd.models.fold import prepare_for_inference
from ssd.models.heads import build_headers, flatten_header_output
from ssd.models.postprocess import Detections, PostProcessor
from ssd.models.preprocess import Preprocess
from ssd.models.summary import model_summary
from ssd.models.weights.torchvision import load_torchvision_weights
from ssd.ops.anchors import boxes_per_location, default_boxes_xyxy
from ssd.ops.boxes import BoxCoder

# Each model's inference form and the weights' state it was made from (see `SSD.inference_form`); kept outside
# the module so that copying or saving a model never copies its form, and dropped with the model.
_INFERENCE_FORMS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_INFERENCE_FORM_LOCK = threading.Lock()


def _tensor_state(tensor: Tensor) -> tuple:
    """What changes when a tensor's values may have: its storage, and its version counter (tensors made under
    `torch.inference_mode()` have none: they cannot be changed in place outside it anyway)."""
    version = None if tensor.is_inference() else tensor._version
    return id(tensor), tensor.data_ptr(), version, tensor.device, tensor.dtype


class SSD(nn.Module):
    """Single Shot MultiBox Detector.

    In eval mode, `model(images)` returns one detections dict per picture (see `PostProcessor`). In train
    mode, `model(images, targets)` returns what `MultiBoxLoss` needs: `cls_logits` `(B, A, C)`,
    `bbox_regression` `(B, A, 4)`, `anchors` `(A, 4)` and the targets with their boxes scaled to the input size.
    `images` is a list of pictures of any size (tensor, numpy or PIL) or a `(B, 3, H, W)` batch.
    """

    def __init__(
        self,
        config: SSDConfig,
        backbone: nn.Module,
        extras: nn.ModuleList,
        num_classes: int,
        class_names: Sequence[str] | None = None,
    ):
        super().__init__()
        self.config = config
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names is not None else None
        self.preprocess = Preprocess(config.input_size, config.image_mean, config.image_std)
        self.backbone = backbone
        self.extras = extras
        self.feature_sizes, channels = self._dry_run()
        per_location = boxes_per_location(config.aspect_ratios)
        norm = {"bn_eps": config.batchnorm_eps, "bn_momentum": config.batchnorm_momentum}
        self.classification_headers = build_headers(channels, per_location, num_classes, config.head, **norm)
        self.regression_headers = build_headers(channels, per_location, 4, config.head, **norm)
        anchors = default_boxes_xyxy(
            self.feature_sizes,
            config.input_size,
            config.scales,
            config.aspect_ratios,
            config.steps,
            config.clip_default_boxes,
        )
        self.register_buffer("anchors", anchors, persistent=False)
        self.box_coder = BoxCoder(config.variances)
        self.postprocessor = PostProcessor(
            config.score_threshold,
            config.nms_threshold,
            config.detections_per_image,
            config.topk_candidates,
            self.box_coder,
        )

    @property
    def arch(self) -> str:
        return self.config.arch

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) every picture is resized to."""
        return tuple(self.config.input_size)

    @property
    def num_default_boxes(self) -> int:
        return len(self.anchors)

    def _dry_run(self) -> tuple[list[tuple[int, int]], list[int]]:
        """Find each feature map's size and width by running the layers once on an empty picture."""
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                maps = self.feature_maps(torch.zeros(1, 3, *self.config.input_size))
        except RuntimeError as error:
            raise UserError(
                f"{self.config.arch}: input size {self.config.input_size} is too small for its layers ({error})"
            ) from error
        finally:
            self.train(was_training)
        if len(maps) != self.config.num_feature_maps:
            raise UserError(
                f"{self.config.arch}: the layers give {len(maps)} feature maps but the config has default boxes "
                f"for {self.config.num_feature_maps}"
            )
        return [tuple(m.shape[-2:]) for m in maps], [m.shape[1] for m in maps]

    def feature_maps(self, batch: Tensor) -> list[Tensor]:
        maps = list(self.backbone(batch))
        x = maps[-1]
        for block in self.extras:
            x = block(x)
            maps.append(x)
        return maps

    def head_outputs(self, batch: Tensor) -> tuple[Tensor, Tensor]:
        """Normalised batch -> (`cls_logits` `(B, A, C)`, `bbox_regression` `(B, A, 4)`)."""
        maps = self.feature_maps(batch)
        cls_logits = flatten_header_output(
            [h(m) for h, m in zip(self.classification_headers, maps, strict=True)], self.num_classes
        )
        bbox_regression = flatten_header_output(
            [h(m) for h, m in zip(self.regression_headers, maps, strict=True)], 4
        )
        return cls_logits, bbox_regression

    def forward(self, images: Tensor | Sequence[Any], targets: Sequence[dict[str, Tensor]] | None = None):
        batch, original_sizes = self.preprocess(images)
        cls_logits, bbox_regression = self.head_outputs(batch)
        if self.training:
            return {
                "cls_logits": cls_logits,
                "bbox_regression": bbox_regression,
                "anchors": self.anchors,
                "targets": self._scale_targets(targets, original_sizes) if targets is not None else None,
            }
        return self.postprocessor(
            cls_logits, bbox_regression, self.anchors, self.config.input_size, original_sizes
        )

    def _scale_targets(self, targets: Sequence[dict[str, Tensor]], original_sizes) -> list[dict[str, Tensor]]:
        input_h, input_w = self.config.input_size
        scaled = []
        for target, (orig_h, orig_w) in zip(targets, original_sizes, strict=True):
            target = dict(target)
            boxes = target["boxes"].to(self.anchors.device, torch.float32)
            if (orig_h, orig_w) != (input_h, input_w):
                boxes = boxes * boxes.new_tensor([input_w / orig_w, input_h / orig_h] * 2)
            target["boxes"] = boxes
            scaled.append(target)
        return scaled

    @torch.inference_mode()
    def predict(self, images: Tensor | Sequence[Any]) -> list[Detections]:
        """Detections for a list of pictures of any size (or one picture), in the pictures' own pixels.

        The network runs in the model's inference form (`inference_form`: BatchNorm folded into the
        convolutions, channels-last), the same detections up to float rounding in less time; the pictures are
        prepared and the detections chosen by this model's own `preprocess` and `postprocessor`, so a setting
        changed on them (a score threshold) applies at once."""
        if isinstance(images, Tensor) and images.ndim == 3 or not isinstance(images, (list, tuple, Tensor)):
            images = [images]
        batch, original_sizes = self.preprocess(images)
        network = self.inference_form()
        was_training = network.training  # only a prepared model is its own form, and it may be training
        network.eval()
        try:
            cls_logits, bbox_regression = network.head_outputs(batch)
        finally:
            network.train(was_training)
        return self.postprocessor(
            cls_logits, bbox_regression, self.anchors, self.config.input_size, original_sizes
        )

    def inference_form(self) -> SSD:
        """This model made ready for inference (`ssd.models.fold.prepare_for_inference`), in eval mode, kept
        while the weights stay as they are: made again when a tensor was changed in place (an optimizer step,
        a `copy_` of `load_state_dict`: its version counter moves) or replaced (`param.data = ...`: its
        storage moves). Hooks added to the model later are not seen by the form."""
        if getattr(self, "is_inference_form", False):
            return self
        key = tuple(_tensor_state(t) for t in (*self.parameters(), *self.buffers()))
        kept = _INFERENCE_FORMS.get(self)
        if kept is not None and kept[0] == key:
            return kept[1]
        with _INFERENCE_FORM_LOCK:  # one build at a time: threads calling predict at once share it
            kept = _INFERENCE_FORMS.pop(
                self, None
            )  # an out-of-date form is dropped before the new one is made
            if kept is not None and kept[0] == key:
                _INFERENCE_FORMS[self] = kept
                return kept[1]
            # Made from normal tensors even under `torch.inference_mode()` (an evaluation), so the form can be
            # used outside it too.
            with torch.inference_mode(False), torch.no_grad():
                form = prepare_for_inference(self)
            _INFERENCE_FORMS[self] = (key, form)
            return form

    def load_torchvision(self, path: str | Path) -> list[str]:
        """Load a torchvision SSD checkpoint or an ImageNet backbone file; returns notes on what was done."""
        return load_torchvision_weights(self, path)

    def summary(self) -> dict[str, Any]:
        return model_summary(self)
