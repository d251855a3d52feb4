"""Inference benchmark: latency, throughput, peak memory, the pre/network/post split, and GFLOP/s.

The network's achieved GFLOP/s is printed beside this machine's own fp32 matrix-multiply GFLOP/s, measured
in the same run with the same thread count: a network near that figure is limited by the CPU, not by our
code. `machine()` adds the CPU, its instruction set as PyTorch sees it and the matrix-multiply rates in
fp32, bf16 and INT8, which bound what each precision can gain. Timings are medians (and 95th percentiles)
of many runs after a warm-up, since a shared CPU is noisy.

Backends (`BACKENDS`): `torch` (the folded, channels-last model), `torch-bf16` (the same under bf16
autocast: oneDNN's bf16 kernels), `onnx` (onnxruntime), `openvino` and `openvino-bf16` (an IR run in fp32
or bf16). Each but `torch` runs a temporary export of the model; `available_backends()` lists those this
machine has the packages and instructions for.
"""

from __future__ import annotations

import contextlib
import os
import platform
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
from ssd.deploy.formats import load_predictor
from ssd.deploy.formats.openvino import cpu_has_bf16
from ssd.deploy.predictor import ExportedPredictor
from ssd.deploy.threads import available_cpus, set_inference_threads, torch_threads
from ssd.device import torch_has_bf16
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


BACKENDS = ("torch", "torch-bf16", "onnx", "openvino", "openvino-bf16")
PRECISION_OF_BACKEND = {"torch-bf16": "bf16", "openvino-bf16": "bf16"}  # the others: fp32


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def available_backends() -> list[str]:
    """The backends this machine can run: packages installed, bf16 where the CPU has it."""
    found = ["torch"]
    if torch_has_bf16():
        found.append("torch-bf16")
    if _has_module("onnx") and _has_module("onnxruntime"):
        found.append("onnx")
    if _has_module("onnx") and _has_module("openvino"):  # an IR is converted from the ONNX graph
        found.append("openvino")
        if cpu_has_bf16():
            found.append("openvino-bf16")
    return found


def matmul_rates(size: int = 1024, runs: int = 10) -> dict[str, float | None]:
    """Matrix-multiply rates at the current thread count, GFLOP/s (GOP/s for INT8; None where PyTorch has
    no kernel): fp32 and bf16 with `torch.mm`, INT8 (int8 x int8 -> int32) with `torch._int_mm`."""
    rates: dict[str, float | None] = {"fp32": matmul_gflops(size, runs)}
    for name, make, multiply in (
        ("bf16", lambda: torch.randn(size, size).bfloat16(), torch.mm),
        ("int8", lambda: torch.randint(-128, 128, (size, size), dtype=torch.int8), torch._int_mm),
    ):
        a, b = make(), make()
        try:
            times = time_calls(lambda a=a, b=b, multiply=multiply: multiply(a, b), runs, warmup=2)
        except (RuntimeError, AttributeError):  # no such kernel on this CPU or build
            rates[name] = None
            continue
        rates[name] = 2 * size**3 / (statistics.median(times) / 1000.0) / 1e9
    return rates


