"""What each matcher does to training: positives per object, and a short training run with each.

The same mobilenetv3_ssd (same initial weights, same batches) is trained from scratch for a few hundred
steps on synthetic pictures of coloured rectangles (3 classes, 1-4 objects of varied sizes per picture) with
each matcher, then scored on held-out pictures of the same kind: precision and recall at IoU >= 0.5 with the
right class among detections scoring >= 0.3, and AP50 (all-point interpolation, pooled over classes).

    python3 benchmarks/compare_matchers.py [--steps 200] [--size 160] [--batch 8]

Prints a table and writes benchmarks/results/matchers.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import ssd  # noqa: E402
from ssd.ops.boxes import box_iou  # noqa: E402
from ssd.training.loss import MultiBoxLoss  # noqa: E402
from ssd.training.matching import HungarianMatcher, IoUMatcher  # noqa: E402

MATCHERS = {
    "iou": IoUMatcher,
    "hungarian": HungarianMatcher,
    "hungarian_default_boxes": lambda: HungarianMatcher(match_on="default_boxes"),
    "hungarian_top_up": lambda: HungarianMatcher(top_up_threshold=0.5),
}
COLOURS = torch.tensor([[230, 40, 40], [40, 200, 40], [40, 60, 230]], dtype=torch.uint8)


def synthetic_pictures(count: int, size: int, generator: torch.Generator) -> tuple[torch.Tensor, list[dict]]:
    """Noisy grey pictures with 1-4 coloured rectangles from 1/10 to 1/2 of the picture; class = colour."""
    pictures = (torch.rand(count, 3, size, size, generator=generator) * 60 + 100).to(torch.uint8)
    targets = []
    for picture in pictures:
        n = int(torch.randint(1, 5, (1,), generator=generator))
        wh = (torch.rand(n, 2, generator=generator) * 0.4 + 0.1) * size
        xy = torch.rand(n, 2, generator=generator) * (size - wh)
        boxes = torch.cat((xy, xy + wh), 1).round()
        labels = torch.randint(1, 4, (n,), generator=generator)
        for box, label in zip(boxes.int().tolist(), labels.tolist(), strict=True):
            picture[:, box[1] : box[3], box[0] : box[2]] = COLOURS[label - 1][:, None, None]
        targets.append({"boxes": boxes, "labels": labels})
    return pictures, targets


def average_precision_50(detections: list[dict], targets: list[dict]) -> tuple[float, float, float]:
    """AP at IoU 0.5 pooled over classes, and precision / recall of detections scoring >= 0.3."""
    scored, total = [], sum(len(t["boxes"]) for t in targets)
    for found, target in zip(detections, targets, strict=True):
        used = torch.zeros(len(target["boxes"]), dtype=torch.bool)
        iou = box_iou(found["result_boxes"], target["boxes"])
        for d in range(len(found["result_boxes"])):  # detections come sorted by score
            same = (target["labels"] == found["result_labels"][d]) & ~used
            overlap = torch.where(same, iou[d], torch.zeros_like(iou[d]))
            hit = bool(overlap.numel()) and float(overlap.max()) >= 0.5
            if hit:
                used[int(overlap.argmax())] = True
            scored.append((float(found["result_scores"][d]), hit))
    scored.sort(key=lambda s: -s[0])
    hits = torch.tensor([h for _, h in scored], dtype=torch.float64)
    scores = torch.tensor([s for s, _ in scored], dtype=torch.float64)
    tp = hits.cumsum(0)
    precision = tp / torch.arange(1, len(hits) + 1)
    recall = tp / max(total, 1)
    # All-point interpolation: area under the precision envelope.
    envelope = precision.flip(0).cummax(0).values.flip(0)
    ap = float((torch.diff(recall, prepend=torch.zeros(1)) * envelope).sum())
    kept = scores >= 0.3
    p = float(hits[kept].mean()) if kept.any() else 0.0
    r = float(hits[kept].sum()) / max(total, 1)
    return ap, p, r


def recalibrate_batchnorm(model: nn.Module, batches: list[torch.Tensor]) -> None:
    """Exact BatchNorm statistics of the final weights (a short run leaves the running averages behind)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None
    model.train()
    with torch.no_grad():
        for batch in batches:
            model(batch)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--train-pictures", type=int, default=256)
    parser.add_argument("--test-pictures", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--matchers", default=",".join(MATCHERS))
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "matchers.json")
    args = parser.parse_args()

    generator = torch.Generator().manual_seed(0)
    train_pictures, train_targets = synthetic_pictures(args.train_pictures, args.size, generator)
    test_pictures, test_targets = synthetic_pictures(args.test_pictures, args.size, generator)
    torch.manual_seed(0)
    initial = ssd.build_model("mobilenetv3_ssd", num_classes=4, input_size=args.size).state_dict()
    order = torch.randperm(args.train_pictures, generator=generator)

    rows = []
    for name in args.matchers.split(","):
        model = ssd.build_model("mobilenetv3_ssd", num_classes=4, input_size=args.size)
        model.load_state_dict(initial)
        criterion = MultiBoxLoss.for_model(model, matcher=MATCHERS[name]())
        optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, args.lr, total_steps=args.steps, pct_start=0.1
        )
        model.train()
        start, history = time.perf_counter(), []
        for step in range(args.steps):
            index = order[(step * args.batch + torch.arange(args.batch)) % args.train_pictures]
            out = model(train_pictures[index], [train_targets[i] for i in index])
            losses = criterion(out["cls_logits"], out["bbox_regression"], out["anchors"], out["targets"])
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            optimizer.step()
            schedule.step()
            history.append({k: float(v.detach()) for k, v in losses.items()})
            history[-1]["objects"] = sum(len(train_targets[i]["boxes"]) for i in index)
        minutes = (time.perf_counter() - start) / 60
        recalibrate_batchnorm(
            model, [train_pictures[i : i + 32] for i in range(0, min(128, args.train_pictures), 32)]
        )
        detections = model.predict(list(test_pictures))
        ap, precision, recall = average_precision_50(detections, test_targets)
        positives = sum(h["num_positives"] for h in history) / sum(h["objects"] for h in history)
        last = history[-20:]
        rows.append(
            {
                "matcher": name,
                "positives_per_object": round(positives, 2),
                "loss_first": round(history[0]["loss"], 3),
                "loss_last20": round(sum(h["loss"] for h in last) / len(last), 3),
                "loc_loss_last20": round(sum(h["loc_loss"] for h in last) / len(last), 3),
                "train_acc_last20": round(sum(h["train_acc"] for h in last) / len(last), 3),
                "test_ap50": round(ap, 3),
                "test_precision@0.3": round(precision, 3),
                "test_recall@0.3": round(recall, 3),
                "minutes": round(minutes, 1),
            }
        )
        print(rows[-1], flush=True)

    result = {
        "benchmark": "matchers",
        "arch": "mobilenetv3_ssd",
        "input_size": args.size,
        "steps": args.steps,
        "batch": args.batch,
        "lr": args.lr,
        "train_pictures": args.train_pictures,
        "test_pictures": args.test_pictures,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "results": rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    columns = ["positives_per_object", "loss_last20", "train_acc_last20", "test_ap50"]
    columns += ["test_precision@0.3", "test_recall@0.3"]
    print(f"{'matcher':26}" + "".join(f"{c:>22}" for c in columns))
    for row in rows:
        print(f"{row['matcher']:26}" + "".join(f"{row[c]:>22}" for c in columns))
    print(f"written {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
