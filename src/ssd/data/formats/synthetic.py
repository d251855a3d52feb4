"""A built-in dataset of coloured shapes on textured backgrounds, so every command works with no download.

Five classes, each one shape in one colour family (red circles, blue squares, green triangles, yellow
diamonds, magenta crosses), from small (6% of the picture's side) to large (60%), 1 to 6 per picture, some
overlapping (later shapes hide part of earlier ones, never most of one). Backgrounds mix smooth colour noise
and stripes in muted colours, so a detector has to learn shape and colour rather than "anything not grey".

Everything is seeded per picture (`seed`, split, index), so a picture is the same in every process and every
run, however the loader's workers share the work. Layouts (boxes) are drawn when the dataset is built, which
makes `get_target` free; pixels are drawn when a sample is asked for. `write_synthetic_coco` writes the same
pictures to disk as a COCO dataset.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from ssd.data.dataset import DetectionDataset, Record, Transform, single_threaded
from ssd.data.problems import ProblemLog
from ssd.data.writers.coco import export_coco
from ssd.errors import DatasetError

CLASS_NAMES = ["circle", "square", "triangle", "diamond", "cross"]
_COLOURS = torch.tensor(
    [
        [220.0, 40.0, 40.0],
        [40.0, 90.0, 225.0],
        [40.0, 185.0, 60.0],
        [235.0, 205.0, 40.0],
        [210.0, 50.0, 210.0],
    ]
)
DEFAULT_SIZES = {"train": 1000, "val": 200, "test": 200}
_SPLIT_NUMBERS = {"train": 0, "val": 1, "test": 2}

_MIN_SIDE, _MAX_SIDE = 240, 400  # picture sides, pixels
_MIN_OBJECT, _MAX_OBJECT = 0.06, 0.6  # object side, share of the picture's shorter side (log-uniform)
_MAX_OBJECTS = 6
_MAX_COVERED = 0.4  # a later shape may hide at most this share of an earlier one's box


def _picture_seed(seed: int, split: str, index: int) -> int:
    digest = hashlib.blake2b(f"{seed}/{split}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def _shape_mask(label: int, height: int, width: int) -> Tensor:
    """Which pixels of a `height` x `width` box the shape of `label` covers; it touches all four sides."""
    ys = (torch.arange(height, dtype=torch.float32) + 0.5) / height * 2 - 1
    xs = (torch.arange(width, dtype=torch.float32) + 0.5) / width * 2 - 1
    y, x = ys[:, None], xs[None, :]
    name = CLASS_NAMES[label - 1]
    if name == "circle":
        return x * x + y * y <= 1.0
    if name == "square":
        return torch.ones((height, width), dtype=torch.bool)
    if name == "triangle":  # apex at the top centre, base along the bottom
        return x.abs() <= (y + 1) / 2 + 1.0 / width
    if name == "diamond":
        return x.abs() + y.abs() <= 1.0 + 1.0 / min(height, width)
    return (x.abs() <= 0.34) | (y.abs() <= 0.34)  # cross


def _layout(generator: torch.Generator, fixed_size: tuple[int, int] | None) -> dict:
    """Picture size, boxes, labels and colours of one picture."""

    def uniform(low: float, high: float) -> float:
        return low + (high - low) * float(torch.rand((), generator=generator))

    if fixed_size is not None:
        height, width = fixed_size
    else:
        height, width = int(uniform(_MIN_SIDE, _MAX_SIDE)), int(uniform(_MIN_SIDE, _MAX_SIDE))
    count = int(torch.randint(1, _MAX_OBJECTS + 1, (), generator=generator))
    boxes: list[list[float]] = []
    labels: list[int] = []
    colours: list[Tensor] = []
    short = min(height, width)
    for _ in range(count * 4):  # placements that hide too much of an earlier shape are redrawn
        if len(boxes) == count:
            break
        side = short * math.exp(uniform(math.log(_MIN_OBJECT), math.log(_MAX_OBJECT)))
        aspect = math.exp(uniform(-0.3, 0.3))
        w, h = max(8, round(side * aspect)), max(8, round(side / aspect))
        w, h = min(w, width), min(h, height)
        x1, y1 = round(uniform(0, width - w)), round(uniform(0, height - h))
        box = [x1, y1, x1 + w, y1 + h]
        if any(_covered(earlier, box) > _MAX_COVERED for earlier in boxes):
            continue
        label = int(torch.randint(1, len(CLASS_NAMES) + 1, (), generator=generator))
        jitter = (torch.rand(3, generator=generator) - 0.5) * 50
        boxes.append(box)
        labels.append(label)
        colours.append((_COLOURS[label - 1] + jitter).clamp(0, 255))
    return {"height": height, "width": width, "boxes": boxes, "labels": labels, "colours": colours}


def _covered(earlier: list[float], later: list[float]) -> float:
    """Share of `earlier`'s box that `later` covers."""
    w = max(0.0, min(earlier[2], later[2]) - max(earlier[0], later[0]))
    h = max(0.0, min(earlier[3], later[3]) - max(earlier[1], later[1]))
    return w * h / ((earlier[2] - earlier[0]) * (earlier[3] - earlier[1]))


