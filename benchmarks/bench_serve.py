"""Load benchmark of `ssd serve` on 127.0.0.1: requests/s and p50/p95/p99 latency at 1, 4 and 16
concurrent clients, with --max-batch 1 and 8, on the BCCD-trained SSDLite; beside `ssd bench`'s offline
batch-8 pictures/s for the same backend, measured first in the same run.

    PYTHONPATH=src python3 benchmarks/bench_serve.py [--requests-per-client 20] [--threads 2]
        [--out benchmarks/results/serve.json]

Bounded: each setting sends `--requests-per-client` x clients requests (after a warm-up of one per client)
and every request times out after 60 s. The clients run as threads in this process, on the same CPUs as
the server: on a 2-core machine they take part of what the server could use. Targets at 16 clients:
0 errors, throughput >= 0.8x the offline batch-8 pictures/s, p99 <= 3x p50.
"""

from __future__ import annotations

import argparse
import http.client
import json
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
WEIGHTS = SHARED / "fixtures" / "torchvision" / "ssdlite320_bccd_trained.pt"
PICTURES = SHARED / "data" / "bccd" / "BCCD" / "JPEGImages"
MODEL = ["--weights", str(WEIGHTS), "--arch", "mobilenetv3_ssd", "--class-names", "Platelets,RBC,WBC"]
CLIENTS = (1, 4, 16)
MAX_BATCHES = (1, 8)


def cpu_description() -> dict[str, str]:
    import torch

    model = platform.processor()
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return {"cpu": model, "capability": torch.backends.cpu.get_cpu_capability()}


def offline_batch8(picture: Path, threads: int) -> float:
    """`ssd bench`'s batch-8 pictures/s for the PyTorch backend on the same picture."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "bench.json"
        command = [sys.executable, "-m", "ssd", "bench", *MODEL[:4], "--picture", str(picture)]
        subprocess.run(
            command + ["--threads", str(threads), "--json", str(out)], check=True, capture_output=True
        )
        result = json.loads(out.read_text())
        result = result[0] if isinstance(result, list) else result
        return float(result["batch8"]["pictures_per_s"])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(max_batch: int, threads: int) -> tuple[subprocess.Popen, int]:
    port = free_port()
    command = [sys.executable, "-m", "ssd", "serve", *MODEL, "--port", str(port), "--threads", str(threads)]
    server = subprocess.Popen(command + ["--max-batch", str(max_batch)], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return server, port
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("ssd serve did not become ready in 120 s")


def load(port: int, picture: bytes, clients: int, per_client: int) -> dict[str, float]:
    """`clients` threads, each with its own keep-alive connection, sending `per_client` requests."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        post(connection)  # warm-up, not counted
        start.wait()
        for _ in range(per_client):
            began = time.perf_counter()
            ok = post(connection)
            with lock:
                latencies.append((time.perf_counter() - began) * 1000)
                errors[0] += not ok

    def post(connection: http.client.HTTPConnection) -> bool:
        try:
            connection.request("POST", "/v1/detect", body=picture, headers={"Content-Type": "image/jpeg"})
            answer = connection.getresponse()
            answer.read()
            return answer.status == 200
        except OSError:
            connection.close()
            return False

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    ordered = sorted(latencies)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]

    return {
        "clients": clients,
        "requests": len(latencies),
        "errors": errors[0],
        "requests_per_s": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies),
        "p95_ms": at(95),
        "p99_ms": at(99),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests-per-client", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the server and of ssd bench")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "serve.json"))
    args = parser.parse_args()
    if not WEIGHTS.exists():
        raise SystemExit(f"{WEIGHTS} is absent (../shared is only on the project's machines)")
    picture_path = sorted(PICTURES.glob("*.jpg"))[0]
    picture = picture_path.read_bytes()
    report = {**cpu_description(), "picture": picture_path.name, "threads": args.threads}
    before = offline_batch8(picture_path, args.threads)
    print(f"{report['cpu']} ({report['capability']}); ssd bench batch 8 before: {before:.1f} pictures/s")
    print(
        f"{'max batch':>9} {'clients':>7} {'req/s':>7} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'errors':>6}"
    )
    report["runs"] = []
    for max_batch in MAX_BATCHES:
        server, port = start_server(max_batch, args.threads)
        try:
            for clients in CLIENTS:
                row = {"max_batch": max_batch, **load(port, picture, clients, args.requests_per_client)}
                report["runs"].append(row)
                print(
                    f"{max_batch:>9} {clients:>7} {row['requests_per_s']:>7.1f} {row['p50_ms']:>7.1f} "
                    f"{row['p95_ms']:>7.1f} {row['p99_ms']:>7.1f} {row['errors']:>6}"
                )
        finally:
            server.terminate()
            server.wait(30)
    # Measured before and after the load, since this machine's speed drifts: the target is against their mean.
    after = offline_batch8(picture_path, args.threads)
    print(f"ssd bench batch 8 after: {after:.1f} pictures/s")
    report["offline_batch8_pictures_per_s"] = {"before": before, "after": after, "mean": (before + after) / 2}
    best = max((r for r in report["runs"] if r["clients"] == 16), key=lambda r: r["requests_per_s"])
    report["at_16_clients"] = {
        "max_batch": best["max_batch"],
        "throughput_vs_offline_batch8": best["requests_per_s"]
        / report["offline_batch8_pictures_per_s"]["mean"],
        "p99_over_p50": best["p99_ms"] / best["p50_ms"],
        "errors": best["errors"],
    }
    print(json.dumps(report["at_16_clients"]))
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
