"""The loss teaches real architectures: a few synthetic pictures are learnt by heart, then found by `predict`."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import ssd
from ssd.ops.boxes import box_iou
from ssd.training.loss import MultiBoxLoss

COLOURS = torch.tensor([[230, 40, 40], [40, 200, 40], [40, 60, 230]], dtype=torch.uint8)


@pytest.fixture(autouse=True)
def _one_thread():
    # Batches of two or three small pictures are made of many small operations, which a second thread
    # slows down on a busy machine (each parallel kernel waits for its slower thread) more than it helps.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def coloured_rectangles(count: int, size: int, seed: int = 1) -> tuple[torch.Tensor, list[dict]]:
    """Grey pictures with one rectangle in each half; the class is the rectangle's colour (1..3)."""
    generator = torch.Generator().manual_seed(seed)

    def draw(low: int, high: int) -> int:
        return int(torch.randint(low, high, (1,), generator=generator))

    pictures, targets = [], []
    for _ in range(count):
        picture = torch.full((3, size, size), 128, dtype=torch.uint8)
        boxes, labels = [], []
        for half in range(2):
            w, h = draw(size // 4, size // 2), draw(size // 4, size // 2)
            x, y = draw(0, size // 2 - w + 1) + half * size // 2, draw(0, size - h)
            colour = draw(0, 3)
            picture[:, y : y + h, x : x + w] = COLOURS[colour][:, None, None]
            boxes.append([x, y, x + w, y + h])
            labels.append(colour + 1)
        pictures.append(picture)
        targets.append({"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels)})
    return torch.stack(pictures), targets


def train(
    model: nn.Module, pictures: torch.Tensor, targets: list[dict], steps: int, lr: float
) -> list[float]:
    criterion = MultiBoxLoss.for_model(model)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        out = model(pictures, targets)
        loss = criterion(out["cls_logits"], out["bbox_regression"], out["anchors"], out["targets"])["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


def recalibrate_batchnorm(model: nn.Module, pictures: torch.Tensor) -> None:
    """Set BatchNorm's running statistics to those of the training pictures.

    After a few dozen steps from scratch the running averages still lag far behind the weights, and in eval
    mode the network would see statistics of a network that no longer exists.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average: one pass gives the exact statistics
    model.train()
    with torch.no_grad():
        model(pictures)


def assert_finds_every_object(model: nn.Module, pictures: torch.Tensor, targets: list[dict]) -> None:
    detections = model.predict(list(pictures))
    for picture, (found, target) in enumerate(zip(detections, targets, strict=True)):
        for box, label in zip(target["boxes"], target["labels"], strict=True):
            same_class = found["result_labels"] == label
            best = box_iou(box[None], found["result_boxes"][same_class]).max() if same_class.any() else 0.0
            assert best >= 0.5, f"picture {picture}: class {int(label)} at {box.tolist()} not found"


@pytest.mark.slow
def test_mobilenetv3_ssd_learns_a_few_pictures_by_heart():
    torch.manual_seed(0)
    pictures, targets = coloured_rectangles(3, 96)
    model = ssd.build_model("mobilenetv3_ssd", num_classes=4, input_size=96)
    losses = train(model, pictures, targets, steps=25, lr=3e-3)
    assert losses[-1] * 10 <= losses[0], losses
    recalibrate_batchnorm(model, pictures)
    assert_finds_every_object(model, pictures, targets)


class _FrozenMaps(nn.Module):
    """Stands in for a frozen backbone: returns the maps it computed once for the training pictures."""

    def __init__(self, maps: list[torch.Tensor]):
        super().__init__()
        self.maps = maps

    def forward(self, batch: torch.Tensor) -> list[torch.Tensor]:
        return self.maps


@pytest.mark.slow
def test_vgg16_ssd300_learns_a_few_pictures_by_heart():
    # VGG-16 needs at least 268 pixels. Its trunk (conv1_1..fc7, 20M parameters) stays as initialised and its
    # maps are computed once, so the steps train the extras and the headers: what the loss teaches.
    torch.manual_seed(0)
    size = 268
    pictures, targets = coloured_rectangles(2, size)
    model = ssd.build_model("vgg16_ssd300", num_classes=4, input_size=size)
    backbone = model.backbone
    with torch.no_grad():
        maps = backbone(model.preprocess(pictures)[0])
    model.backbone = _FrozenMaps(maps)
    losses = train(model, pictures, targets, steps=60, lr=1e-3)
    assert losses[-1] * 10 <= losses[0], losses
    model.backbone = backbone
    assert_finds_every_object(model, pictures, targets)
