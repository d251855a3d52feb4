"""`ssd bench` and the benchmark library report every figure they promise (timings are not asserted)."""

import json

import torch

import ssd
from ssd.cli.main import main
from ssd.deploy.benchmark import benchmark_model, format_results, percentile


def test_benchmark_reports_latency_throughput_memory_split_and_gflops():
    model = ssd.build_model("mobilenetv3_ssd", num_classes=5, input_size=160).eval()
    picture = torch.randint(0, 256, (3, 120, 160), dtype=torch.uint8)
    result = benchmark_model(model, picture, runs=5, batch_sizes=(1, 2), threads=1)
    for batch in ("batch1", "batch2"):
        assert result[batch]["p50_ms"] > 0 and result[batch]["p95_ms"] >= result[batch]["p50_ms"]
        assert result[batch]["pictures_per_s"] > 0
    split = result["split_batch1"]
    assert all(split[k] > 0 for k in ("preprocess_ms", "network_ms", "postprocess_ms"))
    assert result["matmul_gflops"] > 0 and result["network_gflops"] > 0
    assert result["peak_rss_mb_after_batch1"] > 50 and result["threads"] == 1
    table = format_results([result])
    assert "mobilenetv3_ssd" in table and "GF/s" in table


def test_percentile():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) in (50.0, 51.0) and percentile(values, 95) in (95.0, 96.0)


def test_bench_command_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(
        [
            "bench",
            "--arch",
            "mobilenetv3_ssd",
            "--num-classes",
            "3",
            "--runs",
            "5",
            "--threads",
            "1",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    written = json.loads(out.read_text())
    (result,) = written["results"]
    assert result["arch"] == "mobilenetv3_ssd" and result["backend"] == "torch" and result["fused_batchnorm"]
    assert result["precision"] == "fp32"
    machine = written["machine"]
    assert machine["cpu_capability"] == torch.backends.cpu.get_cpu_capability() and machine["cores"] >= 1
    assert machine["matmul"]["fp32"] > 0 and set(machine["matmul"]) == {"fp32", "bf16", "int8"}
    printed = capsys.readouterr().out
    assert "pic/s" in printed and f"PyTorch sees {machine['cpu_capability']}" in printed


def test_bench_all_gives_one_row_per_available_backend(tmp_path, capsys):
    from ssd.cli.commands.bench import BACKENDS
    from ssd.deploy.benchmark import BACKENDS as MODULE_BACKENDS
    from ssd.deploy.benchmark import available_backends

    assert BACKENDS == MODULE_BACKENDS  # the command's copy, kept so that --help need not import torch
    out = tmp_path / "bench.json"
    argv = ["bench", "--arch", "mobilenetv3_small_ssd", "--num-classes", "3", "--runs", "5", "--threads", "1"]
    assert main([*argv, "--backend", "all", "--json", str(out)]) == 0
    results = json.loads(out.read_text())["results"]
    assert [r["backend"] for r in results] == available_backends()
    for r in results:
        assert r["precision"] == ("bf16" if r["backend"].endswith("bf16") else "fp32")
        assert r["batch1"]["p50_ms"] > 0 and r["split_batch1"]["network_ms"] > 0
    table = capsys.readouterr().out
    assert len([line for line in table.splitlines() if line.startswith("mobilenetv3_small_ssd")]) == len(
        results
    )


def test_onnx_backend_benchmarks_an_export_and_leaves_no_files(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    model = ssd.build_model("mobilenetv3_ssd", num_classes=3, input_size=160).eval()
    picture = torch.randint(0, 256, (3, 100, 120), dtype=torch.uint8)
    result = benchmark_model(model, picture, backend="onnx", runs=5, batch_sizes=(1,), threads=1)
    assert result["backend"] == "onnx" and result["split_batch1"]["network_ms"] > 0
    assert not list(tmp_path.iterdir())
