"""Ctrl-C and SIGTERM during training: the step in progress finishes, a resumable checkpoint is written at it,
the resume command is printed, and resuming ends with exactly the weights of a run never stopped."""

from __future__ import annotations

import os
import shutil
import signal

import pytest
import torch

from ssd.cli.main import main
from ssd.errors import RunInterrupted
from ssd.training.hooks import Hook
from ssd.training.options import TrainOptions
from ssd.training.trainer import Trainer

# 16 pictures at batch 4: 4 steps an epoch, 3 epochs.
RUN = dict(
    datapath="synthetic", synthetic_train=16, synthetic_val=2, synthetic_image_size=96, input_size=128,
    batch_size=4, epochs=3, lr=0.01, optimizer="sgd", warmup_epochs=1.0, ema=True, device="cpu", workers=0,
    seed=3, tensorboard=False, val_pictures=0,
)  # fmt: skip


class SignalAtStep(Hook):
    """Sends this process `number` during optimizer step `step` (1-based), as a person's Ctrl-C would."""

    def __init__(self, step: int, number: int):
        self.step, self.number = step, number

    def before_step(self, trainer, images, targets):
        if trainer.step + 1 == self.step:
            os.kill(os.getpid(), self.number)


def _run(tmp_path, name: str, hooks=()) -> Trainer:
    options = TrainOptions(**RUN, project=str(tmp_path), name=name)
    return Trainer(options, command=["train_ssd.py"], emit=lambda _: None, progress=False, hooks=hooks)


def _assert_same_weights(reference: dict, resumed: dict) -> None:
    assert resumed["step"] == reference["step"]
    for part in ("model", "ema"):
        for key, value in reference[part].items():
            assert torch.equal(value, resumed[part][key]), f"{part}: {key} differs"
    for index, state in reference["optimizer"]["state"].items():
        assert torch.equal(state["momentum_buffer"], resumed["optimizer"]["state"][index]["momentum_buffer"])


@pytest.mark.slow
@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_epoch_then_resume_gives_identical_weights(tmp_path, capsys, number):
    _run(tmp_path, "unbroken").fit()
    reference = torch.load(tmp_path / "unbroken" / "last.pt", weights_only=True)

    previous_handler = signal.getsignal(number)
    with pytest.raises(RunInterrupted) as stopped:
        _run(tmp_path, "stopped", hooks=[SignalAtStep(6, number)]).fit()  # epoch 2, its second step
    assert signal.getsignal(number) is previous_handler  # the run's handlers are gone with it
    run_dir = tmp_path / "stopped"
    assert stopped.value.exit_code == 128 + number
    assert stopped.value.message == (
        f"stopped at step 2/4 of epoch 2/3; {run_dir / 'last.pt'} holds the run so far. "
        f"To continue it: python train_ssd.py --resume {run_dir}"
    )
    checkpoint = torch.load(run_dir / "last.pt", weights_only=True)
    assert (checkpoint["epoch"], checkpoint["step"]) == (1, 6)
    assert checkpoint["epoch_progress"]["batches_done"] == 2
    assert not list(run_dir.glob(".*.tmp"))

    # What cannot go on from there is refused in one line: dropping the cut epoch, another world size.
    assert main(["train", "--resume", str(run_dir), "--epochs", "1"]) == 2
    assert "stopped during epoch 2; --epochs 1 would drop it (give at least 2)" in capsys.readouterr().err
    other = tmp_path / "other"
    shutil.copytree(run_dir, other)
    checkpoint["epoch_progress"]["world_size"] = 2
    torch.save(checkpoint, other / "last.pt")
    assert main(["train", "--resume", str(other), "--quiet"]) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith(
        f"error: {other / 'last.pt'} stopped mid-epoch in a run of 2 process(es); it goes on only with as many "
        "(this run has 1): torchrun --nproc-per-node 2 "
    )
    assert line.endswith(f" --resume {other}")

    assert main(["train", "--resume", str(run_dir), "--quiet"]) == 0
    assert f"resuming from {run_dir / 'last.pt'} at step 2/4 of epoch 2" in capsys.readouterr().out
    resumed = torch.load(run_dir / "last.pt", weights_only=True)
    assert resumed["epoch"] == 3 and "epoch_progress" not in resumed
    _assert_same_weights(reference, resumed)
    # The interrupted epoch's losses are those of the whole epoch, as if it had never been cut.
    for row, expected in zip(resumed["metrics"], reference["metrics"], strict=True):
        assert row["loss"] == pytest.approx(expected["loss"], rel=1e-9)
        assert row["mAP"] == pytest.approx(expected["mAP"], rel=1e-9)


@pytest.mark.slow
def test_a_signal_during_the_last_step_of_an_epoch_stops_at_its_end(tmp_path):
    with pytest.raises(RunInterrupted) as stopped:
        _run(tmp_path, "run", hooks=[SignalAtStep(4, signal.SIGINT)]).fit()
    assert stopped.value.message.startswith("stopped after epoch 1/3;")
    checkpoint = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert checkpoint["epoch"] == 1 and "epoch_progress" not in checkpoint
    assert len(checkpoint["metrics"]) == 1 and checkpoint["metrics"][0]["mAP"] is not None


def test_the_cli_prints_the_resume_command_and_exits_with_the_signals_code(monkeypatch, capsys):
    import ssd.cli.commands.train as train_command

    def interrupted(args):
        raise RunInterrupted("stopped at step 2/4 of epoch 2/3; ... To continue it: ssd train --resume r", 15)

    monkeypatch.setattr(train_command, "run", interrupted)
    assert main(["train"]) == 143
    assert capsys.readouterr().err.strip() == (
        "interrupted: stopped at step 2/4 of epoch 2/3; ... To continue it: ssd train --resume r"
    )
