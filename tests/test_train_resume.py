"""A run killed with SIGKILL and resumed ends with exactly the weights of a run never stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

TINY_RUN = [
    "--datapath", "synthetic", "--synthetic-train", "8", "--synthetic-val", "2", "--synthetic-image-size", "96",
    "--input-size", "128", "--batch-size", "4", "--epochs", "3", "--lr", "0.01", "--optimizer", "sgd",
    "--warmup-epochs", "1", "--ema", "--device", "cpu", "--workers", "0", "--seed", "7", "--quiet",
    "--val-pictures", "1",
]  # fmt: skip


def _train(args: list[str], cwd: Path) -> subprocess.Popen:
    environment = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    return subprocess.Popen(
        [sys.executable, "-m", "ssd", "train", *args],
        cwd=cwd,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(process: subprocess.Popen) -> str:
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-3000:]
    return out


@pytest.mark.slow
def test_kill_9_then_resume_gives_identical_weights(tmp_path, capsys):
    unbroken = _train([*TINY_RUN, "--project", str(tmp_path), "--name", "unbroken"], tmp_path)
    _finish(unbroken)

    killed = _train([*TINY_RUN, "--project", str(tmp_path), "--name", "killed"], tmp_path)
    last = tmp_path / "killed" / "last.pt"
    deadline = time.monotonic() + 240
    while not last.exists() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(killed.pid, signal.SIGKILL)
    killed.communicate()
    assert killed.returncode == -signal.SIGKILL
    interrupted_at = torch.load(last, weights_only=True)["epoch"]
    assert interrupted_at < 3, "the run finished before it could be killed"

    out = _finish(_train(["--resume", str(last), "--quiet"], tmp_path))
    assert f"resuming from {last} after epoch {interrupted_at}" in out

    reference = torch.load(tmp_path / "unbroken" / "last.pt", weights_only=True)
    resumed = torch.load(last, weights_only=True)
    assert resumed["epoch"] == reference["epoch"] == 3
    assert resumed["step"] == reference["step"]
    for part in ("model", "ema"):
        assert reference[part].keys() == resumed[part].keys()
        for key, value in reference[part].items():
            assert torch.equal(value, resumed[part][key]), f"{part}: {key} differs"
    momentum = reference["optimizer"]["state"]
    for index, state in momentum.items():
        assert torch.equal(state["momentum_buffer"], resumed["optimizer"]["state"][index]["momentum_buffer"])
    assert [row["loss"] for row in resumed["metrics"]] == [row["loss"] for row in reference["metrics"]]
    assert len((tmp_path / "killed" / "results.csv").read_text().splitlines()) == 4

    # A resumed run keeps its options: changing one is refused, with the ones that may change named.
    from ssd.cli.main import main

    assert main(["train", "--resume", str(last), "--lr", "0.5"]) == 2
    assert (
        "only device, workers, epochs, save, patience, save_period may be given with it, not --lr"
        in capsys.readouterr().err
    )
    assert main(["train", "--resume", str(last), "--epochs", "2"]) == 2
    assert "has already trained 3 epochs; --epochs 2 is fewer" in capsys.readouterr().err
