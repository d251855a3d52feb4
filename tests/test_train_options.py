"""Training options, optimizer groups, the lr schedule, EMA, the sharded sampler and fitted scales."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from ssd.data.loader import SeededSampler
from ssd.errors import UserError
from ssd.training.anchor_fit import fit_scales, parse_scales
from ssd.training.distributed import DistributedBatchNorm2d, ShardedBatchSampler
from ssd.training.ema import ModelEMA
from ssd.training.optim import lr_factor_function, parameter_groups, scaled_lr
from ssd.training.options import SYNTHETIC_RECIPE, TrainOptions, resolve_options
from ssd.training.recipes import LONG_RUN_EPOCHS


def test_flags_override_yaml_which_overrides_the_synthetic_recipe(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("epochs: 7\nbatch-size: 3\nlr: 0.5\nmilestones: [2, 4]\n")
    options = resolve_options({"lr": 0.02, "batch_size": None}, config)
    assert options.epochs == 7 and options.batch_size == 3  # YAML over the recipe
    assert options.lr == 0.02  # the flag over YAML
    assert options.milestones == (2.0, 4.0)
    assert options.input_size == SYNTHETIC_RECIPE["input_size"]  # the recipe where nobody said otherwise


def test_the_synthetic_recipe_applies_to_synthetic_data_only(tmp_path):
    options = resolve_options({"datapath": str(tmp_path)})
    assert options.epochs == TrainOptions.epochs and options.input_size is None


@pytest.mark.parametrize(
    "given, message",
    [
        ({"optimizer": "rmsprop"}, "--optimizer must be one of"),
        ({"cls_loss": "focall"}, "--cls-loss must be one of ce, quality, focal; got 'focall'.*focal"),
        ({"loc_loss": "iou"}, "--loc-loss must be one of smooth_l1, l1, giou; got 'iou'"),
        ({"batch_size": 0}, "--batch-size must be at least 1"),
        ({"lr": -1.0}, "--lr cannot be negative"),
        ({"bogus": 1}, "unknown option 'bogus'"),
    ],
)
def test_bad_options_are_user_errors(given, message):
    with pytest.raises(UserError, match=message):
        resolve_options(given)


def test_bad_yaml_names_the_file(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("epochs: [1\n")
    with pytest.raises(UserError, match="bad.yaml: not valid YAML"):
        resolve_options({}, config)


def test_no_weight_decay_on_batchnorm_and_biases():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1, bias=True))
    decay, no_decay = parameter_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert {p.ndim for p in decay["params"]} == {4}
    assert len(no_decay["params"]) == 4  # conv bias, BN weight and bias, conv bias


def test_warmup_then_cosine_and_multistep():
    options = TrainOptions(epochs=10, warmup_epochs=1, warmup_factor=0.1, min_lr_ratio=0.0)
    factor = lr_factor_function(options, steps_per_epoch=10)
    assert factor(0) == pytest.approx(0.1)
    assert factor(5) == pytest.approx(0.55)
    assert factor(10) == pytest.approx(1.0)
    assert factor(55) == pytest.approx(0.5)  # half-way through the cosine
    assert factor(100) == pytest.approx(0.0, abs=1e-9)
    multistep = TrainOptions(
        epochs=10, warmup_epochs=0, scheduler="multistep", milestones=(0.5, 8), gamma=0.1
    )
    factor = lr_factor_function(multistep, steps_per_epoch=10)
    assert [factor(s) for s in (0, 49, 50, 79, 80)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])


def test_linear_lr_scaling_rule():
    assert scaled_lr(TrainOptions(lr=0.01, batch_size=8), world_size=4) == pytest.approx(0.04)
    assert scaled_lr(TrainOptions(lr=0.01, batch_size=8, lr_batch=32), world_size=4) == pytest.approx(0.01)


def test_ema_follows_the_weights_with_a_ramped_decay():
    model = nn.Linear(2, 1)
    ema = ModelEMA(model, decay=0.5)
    initial = ema.module.weight.clone()
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)  # the first decay is min(0.5, 1/10) = 0.1
    assert torch.allclose(ema.module.weight, 0.1 * initial + 0.9)
    for _ in range(60):
        ema.update(model)
    assert torch.allclose(ema.module.weight, torch.ones_like(model.weight), atol=1e-6)
    assert not ema.module.weight.requires_grad


def test_sharded_batches_cover_the_single_process_batches():
    single = list(ShardedBatchSampler(SeededSampler(12, seed=3), batch_size=4))
    ranks = [
        list(ShardedBatchSampler(SeededSampler(12, seed=3), batch_size=2, rank=r, world_size=2))
        for r in (0, 1)
    ]
    assert [len(b) for b in single] == [4, 4, 4]
    for step, batch in enumerate(single):
        assert ranks[0][step] + ranks[1][step] == batch  # same pictures, same augmentation seeds


def test_a_last_batch_of_one_picture_is_dropped():
    batches = list(ShardedBatchSampler(SeededSampler(9, seed=0), batch_size=4))
    assert [len(b) for b in batches] == [4, 4] and len(ShardedBatchSampler(SeededSampler(9), 4)) == 2
    assert [len(b) for b in ShardedBatchSampler(SeededSampler(1), batch_size=4)] == [1]  # all there is


def test_sharding_pads_to_the_world_size():
    ranks = [
        list(ShardedBatchSampler(SeededSampler(7, seed=0), batch_size=2, rank=r, world_size=2))
        for r in (0, 1)
    ]
    assert len(ranks[0]) == len(ranks[1]) == 2
    seen = {index for rank in ranks for batch in rank for index, _ in batch}
    assert seen == set(range(7))


def test_distributed_batchnorm_is_batchnorm_in_one_process():
    torch.manual_seed(0)
    plain, ours = nn.BatchNorm2d(3), DistributedBatchNorm2d(3)
    x = torch.randn(4, 3, 5, 5)
    assert torch.allclose(plain(x), ours(x))
    assert torch.allclose(plain.running_var, ours.running_var)


def test_fitted_scales_lower_the_first_map_to_the_small_boxes():
    targets = [
        {"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 50.0, 50.0]]), "orig_size": (100, 100)},
        {"boxes": torch.tensor([[10.0, 10.0, 40.0, 40.0]]), "orig_size": (100, 100)},
    ]
    architecture = (0.2, 0.35, 0.5, 0.65, 0.8, 0.95, 1.0)
    scales = fit_scales(targets, architecture)
    assert scales[0] == pytest.approx(0.1, abs=0.01)  # the 2nd percentile of sizes 0.1, 0.3, 0.5
    assert scales[1:] == architecture[1:]
    assert fit_scales(targets, architecture, zoom_out=True)[0] < scales[0]
    assert fit_scales(targets, architecture, first_map_cells=10)[0] == pytest.approx(0.2)  # two cells of 10
    large = [{"boxes": torch.tensor([[0.0, 0.0, 60.0, 60.0]]), "orig_size": (100, 100)}]
    assert fit_scales(large, architecture) == architecture  # nothing smaller than the architecture's boxes
    assert parse_scales("0.1,0.2,0.3", 2) == (0.1, 0.2, 0.3)
    with pytest.raises(UserError, match="needs 3 scales"):
        parse_scales("0.1,0.2", 2)


@pytest.mark.slow
@pytest.mark.parametrize(
    "matcher, loc_loss", [("iou", "smooth_l1"), ("atss", "smooth_l1"), ("hungarian", "giou")]
)
def test_every_matcher_and_localisation_loss_trains(matcher, loc_loss):
    from ssd import build_model
    from ssd.training.loss import build_loss

    model = build_model("mobilenetv3_ssd", num_classes=3, input_size=128).train()
    loss = build_loss(model, TrainOptions(matcher=matcher, loc_loss=loc_loss))
    targets = [
        {"boxes": torch.tensor([[10.0, 20.0, 60.0, 90.0]]), "labels": torch.tensor([2])},
        {
            "boxes": torch.tensor([[50.0, 40.0, 120.0, 100.0], [5.0, 5.0, 30.0, 30.0]]),
            "labels": torch.tensor([1, 2]),
        },
    ]
    outputs = model(torch.randint(0, 256, (2, 3, 128, 128), dtype=torch.uint8), targets)
    losses = loss(outputs["cls_logits"], outputs["bbox_regression"], outputs["anchors"], outputs["targets"])
    assert torch.isfinite(losses["loss"]) and losses["num_positives"] >= 1
    losses["loss"].backward()
    assert model.classification_headers[0][1].weight.grad is not None


@pytest.mark.parametrize(
    "arch", ["mobilenetv3_small_ssd", "mobilenetv3_ssd", "resnet50_ssd300", "vgg16_ssd300"]
)
def test_atss_is_given_the_layout_of_every_architectures_default_boxes(arch):
    from ssd import build_model
    from ssd.training.loss import build_loss, default_box_maps

    model = build_model(arch, num_classes=3)  # at its own input size
    assert sum(locations * boxes for locations, boxes in default_box_maps(model)) == len(model.anchors)
    assert build_loss(model, TrainOptions(matcher="atss")).matcher.maps == default_box_maps(model)


def test_augmentation_defaults_to_the_architectures_recipe_for_the_runs_length():
    """torchvision's reference recipes: IoU crop + flip for SSDLite, the SSD paper's pipeline for SSD300; a
    mobilenetv3_ssd run of LONG_RUN_EPOCHS or more adds the zoom-out, a shorter one not."""

    def augment(**given) -> str:
        return resolve_options({"datapath": "data", **given}).augment

    assert augment(arch="mobilenetv3_ssd", epochs=LONG_RUN_EPOCHS - 1) == "ssdlite"
    assert augment(arch="mobilenetv3_ssd", epochs=LONG_RUN_EPOCHS) == "ssdlite_zoom"
    assert augment(arch="mobilenetv3_ssd") == "ssdlite_zoom"  # 80 epochs
    assert augment(arch="mobilenetv3_ssd", epochs=10) == "ssdlite"  # the seed's command
    assert augment(arch="mobilenetv3_small_ssd") == "ssdlite"
    assert augment(arch="vgg16_ssd300") == "ssd"
    assert augment(arch="mobilenetv3_ssd", augment="ssd") == "ssd"  # what a user sets wins
    # The built-in synthetic data has its own recipe, whatever the length.
    assert augment(datapath="synthetic", epochs=50) == "ssdlite"
    with pytest.raises(UserError, match="unknown architecture"):
        resolve_options({"arch": "no_such_arch", "datapath": "data"})


def test_a_resumed_run_keeps_the_augmentation_it_started_with():
    """The checkpoint stores the resolved options: training longer does not switch recipes halfway."""
    started = resolve_options({"arch": "mobilenetv3_ssd", "datapath": "data", "epochs": 10})
    resumed = TrainOptions.from_dict({**dataclasses.asdict(started), "epochs": 120})
    assert resumed.augment == "ssdlite"


@pytest.mark.parametrize(
    "given, message",
    [
        ({"lr": float("nan")}, "--lr must be a finite number, got nan"),
        ({"lr": float("inf")}, "--lr must be a finite number, got inf"),
        ({"weight_decay": float("nan")}, "--weight-decay must be a finite number"),
        ({"momentum": float("nan")}, "--momentum must be a finite number"),
        ({"min_lr_ratio": float("nan")}, "--min-lr-ratio must be a finite number"),
        ({"warmup_epochs": float("nan")}, "--warmup-epochs must be a finite number"),
        ({"milestones": "a,b"}, "--milestones must be a finite number, got 'a'"),
        ({"momentum": 1.5}, "--momentum must be at least 0 and below 1"),
        ({"weight_decay": -1.0}, "--weight-decay cannot be negative"),
        ({"min_lr_ratio": 2.0}, "--min-lr-ratio must be between 0 and 1"),
    ],
)
def test_settings_that_could_only_poison_the_weights_are_refused_before_any_work(given, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        resolve_options(given)


@pytest.mark.parametrize(
    "text, message",
    [
        ("epochs: ten\n", "epochs must be a whole number, got 'ten'"),
        ("lr: [1, 2]\n", r"lr must be a finite number, got \[1, 2\]"),
        ("ema: yes please\n", "ema must be true or false, got 'yes please'"),
        ("batch_size: 2.5\n", "batch_size must be a whole number, got 2.5"),
        ("lr: .nan\n", "lr must be a finite number, got nan"),
        ("epochs:\n", "epochs needs a value"),
    ],
)
def test_a_config_file_of_the_wrong_types_is_one_line_naming_the_file_and_option(tmp_path, text, message):
    config = tmp_path / "run.yaml"
    config.write_text(text)
    with pytest.raises(UserError, match=f"run.yaml: {message}"):
        resolve_options({}, config)


def test_a_number_where_a_name_is_expected_is_read_as_text(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("name: 2017\n")
    assert resolve_options({}, config).name == "2017"


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", "c:\\\\runs"])
def test_a_run_name_stays_inside_the_project_folder(name):
    with pytest.raises(UserError, match="--name must be a folder name inside --project"):
        resolve_options({"name": name})


def test_the_default_matcher_is_atss_and_an_iou_threshold_asks_for_the_iou_matcher():
    assert resolve_options({"datapath": "data"}).matcher == "atss"
    with pytest.raises(UserError, match=r"--iou-threshold is the threshold of --matcher iou; --matcher atss"):
        resolve_options({"datapath": "data", "iou_threshold": 0.4})
    with pytest.raises(UserError, match=r"--matcher hungarian sets its own"):
        resolve_options({"datapath": "data", "matcher": "hungarian", "iou_threshold": 0.4})
    assert resolve_options({"datapath": "data", "matcher": "iou", "iou_threshold": 0.4}).iou_threshold == 0.4
