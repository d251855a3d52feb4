"""One evaluation path: the figures training logs for a checkpoint are exactly what `ssd eval` of that
checkpoint reports, without being told the split or how the run built it."""

from __future__ import annotations

import json

import pytest
import torch

from ssd.cli.main import main


@pytest.mark.slow
def test_the_logged_map_of_best_pt_is_what_ssd_eval_reports(tmp_path, capsys):
    # A synthetic validation split of a size other than `ssd eval`'s default: eval must build the run's own.
    args = [
        "--datapath", "synthetic", "--synthetic-train", "8", "--synthetic-val", "6", "--synthetic-image-size", "96",
        "--input-size", "128", "--batch-size", "4", "--epochs", "2", "--device", "cpu", "--workers", "0",
        "--quiet", "--val-pictures", "0", "--no-tensorboard", "--ema", "--project", str(tmp_path), "--name", "run",
    ]  # fmt: skip
    assert main(["train", *args]) == 0
    best = tmp_path / "run" / "best.pt"
    logged = torch.load(best, weights_only=True)["metrics"][-1]  # the epoch best.pt was written at

    assert main(["eval", "--weights", str(best), "--datapath", "synthetic", "--workers", "0"]) == 0
    assert "evaluating split 'val' of synthetic: the split best.pt validated on" in capsys.readouterr().out
    report = json.loads((tmp_path / "run" / "best_eval_val" / "metrics.json").read_text())
    assert report["num_images"] == 6
    assert report["coco"]["AP"] == logged["mAP"]
    assert report["coco"]["AP50"] == logged["mAP50"]
    assert report["coco"]["AP75"] == logged["mAP75"]
    assert report["voc"]["mAP"] == logged["VOC_mAP50"]
    per_class = {row["name"]: row["AP"] for row in report["per_class"]}
    assert per_class == pytest.approx(logged["per_class_AP"], abs=0, nan_ok=True)
