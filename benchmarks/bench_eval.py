"""How long evaluation takes: mobilenetv3_ssd with the trained BCCD weights on BCCD `test` (72 pictures).

Prints a table and writes JSON. The model part (reading pictures, forward pass, post-processing) and the
metric part (pycocotools and VOC, and faster-coco-eval where installed) are timed separately.

    python3 benchmarks/bench_eval.py [--repeats 3] [--batch-size 8] [--workers 2] [--threads N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
WEIGHTS = SHARED / "fixtures" / "torchvision" / "ssdlite320_bccd_trained.pt"
BCCD = SHARED / "data" / "bccd" / "BCCD"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("--json", default="benchmarks/results/eval.json")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if not WEIGHTS.is_file() or not BCCD.is_dir():
        print(f"needs {WEIGHTS} and {BCCD}")
        return 1

    from ssd.data import build_dataset
    from ssd.evaluation.evaluator import Evaluator, evaluate_detections
    from ssd.models.checkpoint import load_model

    dataset = build_dataset(BCCD, "test")
    model = load_model(WEIGHTS, arch="mobilenetv3_ssd")
    evaluator = Evaluator(dataset, batch_size=args.batch_size, num_workers=args.workers, progress=False)
    evaluator(model)  # warm-up: first-call allocations and worker start-up are not what is measured

    runs = []
    for _ in range(args.repeats):
        cpu_started = time.process_time()
        result = evaluator(model)
        # CPU seconds of this process: on a shared machine, a figure that other jobs disturb less than wall time.
        runs.append((result.seconds_total, result.seconds_model, time.process_time() - cpu_started))
    backends = {}
    for backend in ("pycocotools", "faster-coco-eval"):
        try:
            started = time.perf_counter()
            evaluate_detections(
                result.detections, result.targets, result.class_names, result.category_ids, backend
            )
            backends[backend] = time.perf_counter() - started
        except Exception as error:  # faster-coco-eval is optional
            backends[backend] = f"unavailable ({type(error).__name__})"

    total = statistics.median(r[0] for r in runs)
    model_time = statistics.median(r[1] for r in runs)
    cpu_time = statistics.median(r[2] for r in runs)
    report = {
        "benchmark": "evaluation of mobilenetv3_ssd on BCCD test",
        "pictures": result.num_images,
        "batch_size": args.batch_size,
        "workers": args.workers,
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, no GPU used",
        "seconds_total_median": total,
        "seconds_model_median": model_time,
        "cpu_seconds_median": cpu_time,
        "pictures_per_second": result.num_images / total,
        "load_average_1min": os.getloadavg()[0],
        "metrics_seconds": backends,
        "AP": result.coco.stats[0],
        "AP50": result.coco.stats[1],
        "runs": runs,
    }
    print(f"{'what':<32} {'value':>12}")
    print(f"{'pictures':<32} {result.num_images:>12d}")
    print(f"{'total seconds (median)':<32} {total:>12.2f}")
    print(f"{'model seconds (median)':<32} {model_time:>12.2f}")
    print(f"{'CPU seconds, this process':<32} {cpu_time:>12.2f}")
    print(f"{'pictures / second':<32} {result.num_images / total:>12.1f}")
    print(f"{'load average (1 min)':<32} {os.getloadavg()[0]:>12.2f}")
    for backend, seconds in backends.items():
        shown = f"{seconds:.3f}" if isinstance(seconds, float) else seconds
        print(f"{'metrics, ' + backend:<32} {shown:>12}")
    print(f"{'AP / AP50':<32} {result.coco.stats[0]:>6.4f}/{result.coco.stats[1]:.4f}")
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
