"""Inference benchmark: latency, throughput, peak memory, the pre/network/post split, and GFLOP/s.

The network's achieved GFLOP/s is printed beside this machine's own fp32 matrix-multiply GFLOP/s, measured
in the same run with the same thread count: a network near that figure is limited by the CPU, not by our
code. Timings are medians (and 95th percentiles) of many runs after a warm-up, since a shared CPU is noisy.
"""

from __future__ import annotations

import contextlib
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ssd.deploy.export import export_model
from ssd.deploy.formats.onnx import OnnxPredictor
from ssd.deploy.predictor import ExportedPredictor
from ssd.deploy.threads import set_inference_threads, torch_threads
from ssd.models.fold import prepare_for_inference
from ssd.models.registry import build_model


def peak_rss_mb() -> float:
    """The process's peak resident memory (MiB) since the last `reset_peak_rss()`, or since it started."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def reset_peak_rss() -> None:
    """Start a new peak-memory measurement (Linux): exporting or loading must not count as inference."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        pass


def time_calls(
    function: Callable[[], Any], runs: int, warmup: int = 3, clock: Callable[[], float] = time.perf_counter
) -> list[float]:
    """Milliseconds of `runs` calls by `clock` (wall clock by default), after `warmup` uncounted calls."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(runs):
        start = clock()
        function()
        times.append((clock() - start) * 1000.0)
    return times


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def matmul_gflops(size: int = 1024, runs: int = 20) -> float:
    """This machine's fp32 matrix-multiply rate (GFLOP/s) at the current thread count; median of runs."""
    a = torch.randn(size, size)
    b = torch.randn(size, size)
    times = time_calls(lambda: torch.mm(a, b), runs, warmup=3)
    return 2 * size**3 / (statistics.median(times) / 1000.0) / 1e9


def _latency(times: list[float], batch: int) -> dict[str, float]:
    p50 = statistics.median(times)
    return {
        "p50_ms": p50,
        "p95_ms": percentile(times, 95),
        "pictures_per_s": batch * 1000.0 / p50,
    }


