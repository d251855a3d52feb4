"""`train_ssd.py` with the exact flags of the README, and what its checkpoint is good for."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ssd.cli.main import main as ssd_main
from ssd.data import write_synthetic_coco
from ssd.models.checkpoint import load_model, read_checkpoint

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_train_ssd_py_with_the_exact_flags_writes_a_usable_checkpoint(tmp_path, capsys):
    write_synthetic_coco(tmp_path / "dataset_coco", {"train": 5, "val": 2}, image_size=96)
    command = [
        sys.executable, str(ROOT / "train_ssd.py"),
        "--arch", "mobilenetv3_ssd", "--datapath", "dataset_coco", "--epochs", "1",
        "--batch-size", "5", "--lr", "0.001", "--save", "ssd.pt",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "epoch 1/1" in done.stdout and "final checkpoint: ssd.pt" in done.stdout

    checkpoint = read_checkpoint(tmp_path / "ssd.pt")
    assert checkpoint["arch"] == "mobilenetv3_ssd" and checkpoint["epoch"] == 1
    assert checkpoint["class_names"] == ["circle", "square", "triangle", "diamond", "cross"]
    assert checkpoint["command"][1:] == command[2:]
    for key in ("optimizer", "scheduler", "rng", "metrics", "options", "ssd_version", "step"):
        assert key in checkpoint, key
    run_dir = tmp_path / "runs" / "mobilenetv3_ssd_dataset_coco"
    for name in ("last.pt", "best.pt", "results.csv", "results.png", "args.yaml"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "pictures" / "epoch_001.jpg").is_file()
    assert len((run_dir / "results.csv").read_text().splitlines()) == 2  # header + one epoch

    model = load_model(tmp_path / "ssd.pt")
    detections = model.predict(torch.randint(0, 256, (3, 80, 120), dtype=torch.uint8))
    assert detections[0]["result_boxes"].shape[1] == 4
    assert model.num_classes == 6 and model.class_names[0] == "circle"

    exit_code = ssd_main(
        ["eval", "--weights", str(tmp_path / "ssd.pt"), "--datapath", str(tmp_path / "dataset_coco"),
         "--split", "val", "--workers", "0", "--worst", "0", "--out", str(tmp_path / "eval")]
    )  # fmt: skip
    assert exit_code == 0
    assert "AP" in capsys.readouterr().out

    exit_code = ssd_main(
        ["detect", str(tmp_path / "dataset_coco" / "val"), "--weights", str(tmp_path / "ssd.pt"),
         "--out", str(tmp_path / "detections"), "--score", "0.0"]
    )  # fmt: skip
    assert exit_code == 0
    assert any((tmp_path / "detections").rglob("*.json"))
