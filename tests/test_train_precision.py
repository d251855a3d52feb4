"""Mixed precision in training: fp16 on CUDA; bf16 on a CPU with bf16 instructions when asked; fp32 otherwise."""

from __future__ import annotations

import pytest
import torch

import ssd.training.setup as training_setup
from ssd.cli.main import main
from ssd.device import torch_has_bf16
from ssd.errors import UserError

TINY = [
    "--datapath", "synthetic", "--synthetic-train", "4", "--synthetic-val", "2", "--synthetic-image-size", "96",
    "--input-size", "128", "--batch-size", "2", "--epochs", "1", "--device", "cpu", "--workers", "0",
    "--val-pictures", "0", "--no-tensorboard",
]  # fmt: skip
CPU, CUDA = torch.device("cpu"), torch.device("cuda", 0)


@pytest.mark.parametrize("has_bf16", [True, False])
def test_the_precision_follows_the_device_and_the_cpu(monkeypatch, has_bf16):
    monkeypatch.setattr(training_setup, "torch_has_bf16", lambda: has_bf16)
    choose = training_setup._amp_dtype
    assert choose(None, CUDA) is torch.float16 and choose(False, CUDA) is None
    assert choose(None, CPU) is None  # fp32 unless asked (bf16 is not reproducible)
    assert choose(False, CPU) is None
    if has_bf16:
        assert choose(True, CPU) is torch.bfloat16
    else:
        with pytest.raises(UserError, match="--amp needs a CUDA device or a CPU with bf16 instructions"):
            choose(True, CPU)
    with pytest.raises(UserError, match="this run is on mps"):
        choose(True, torch.device("mps"))


def test_amp_on_a_cpu_without_bf16_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(training_setup, "torch_has_bf16", lambda: False)
    assert main(["train", *TINY, "--quiet", "--amp", "--project", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith("error: --amp needs a CUDA device or a CPU with bf16 instructions") and "\n" not in err
    )


@pytest.mark.skipif(not torch_has_bf16(), reason="this CPU has no bf16 instructions (AVX512-BF16 or AMX)")
def test_a_bf16_run_keeps_fp32_weights_and_no_gradient_scaler(tmp_path, capsys):
    assert main(["train", *TINY, "--amp", "--project", str(tmp_path), "--name", "run"]) == 0
    assert ", AMP bf16" in capsys.readouterr().out
    checkpoint = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert checkpoint["scaler"] is None  # bf16 has fp32's exponent range: nothing to scale
    weights = checkpoint["model"]
    assert all(v.dtype == torch.float32 for v in weights.values() if v.is_floating_point())
    assert all(bool(torch.isfinite(v).all()) for v in weights.values() if v.is_floating_point())
    assert torch.isfinite(torch.tensor(checkpoint["metrics"][-1]["loss"]))
