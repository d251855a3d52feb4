"""What keeps a run safe: non-finite losses skipped and logged, a stop after several in a row, class counts
checked against the dataset, a dataset without boxes refused, fine-tuning across class counts."""

from __future__ import annotations

import pytest
import torch
from data_writers import write_coco

from ssd.data import write_synthetic_coco
from ssd.errors import DatasetError, UserError
from ssd.models.checkpoint import read_checkpoint
from ssd.training.options import TrainOptions
from ssd.training.trainer import NonFiniteLossError, Trainer


def _options(tmp_path, **changes) -> TrainOptions:
    values = dict(
        datapath="synthetic", synthetic_train=12, synthetic_val=4, synthetic_image_size=96, input_size=128,
        batch_size=4, epochs=2, lr=0.01, device="cpu", workers=0, val_split="none", project=str(tmp_path),
        name="run", warmup_epochs=0.0, tensorboard=False,
    )  # fmt: skip
    values.update(changes)
    return TrainOptions(**values)


class PoisonedTrainer(Trainer):
    """Makes the loss NaN at the given optimizer steps (0-based), and records the weights around each step."""

    def __init__(self, options, poisoned_steps):
        super().__init__(options, command=["test"], emit=lambda _: None, progress=False)
        self.poisoned_steps = set(poisoned_steps)
        self.weights_before = {}

    def compute_losses(self, images, targets):
        self.weights_before[self.step] = [p.detach().clone() for p in self.model.parameters()]
        losses = super().compute_losses(images, targets)
        if self.step in self.poisoned_steps:
            losses["loss"] = losses["loss"] * float("nan")
        return losses


def test_a_non_finite_loss_skips_the_step_and_names_the_pictures(tmp_path, capsys):
    trainer = PoisonedTrainer(_options(tmp_path), poisoned_steps=[1])
    result = trainer.fit()
    assert [row["bad_steps"] for row in result.history] == [1, 0]
    before, after = trainer.weights_before[1], trainer.weights_before[2]
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))  # the bad step changed nothing
    assert not all(torch.equal(a, b) for a, b in zip(trainer.weights_before[0], before, strict=True))
    log = (tmp_path / "run" / "bad_steps.log").read_text()
    assert "step 2: non-finite loss (nan); step skipped" in log
    assert log.count(".png") == 4  # the four pictures of that batch, by file name
    assert "non-finite loss" in capsys.readouterr().err
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_several_non_finite_losses_in_a_row_stop_the_run_and_keep_the_last_checkpoint(tmp_path):
    trainer = PoisonedTrainer(_options(tmp_path, max_bad_steps=3), poisoned_steps=range(3, 100))
    with pytest.raises(NonFiniteLossError, match="3 non-finite losses in a row") as stopped:
        trainer.fit()
    last = tmp_path / "run" / "last.pt"
    assert f"the last good checkpoint is {last}" in str(stopped.value)
    checkpoint = read_checkpoint(last)
    assert checkpoint["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in checkpoint["model"].values() if v.is_floating_point())


def test_num_classes_must_count_the_background(tmp_path):
    with pytest.raises(UserError, match="num_classes counts the background, so it must be 6"):
        Trainer(_options(tmp_path, num_classes=5), emit=lambda _: None).fit()


def test_a_dataset_without_boxes_is_refused_before_training(tmp_path):
    images = [{"id": i, "file_name": f"{i}.jpg", "width": 64, "height": 48} for i in (1, 2)]
    write_coco(tmp_path / "empty", "train", images, [], [{"id": 1, "name": "thing"}])
    with pytest.raises(DatasetError, match="no boxes at all"):
        Trainer(_options(tmp_path, datapath=str(tmp_path / "empty")), emit=lambda _: None).fit()
    assert not (tmp_path / "run").exists()


def test_fine_tuning_from_our_checkpoint_with_another_class_count(tmp_path):
    first = Trainer(_options(tmp_path, epochs=1, name="first"), emit=lambda _: None, progress=False).fit()
    source = read_checkpoint(first.last_checkpoint)
    write_synthetic_coco(tmp_path / "shapes", {"train": 8}, image_size=96)
    # The same pictures with two classes only: COCO categories renamed and merged.
    import json

    json_path = tmp_path / "shapes" / "annotations" / "instances_train.json"
    content = json.loads(json_path.read_text())
    content["categories"] = [{"id": 1, "name": "round"}, {"id": 2, "name": "angular"}]
    for annotation in content["annotations"]:
        annotation["category_id"] = 1 if annotation["category_id"] == 1 else 2
    json_path.write_text(json.dumps(content))

    lines = []
    tuned = Trainer(
        _options(
            tmp_path,
            epochs=1,
            name="tuned",
            datapath=str(tmp_path / "shapes"),
            weights=str(first.last_checkpoint),
            freeze_backbone=1,
        ),
        emit=lines.append,
        progress=False,
    ).fit()
    assert any("re-initialised for num_classes=3" in line for line in lines)
    result = read_checkpoint(tuned.last_checkpoint)
    assert result["num_classes"] == 3 and result["class_names"] == ["round", "angular"]
    backbone = [
        k
        for k in source["model"]
        if k.startswith("backbone.") and "running" not in k and "num_batches" not in k
    ]
    started_from = source["ema"] if source.get("ema") is not None else source["model"]  # what --weights reads
    assert all(torch.equal(started_from[k], result["model"][k]) for k in backbone)  # frozen for its one epoch
    assert not torch.equal(
        source["model"]["regression_headers.0.0.0.weight"], result["model"]["regression_headers.0.0.0.weight"]
    )
