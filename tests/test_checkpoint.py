import pytest
import torch
from conftest import FIXTURES, shared_path

import ssd
from ssd.errors import UserError
from ssd.models.checkpoint import load_model, model_checkpoint, read_checkpoint, save_checkpoint


def test_checkpoint_round_trip_rebuilds_the_model(tmp_path):
    model = ssd.build_model("mobilenetv3_ssd", num_classes=3, class_names=["cat", "dog"], input_size=256)
    path = save_checkpoint(
        tmp_path / "runs" / "last.pt", model_checkpoint(model, epoch=4, metrics={"map": 0.5})
    )
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temporary file left behind
    content = read_checkpoint(path)
    assert content["epoch"] == 4 and content["arch"] == "mobilenetv3_ssd"
    loaded = load_model(path)
    assert loaded.config == model.config and loaded.class_names == ["cat", "dog"]
    assert not loaded.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key])


def test_failed_write_keeps_the_previous_checkpoint(tmp_path):
    path = save_checkpoint(tmp_path / "last.pt", {"epoch": 1})

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        save_checkpoint(path, {"epoch": 2, "bad": Unpicklable()})
    assert read_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_bad_files_get_clear_errors(tmp_path):
    with pytest.raises(UserError, match="no such"):
        load_model(tmp_path / "missing.pt")
    (tmp_path / "truncated.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(UserError, match="truncated.pt: not a readable"):
        load_model(tmp_path / "truncated.pt")
    torch.save({"weights": 1}, tmp_path / "foreign.pt")
    with pytest.raises(UserError, match="not a checkpoint written by ssd"):
        read_checkpoint(tmp_path / "foreign.pt")


def test_torchvision_file_needs_arch_and_reads_its_class_count():
    path = shared_path(FIXTURES / "ssdlite320_bccd_trained.pt")
    with pytest.raises(UserError, match="--arch"):
        load_model(path)
    model = load_model(path, arch="mobilenetv3_ssd")
    assert model.num_classes == 4
