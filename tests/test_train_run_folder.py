"""The run folder as detection users know it: args.yaml that repeats the run, results.csv/png, the plots of
the data and of the evaluation, the first training batches, --patience and --save-period."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from ssd.errors import UserError
from ssd.evaluation.confusion import confusion_matrix
from ssd.evaluation.drawing import draw_detections, draw_ground_truth, with_legend
from ssd.evaluation.palette import class_colour
from ssd.training.hooks.early_stopping import early_stop_reason, evaluations_without_improvement
from ssd.training.options import TrainOptions, read_yaml_options, resolve_options, write_yaml_options
from ssd.training.plots.dashboard import plot_results
from ssd.training.trainer import Trainer

PICTURES = (
    "results.png",
    "labels.png",
    "confusion_matrix.png",
    "PR_curve.png",
    "F1_curve.png",
    "train_batch0.jpg",
    "train_batch1.jpg",
    "train_batch2.jpg",
    "pictures/epoch_001.jpg",
    "pictures/epoch_002.jpg",
)


def _options(tmp_path, **changes) -> TrainOptions:
    values = dict(
        datapath="synthetic", synthetic_train=12, synthetic_val=4, synthetic_image_size=96, input_size=128,
        batch_size=4, epochs=2, lr=0.01, device="cpu", workers=0, project=str(tmp_path), name="run",
        warmup_epochs=0.0, tensorboard=False,
    )  # fmt: skip
    values.update(changes)
    return TrainOptions(**values)


def _fit(options, lines=None):
    emit = lines.append if lines is not None else (lambda _: None)
    return Trainer(options, command=["test"], emit=emit, progress=False).fit()


def test_a_run_folder_holds_every_file(tmp_path):
    result = _fit(_options(tmp_path, save_period=1))
    run_dir = result.run_dir
    for name in PICTURES:
        path = run_dir / name
        assert path.is_file() and path.stat().st_size > 0, name
        with Image.open(path) as picture:
            picture.verify()
    rows = list(csv.DictReader((run_dir / "results.csv").open()))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    for column in ("loss", "loc_loss", "conf_loss", "lr", "train_acc", "mAP", "mAP50"):
        assert rows[-1][column] != "", column
    assert not (run_dir / "metrics.csv").exists()  # one results file, as Ultralytics names it
    assert sorted(p.name for p in run_dir.glob("epoch_*.pt")) == ["epoch_001.pt", "epoch_002.pt"]


def test_args_yaml_gives_back_the_same_options(tmp_path):
    options = resolve_options({"datapath": "synthetic", "epochs": 3, "milestones": "0.5,0.8", "patience": 2})
    path = write_yaml_options(options, tmp_path / "args.yaml")
    assert resolve_options({}, path) == options
    assert read_yaml_options(path)["resume"] is None  # the file repeats the run, it does not resume it


def test_repeating_a_run_from_its_args_yaml(tmp_path):
    first = _fit(_options(tmp_path, epochs=1, val_split="none"))
    again = resolve_options({}, first.run_dir / "args.yaml")
    assert again == _options(tmp_path, epochs=1, val_split="none")
    second = _fit(again)
    # The named folder holds a run: the repeat goes beside it instead of over it.
    assert second.run_dir == tmp_path / "run2"
    assert (first.run_dir / "last.pt").is_file()


def test_save_period_keeps_every_nth_epoch(tmp_path):
    result = _fit(_options(tmp_path, epochs=4, save_period=2, val_split="none"))
    assert sorted(p.name for p in result.run_dir.glob("epoch_*.pt")) == ["epoch_002.pt", "epoch_004.pt"]


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"patience": -1}, "--patience must be a whole number >= 0"),
        ({"patience": 2.5}, "--patience must be a whole number, got 2.5"),
        ({"save_period": 0}, "--save-period must be a whole number >= 1"),
        ({"save_period": True}, "--save-period must be a whole number, got True"),
    ],
)
def test_bad_patience_and_save_period(given, message):
    with pytest.raises(UserError, match=message):
        resolve_options(given)


def test_patience_and_save_period_come_from_yaml(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("patience: 4\nsave-period: 10\n")
    options = resolve_options({}, config)
    assert (options.patience, options.save_period) == (4, 10)


def test_the_early_stopping_rule():
    history = [{"epoch": 1, "mAP": 0.2}, {"epoch": 2}, {"epoch": 3, "mAP": 0.2}, {"epoch": 4, "mAP": 0.1}]
    waited, best = evaluations_without_improvement(history)
    assert (waited, best["epoch"]) == (2, 1)  # an equal mAP is no improvement; unevaluated epochs don't count
    assert early_stop_reason(history, 3) is None
    assert "not improved for 2 evaluations" in early_stop_reason(history, 2)
    assert early_stop_reason(history, 0) is None  # 0: never stop early


class FlatMapTrainer(Trainer):
    """Its validation mAP never improves after the first epoch."""

    def inference_model(self):
        model = super().inference_model()
        model.predict = lambda images: [
            {"result_boxes": torch.zeros(0, 4), "result_labels": torch.zeros(0, dtype=torch.int64),
             "result_scores": torch.zeros(0)}
            for _ in images
        ]  # fmt: skip
        return model


def test_patience_stops_a_run_whose_map_does_not_improve(tmp_path):
    lines = []
    trainer = FlatMapTrainer(
        _options(tmp_path, epochs=6, patience=2), command=["t"], emit=lines.append, progress=False
    )
    result = trainer.fit()
    assert [row["epoch"] for row in result.history] == [1, 2, 3]
    assert "validation mAP has not improved for 2 evaluations" in result.stopped_early
    assert any(line.startswith("stopped early after epoch 3/6") for line in lines)
    assert (result.run_dir / "best.pt").is_file()
    # Resumed as it is, it has nothing to do; a new --patience would let it train on.
    lines.clear()
    again = FlatMapTrainer(
        TrainOptions(resume=str(result.run_dir)), command=["t"], emit=lines.append, progress=False
    ).fit()
    assert len(again.history) == 3
    assert any(line.startswith("nothing to do: this run stopped early after epoch 3") for line in lines)


def test_one_colour_per_class():
    colours = [class_colour(label) for label in range(1, 81)]
    assert len(set(colours)) == len(colours)
    assert class_colour(0) not in colours  # the background has its own


def test_the_dashboard_reads_from_one_epoch(tmp_path):
    row = {"epoch": 1, "lr": 0.003, "loss": 5.0, "loc_loss": 2.0, "conf_loss": 3.0, "train_acc": 0.9}
    path = plot_results(
        [{**row, "mAP": 0.01, "mAP50": 0.03, "mAP75": 0.0, "VOC_mAP50": 0.03}], tmp_path / "r.png"
    )
    with Image.open(path) as picture:
        assert picture.size[0] > 1000


def test_ground_truth_and_predictions_are_drawn_apart():
    picture = Image.new("RGB", (200, 200), (255, 255, 255))
    box = np.array([[40.0, 40.0, 160.0, 160.0]])
    truth = np.asarray(draw_ground_truth(picture, box, [1]))
    predicted = np.asarray(
        draw_detections(picture, torch.tensor(box), torch.tensor([1]), torch.tensor([0.9]))
    )
    edge = slice(60, 140)
    # A prediction's edge is one unbroken colour; ground truth's is dashed (its colour, then black gaps).
    assert (predicted[edge, 40] == class_colour(1)).all()
    assert (truth[edge, 40] == 0).all(axis=1).any() and (truth[edge, 40] == class_colour(1)).all(axis=1).any()
    legend = with_legend(picture, ["circle", "square"])
    assert legend.height > picture.height


def test_confusion_matrix_counts_found_confused_missed_and_false():
    target = {"boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]]),
              "labels": torch.tensor([1, 1, 2])}  # fmt: skip
    detection = {
        "boxes": np.array([[0.0, 0, 10, 10], [20, 20, 30, 30], [80, 80, 90, 90], [0, 0, 10, 10]]),
        "labels": np.array([1, 2, 2, 1]),
        "scores": np.array([0.9, 0.8, 0.7, 0.1]),  # the last is under the score threshold
    }
    matrix = confusion_matrix([detection], [target], ["a", "b"], score_threshold=0.3, iou_threshold=0.5)
    # rows: predicted a, b, background; columns: true a, b, background
    assert matrix.counts.tolist() == [[1, 0, 0], [1, 0, 1], [0, 1, 0]]
    assert matrix.normalised()[:, 0].tolist() == [0.5, 0.5, 0.0]
