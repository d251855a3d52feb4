"""Skipped steps, named: each one printed and written to `bad_steps.log` with the pictures of its batch."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from ssd.training.hooks.base import BadStep, Hook
from ssd.training.resume import LAST

if TYPE_CHECKING:
    from ssd.training.trainer import Trainer

LOG_FILE = "bad_steps.log"


class BadStepLog(Hook):
    """Every process prints its own skipped steps; only rank 0 writes the file."""

    def on_bad_step(self, trainer: Trainer, bad_step: BadStep) -> None:
        context = trainer.context
        ids = ", ".join(str(t.get("file_name") or t.get("image_id")) for t in bad_step.targets)
        rank = f" on rank {context.rank}" if context.enabled else ""
        message = (
            f"step {bad_step.step}: non-finite {bad_step.what} ({bad_step.loss:g}); step skipped. "
            f"Pictures of this batch{rank}: {ids}"
        )
        print(message, file=sys.stderr, flush=True)
        if context.is_main:
            with open(trainer.parts.run_dir / LOG_FILE, "a") as stream:
                stream.write(message + "\n")


def too_many_bad_steps_message(trainer: Trainer, count: int) -> str:
    """Why the run stopped, what was kept, and what usually causes it."""
    run_dir = trainer.parts.run_dir
    last = run_dir / LAST
    kept = f"the last good checkpoint is {last}" if last.exists() else "no checkpoint was written yet"
    return (
        f"training stopped: {count} non-finite losses in a row at step {trainer.step}; {kept}. Usual causes: "
        f"a learning rate too high for this batch size (--lr, now {trainer.parts.lr:g}), no warm-up "
        f"(--warmup-epochs), or broken boxes (`ssd data check {trainer.options.datapath}`); "
        f"see {run_dir / LOG_FILE}"
    )
