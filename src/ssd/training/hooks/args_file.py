"""`args.yaml`: the run's resolved options, so that `ssd train --config runs/NAME/args.yaml` repeats it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ssd.training.hooks.base import Hook
from ssd.training.options import write_yaml_options

if TYPE_CHECKING:
    from ssd.training.trainer import Trainer

ARGS_YAML = "args.yaml"


class ArgsFile(Hook):
    """Written before the first epoch (again on a resume, with what the resume changed, e.g. `epochs`)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / ARGS_YAML

    def before_run(self, trainer: Trainer) -> None:
        write_yaml_options(trainer.options, self.path)
