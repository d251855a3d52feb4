"""Where a run writes: checked before any work, a failed checkpoint write named with its reason and the previous
file kept, a killed write's temporary file cleared on resume; and a batch of one picture that trains."""

from __future__ import annotations

import os
from collections import namedtuple

import pytest
import torch

import ssd.models.checkpoint as checkpoint_module
import ssd.training.outputs as outputs_module
from ssd.cli.main import main

TINY = [
    "--datapath", "synthetic", "--synthetic-train", "4", "--synthetic-val", "2", "--synthetic-image-size", "96",
    "--input-size", "128", "--batch-size", "2", "--epochs", "1", "--device", "cpu", "--workers", "0", "--quiet",
    "--val-pictures", "0", "--no-tensorboard",
]  # fmt: skip


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: "), err
    assert "Traceback" not in "\n".join(err)
    return err[-1]


def test_a_project_under_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("not a folder")
    assert main(["train", *TINY, "--project", str(tmp_path / "file" / "runs")]) == 2
    line = _error_line(capsys)
    assert line.startswith(f"error: --project {tmp_path / 'file' / 'runs'}: cannot make the folder")
    assert "Not a directory" in line


def test_a_read_only_project_is_refused_before_training(tmp_path, capsys):
    try:  # /sys is read-only even for root in a container; elsewhere this cannot be shown
        handle, probe = __import__("tempfile").mkstemp(dir="/sys")
        os.close(handle)
        os.unlink(probe)
        pytest.skip("/sys is writable here")
    except OSError:
        pass
    assert main(["train", *TINY, "--project", "/sys", "--name", "run"]) == 2
    line = _error_line(capsys)
    assert line.startswith("error: --project /sys: cannot make the folder /sys/run:")


def test_save_to_a_folder_or_an_unwritable_place_is_refused_before_training(tmp_path, capsys):
    assert main(["train", *TINY, "--project", str(tmp_path), "--save", str(tmp_path)]) == 2
    assert f"--save {tmp_path}: is a folder" in _error_line(capsys)
    assert not list(tmp_path.glob("*/last.pt"))  # nothing trained
    (tmp_path / "file").write_text("")
    assert (
        main(["train", *TINY, "--project", str(tmp_path), "--save", str(tmp_path / "file" / "ssd.pt")]) == 2
    )
    assert f"--save {tmp_path / 'file' / 'ssd.pt'}: cannot make the folder" in _error_line(capsys)


def test_too_little_free_space_is_refused_with_the_estimate(tmp_path, capsys, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(
        outputs_module.shutil, "disk_usage", lambda _: usage(10**9, 10**9 - 5 * 10**6, 5 * 10**6)
    )
    assert main(["train", *TINY, "--project", str(tmp_path), "--name", "run"]) == 2
    line = _error_line(capsys)
    assert line.startswith(f"error: {tmp_path / 'run'}: 5 MB free, but a new last.pt and best.pt need about ")
    assert not (tmp_path / "run" / "last.pt").exists()


def test_a_failed_checkpoint_write_names_the_file_keeps_the_previous_and_leaves_no_temporary(
    tmp_path, capsys, monkeypatch
):
    args = [*TINY, "--project", str(tmp_path), "--name", "run", "--epochs", "2"]
    real_save, calls = torch.save, []

    def save_that_fails_in_epoch_2(content, stream):
        calls.append(content["epoch"])
        if content["epoch"] == 2:
            stream.write(b"partial")
            raise RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing "
                               "file data/12: file write failed")  # fmt: skip
        real_save(content, stream)

    monkeypatch.setattr(checkpoint_module.torch, "save", save_that_fails_in_epoch_2)
    assert main(["train", *args]) == 2
    last = tmp_path / "run" / "last.pt"
    assert _error_line(capsys) == (
        f"error: could not write {last}: [enforce fail at inline_container.cc:664] . PytorchStreamWriter failed "
        f"writing file data/12: file write failed; {last} keeps its previous content"
    )
    assert torch.load(last, weights_only=True)["epoch"] == 1
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]

    def full_disk(content, stream):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint_module.torch, "save", full_disk)
    save = tmp_path / "final.pt"
    assert main(["train", *TINY, "--project", str(tmp_path), "--name", "other", "--save", str(save)]) == 2
    assert _error_line(capsys) == (
        f"error: could not write {tmp_path / 'other' / 'last.pt'}: No space left on device; nothing was written"
    )
    assert not save.exists()


def test_resume_removes_a_killed_writes_temporary_file(tmp_path, capsys):
    assert main(["train", *TINY, "--project", str(tmp_path), "--name", "run"]) == 0
    stale = tmp_path / "run" / ".last.pt.k2x9_q.tmp"
    stale.write_bytes(b"")  # what a kill -9 during a write leaves
    capsys.readouterr()
    assert main(["train", "--resume", str(tmp_path / "run"), "--epochs", "2", "--quiet"]) == 0
    assert "removed 1 temporary file(s) of an interrupted checkpoint write: .last.pt.k2x9_q.tmp" in (
        capsys.readouterr().out
    )
    assert not stale.exists()


def test_a_batch_of_one_trains_with_batchnorm_statistics_kept(tmp_path, capsys):
    args = [*TINY, "--batch-size", "1", "--precise-bn", "2", "--project", str(tmp_path), "--name", "run"]
    assert main(["train", *args]) == 0
    out = capsys.readouterr().out
    assert "batch 1: BatchNorm layers keep their running statistics" in out
    assert "epochs x 4 steps, batch 1" in out
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert state["metrics"][0]["bad_steps"] == 0 and state["metrics"][0]["loss"] > 0
    running = {k: v for k, v in state["model"].items() if k.endswith("running_var")}
    assert running and all(torch.equal(v, torch.ones_like(v)) for v in running.values())  # never updated