def machine() -> dict[str, Any]:
    """The CPU a benchmark ran on: model name, instruction set, cores, matrix-multiply rates."""
    model_name = ""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model_name = next(
                (line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), ""
            )
    except OSError:
        pass
    return {
        "cpu": model_name or platform.processor() or platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "bf16_kernels": torch_has_bf16(),
        "cores": available_cpus(),
        "threads": torch.get_num_threads(),
        "matmul": matmul_rates(),
        "torch": torch.__version__,
    }


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
    """Benchmark `model` (an `SSD`) on `picture` (uint8 CHW) with one of `BACKENDS`."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}")
    load_average = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    threads = set_inference_threads(threads)
    gflops_peak = matmul_gflops()
    prepared = prepare_for_inference(model, fuse=fuse, channels_last=channels_last)
    network_gflop = prepared.summary()["gflops"]
    result: dict[str, Any] = {
        "arch": model.config.arch,
        "backend": backend,
        "precision": PRECISION_OF_BACKEND.get(backend, "fp32"),
        "threads": threads,
        "load_average_at_start": load_average,  # other work on the machine makes every figure slower
        "fused_batchnorm": fuse,
        "channels_last": channels_last and backend.startswith("torch"),
        "input_size": list(model.config.input_size),
        "picture_size": list(picture.shape[-2:]),
        "num_classes": model.num_classes,
        "network_gflop_per_picture": network_gflop,
        "matmul_gflops": gflops_peak,
        "torch_version": torch.__version__,
    }
    if backend == "torch":
        predictor, network = prepared, None
    elif backend == "torch-bf16":
        predictor = network = Bf16Autocast(prepared)
    else:
        predictor = network = _exported_runner(prepared, backend, onnx_dir)

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
        "precision": predictor.precision,  # what the file runs in: "int8" for an INT8 export
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


class Bf16Autocast:
    """A prepared model with its network run under bf16 autocast; its outputs, decoding and NMS in fp32."""

    def __init__(self, prepared: torch.nn.Module):
        self.model = prepared
        self.preprocess = prepared.preprocess

    def head_outputs(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(batch.device.type, dtype=torch.bfloat16):
            cls_logits, bbox_regression = self.model.head_outputs(batch)
        return cls_logits.float(), bbox_regression.float()

    def predict(self, images):
        batch, original_sizes = self.model.preprocess(images)
        cls_logits, bbox_regression = self.head_outputs(batch)
        return self.model.postprocessor(
            cls_logits, bbox_regression, self.model.anchors, self.model.config.input_size, original_sizes
        )


def _exported_runner(prepared: torch.nn.Module, backend: str, folder: str | Path | None):
    """A network-only export of the model for `backend`, run by its predictor (pre/post-processing in
    PyTorch, as for a file `ssd export` wrote)."""
    format, _, precision = backend.partition("-")
    with tempfile.TemporaryDirectory(prefix="ssd-bench-") as temporary:
        folder = Path(folder) if folder is not None else Path(temporary)
        suffix = ".onnx" if format == "onnx" else ".xml"
        path = folder / f"{prepared.config.arch}{'_' + precision if precision else ''}{suffix}"
        # Unchecked: a lower precision's check asks for agreement that a model with random weights (`ssd
        # bench --arch`) cannot give on random pixels; the benchmark times the file, the export checks files.
        export_model(
            prepared,
            path,
            format,
            with_postprocess=False,
            dynamic_batch=True,
            precision=precision or "fp32",
            check=False,
        )
        # Both runtimes read the whole file when they load it, so the temporary copy may go.
        return load_predictor(path, threads=torch.get_num_threads())


def _split(prepared, predictor, network, picture: torch.Tensor, runs: int) -> dict[str, float]:
    """Median milliseconds of preprocessing, network and post-processing for one picture."""
    size = tuple(picture.shape[-2:])
    config = prepared.config
    exported = isinstance(network, ExportedPredictor)
    if not exported:
        network = network or prepared
        batch, _ = prepared.preprocess([picture])
        cls_logits, bbox_regression = network.head_outputs(batch)
        pre = time_calls(lambda: prepared.preprocess([picture]), runs)
        net = time_calls(lambda: network.head_outputs(batch), runs)
    else:
        with torch_threads(1):  # as an exported file's `predict` runs them
            batch, _ = network.graph_input([picture])
            pre = time_calls(lambda: network.graph_input([picture]), runs)
        cls_logits, bbox_regression = network.run_graph(batch)
        net = time_calls(lambda: network.run_graph(batch), runs)
    anchors = prepared.anchors
    with torch_threads(1) if exported else contextlib.nullcontext():
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
    glue = torch_threads(1) if predictor.backend != "torchscript" else contextlib.nullcontext()
    with glue:
        batch, _ = predictor.graph_input([picture])
        pre = time_calls(lambda: predictor.graph_input([picture]), runs)
    outputs = predictor._run_batched(batch)
    net = time_calls(lambda: predictor._run_batched(batch), runs)
    post_ms = 0.0  # a graph with post-processing: inside the network's time
    if predictor.graph == "network":
        cls_logits, bbox_regression = outputs
        anchors, input_size = predictor.anchors, predictor.config.input_size
        glue = torch_threads(1) if predictor.backend != "torchscript" else contextlib.nullcontext()
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


def format_results(results: list[dict[str, Any]], machine_info: dict[str, Any] | None = None) -> str:
    """A table, one row per benchmarked model, backend and precision; with `machine_info` (`machine()`), a
    line on the CPU first."""
    header = (
        f"{'arch':<16} {'backend':<13} {'prec':<4} {'thr':>3} {'b1 p50':>8} {'b1 p95':>8} {'b1 pic/s':>8} "
        f"{'b8 pic/s':>8} {'b1 cpu':>7} {'pre':>6} {'net':>7} {'post':>6} {'net GF/s':>8} {'mm GF/s':>12} "
        f"{'RSS MB':>7}"
    )
    lines = [header, "-" * len(header)]
    if machine_info is not None:
        rates = ", ".join(
            f"{name} {rate:.0f}" if rate is not None else f"{name} -"
            for name, rate in machine_info["matmul"].items()
        )
        lines.insert(
            0,
            f"CPU: {machine_info['cpu']} ({machine_info['cores']} cores), PyTorch sees "
            f"{machine_info['cpu_capability']}, bf16 kernels: {'yes' if machine_info['bf16_kernels'] else 'no'}; "
            f"matrix multiply at {machine_info['threads']} threads, G(FL)OP/s: {rates}",
        )
    for r in results:
        split = r["split_batch1"]
        b8 = r.get("batch8", {}).get("pictures_per_s", float("nan"))
        matmul = f"{r['matmul_gflops']:.0f}/{r.get('matmul_gflops_at_end', float('nan')):.0f}"
        backend = r["backend"].split("-")[0]  # the precision has its own column
        lines.append(
            f"{r['arch']:<16} {backend:<13} {r.get('precision', 'fp32'):<4} {r['threads']:>3} "
            f"{r['batch1']['p50_ms']:>8.1f} "
            f"{r['batch1']['p95_ms']:>8.1f} {r['batch1']['pictures_per_s']:>8.1f} {b8:>8.1f} "
            f"{r['batch1'].get('cpu_ms_p50', float('nan')):>7.1f} "
            f"{split['preprocess_ms']:>6.1f} {split['network_ms']:>7.1f} {split['postprocess_ms']:>6.1f} "
            f"{r['network_gflops']:>8.1f} {matmul:>12} {r['peak_rss_mb_after_batch1']:>7.0f}"
        )
    lines.append(
        "times in ms (median of runs); b1/b8: batch of 1/8 pictures end to end; mm: this machine's fp32 "
        "matrix-multiply rate at the start/end of the row; RSS: peak after batch 1"
    )
    return "\n".join(lines)
