"""`ssd bench`: inference latency, throughput, peak memory and GFLOP/s of one architecture, on one backend
or on every backend and precision this machine has (`--backend all`)."""

from __future__ import annotations

import argparse

from ssd.cli.arguments import add_threads_argument, output_file, require_at_least

HELP = "benchmark inference: latency p50/p95, pictures/s at batch 1 and 8, memory, GFLOP/s"
# `ssd.deploy.benchmark.BACKENDS`, written out so that `ssd bench --help` need not import torch
# (tests/test_bench.py checks the two agree).
BACKENDS = ("torch", "torch-bf16", "onnx", "openvino", "openvino-bf16")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--arch", default=None, help="architecture name, e.g. mobilenetv3_ssd (default: the checkpoint's)"
    )
    parser.add_argument(
        "--weights",
        default=None,
        help="a checkpoint, whose architecture and classes are used, a torchvision file with --arch, or an "
        "exported .onnx / .xml / .torchscript, run as `ssd detect` runs it (default: random weights; same speed)",
    )
    parser.add_argument(
        "--num-classes", type=int, default=None, help="classes with background (default: the file's, else 91)"
    )
    parser.add_argument(
        "--backend",
        choices=(*BACKENDS, "all"),
        default=None,
        help="runtime and precision for a model: torch, torch-bf16 (bf16 autocast), onnx, openvino, "
        "openvino-bf16 (exported to a temporary file first), or all: every one this machine has, in one "
        "table; an exported file runs with its own (default: torch)",
    )
    parser.add_argument("--picture", default=None, help="picture to run on (default: a 480x640 random one)")
    parser.add_argument("--runs", type=int, default=50, help="timed runs at batch 1 (default: 50)")
    add_threads_argument(parser)
    parser.add_argument("--no-fuse", action="store_true", help="keep BatchNorm layers (to measure folding)")
    parser.add_argument(
        "--no-channels-last",
        action="store_true",
        help="keep the default memory layout (to measure channels-last)",
    )
    parser.add_argument(
        "--json", default=None, help="also write the results to this JSON file (a folder: bench.json in it)"
    )


def run(args: argparse.Namespace) -> int:
    import torch

    from ssd.deploy.benchmark import available_backends, benchmark_model, machine, torch_has_bf16
    from ssd.errors import UserError

    require_at_least("--runs", args.runs, 5)
    json_path = output_file(args.json, "bench.json") if args.json else None
    threads = args.threads
    if args.weights:
        from ssd.deploy.loading import load_detector
        from ssd.deploy.threads import default_threads

        # The same loader as `ssd detect`: our checkpoints say their architecture (--arch is then needed only
        # for a torchvision file), and an exported file is run by its own runtime.
        threads = threads or default_threads()
        model = load_detector(
            args.weights, arch=args.arch, num_classes=args.num_classes, threads=threads, prepare=False
        )
        if not isinstance(model, torch.nn.Module):
            return _bench_exported(args, model, threads, json_path)
        if args.arch is not None and model.config.arch != args.arch:
            raise UserError(f"{args.weights}: holds a {model.config.arch} model, not {args.arch}")
    elif args.arch is None:
        raise UserError("say what to benchmark: an architecture (--arch) or a weights file (--weights)")
    else:
        from ssd.models.registry import build_model

        model = build_model(args.arch, num_classes=args.num_classes or 91).eval()
    from ssd.deploy.threads import default_threads

    threads = threads or default_threads()  # one count for every backend of the table
    backends = [args.backend or "torch"]
    if args.backend == "all":
        backends = available_backends()
    elif args.backend == "torch-bf16" and not torch_has_bf16():
        raise UserError("--backend torch-bf16: this CPU has no bf16 instructions (AVX512-BF16 or AMX)")
    elif args.backend == "openvino-bf16":
        from ssd.deploy.formats.openvino import cpu_has_bf16  # a missing openvino: the pip install line

        if not cpu_has_bf16():
            raise UserError("--backend openvino-bf16: this CPU has no bf16 instructions (AVX512-BF16 or AMX)")
    # A missing package of another backend (onnx, onnxruntime) is named by the export it starts with.
    picture = _picture(args)
    results = [
        benchmark_model(
            model,
            picture,
            backend=backend,
            runs=args.runs,
            threads=threads,
            fuse=not args.no_fuse,
            channels_last=not args.no_channels_last,
        )
        for backend in backends
    ]
    return _report(results, json_path, machine())


def _bench_exported(args: argparse.Namespace, predictor, threads: int, json_path) -> int:
    """`ssd bench --weights model.onnx`: the file as its predictor runs it."""
    from ssd.deploy.benchmark import benchmark_exported
    from ssd.errors import UserError

    if args.backend is not None and args.backend != predictor.backend:
        raise UserError(
            f"{args.weights}: an exported file runs with its own runtime ({predictor.backend}); --backend is "
            "for checkpoints"
        )
    if args.no_fuse or args.no_channels_last:
        raise UserError(
            f"{args.weights}: an exported graph is already folded and has no memory layout; --no-fuse and "
            "--no-channels-last are for checkpoints"
        )
    result = benchmark_exported(predictor, _picture(args), runs=args.runs, threads=threads)
    from ssd.deploy.benchmark import machine

    return _report([result], json_path, machine())


def _picture(args: argparse.Namespace):
    import torch

    if args.picture:
        from pathlib import Path

        from ssd.data.pictures import read_picture

        return read_picture(Path(args.picture))
    return torch.randint(0, 256, (3, 480, 640), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


def _report(results: list[dict], json_path, machine_info: dict) -> int:
    import json

    from ssd.deploy.benchmark import format_results

    print(format_results(results, machine_info))
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps({"machine": machine_info, "results": results}, indent=2))
    return 0
