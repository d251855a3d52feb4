"""Datasets (COCO, Pascal VOC, YOLO, built-in synthetic), augmentation and loading.

`build_dataset(path, split)` recognises the layout by itself (`ssd.data.formats` holds one file per format);
every format gives the same `DetectionDataset` whose samples follow the package's convention (README, "A
dataset sample").
"""

from ssd.data.build import (
    SYNTHETIC,
    available_splits,
    build_dataset,
    detect_format,
    find_format,
    is_automatically_split,
)
from ssd.data.convert import convert_dataset
from ssd.data.dataset import DetectionDataset
from ssd.data.formats.synthetic import SyntheticShapes, write_synthetic_coco
from ssd.data.loader import build_loader, collate_detection
from ssd.data.problems import DataWarning
from ssd.data.transforms import PRESETS, build_transforms
from ssd.data.writers.coco import coco_dict, export_coco

__all__ = [
    "PRESETS",
    "SYNTHETIC",
    "DataWarning",
    "DetectionDataset",
    "SyntheticShapes",
    "available_splits",
    "build_dataset",
    "build_loader",
    "build_transforms",
    "coco_dict",
    "collate_detection",
    "convert_dataset",
    "detect_format",
    "export_coco",
    "find_format",
    "is_automatically_split",
    "write_synthetic_coco",
]
