"""Checkpoints written before the package's layout changed still load, detect and resume.

`fixtures/checkpoint_v1.json` records a `last.pt` of a one-epoch `ssd train` run (mobilenetv3_small_ssd,
EMA, input 128, synthetic data) as that version wrote it: every key, every tensor's shape and dtype, the
small tensors' values (the random generators' states) and every plain value. The test writes it back as a
`.pt` file with random weights in those shapes, so the file has exactly the old structure.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ssd.cli.main import main
from ssd.models.checkpoint import load_model, read_checkpoint

MANIFEST = Path(__file__).parent / "fixtures" / "checkpoint_v1.json"


def _decode(value, generator):
    if isinstance(value, list):
        return [_decode(v, generator) for v in value]
    if not isinstance(value, dict):
        return value
    if "__tuple__" in value:
        return tuple(_decode(v, generator) for v in value["__tuple__"])
    if "__dict__" in value:
        return {_decode(k, generator): _decode(v, generator) for k, v in value["__dict__"]}
    dtype = getattr(torch, value["dtype"])
    if "values" in value:
        return torch.tensor(value["values"], dtype=dtype).reshape(value["__tensor__"])
    if dtype.is_floating_point:
        # Positive, as BatchNorm's running variances and Adam's squared averages must be: with negative
        # ones the resumed step would turn the weights into NaN (which are then refused, not written).
        return torch.randn(value["__tensor__"], generator=generator, dtype=dtype).abs() * 0.05
    return torch.zeros(value["__tensor__"], dtype=dtype)


def write_old_checkpoint(path: Path) -> Path:
    content = _decode(json.loads(MANIFEST.read_text()), torch.Generator().manual_seed(0))
    content["options"]["project"] = str(path.parent.parent)
    torch.save(content, path)
    return path


def test_an_old_checkpoint_loads_and_detects(tmp_path):
    path = write_old_checkpoint(tmp_path / "old.pt")
    assert read_checkpoint(path)["format_version"] == 1
    model = load_model(path)
    assert model.config.arch == "mobilenetv3_small_ssd" and model.config.input_size == (128, 128)
    assert model.class_names == ["circle", "square", "triangle", "diamond", "cross"]
    detections = model.predict(torch.randint(0, 256, (3, 96, 120), dtype=torch.uint8))
    assert detections[0]["result_boxes"].shape[1] == 4


def test_an_old_run_resumes(tmp_path):
    run = tmp_path / "runs" / "old"
    run.mkdir(parents=True)
    write_old_checkpoint(run / "last.pt")
    assert main(["train", "--resume", str(run), "--epochs", "2", "--device", "cpu", "--quiet"]) == 0
    resumed = read_checkpoint(run / "last.pt")
    assert resumed["epoch"] == 2 and len(resumed["metrics"]) == 2
