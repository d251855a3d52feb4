"""Learning on real data: mobilenetv3_ssd from scratch on BCCD `trainval`, evaluated on `test` with pycocotools.

    python3 benchmarks/bench_train_bccd.py [--epochs 80] [--batch-size 16] [--out benchmarks/results/train_bccd.json]
                                           [any `ssd train` option, e.g. --lr 0.02 --augment ssdlite]

The protocol of the training issue: no pretrained weights, batch 16, 80 epochs, the model of the last epoch
(its EMA weights when --ema is on, as here by default) evaluated on `test`. The reference on this machine kind
is torchvision 0.28's ssdlite320_mobilenet_v3_large with its own recipe (see ../shared/data/README.md);
the target is 1.2x its accuracy at 1.3x its training speed. Prints a table, writes JSON with mAP, mAP@0.5,
per-class AP, wall time, training pictures/s and where the plots are; the run folder holds results.csv,
results.png, the evaluation plots and validation pictures (docs/training.md, "What a run writes").
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ssd.cli.commands.train import add_arguments  # noqa: E402
from ssd.data import build_dataset  # noqa: E402
from ssd.evaluation import Evaluator  # noqa: E402
from ssd.models.checkpoint import load_model  # noqa: E402
from ssd.training.options import read_yaml_options, resolve_options  # noqa: E402
from ssd.training.trainer import Trainer  # noqa: E402

REFERENCE = {"mAP": 0.462, "mAP50": 0.672, "AP_small": 0.030, "pictures_per_s": 10.3, "train_seconds": 2261}
TARGET = {"mAP": 0.55, "mAP50": 0.80, "pictures_per_s": 13.5}

# The recipe this benchmark runs unless a flag says otherwise; docs/training.md gives the reasons.
RECIPE = {
    "arch": "mobilenetv3_ssd",
    "train_split": "trainval",
    "val_split": "test",
    "epochs": 80,
    "batch_size": 16,
    "optimizer": "adamw",
    "lr": 0.003,
    "weight_decay": 4e-5,
    "warmup_epochs": 2.0,
    "scheduler": "cosine",
    "min_lr_ratio": 0.01,
    "augment": "ssdlite",
    "anchor_scales": "auto",
    "ema": True,
    "eval_every": 10,
    "val_pictures": 4,
    "seed": 0,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "train_bccd.json"))
    add_arguments(parser)
    parser.set_defaults(datapath=str(ROOT.parent / "shared" / "data" / "bccd" / "BCCD"), project="runs/bench")
    args = parser.parse_args(argv)
    if not Path(args.datapath).exists():
        print(f"{args.datapath}: BCCD is not there (give --datapath)", file=sys.stderr)
        return 2
    given = {k: v for k, v in vars(args).items() if k not in ("out", "config", "quiet") and v is not None}
    from_file = read_yaml_options(args.config) if args.config else {}
    options = resolve_options({**RECIPE, **from_file, **given})
    if options.name is None:
        options.name = f"bccd_{time.strftime('%Y%m%d_%H%M%S')}"

    command = [sys.executable, *sys.argv]
    started = time.perf_counter()
    result = Trainer(options, command=command, progress=not args.quiet).fit()
    wall = time.perf_counter() - started

    # The final model, evaluated on `test` on its own (the per-epoch evaluation runs every `eval_every`).
    model = load_model(result.last_checkpoint)
    test_set = build_dataset(options.datapath, "test")
    evaluation = Evaluator(test_set, batch_size=16, progress=False)(model)
    summary = evaluation.summary()
    train_seconds = sum(row["train_seconds"] for row in result.history)
    pictures = sum(row["pictures_per_s"] * row["train_seconds"] for row in result.history)
    report = {
        "benchmark": "train_bccd",
        "command": " ".join(command),
        "options": options.to_dict(),
        "epochs_run": len(result.history),
        "test": {
            "mAP": summary["AP"],
            "mAP50": summary["AP50"],
            "mAP75": summary["AP75"],
            "AP_small": summary["AP_small"],
            "AP_medium": summary["AP_medium"],
            "AP_large": summary["AP_large"],
            "VOC_mAP50": evaluation.voc.map_area,
            "per_class_AP": dict(zip(evaluation.class_names, evaluation.coco.ap_per_class, strict=True)),
            "per_class_AP50": dict(zip(evaluation.class_names, evaluation.coco.ap50_per_class, strict=True)),
        },
        "train_seconds": round(train_seconds, 1),
        "wall_seconds": round(wall, 1),
        "pictures_per_s": round(pictures / max(train_seconds, 1e-9), 2),
        "reference_torchvision": REFERENCE,
        "target": TARGET,
        "run_dir": str(result.run_dir),
        "plots": [
            str(result.run_dir / name)
            for name in ("results.png", "confusion_matrix.png", "PR_curve.png", "F1_curve.png")
        ],
        "machine": {
            "cpus": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(),
        },
    }
    _print_table(report)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten: {out}")
    return 0


def _print_table(report: dict) -> None:
    test = report["test"]
    rows = [
        ("mAP (COCO)", test["mAP"], REFERENCE["mAP"], TARGET["mAP"]),
        ("mAP@0.5", test["mAP50"], REFERENCE["mAP50"], TARGET["mAP50"]),
        ("AP small", test["AP_small"], REFERENCE["AP_small"], None),
        (
            "training pictures/s",
            report["pictures_per_s"],
            REFERENCE["pictures_per_s"],
            TARGET["pictures_per_s"],
        ),
    ]
    print(f"\nBCCD test, {report['epochs_run']} epochs, {report['train_seconds']:.0f} s of training")
    print(f"{'':22} {'ours':>8} {'torchvision':>12} {'target':>8}")
    for name, ours, reference, target in rows:
        target_text = f"{target:8.3f}" if target is not None else f"{'':8}"
        print(f"{name:22} {ours:8.3f} {reference:12.3f} {target_text}")
    print(
        "per class AP / AP@0.5: "
        + ", ".join(
            f"{name} {ap:.3f} / {test['per_class_AP50'][name]:.3f}"
            for name, ap in test["per_class_AP"].items()
        )
    )


if __name__ == "__main__":
    sys.exit(main())
