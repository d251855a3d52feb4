import pickle

import pytest
import torch
from conftest import FIXTURES, shared_path

import ssd
from ssd.errors import UserError, WeightsMismatchError


def imagenet_file(model, prefix_map, extra: dict, path):
    """An ImageNet classification file in torchvision's layout, made from a model's backbone.

    `prefix_map` names a backbone key in the file, or returns None for a layer the file does not hold.
    """
    state = {}
    for key, value in model.state_dict().items():
        name = prefix_map(key.removeprefix("backbone.")) if key.startswith("backbone.") else None
        if name is not None:
            state[name] = value + 0.5 if value.is_floating_point() else value.clone()
    state.update(extra)
    torch.save(state, path)
    return state


def assert_backbone_loaded(model, reference):
    for key, value in model.state_dict().items():
        if key.startswith("backbone.") and key in reference:
            assert torch.equal(value, reference[key]), key


def test_mobilenet_imagenet_file_needs_and_loads_full_tail(tmp_path):
    source = ssd.build_model("mobilenetv3_ssd", num_classes=3, reduced_tail=False)
    imagenet_file(
        source,
        lambda k: k,
        {"classifier.0.weight": torch.zeros(1280, 960), "classifier.3.weight": torch.zeros(1000, 1280)},
        tmp_path / "mobilenet_v3_large.pth",
    )
    state = torch.load(tmp_path / "mobilenet_v3_large.pth")
    assert state["features.16.0.weight"].shape == (960, 160, 1, 1)  # torchvision's name and shape
    model = ssd.build_model("mobilenetv3_ssd", num_classes=3, reduced_tail=False)
    heads_before = model.classification_headers.state_dict()
    notes = model.load_torchvision(tmp_path / "mobilenet_v3_large.pth")
    assert "backbone only" in notes[0]
    expected = {f"backbone.{k}": v for k, v in state.items() if k.startswith("features.")}
    assert_backbone_loaded(model, expected)
    for key, value in model.classification_headers.state_dict().items():
        assert torch.equal(value, heads_before[key])
    # The default (reduced-tail) model cannot take it, and the error says what to do.
    with pytest.raises(WeightsMismatchError, match="reduced_tail=False"):
        ssd.build_model("mobilenetv3_ssd", num_classes=3).load_torchvision(
            tmp_path / "mobilenet_v3_large.pth"
        )


def test_vgg_imagenet_files_in_both_layouts(tmp_path):
    source = ssd.build_model("vgg16_ssd300", num_classes=3)
    torchvision_layout = imagenet_file(
        source,
        lambda k: k if k.startswith("features.") else None,  # fc6/fc7 and L2Norm are SSD's own layers
        {"classifier.0.weight": torch.full((8, 8), float("nan"))},  # IMAGENET1K_FEATURES has a NaN classifier
        tmp_path / "vgg16.pth",
    )
    torchvision_layout = {k: v for k, v in torchvision_layout.items() if k.startswith("features.")}
    assert "features.28.weight" in torchvision_layout
    model = ssd.build_model("vgg16_ssd300", num_classes=3)
    notes = model.load_torchvision(tmp_path / "vgg16.pth")
    assert "kept at their initialisation: backbone.fc.1.bias" in notes[-1]
    assert_backbone_loaded(model, {f"backbone.{k}": v for k, v in torchvision_layout.items()})

    # The "reduced fc" layout: bare indices, fc6 and fc7 already convolutions at 31 and 33.
    reduced = {k.removeprefix("features."): v for k, v in torchvision_layout.items()}
    reduced["31.weight"] = torch.randn(1024, 512, 3, 3)
    reduced["31.bias"] = torch.randn(1024)
    reduced["33.weight"] = torch.randn(1024, 1024, 1, 1)
    reduced["33.bias"] = torch.randn(1024)
    torch.save(reduced, tmp_path / "vgg16_reducedfc.pth")
    model = ssd.build_model("vgg16_ssd512", num_classes=3)
    model.load_torchvision(tmp_path / "vgg16_reducedfc.pth")
    assert torch.equal(model.backbone.fc[1].weight, reduced["31.weight"])
    assert torch.equal(model.backbone.features[28].weight, reduced["28.weight"])


def test_resnet50_imagenet_file(tmp_path):
    source = ssd.build_model("resnet50_ssd300", num_classes=3)
    state = imagenet_file(
        source,
        lambda k: k,
        {"layer4.0.conv1.weight": torch.zeros(512, 1024, 1, 1), "fc.weight": torch.zeros(1000, 2048)},
        tmp_path / "resnet50.pth",
    )
    assert state["layer3.5.conv3.weight"].shape == (1024, 256, 1, 1)
    model = ssd.build_model("resnet50_ssd300", num_classes=3)
    model.load_torchvision(tmp_path / "resnet50.pth")
    assert_backbone_loaded(model, {f"backbone.{k}": v for k, v in state.items()})


def test_torchvision_checkpoint_with_another_class_count_reinitialises_class_headers():
    path = shared_path(FIXTURES / "ssdlite320_mobilenet_v3_large.pt")
    reference = ssd.build_model("mobilenetv3_ssd", num_classes=91)
    reference.load_torchvision(path)
    model = ssd.build_model("mobilenetv3_ssd", num_classes=4)
    fresh = {k: v.clone() for k, v in model.classification_headers.state_dict().items()}
    notes = model.load_torchvision(path)
    assert any("re-initialised" in note for note in notes)
    for key, value in model.regression_headers.state_dict().items():
        assert torch.equal(value, reference.regression_headers.state_dict()[key])
    assert torch.equal(model.classification_headers[0][1].weight, fresh["0.1.weight"])
    assert torch.equal(
        model.backbone.features[5].block[0][0].weight, reference.backbone.features[5].block[0][0].weight
    )


def test_checkpoint_of_another_architecture_lists_what_does_not_fit():
    path = shared_path(FIXTURES / "ssd300_vgg16.pt")
    with pytest.raises(WeightsMismatchError) as error:
        ssd.build_model("mobilenetv3_ssd", num_classes=21).load_torchvision(path)
    message = str(error.value)
    assert "does not fit mobilenetv3_ssd" in message
    assert "missing in the file" in message and "not in the model" in message


def test_unreadable_and_unsafe_files_are_refused(tmp_path):
    model = ssd.build_model("mobilenetv3_ssd", num_classes=3)
    with pytest.raises(UserError, match="no such weights file"):
        model.load_torchvision(tmp_path / "absent.pt")
    (tmp_path / "corrupt.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(UserError, match="corrupt.pt: not a readable weights file"):
        model.load_torchvision(tmp_path / "corrupt.pt")
    # A pickle that would run code on load is refused by weights_only=True.
    with open(tmp_path / "evil.pt", "wb") as handle:
        pickle.dump(Exploit(), handle)
    with pytest.raises(UserError, match="evil.pt"):
        model.load_torchvision(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned").exists()


class Exploit:
    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(__file__).parent / "pwned",))
