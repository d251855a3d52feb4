"""How long MultiBoxLoss takes, matching included, and its share of a full training step.

A batch of 16 pictures at the architecture's input size (320 for mobilenetv3_ssd) with 10 objects each:

- `loss`: forward and backward of the loss alone, on header outputs of the model's shape;
- `matching`: the matcher alone (included in `loss`);
- `step`: a whole training step: model forward, loss, backward, optimiser step;
- `share`: loss / step.

    python3 benchmarks/bench_loss.py [--arch mobilenetv3_ssd] [--batch 16] [--objects 10] [--threads 1,2]

On a machine shared with other work, the single-thread figures are the steadier ones: an intra-op
parallel kernel waits for its slowest thread, so a busy core stretches every small operation.

Prints a table and writes benchmarks/results/loss.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import ssd  # noqa: E402
from ssd.training.loss import MultiBoxLoss  # noqa: E402
from ssd.training.matching import HungarianMatcher, IoUMatcher, pad_targets  # noqa: E402

MATCHERS = {
    "iou": IoUMatcher,
    "hungarian": HungarianMatcher,
    "hungarian_default_boxes_top_up": lambda: HungarianMatcher(
        match_on="default_boxes", top_up_threshold=0.5
    ),
}


def random_targets(batch: int, objects: int, size: int, generator: torch.Generator) -> list[dict]:
    targets = []
    for _ in range(batch):
        xy = torch.rand(objects, 2, generator=generator) * size * 0.8
        wh = torch.rand(objects, 2, generator=generator) * size * 0.3 + 8
        boxes = torch.cat((xy, (xy + wh).clamp(max=size)), dim=1)
        labels = torch.randint(1, 21, (objects,), generator=generator)
        targets.append({"boxes": boxes, "labels": labels, "iscrowd": torch.zeros(objects, dtype=torch.bool)})
    return targets


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(run, repeats: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        run()
        synchronize(device)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arch", default="mobilenetv3_ssd")
    parser.add_argument("--num-classes", type=int, default=91, help="counts the background (COCO: 91)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--objects", type=int, default=10, help="objects per picture")
    parser.add_argument("--repeats", type=int, default=5, help="timed training steps per matcher")
    parser.add_argument(
        "--threads", default="1,2", help="comma-separated torch thread counts to measure under, e.g. 1,2"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "loss.json")
    args = parser.parse_args()

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = ssd.build_model(args.arch, num_classes=args.num_classes).to(device).train()
    height, width = model.config.input_size
    generator = torch.Generator().manual_seed(0)
    pictures = torch.randint(0, 256, (args.batch, 3, height, width), dtype=torch.uint8, generator=generator)
    pictures = pictures.to(device)
    targets = random_targets(args.batch, args.objects, width, generator)
    anchors = model.anchors
    shape = (args.batch, len(anchors))
    cls_logits = torch.randn(*shape, args.num_classes, device=device, requires_grad=True)
    bbox_regression = (0.5 * torch.randn(*shape, 4, device=device)).requires_grad_()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

    rows = []
    for threads, (name, make_matcher) in itertools.product(
        [int(t) for t in args.threads.split(",")], MATCHERS.items()
    ):
        torch.set_num_threads(threads)
        criterion = MultiBoxLoss.for_model(model, matcher=make_matcher())

        def loss_only(criterion=criterion):
            criterion(cls_logits, bbox_regression, anchors, targets)["loss"].backward()

        def matching_only(criterion=criterion):
            gt = pad_targets(targets, args.num_classes, device)
            predictions = {}
            if criterion.matcher.needs_predictions:
                predictions = {
                    "pred_boxes": criterion.box_coder.decode(bbox_regression.detach(), anchors),
                    "cls_logits": cls_logits.detach(),
                }
            criterion.matcher(anchors, gt, **predictions)

        def training_step(criterion=criterion):
            out = model(pictures, targets)
            losses = criterion(out["cls_logits"], out["bbox_regression"], out["anchors"], out["targets"])
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            optimizer.step()

        loss_ms = median_ms(loss_only, repeats=max(10, 4 * args.repeats), warmup=2, device=device)
        matching_ms = median_ms(matching_only, repeats=max(10, 4 * args.repeats), warmup=2, device=device)
        step_ms = median_ms(training_step, repeats=args.repeats, warmup=1, device=device)
        with torch.no_grad():
            positives = criterion(cls_logits, bbox_regression, anchors, targets)["num_positives"]
        rows.append(
            {
                "threads": threads,
                "matcher": name,
                "loss_ms": round(loss_ms, 2),
                "matching_ms": round(matching_ms, 2),
                "step_ms": round(step_ms, 1),
                "share": round(loss_ms / step_ms, 4),
                "positives_per_object": round(float(positives) / (args.batch * args.objects), 2),
            }
        )

    result = {
        "benchmark": "loss",
        "arch": args.arch,
        "num_classes": args.num_classes,
        "batch": args.batch,
        "input_size": [height, width],
        "objects_per_picture": args.objects,
        "default_boxes": len(anchors),
        "device": str(device),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "machine": platform.platform(),
        "target": "loss (matching included) under 10% of a training step",
        "results": rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")

    print(
        f"{args.arch} {height}x{width}, batch {args.batch}, {args.objects} objects/picture, "
        f"{len(anchors)} default boxes, {args.num_classes} classes, {device}"
    )
    header = f"{'threads':>7} {'matcher':32} {'loss ms':>9} {'match ms':>9} {'step ms':>9} {'share':>7} {'pos/obj':>8}"
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['threads']:7d} {row['matcher']:32} {row['loss_ms']:9.1f} {row['matching_ms']:9.1f} {row['step_ms']:9.0f} "
            f"{row['share']:7.1%} {row['positives_per_object']:8.2f}"
        )
    print(f"written {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
