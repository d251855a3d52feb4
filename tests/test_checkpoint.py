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

    with pytest.raises(
        UserError, match=r"could not write .*last.pt: disk full; .*last.pt keeps its previous"
    ):
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


def _nan_model():
    model = ssd.build_model("mobilenetv3_ssd", num_classes=3, input_size=256)
    with torch.no_grad():
        next(model.parameters())[0].fill_(float("nan"))
    return model


def test_weights_with_nan_are_never_written_and_the_previous_checkpoint_stays(tmp_path):
    good = ssd.build_model("mobilenetv3_ssd", num_classes=3, input_size=256)
    path = save_checkpoint(tmp_path / "last.pt", model_checkpoint(good, epoch=1))
    with pytest.raises(
        UserError, match=r"refused to write .*last.pt: the model weights hold NaN or infinity"
    ):
        save_checkpoint(path, model_checkpoint(_nan_model(), epoch=2))
    assert read_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left behind


def test_every_reader_refuses_a_file_whose_weights_are_not_finite(tmp_path):
    model = _nan_model()
    ours = tmp_path / "nan.pt"
    torch.save({"format": "ssd-checkpoint", **model_checkpoint(model)}, ours)  # as a buggy tool could
    for read in (read_checkpoint, load_model):
        with pytest.raises(UserError, match=r"nan.pt: its model weights hold NaN or infinity \("):
            read(ours)


def test_a_torchvision_file_with_a_nan_in_a_tensor_the_model_takes_is_refused(tmp_path):
    state = torch.load(shared_path(FIXTURES / "ssdlite320_mobilenet_v3_large.pt"), weights_only=True)
    weights = dict(state["state_dict"])  # the fixture also holds torchvision's recorded outputs
    key = next(k for k in weights if k.startswith("backbone.") and weights[k].is_floating_point())
    weights[key] = torch.full_like(weights[key], float("nan"))
    torch.save(weights, tmp_path / "poisoned.pth")
    with pytest.raises(UserError, match=r"poisoned.pth: its weights hold NaN or infinity \(backbone\."):
        load_model(tmp_path / "poisoned.pth", arch="mobilenetv3_ssd")


def test_checkpoints_get_the_users_umask_not_0600(tmp_path):
    import os

    previous = os.umask(0o022)
    try:
        path = save_checkpoint(tmp_path / "last.pt", {"epoch": 1})
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o644
