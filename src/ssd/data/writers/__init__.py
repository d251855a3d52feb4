"""Dataset writers, one file per output format: what `ssd data convert --to NAME` writes.

A writer takes loaded splits that share one list of classes and writes them in its layout, copying the
pictures (see `base.Writer`). Adding a format is a new file defining its `Writer` and one line below.
"""

from ssd.data.writers.base import SplitWritten, Writer
from ssd.data.writers.coco import COCO_WRITER, coco_dict, export_coco
from ssd.data.writers.voc import VOC_WRITER
from ssd.data.writers.yolo import YOLO_WRITER

WRITERS: dict[str, Writer] = {writer.name: writer for writer in (COCO_WRITER, VOC_WRITER, YOLO_WRITER)}

__all__ = ["WRITERS", "SplitWritten", "Writer", "coco_dict", "export_coco"]
