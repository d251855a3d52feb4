"""keep_freed_memory: the large tensors a training step frees are reused by the next step, not page-faulted in
again."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

# The page faults of the third step of a training network at batch 8: its largest activations (8x64x160x160,
# 52 MB) are over glibc's 32 MB limit for reusing a freed block by default.
THIRD_STEP_FAULTS = """
import resource, sys, torch
if sys.argv[1] == "keep":
    from ssd.training.freed_memory import keep_freed_memory
    assert keep_freed_memory()
from ssd.models.registry import build_model
torch.set_num_threads(1)
model = build_model("mobilenetv3_ssd", num_classes=2).train().to(memory_format=torch.channels_last)
images = torch.rand(8, 3, 320, 320).contiguous(memory_format=torch.channels_last)
def step():
    cls_logits, boxes = model.head_outputs(images)
    (cls_logits.sum() + boxes.sum()).backward()
for _ in range(2):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc's malloc only"
)
def test_a_training_steps_freed_activations_are_reused_without_page_faults():
    def faults(mode: str) -> int:
        run = subprocess.run(
            [sys.executable, "-c", THIRD_STEP_FAULTS, mode], capture_output=True, text=True, check=True
        )
        return int(run.stdout.split()[-1])

    default, kept = faults("default"), faults("keep")
    assert default > 10_000  # about 290 MB faulted in afresh by every step
    assert kept < default / 4


def test_elsewhere_it_declines(monkeypatch):
    from ssd.training import freed_memory

    monkeypatch.setattr(freed_memory.sys, "platform", "darwin")
    assert freed_memory.keep_freed_memory() is False
