"""Inference benchmark on the fixture weights and picture: mobilenetv3_ssd and vgg16_ssd300, PyTorch and ONNX.

    PYTHONPATH=src python3 benchmarks/bench_inference.py [--runs 50] [--out benchmarks/results/inference.json]

Each model and backend runs in its own process, so each peak-memory figure is that model's alone; an ONNX
case also measures a process that loads only the exported file (`onnx_only_process`), as a deployment does.
Prints a table and writes JSON (a list, one entry per row). Targets on a quiet 2-core CPU: mobilenetv3_ssd
end to end <= 30 ms (PyTorch) and <= 17 ms (onnxruntime), vgg16_ssd300 <= 355 ms, mobilenetv3_ssd peak
memory < 400 MB.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures" / "torchvision"
CASES = [
    ("mobilenetv3_ssd", "ssdlite320_mobilenet_v3_large.pt", "torch"),
    ("mobilenetv3_ssd", "ssdlite320_mobilenet_v3_large.pt", "onnx"),
    ("vgg16_ssd300", "ssd300_vgg16.pt", "torch"),
    ("vgg16_ssd300", "ssd300_vgg16.pt", "onnx"),
]
TARGETS_MS = {
    ("mobilenetv3_ssd", "torch"): 30.0,
    ("mobilenetv3_ssd", "onnx"): 17.0,
    ("vgg16_ssd300", "torch"): 355.0,
}


def fixture_picture(fixture: str):
    import torch

    return torch.load(FIXTURES / fixture, weights_only=True)["image_uint8_hwc"].permute(2, 0, 1).contiguous()


def run_case(
    arch: str, fixture: str, backend: str, runs: int, threads: int | None, onnx_dir: str | None
) -> dict:
    """One benchmark in this process (called in a child process by `main`)."""
    from ssd.deploy.benchmark import benchmark_model
    from ssd.models.checkpoint import load_model

    model = load_model(FIXTURES / fixture, arch=arch)
    vgg_runs = max(10, runs // 5) if arch.startswith("vgg") else runs
    return benchmark_model(
        model, fixture_picture(fixture), backend=backend, runs=vgg_runs, threads=threads, onnx_dir=onnx_dir
    )


def onnx_only_peak_memory(onnx_file: str, fixture: str, threads: int | None) -> dict:
    """Peak memory of a process that loads only the exported file, as `ssd detect --weights x.onnx` does.

    The ONNX case's own process also holds the PyTorch model and what the exporter left behind.
    """
    from ssd.deploy.benchmark import peak_rss_mb, reset_peak_rss
    from ssd.deploy.formats.onnx import OnnxPredictor

    picture = fixture_picture(fixture)
    predictor = OnnxPredictor(onnx_file, threads=threads)
    reset_peak_rss()
    for _ in range(20):
        predictor.predict([picture])
    return {"peak_rss_mb_after_batch1": peak_rss_mb()}


def run_child(command: list[str]) -> dict:
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--only", default=None, help="run only this architecture")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "inference.json"))
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)  # internal: arch,fixture,backend
    parser.add_argument("--onnx-dir", default=None, help=argparse.SUPPRESS)  # internal: keep the export
    parser.add_argument("--onnx-memory", default=None, help=argparse.SUPPRESS)  # internal: file,fixture
    args = parser.parse_args()
    if args.case:
        arch, fixture, backend = args.case.split(",")
        print(json.dumps(run_case(arch, fixture, backend, args.runs, args.threads, args.onnx_dir)))
        return 0
    if args.onnx_memory:
        onnx_file, fixture = args.onnx_memory.split(",")
        print(json.dumps(onnx_only_peak_memory(onnx_file, fixture, args.threads)))
        return 0
    if not FIXTURES.is_dir():
        print(f"{FIXTURES} is absent: the benchmark needs the fixture weights and picture", file=sys.stderr)
        return 2
    from ssd.deploy.benchmark import format_results

    results = []
    for arch, fixture, backend in CASES:
        if args.only and arch != args.only:
            continue
        child = [sys.executable, __file__, "--runs", str(args.runs)]
        if args.threads:
            child += ["--threads", str(args.threads)]
        with tempfile.TemporaryDirectory(prefix="ssd-bench-") as onnx_dir:
            result = run_child([*child, "--case", f"{arch},{fixture},{backend}", "--onnx-dir", onnx_dir])
            if backend == "onnx":
                onnx_file = Path(onnx_dir) / f"{arch}.onnx"
                result["onnx_only_process"] = run_child([*child, "--onnx-memory", f"{onnx_file},{fixture}"])
        target = TARGETS_MS.get((arch, backend))
        result["target_ms"] = target
        result["meets_target"] = None if target is None else result["batch1"]["p50_ms"] <= target
        results.append(result)
        print(f"{arch} {backend}: {result['batch1']['p50_ms']:.1f} ms", file=sys.stderr)
    print(format_results(results))
    for r in results:
        if r["target_ms"] is not None:
            verdict = "meets" if r["meets_target"] else "misses"
            print(
                f"{r['arch']} {r['backend']}: {r['batch1']['p50_ms']:.1f} ms, {verdict} the {r['target_ms']:.0f} ms target"
            )
        if "onnx_only_process" in r:
            memory = r["onnx_only_process"]["peak_rss_mb_after_batch1"]
            print(f"{r['arch']} onnx: peak memory {memory:.0f} MB in a process that loads only the ONNX file")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
