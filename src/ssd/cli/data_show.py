"""`ssd data show`: a grid of augmented pictures with their boxes, so a user sees what training sees.

Each row is one picture: first as stored (resized to the cell), then several draws of the augmentation.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from ssd.data.dataset import DetectionDataset
from ssd.data.loader import load_sample
from ssd.data.transforms import Compose, Resize, SanitizeBoxes
from ssd.evaluation.drawing import draw_ground_truth


def draw_boxes(image: torch.Tensor, target: dict, class_names: list[str]) -> Image.Image:
    """The picture with each box outlined in its class's colour and named, drawn as ground truth is in
    every picture of the package (dashed)."""
    picture = Image.fromarray(image.permute(1, 2, 0).contiguous().numpy())
    return draw_ground_truth(picture, target["boxes"], target["labels"], class_names, captions=True)


def augmentation_grid(
    dataset: DetectionDataset,
    transform,
    size: int = 300,
    pictures: int = 4,
    columns: int = 5,
    seed: int = 0,
) -> Image.Image:
    """`pictures` rows of `columns` cells: the stored picture, then `columns - 1` augmented draws."""
    plain = Compose([Resize(size), SanitizeBoxes()])
    gap = 4
    grid = Image.new("RGB", (columns * (size + gap) - gap, pictures * (size + gap) - gap), (255, 255, 255))
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(len(dataset), generator=generator)[:pictures].tolist()
    for row, index in enumerate(chosen):
        for column in range(columns):
            sample_seed = int(torch.randint(0, 2**62, (), generator=generator))
            image, target = load_sample(dataset, index, plain if column == 0 else transform, sample_seed)
            cell = draw_boxes(image, target, dataset.class_names)
            if cell.size != (size, size):
                cell = cell.resize((size, size))
            grid.paste(cell, (column * (size + gap), row * (size + gap)))
    return grid


def save_grid(grid: Image.Image, out: Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(out)
    return out
