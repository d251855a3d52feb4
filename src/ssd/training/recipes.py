"""Training defaults chosen by measurement: per architecture, and for the built-in synthetic data.

Flags and YAML values always win over these; docs/training.md has the measurements behind each choice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# From this many epochs on, a run sees each picture often enough to overfit it, and an architecture's
# `long_run_augment` applies. Measured on BCCD and chess: better at 40 and 80 epochs, worse on the seed's 10
# (docs/training.md, "Tried against ATSS").
LONG_RUN_EPOCHS = 40


@dataclass(frozen=True)
class ArchitectureDefaults:
    # The augmentation preset: torchvision's reference recipes use the SSD paper's pipeline for SSD300/512
    # and IoU crop + flip (`ssdlite`) for SSDLite.
    augment: str = "ssd"
    # The preset of runs of LONG_RUN_EPOCHS or more, when it differs: more augmentation regularises a run
    # long enough to overfit, and slows a short one.
    long_run_augment: str | None = None
    # Whether training on a CPU uses the channels-last memory layout (on CUDA it always does). It helps some
    # architectures and slows others, so it is measured per architecture.
    cpu_channels_last: bool = False

    def augment_for(self, epochs: int) -> str:
        if self.long_run_augment is not None and epochs >= LONG_RUN_EPOCHS:
            return self.long_run_augment
        return self.augment


# Architectures not listed train with `ArchitectureDefaults()`.
ARCHITECTURE_DEFAULTS: dict[str, ArchitectureDefaults] = {
    # A training step at batch 16 on 2 cores: 1.43 s channels-first, 0.89 s channels-last. bf16 autocast
    # takes it to 0.65 s but is not the default: on torch 2.13's CPU kernels it is not reproducible from one
    # process to the next (docs/training.md), which resuming a run relies on.
    "mobilenetv3_ssd": ArchitectureDefaults(
        augment="ssdlite", long_run_augment="ssdlite_zoom", cpu_channels_last=True
    ),
    "mobilenetv3_small_ssd": ArchitectureDefaults(augment="ssdlite"),
}


def architecture_defaults(arch: str) -> ArchitectureDefaults:
    return ARCHITECTURE_DEFAULTS.get(arch, ArchitectureDefaults())


# What `ssd train` with no arguments runs: mobilenetv3_ssd on the synthetic shapes, a few minutes on a 2-core
# CPU, measured to reach synthetic mAP@0.5 above 0.5 (see docs/training.md). Flags and YAML values win.
SYNTHETIC_RECIPE: dict[str, Any] = {
    "epochs": 10,
    "batch_size": 16,
    "input_size": 160,
    "synthetic_train": 800,
    "synthetic_val": 96,
    "synthetic_image_size": 160,
    "optimizer": "adamw",
    "lr": 0.003,
    "weight_decay": 0.0005,
    "warmup_epochs": 0.5,
    "augment": "ssdlite",
    "precise_bn": 8,
    # Measured this way before EMA and fitted scales became the defaults; in 500 steps neither has room to help.
    "ema": False,
    "anchor_scales": "default",
    "min_lr_ratio": 0.0,
}
