"""Any dataset the package reads, written out as COCO, Pascal VOC or YOLO: `ssd data convert`.

The source is read only through `available_splits` and `build_dataset`, so every layout a reader recognises
converts, and what a reader fixes (clipped boxes, EXIF orientation) is what gets written. All splits are read
before anything is written, so a broken source fails with nothing on disk; the result is written into a
hidden folder beside OUT and moved into place at the end, so OUT holds a whole dataset or nothing.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import torch

from ssd.data.build import SYNTHETIC, available_splits, build_dataset
from ssd.data.dataset import DetectionDataset
from ssd.data.writers import WRITERS, SplitWritten
from ssd.errors import DatasetError, UserError, did_you_mean


def _check_out(src: Path, out: Path) -> None:
    """Refuse an OUT that holds anything (a user's files are never overwritten) or overlaps the source."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out}: already exists and is not an empty folder; give a new or empty folder")
    source, target = src.resolve(), out.resolve()
    if target.is_relative_to(source) or source.is_relative_to(target):
        raise UserError(f"{out}: overlaps the dataset {src}; write the converted dataset outside it")


def _split_names(src: Path, splits: list[str] | None) -> list[str]:
    names = list(dict.fromkeys(splits)) if splits else available_splits(src)
    if not names:
        raise DatasetError(f"{src}: no splits found; name one with --split")
    for name in names:  # a split name becomes a folder or file name in every output layout
        if not name or name in (".", "..") or "/" in name or "\\" in name:
            raise UserError(f"split {name!r}: not usable as a folder name")
    return names


def _shared_classes(datasets: dict[str, DetectionDataset]) -> dict[str, DetectionDataset]:
    """The splits relabelled to one list of classes, which every output layout needs.

    Splits of one dataset nearly always agree already (VOC and YOLO list the classes once for all splits);
    COCO's split files each list their own categories, and those are matched by name. Category ids are kept
    when they stay unique, and then give the order (as the COCO reader orders classes); else 1..K.
    """
    first = next(iter(datasets.values()))
    if all(
        d.class_names == first.class_names and d.label_to_category_id == first.label_to_category_id
        for d in datasets.values()
    ):
        return datasets
    category_of: dict[str, int] = {}
    for dataset in datasets.values():
        repeated = sorted({name for name in dataset.class_names if dataset.class_names.count(name) > 1})
        if repeated:
            raise DatasetError(
                f"{dataset.source}: the splits list different classes, so they are matched by name, "
                f"but {', '.join(repeated)} names several classes"
            )
        for label, name in enumerate(dataset.class_names, start=1):
            category_of.setdefault(name, dataset.label_to_category_id[label])
    names = list(category_of)
    if len(set(category_of.values())) == len(names):
        names.sort(key=category_of.__getitem__)
    else:
        category_of = {name: i for i, name in enumerate(names, start=1)}
    label_of = {name: label for label, name in enumerate(names, start=1)}
    relabelled = {}
    for split, dataset in datasets.items():
        new_label = torch.tensor([0] + [label_of[name] for name in dataset.class_names], dtype=torch.int64)
        records = [replace(record, labels=new_label[record.labels]) for record in dataset.records]
        relabelled[split] = DetectionDataset(
            records,
            names,
            dataset.source,
            dataset.problems,
            label_to_category_id={label_of[name]: category_of[name] for name in names},
        )
    return relabelled


@contextmanager
def _staged(out: Path) -> Iterator[Path]:
    """A hidden folder beside `out` to write into, moved to `out` once complete, removed on any failure."""
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = out.parent / f".{out.name}.converting-{os.getpid()}"
    try:
        stage.mkdir()
    except OSError as error:
        raise UserError(f"{stage}: cannot create the folder to write into ({error.strerror})") from None
    try:
        yield stage
        if out.exists():  # an empty folder the user made: fill it (it may be a mount point, not renamable)
            for entry in sorted(stage.iterdir()):
                shutil.move(entry, out / entry.name)
            stage.rmdir()
        else:
            stage.rename(out)
    except BaseException as error:
        shutil.rmtree(stage, ignore_errors=True)
        if isinstance(error, OSError):
            raise UserError(f"{out}: writing failed, nothing was kept ({error})") from None
        raise


def convert_dataset(
    src: str | Path, to: str, out: str | Path, splits: list[str] | None = None
) -> list[SplitWritten]:
    """Write the dataset at `src` (any layout `build_dataset` recognises) to `out` in format `to` ("coco",
    "voc" or "yolo"): every split `available_splits` lists, or those named in `splits`. Pictures are
    copied, never moved or changed. `out` must be new or an empty folder. Returns one report per split."""
    writer = WRITERS.get(to)
    if writer is None:
        raise UserError(
            f"--to {to}: unknown output format; choose one of {', '.join(WRITERS)}{did_you_mean(to, WRITERS)}"
        )
    if str(src) == SYNTHETIC:
        raise UserError(
            "synthetic: its pictures are drawn on the fly; write them with `ssd data synthetic DIR` and "
            "convert DIR"
        )
    src, out = Path(src).expanduser(), Path(out).expanduser()
    names = _split_names(src, splits)
    _check_out(src, out)
    datasets = _shared_classes({split: build_dataset(src, split) for split in names})
    with _staged(out) as stage:
        written = writer.write(stage, datasets)
    for report, dataset in zip(written, datasets.values(), strict=True):
        if len(dataset.problems):
            report.notes.append(f"source: {dataset.problems.summary()} (`ssd data check` lists them)")
    return written
