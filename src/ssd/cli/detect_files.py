"""Detection over files: batches of pictures and video frames in, annotated pictures and detections out.

Outputs under the output folder:
  detections.json     one list, COCO results style: `image_id`, `file_name` (relative to the output folder's
                      inputs), `frame` (videos only), `category_id` (label 1..K), `category_name`,
                      `bbox` [x, y, width, height] in pixels, `score`
  <input>.jpg/.png    each picture with its boxes drawn (the input's own relative path)
  <video>.mp4         each video with its boxes drawn
  labels/<input>.txt  with --yolo: `class cx cy w h score` per line, normalised, class = label - 1
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from tqdm import tqdm

from ssd.cli.media import MediaFile, find_media, open_video, video_frames
from ssd.data.pictures import UnreadablePicture, read_picture
from ssd.deploy.selection import resolve_classes, select_detections
from ssd.errors import UserError
from ssd.evaluation.drawing import class_name, draw_detections


@dataclass
class DetectionSummary:
    pictures: int = 0
    frames: int = 0
    detections: int = 0
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    out_dir: Path = Path(".")

    @property
    def processed(self) -> int:
        return self.pictures + self.frames

    def describe(self) -> str:
        lines = [
            f"{self.pictures} pictures and {self.frames} video frames: {self.detections} detections; "
            f"results in {self.out_dir}"
        ]
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} unreadable inputs:")
            lines += [f"  {path}: {reason}" for path, reason in self.skipped]
        return "\n".join(lines)


class DetectionRun:
    """Runs a detector over files and writes the outputs described in the module docstring."""

    def __init__(
        self,
        detector,
        out_dir: str | Path,
        score_threshold: float = 0.3,
        classes: Sequence[str] | None = None,
        max_detections: int = 100,
        batch_size: int = 8,
        write_pictures: bool = True,
        write_yolo: bool = False,
        max_pixels: int | None = None,
    ):
        self.detector = detector
        self.out_dir = Path(out_dir)
        self.score_threshold = score_threshold
        self.max_detections = max_detections
        self.batch_size = batch_size
        self.write_pictures = write_pictures
        self.write_yolo = write_yolo
        self.max_pixels = max_pixels  # None: the package's limit (ssd.data.pictures.MAX_PIXELS)
        self.class_names = detector.class_names
        self.labels = resolve_classes(classes, self.class_names, detector.num_classes) if classes else None
        self.results: list[dict[str, Any]] = []
        self.summary = DetectionSummary(out_dir=self.out_dir)

    def run(self, inputs: Sequence[str | Path]) -> DetectionSummary:
        media = find_media(list(inputs), self._skip)
        if not media:
            raise UserError("no pictures or videos found in: " + ", ".join(map(str, inputs)))
        self.out_dir.mkdir(parents=True, exist_ok=True)
        pictures = [m for m in media if m.kind == "picture"]
        videos = [m for m in media if m.kind == "video"]
        if pictures:
            with tqdm(total=len(pictures), desc="pictures", unit="pic", file=sys.stderr) as progress:
                for start in range(0, len(pictures), self.batch_size):
                    self._detect_pictures(pictures[start : start + self.batch_size])
                    progress.update(len(pictures[start : start + self.batch_size]))
        for video in videos:
            self._detect_video(video)
        with open(self.out_dir / "detections.json", "w") as stream:
            json.dump(self.results, stream)
        return self.summary

    def _skip(self, path: Path, reason: str) -> None:
        self.summary.skipped.append((path, reason))
        print(f"warning: skipped {path}: {reason}", file=sys.stderr)

    def _filter(self, detections: dict[str, Tensor]) -> dict[str, Tensor]:
        return select_detections(detections, self.score_threshold, self.labels, self.max_detections)

    def _detect_pictures(self, files: list[MediaFile]) -> None:
        readable: list[tuple[MediaFile, Tensor]] = []
        for media in files:
            try:
                readable.append((media, read_picture(media.path, max_pixels=self.max_pixels)))
            except UnreadablePicture as error:
                self._skip(media.path, f"cannot read the picture ({error.reason})")
        if not readable:
            return
        all_detections = self.detector.predict([picture for _, picture in readable])
        for (media, picture), detections in zip(readable, all_detections, strict=True):
            detections = self._filter(detections)
            self._record(detections, media.relative, tuple(picture.shape[-2:]), frame=None)
            self.summary.pictures += 1
            if self.write_pictures:
                self._save_picture(picture.permute(1, 2, 0).numpy(), detections, media.relative)

    def _detect_video(self, media: MediaFile) -> None:
        try:
            capture, fps, frame_count = open_video(media.path)
        except UserError as error:
            self._skip(media.path, str(error).removeprefix(f"{media.path}: "))
            return
        writer = None
        frame_index = 0
        batch: list[np.ndarray] = []
        try:
            with tqdm(
                total=frame_count or None, desc=media.path.name, unit="frame", file=sys.stderr
            ) as progress:
                for frame in video_frames(capture):
                    batch.append(frame)
                    if len(batch) == self.batch_size:
                        writer = self._detect_frames(batch, media, frame_index, fps, writer)
                        frame_index += len(batch)
                        progress.update(len(batch))
                        batch = []
                if batch:
                    writer = self._detect_frames(batch, media, frame_index, fps, writer)
                    frame_index += len(batch)
                    progress.update(len(batch))
        finally:  # a half-written video is still closed properly
            if writer is not None:
                writer.release()
        if frame_index == 0:
            self._skip(media.path, "no frame could be decoded")

    def _detect_frames(self, frames: list[np.ndarray], media: MediaFile, first: int, fps: float, writer):
        all_detections = self.detector.predict([torch.from_numpy(f).permute(2, 0, 1) for f in frames])
        for offset, (frame, detections) in enumerate(zip(frames, all_detections, strict=True)):
            detections = self._filter(detections)
            self._record(detections, media.relative, frame.shape[:2], frame=first + offset)
            self.summary.frames += 1
            if self.write_pictures:
                writer = writer or self._video_writer(media, frame.shape[:2], fps)
                annotated = self._annotate(frame, detections)
                import cv2

                writer.write(cv2.cvtColor(np.asarray(annotated), cv2.COLOR_RGB2BGR))
        return writer

    def _video_writer(self, media: MediaFile, size: tuple[int, int], fps: float):
        import cv2

        path = self.out_dir / media.relative.with_suffix(".mp4")
        path.parent.mkdir(parents=True, exist_ok=True)
        height, width = size
        return cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))

    def _annotate(self, picture: np.ndarray, detections: dict[str, Tensor]):
        return draw_detections(
            Image.fromarray(picture),
            detections["result_boxes"],
            detections["result_labels"],
            detections["result_scores"],
            self.class_names,
        )

    def _save_picture(self, picture: np.ndarray, detections: dict[str, Tensor], relative: Path) -> None:
        suffix = ".jpg" if relative.suffix.lower() in (".jpg", ".jpeg") else ".png"
        path = self.out_dir / relative.with_suffix(suffix)
        path.parent.mkdir(parents=True, exist_ok=True)
        options = {"quality": 92} if suffix == ".jpg" else {}
        self._annotate(picture, detections).save(path, **options)

    def _record(
        self, detections: dict[str, Tensor], relative: Path, size: tuple[int, int], frame: int | None
    ) -> None:
        image_id = self.summary.pictures + self.summary.frames
        boxes = detections["result_boxes"].tolist()
        labels = detections["result_labels"].tolist()
        scores = detections["result_scores"].tolist()
        for (x1, y1, x2, y2), label, score in zip(boxes, labels, scores, strict=True):
            entry = {"image_id": image_id, "file_name": relative.as_posix()}
            if frame is not None:
                entry["frame"] = frame
            entry.update(
                {
                    "category_id": int(label),
                    "category_name": class_name(int(label), self.class_names),
                    "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                    "score": round(float(score), 5),
                }
            )
            self.results.append(entry)
        self.summary.detections += len(scores)
        if self.write_yolo:
            self._write_yolo(boxes, labels, scores, relative, size, frame)

    def _write_yolo(
        self, boxes, labels, scores, relative: Path, size: tuple[int, int], frame: int | None
    ) -> None:
        height, width = size
        # Add the suffix to the name rather than `with_suffix`, which would cut "a.1" and "a.2" to "a".
        name = relative.with_suffix("") if frame is None else relative.with_suffix("") / f"{frame:06d}"
        path = self.out_dir / "labels" / name.parent / f"{name.name}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [
            f"{label - 1} {(x1 + x2) / 2 / width:.6f} {(y1 + y2) / 2 / height:.6f} "
            f"{(x2 - x1) / width:.6f} {(y2 - y1) / height:.6f} {score:.5f}"
            for (x1, y1, x2, y2), label, score in zip(boxes, labels, scores, strict=True)
        ]
        path.write_text("".join(line + "\n" for line in lines))
