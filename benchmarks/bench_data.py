"""Loader throughput: pictures per second of decoding plus augmentation, as a training run would load them.

    python3 benchmarks/bench_data.py [--data ../shared/data/bccd/BCCD] [--split trainval] [--size 300]
                                     [--batch-size 16] [--workers 0 2] [--out benchmarks/results/data.json]

Measures, for each number of workers, BCCD (VOC, 640x480 JPEGs) with the `ssd` preset and with no
augmentation (decode + resize only), and the built-in synthetic dataset with the `ssd` preset. The first
batch (worker start-up) is not timed. The target: the loader is never what a training step waits for, i.e.
at least 3x the training step's pictures per second for mobilenetv3_ssd on this machine (about 10-15/s on
2 CPU cores, so at least 45/s).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ssd.data import build_dataset, build_loader, build_transforms  # noqa: E402

TARGET = 45.0  # pictures/s: 3x a training step of about 15 pictures/s


def measure(dataset, preset: str, size: int, batch_size: int, workers: int, pictures: int) -> dict:
    loader = build_loader(
        dataset,
        batch_size,
        transform=build_transforms(preset, size),
        num_workers=workers,
        seed=0,
        drop_last=True,
        persistent_workers=True,
    )
    iterator = iter(loader)
    next(iterator)  # workers start, first pictures decoded: not what a long run sees
    loaded, start = 0, time.perf_counter()
    while loaded < pictures:
        try:
            images, _ = next(iterator)
        except StopIteration:
            iterator = iter(loader)
            continue
        loaded += len(images)
    seconds = time.perf_counter() - start
    del iterator, loader
    return {"pictures": loaded, "seconds": round(seconds, 3), "pictures_per_s": round(loaded / seconds, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "bccd" / "BCCD"))
    parser.add_argument("--split", default="trainval")
    parser.add_argument("--size", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--pictures", type=int, default=320, help="pictures timed per measurement")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "data.json"))
    args = parser.parse_args(argv)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # BCCD's two zero-size boxes
        cases = [
            ("bccd", build_dataset(args.data, args.split), "ssd"),
            ("bccd", build_dataset(args.data, args.split), "none"),
            ("synthetic", build_dataset("synthetic", "train"), "ssd"),
        ]
    rows = []
    for name, dataset, preset in cases:
        for workers in args.workers:
            result = measure(dataset, preset, args.size, args.batch_size, workers, args.pictures)
            rows.append(
                {
                    "dataset": name,
                    "preset": preset,
                    "size": args.size,
                    "workers": workers,
                    "batch_size": args.batch_size,
                    **result,
                    "meets_target": result["pictures_per_s"] >= TARGET,
                }
            )

    print(f"{'dataset':<10} {'preset':<7} {'size':>4} {'workers':>7} {'pictures/s':>10} {'target':>7}")
    for row in rows:
        mark = "ok" if row["meets_target"] else "below"
        print(
            f"{row['dataset']:<10} {row['preset']:<7} {row['size']:>4} {row['workers']:>7} "
            f"{row['pictures_per_s']:>10.1f} {mark:>7}"
        )
    report = {
        "benchmark": "data loading + augmentation",
        "target_pictures_per_s": TARGET,
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_1min": round(os.getloadavg()[0], 2),  # other jobs sharing the CPU slow it down
            "platform": platform.platform(),
            "torch": torch.__version__,
        },
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
