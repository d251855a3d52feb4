"""`model.predict` end to end beside torchvision's eager model, on the fixture weights and picture.

    python3 benchmarks/bench_predict.py --reference-python REFPY [--runs 15] [--out benchmarks/results/predict.json]

For mobilenetv3_ssd (the 91-class SSDLite fixture) and vgg16_ssd300 (the 21-class SSD300 fixture): the median
wall time of one picture through `model.predict` (the inference form: BatchNorm folded, channels-last), through
the module itself in eval mode (what `predict` ran before the inference form), and through torchvision's eager
model (`../shared/reference/tv_latency.py`, same weights and picture, same 2 threads), measured alternately in
rounds so that all three see the machine in the same state. Targets: predict >= 2.5x torchvision for SSDLite,
>= 1.07x for SSD300.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_learning import machine  # noqa: E402

import ssd  # noqa: E402

FIXTURES = ROOT.parent / "shared" / "fixtures" / "torchvision"
TV_LATENCY = ROOT.parent / "shared" / "reference" / "tv_latency.py"
CASES = {  # ours, torchvision's name, classes, fixture
    "ssdlite320": (
        "mobilenetv3_ssd",
        "ssdlite320_mobilenet_v3_large",
        91,
        "ssdlite320_mobilenet_v3_large.pt",
    ),
    "ssd300_vgg16": ("vgg16_ssd300", "ssd300_vgg16", 21, "ssd300_vgg16.pt"),
}
TARGETS = {"ssdlite320": 2.5, "ssd300_vgg16": 1.07}


def median_ms(function, runs: int) -> float:
    for _ in range(3):
        function()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reference-python", help="python of the torchvision reference venv")
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "predict.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    report = {"machine": machine(), "targets_vs_torchvision": TARGETS, "cases": {}}
    work = Path(tempfile.mkdtemp())
    for name, (arch, tv_arch, classes, fixture) in CASES.items():
        content = torch.load(FIXTURES / fixture, weights_only=True)
        state = {k: v.float() if v.is_floating_point() else v for k, v in content["state_dict"].items()}
        torch.save(state, work / f"{name}.pth")
        picture_path = work / f"{name}.png"
        Image.fromarray(content["image_uint8_hwc"].numpy()).save(picture_path)
        picture = content["image_uint8_hwc"].permute(2, 0, 1).contiguous()
        model = ssd.build_model(arch, num_classes=classes)
        model.load_torchvision(work / f"{name}.pth")
        model.eval()
        rounds = {"predict": [], "module_eval": [], "torchvision": []}
        with torch.inference_mode():
            for _ in range(args.rounds):
                rounds["predict"].append(median_ms(lambda m=model, p=picture: m.predict([p]), args.runs))
                rounds["module_eval"].append(median_ms(lambda m=model, p=picture: m([p]), args.runs))
                if args.reference_python:
                    out = subprocess.run(
                        [args.reference_python, str(TV_LATENCY), tv_arch, str(classes), str(work / f"{name}.pth"),
                         str(picture_path), "--runs", str(args.runs)],
                        check=True, capture_output=True, text=True,
                    ).stdout  # fmt: skip
                    rounds["torchvision"].append(float(re.search(r"median_ms ([\d.]+)", out).group(1)))
        entry = {key: round(min(values), 2) for key, values in rounds.items() if values}
        entry["rounds_ms"] = rounds
        if rounds["torchvision"]:
            entry["predict_speedup_vs_torchvision"] = round(entry["torchvision"] / entry["predict"], 2)
            entry["module_eval_speedup_vs_torchvision"] = round(
                entry["torchvision"] / entry["module_eval"], 2
            )
        report["cases"][name] = entry
        print(name, {k: v for k, v in entry.items() if k != "rounds_ms"}, flush=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
