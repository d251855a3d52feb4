"""Is `torch.compile` worth a flag for training? One training step of mobilenetv3_ssd, eager against compiled.

    python3 benchmarks/bench_compile.py [--out benchmarks/results/compile.json]

The step: the network (`head_outputs`) on a batch of 16 random 320x320 pictures in channels-last, the
MultiBoxLoss on six random boxes per picture, backward and an AdamW step, on 2 threads. Each mode builds its
own model; the first step (which, compiled, includes inductor's compilation) is timed apart, then the median
of 8 steps after 2 warm-up ones. Prints and writes JSON with the CPU it ran on.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ssd.deploy.benchmark import machine  # noqa: E402
from ssd.models.registry import build_model  # noqa: E402
from ssd.training.loss import MultiBoxLoss  # noqa: E402


def random_targets(count: int) -> list[dict]:
    generator = torch.Generator().manual_seed(1)
    targets = []
    for _ in range(count):
        corner = torch.rand(6, 2, generator=generator) * 220
        size = torch.rand(6, 2, generator=generator) * 80 + 20
        labels = torch.randint(1, 4, (6,), generator=generator)
        targets.append({"boxes": torch.cat([corner, corner + size], 1), "labels": labels})
    return targets


def time_mode(mode: str) -> dict:
    torch.manual_seed(0)
    model = build_model("mobilenetv3_ssd", num_classes=4).train().to(memory_format=torch.channels_last)
    criterion = MultiBoxLoss.for_model(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    network = model.head_outputs if mode == "eager" else torch.compile(model.head_outputs)
    images = torch.rand(16, 3, 320, 320).contiguous(memory_format=torch.channels_last)
    targets = random_targets(16)

    def step() -> None:
        cls_logits, bbox_regression = network(images)
        loss = criterion(cls_logits, bbox_regression, model.anchors, targets)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    started = time.perf_counter()
    step()
    first = time.perf_counter() - started
    for _ in range(2):
        step()
    times = []
    for _ in range(8):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return {"first_step_s": round(first, 1), "step_ms": round(statistics.median(times) * 1000, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "compile.json"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    report = {"machine": machine()}
    for mode in ("eager", "compile"):
        report[mode] = time_mode(mode)
        print(mode, report[mode], flush=True)
    report["compiled_over_eager"] = round(report["compile"]["step_ms"] / report["eager"]["step_ms"], 2)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
