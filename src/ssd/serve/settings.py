"""What `ssd serve` was asked for, in one object that also travels to worker processes as JSON."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

from ssd.errors import UserError

# Worker processes (uvicorn --workers, Ray replicas) rebuild the app from this environment variable.
SETTINGS_VARIABLE = "SSD_SERVE_SETTINGS"


@dataclass(frozen=True)
class ServeSettings:
    weights: str
    arch: str | None = None
    num_classes: int | None = None
    class_names: tuple[str, ...] | None = None
    max_batch: int = 8
    max_wait_ms: float = 5.0
    max_upload_mb: float = 20.0
    max_pixels: int | None = None  # None: the package's limit (ssd.data.pictures.MAX_PIXELS)
    threads: int | None = None
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise UserError(f"--max-batch must be at least 1, got {self.max_batch}")
        if not 0 <= self.max_wait_ms <= 10_000:
            raise UserError(f"--max-wait-ms must be between 0 and 10000, got {self.max_wait_ms}")
        if not 0 < self.max_upload_mb <= 1024:
            raise UserError(f"--max-upload-mb must be above 0 and at most 1024, got {self.max_upload_mb}")
        if self.max_pixels is not None and self.max_pixels < 1:
            raise UserError(f"--max-pixels must be at least 1, got {self.max_pixels}")
        if self.threads is not None and self.threads < 1:
            raise UserError(f"--threads must be at least 1, got {self.threads}")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeSettings:
        values = json.loads(text)
        if values.get("class_names") is not None:
            values["class_names"] = tuple(values["class_names"])
        return cls(**values)

    @classmethod
    def from_environment(cls) -> ServeSettings:
        text = os.environ.get(SETTINGS_VARIABLE)
        if not text:
            raise UserError(f"{SETTINGS_VARIABLE} is not set: start the server with `ssd serve`")
        return cls.from_json(text)
