"""The dataset formats, one file each, in the order a folder is tried against them.

A format recognises its layout, lists its splits and loads a split (see `base.DataFormat`). Adding one is a
new file defining its `DataFormat` and one line below. The built-in synthetic data is not a layout on disk:
`ssd.data.build` answers the name "synthetic" itself.
"""

from ssd.data.formats.base import DataFormat, LoadOptions
from ssd.data.formats.coco import COCO
from ssd.data.formats.voc import VOC
from ssd.data.formats.yolo import YOLO

# VOC first: a VOC folder may also hold a COCO export of itself.
FORMATS: tuple[DataFormat, ...] = (VOC, COCO, YOLO)

__all__ = ["FORMATS", "DataFormat", "LoadOptions"]