def _background(height: int, width: int, generator: torch.Generator) -> Tensor:
    """Muted colour noise at a few scales plus faint stripes at a random angle, float (3, H, W) in 0..255."""
    base = 90 + 80 * torch.rand(3, 1, 1, generator=generator)
    coarse = torch.rand(1, 3, 4, 4, generator=generator) * 70 - 35
    fine = torch.rand(1, 3, 16, 16, generator=generator) * 30 - 15
    # Mixed and muted on the 16x16 grid, then enlarged once: both steps are linear, so the order is free.
    noise = F.interpolate(coarse, (16, 16), mode="bilinear", align_corners=False) + fine
    grey = noise.mean(dim=1, keepdim=True)
    noise = grey + 0.4 * (noise - grey)  # keep the background's colours muted
    noise = F.interpolate(noise, (height, width), mode="bilinear", align_corners=False)[0]
    angle = float(torch.rand((), generator=generator)) * math.pi
    period = 6 + 30 * float(torch.rand((), generator=generator))
    ys = torch.arange(height, dtype=torch.float32)[:, None]
    xs = torch.arange(width, dtype=torch.float32)[None, :]
    stripes = torch.sin((xs * math.cos(angle) + ys * math.sin(angle)) * (2 * math.pi / period))
    strength = 25 * float(torch.rand((), generator=generator))
    return base + noise + strength * stripes[None]


def render(layout: dict, generator: torch.Generator) -> Tensor:
    """The uint8 (3, H, W) picture of a layout."""
    height, width = layout["height"], layout["width"]
    picture = _background(height, width, generator)
    for box, label, colour in zip(layout["boxes"], layout["labels"], layout["colours"], strict=True):
        x1, y1, x2, y2 = (int(v) for v in box)
        region = picture[:, y1:y2, x1:x2]
        mask = _shape_mask(label, y2 - y1, x2 - x1)
        shade = 1.0 + 0.15 * torch.linspace(-1, 1, y2 - y1)[None, :, None]  # a little light from above
        region[:, mask] = (colour[:, None, None] * shade).expand(3, y2 - y1, x2 - x1)[:, mask]
    picture += torch.rand(picture.shape, generator=generator) * 14 - 7  # sensor noise (uniform: cheaper)
    return picture.clamp_(0, 255).round_().to(torch.uint8)


class SyntheticShapes(DetectionDataset):
    """`num_images` seeded pictures of the split; `image_size` (H, W) fixes their size (default: 240..400)."""

    def __init__(
        self,
        split: str = "train",
        num_images: int | None = None,
        seed: int = 0,
        image_size: int | tuple[int, int] | None = None,
        transform: Transform | None = None,
    ):
        if split not in _SPLIT_NUMBERS:
            raise DatasetError(
                f"synthetic: unknown split '{split}'; choose one of {', '.join(_SPLIT_NUMBERS)}"
            )
        count = DEFAULT_SIZES[split] if num_images is None else int(num_images)
        if count < 1:
            raise DatasetError(f"synthetic: num_images must be at least 1, got {count}")
        fixed = (image_size, image_size) if isinstance(image_size, int) else image_size
        self.split, self.seed = split, seed
        self.layouts = []
        records = []
        for index in range(count):
            generator = torch.Generator().manual_seed(_picture_seed(seed, split, index))
            layout = _layout(generator, fixed)
            layout["generator_state"] = generator.get_state()  # rendering continues this stream
            self.layouts.append(layout)
            records.append(
                Record(
                    path=Path("synthetic") / split / f"{index + 1:06d}.png",
                    file_name=f"{index + 1:06d}.png",
                    image_id=index + 1,
                    height=layout["height"],
                    width=layout["width"],
                    boxes=torch.tensor(layout["boxes"], dtype=torch.float32).reshape(-1, 4),
                    labels=torch.tensor(layout["labels"], dtype=torch.int64),
                    iscrowd=torch.zeros(len(layout["labels"]), dtype=torch.bool),
                    difficult=torch.zeros(len(layout["labels"]), dtype=torch.bool),
                )
            )
        source = f"synthetic ({split}, {count} pictures, seed {seed})"
        super().__init__(records, CLASS_NAMES, source, ProblemLog(source), transform)

    def picture(self, index: int) -> Tensor:
        layout = self.layouts[index]
        generator = torch.Generator()
        generator.set_state(layout["generator_state"])
        with single_threaded():  # also makes the pixels the same whatever the caller's thread count
            return render(layout, generator)

    def load(self, index: int, shorter_side_at_least: int | None = None) -> tuple[Tensor, dict]:
        return self.picture(index), self.records[index].target()


def write_synthetic_coco(
    out_dir: Path,
    sizes: dict[str, int] | None = None,
    seed: int = 0,
    image_size: int | tuple[int, int] | None = None,
) -> dict[str, Path]:
    """Write the synthetic splits as a COCO dataset (`annotations/instances_<split>.json`, `<split>/*.png`);
    returns the JSON path of each split. Loading it gives back exactly the on-the-fly dataset."""
    out_dir = Path(out_dir)
    written = {}
    for split, count in (sizes or DEFAULT_SIZES).items():
        dataset = SyntheticShapes(split, count, seed=seed, image_size=image_size)
        picture_dir = out_dir / split
        picture_dir.mkdir(parents=True, exist_ok=True)
        for index, record in enumerate(dataset.records):
            record.path = picture_dir / record.file_name
            Image.fromarray(dataset.picture(index).permute(1, 2, 0).numpy()).save(record.path)
        json_path = out_dir / "annotations" / f"instances_{split}.json"
        export_coco(dataset, json_path, image_root=picture_dir)
        written[split] = json_path
    return written