def benchmark_model(
    model: torch.nn.Module,
    picture: torch.Tensor,
    backend: str = "torch",
    runs: int = 50,
    batch_sizes: tuple[int, ...] = (1, 8),
    threads: int | None = None,
    fuse: bool = True,
    channels_last: bool = True,
    onnx_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Benchmark `model` (an `SSD`) on `picture` (uint8 CHW) with the PyTorch or onnxruntime backend."""
    load_average = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    threads = set_inference_threads(threads)
    gflops_peak = matmul_gflops()
    prepared = prepare_for_inference(model, fuse=fuse, channels_last=channels_last)
    network_gflop = prepared.summary()["gflops"]
    result: dict[str, Any] = {
        "arch": model.config.arch,
        "backend": backend,
        "threads": threads,
        "load_average_at_start": load_average,  # other work on the machine makes every figure slower
        "fused_batchnorm": fuse,
        "channels_last": channels_last,
        "input_size": list(model.config.input_size),
        "picture_size": list(picture.shape[-2:]),
        "num_classes": model.num_classes,
        "network_gflop_per_picture": network_gflop,
        "matmul_gflops": gflops_peak,
        "torch_version": torch.__version__,
    }
    if backend == "onnx":
        predictor, network = _onnx_runner(prepared, onnx_dir)
    elif backend == "torch":
        predictor, network = prepared, None
    else:
        raise ValueError(f"unknown backend {backend!r}")

    return _measure(
        result,
        predictor,
        picture,
        runs,
        batch_sizes,
        lambda: _split(prepared, predictor, network, picture, runs),
    )


def benchmark_exported(
    predictor: ExportedPredictor,
    picture: torch.Tensor,
    runs: int = 50,
    batch_sizes: tuple[int, ...] = (1, 8),
    threads: int | None = None,
) -> dict[str, Any]:
    """Benchmark a file `ssd export` wrote, as its predictor runs it (`ssd bench --weights model.onnx`).

    The figures are those of `benchmark_model`. The network's GFLOP count is that of the same architecture
    built from the file's config; a graph with post-processing inside times it as part of the network
    (`postprocess_ms` is then 0).
    """
    load_average = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    threads = set_inference_threads(threads)
    gflops_peak = matmul_gflops()
    # The same network, built from the file's config (random weights, folded as every export is): its count.
    structure = build_model(predictor.arch, num_classes=predictor.num_classes, config=predictor.config)
    network_gflop = prepare_for_inference(structure.eval(), channels_last=False).summary()["gflops"]
    del structure
    result: dict[str, Any] = {
        "arch": predictor.arch,
        "backend": predictor.backend,
        "file": predictor.path.name,
        "graph": predictor.graph,
        "precision": predictor.metadata.get("precision", "fp32"),  # "int8" for an INT8 export
        "threads": threads,
        "load_average_at_start": load_average,
        "fused_batchnorm": True,  # every export is folded
        "channels_last": False,  # graphs carry no memory layout
        "input_size": list(predictor.input_size),
        "picture_size": list(picture.shape[-2:]),
        "num_classes": predictor.num_classes,
        "network_gflop_per_picture": network_gflop,
        "matmul_gflops": gflops_peak,
        "torch_version": torch.__version__,
    }
    return _measure(
        result, predictor, picture, runs, batch_sizes, lambda: _split_exported(predictor, picture, runs)
    )


def _measure(
    result: dict[str, Any],
    predictor,
    picture: torch.Tensor,
    runs: int,
    batch_sizes: tuple[int, ...],
    split: Callable[[], dict[str, float]],
) -> dict[str, Any]:
    """The timed part of a benchmark, added to `result`: latency per batch size, CPU time, memory, split."""
    reset_peak_rss()
    with torch.inference_mode():
        for batch in batch_sizes:
            pictures = [picture] * batch
            times = time_calls(
                lambda pictures=pictures: predictor.predict(pictures),
                runs if batch == 1 else max(5, runs // 4),
            )
            result[f"batch{batch}"] = _latency(times, batch)
            result[f"peak_rss_mb_after_batch{batch}"] = peak_rss_mb()
        # CPU time of the whole process per picture: on a shared machine, with one thread, this is close to
        # what the wall clock shows on a quiet one (waiting for the CPU is not counted).
        cpu = time_calls(lambda: predictor.predict([picture]), runs, clock=time.process_time)
        result["batch1"]["cpu_ms_p50"] = statistics.median(cpu)
        result["split_batch1"] = split()
    network_ms = result["split_batch1"]["network_ms"]
    result["network_gflops"] = result["network_gflop_per_picture"] / (network_ms / 1000.0)
    # Measured again at the end: on a shared host the machine's speed drifts within one benchmark.
    result["matmul_gflops_at_end"] = matmul_gflops()
    return result


def _onnx_runner(prepared: torch.nn.Module, onnx_dir: str | Path | None):
    """A network-only ONNX export of the model, run by `OnnxPredictor` (pre/post-processing in PyTorch)."""
    with tempfile.TemporaryDirectory(prefix="ssd-bench-") as temporary:
        folder = Path(onnx_dir) if onnx_dir is not None else Path(temporary)
        path = folder / f"{prepared.config.arch}.onnx"
        export_model(prepared, path, "onnx", with_postprocess=False, dynamic_batch=True)
        # onnxruntime reads the whole file when the session starts, so the temporary copy may go.
        predictor = OnnxPredictor(path, threads=torch.get_num_threads())
    return predictor, predictor


def _split(prepared, predictor, onnx_predictor, picture: torch.Tensor, runs: int) -> dict[str, float]:
    """Median milliseconds of preprocessing, network and post-processing for one picture."""
    size = tuple(picture.shape[-2:])
    config = prepared.config
    if onnx_predictor is None:
        batch, _ = prepared.preprocess([picture])
        cls_logits, bbox_regression = prepared.head_outputs(batch)
        pre = time_calls(lambda: prepared.preprocess([picture]), runs)
        net = time_calls(lambda: prepared.head_outputs(batch), runs)
    else:
        with torch_threads(1):  # as `OnnxPredictor.predict` runs them
            batch, _ = onnx_predictor.preprocess([picture])
            pre = time_calls(lambda: onnx_predictor.preprocess([picture]), runs)
        cls_logits, bbox_regression = onnx_predictor.run_graph(batch)
        net = time_calls(lambda: onnx_predictor.run_graph(batch), runs)
    anchors = prepared.anchors
    with torch_threads(1) if onnx_predictor is not None else contextlib.nullcontext():
        post = time_calls(
            lambda: prepared.postprocessor(cls_logits, bbox_regression, anchors, config.input_size, [size]),
            runs,
        )
    return {
        "preprocess_ms": statistics.median(pre),
        "network_ms": statistics.median(net),
        "postprocess_ms": statistics.median(post),
    }


def _split_exported(predictor: ExportedPredictor, picture: torch.Tensor, runs: int) -> dict[str, float]:
    """`_split` for an exported file, its PyTorch parts on the threads its `predict` gives them."""
    size = tuple(picture.shape[-2:])
    glue = torch_threads(1) if predictor.backend == "onnx" else contextlib.nullcontext()
    with glue:
        batch, _ = predictor.preprocess([picture])
        pre = time_calls(lambda: predictor.preprocess([picture]), runs)
    outputs = predictor._run_batched(batch)
    net = time_calls(lambda: predictor._run_batched(batch), runs)
    post_ms = 0.0  # a graph with post-processing: inside the network's time
    if predictor.graph == "network":
        cls_logits, bbox_regression = outputs
        anchors, input_size = predictor.anchors, predictor.config.input_size
        glue = torch_threads(1) if predictor.backend == "onnx" else contextlib.nullcontext()
        with glue:
            post = time_calls(
                lambda: predictor.postprocessor(cls_logits, bbox_regression, anchors, input_size, [size]),
                runs,
            )
        post_ms = statistics.median(post)
    return {
        "preprocess_ms": statistics.median(pre),
        "network_ms": statistics.median(net),
        "postprocess_ms": post_ms,
    }


def format_results(results: list[dict[str, Any]]) -> str:
    """A table, one row per benchmarked model and backend."""
    header = (
        f"{'arch':<16} {'backend':<7} {'thr':>3} {'b1 p50':>8} {'b1 p95':>8} {'b1 pic/s':>8} {'b8 pic/s':>8} "
        f"{'b1 cpu':>7} {'pre':>6} {'net':>7} {'post':>6} {'net GF/s':>8} {'mm GF/s':>12} {'RSS MB':>7}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        split = r["split_batch1"]
        b8 = r.get("batch8", {}).get("pictures_per_s", float("nan"))
        matmul = f"{r['matmul_gflops']:.0f}/{r.get('matmul_gflops_at_end', float('nan')):.0f}"
        lines.append(
            f"{r['arch']:<16} {r['backend']:<7} {r['threads']:>3} {r['batch1']['p50_ms']:>8.1f} "
            f"{r['batch1']['p95_ms']:>8.1f} {r['batch1']['pictures_per_s']:>8.1f} {b8:>8.1f} "
            f"{r['batch1'].get('cpu_ms_p50', float('nan')):>7.1f} "
            f"{split['preprocess_ms']:>6.1f} {split['network_ms']:>7.1f} {split['postprocess_ms']:>6.1f} "
            f"{r['network_gflops']:>8.1f} {matmul:>12} {r['peak_rss_mb_after_batch1']:>7.0f}"
        )
    lines.append(
        "times in ms (median of runs); b1/b8: batch of 1/8 pictures end to end; mm: this machine's matrix-multiply"
        " rate at the start/end; RSS: peak after batch 1"
    )
    return "\n".join(lines)
