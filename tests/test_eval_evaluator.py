"""The evaluator with stand-in datasets and models, the report files, and the stored BCCD detections."""

from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pytest
import torch
from conftest import BCCD, COCO_MINI, FIXTURES, shared_path
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ssd.data import build_dataset
from ssd.errors import UserError
from ssd.evaluation.evaluator import Evaluator, dataset_category_ids, dataset_targets, evaluate_detections
from ssd.evaluation.picture_errors import picture_errors
from ssd.evaluation.report import format_table, metrics_dict, write_report


class PictureSet:
    """A dataset in the package's convention: (uint8 CHW picture, target), with class names."""

    class_names = ["circle", "square"]
    num_classes = 3

    def __init__(self, count: int = 7, category_ids=None, with_get_target: bool = True):
        rng = np.random.default_rng(0)
        self.targets = []
        for index in range(count):
            boxes = []
            for _ in range(index % 3 + 1):
                x, y = rng.uniform(0, 50, 2)
                boxes.append([x, y, x + rng.uniform(8, 30), y + rng.uniform(8, 30)])
            self.targets.append(
                {
                    "boxes": torch.tensor(boxes, dtype=torch.float32),
                    "labels": torch.tensor([1 + (index + k) % 2 for k in range(len(boxes))]),
                    "iscrowd": torch.zeros(len(boxes), dtype=torch.bool),
                    "difficult": torch.zeros(len(boxes), dtype=torch.bool),
                    "image_id": 1000 + index,
                    "file_name": f"picture_{index}.png",
                    "orig_size": (64, 96),
                }
            )
        if category_ids is not None:
            self.category_ids = category_ids
        self.pictures_read = 0
        if with_get_target:
            self.get_target = lambda i: self.targets[i]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        self.pictures_read += 1
        picture = torch.full((3, 64, 96), index, dtype=torch.uint8)  # the picture says which one it is
        return picture, self.targets[index]


class AnswerModel:
    """Finds each picture's ground truth (recognised by its pixel value), optionally changed by `edit`."""

    num_classes = 3

    def __init__(self, dataset: PictureSet, edit=None):
        self.dataset = dataset
        self.edit = edit
        self.batch_sizes = []

    def predict(self, images):
        self.batch_sizes.append(len(images))
        results = []
        for image in images:
            assert image.dtype == torch.uint8 and image.shape == (3, 64, 96)
            target = self.dataset.targets[int(image[0, 0, 0])]
            result = {
                "result_boxes": target["boxes"].clone(),
                "result_labels": target["labels"].clone(),
                "result_scores": torch.linspace(0.9, 0.6, len(target["labels"])),
                "result_confs": torch.zeros(len(target["labels"]), 3),
            }
            results.append(self.edit(result) if self.edit else result)
        return results


def nothing(result):
    return {key: value[:0] for key, value in result.items()}


def test_perfect_model_scores_one_in_batches_and_in_order():
    dataset = PictureSet(count=7)
    model = AnswerModel(dataset)
    result = Evaluator(dataset, batch_size=3, progress=False)(model)
    assert model.batch_sizes == [3, 3, 1]
    assert result.num_images == 7 and result.image_ids == list(range(1000, 1007))
    assert result.coco.stats[0] == pytest.approx(1.0) and result.coco.stats[1] == pytest.approx(1.0)
    assert result.voc.map_area == pytest.approx(1.0) and result.voc.map_11point == pytest.approx(1.0)
    summary = result.summary()
    assert summary["AP"] == pytest.approx(1.0) and summary["VOC2007_mAP"] == pytest.approx(1.0)
    assert result.seconds_model > 0 and result.seconds_total >= result.seconds_model


def test_model_that_finds_nothing_gives_zeros():
    dataset = PictureSet()
    result = Evaluator(dataset, progress=False)(AnswerModel(dataset, nothing))
    assert result.coco.stats[0] == 0.0 and result.coco.stats[8] == 0.0
    assert result.voc.map_area == 0.0 and result.voc.map_11point == 0.0
    assert result.coco_results() == []
    assert "0.000" in format_table(result)


def test_half_the_boxes_found():
    dataset = PictureSet(count=4)

    def first_only(result):
        return {key: value[:1] for key, value in result.items()}

    result = Evaluator(dataset, progress=False)(AnswerModel(dataset, first_only))
    # Pictures hold 1, 2, 3, 1 boxes; the first of each is found: 4 of 7 objects, all at precision 1.
    found = {1: 0, 2: 0}
    total = {1: 0, 2: 0}
    for t in dataset.targets:
        found[int(t["labels"][0])] += 1
        for label in t["labels"].tolist():
            total[label] += 1
    for k in (1, 2):
        assert result.voc.ap_area[k - 1] == pytest.approx(found[k] / total[k])
        # COCO samples recall at 0, 0.01, ..., 1: the same curve, read at 101 points.
        assert result.coco.ap50_per_class[k - 1] == pytest.approx(found[k] / total[k], abs=0.01)


def test_dataset_category_ids_reach_the_results():
    dataset = PictureSet(category_ids=[5, 44])
    result = Evaluator(dataset, progress=False)(AnswerModel(dataset))
    assert {r["category_id"] for r in result.coco_results()} == {5, 44}
    assert dataset_category_ids(PictureSet()) is None
    as_dict = PictureSet()
    as_dict.label_to_category_id = {1: 7, 2: 9}
    assert dataset_category_ids(as_dict) == [7, 9]


def test_targets_without_decoding_pictures():
    dataset = PictureSet()
    assert dataset_targets(dataset) == dataset.targets and dataset.pictures_read == 0
    assert len(dataset_targets(PictureSet(with_get_target=False))) == 7


def test_wrong_labels_and_class_counts_are_user_errors():
    dataset = PictureSet()

    def label_five(result):
        return {**result, "result_labels": torch.full_like(result["result_labels"], 5)}

    with pytest.raises(UserError, match="predicts label 5.*num_classes=3"):
        Evaluator(dataset, progress=False)(AnswerModel(dataset, label_five))
    model = AnswerModel(dataset)
    model.num_classes = 91
    with pytest.raises(UserError, match="num_classes=91.*needs num_classes=3"):
        Evaluator(dataset, progress=False)(model)
    with pytest.raises(UserError, match="batch size"):
        Evaluator(dataset, batch_size=0)
    with pytest.raises(UserError, match="no pictures"):
        Evaluator(PictureSet(count=0))


def test_model_mode_is_restored():
    dataset = PictureSet(count=2)
    module = torch.nn.Linear(1, 1)
    module.predict = AnswerModel(dataset).predict
    module.num_classes = 3
    module.train()
    Evaluator(dataset, progress=False)(module)
    assert module.training


def test_picture_errors_count_missed_and_false_boxes():
    target = {"boxes": torch.tensor([[0, 0, 10, 10], [20, 20, 30, 30]]), "labels": torch.tensor([1, 1])}
    detection = {
        "boxes": torch.tensor([[0, 0, 10, 10], [0, 1, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30]]),
        "labels": torch.tensor([1, 1, 1, 2]),
        "scores": torch.tensor([0.9, 0.8, 0.7, 0.2]),
    }
    errors = picture_errors(detection, target, score_threshold=0.5)
    # Kept: the hit on A, a duplicate of A, one far off; the 0.2 box is below the threshold. B is missed.
    assert errors.detection_correct.tolist() == [True, False, False]
    assert (errors.missed, errors.false, errors.total) == (1, 2, 3)
    target["difficult"] = torch.tensor([False, True])
    assert picture_errors(detection, target, score_threshold=0.5).missed == 0


def test_report_files(tmp_path):
    dataset = PictureSet(category_ids=[5, 44])

    def one_false_box(result):
        boxes = torch.cat([result["result_boxes"], torch.tensor([[60.0, 40.0, 90.0, 60.0]])])
        return {
            "result_boxes": boxes,
            "result_labels": torch.cat([result["result_labels"], torch.tensor([2])]),
            "result_scores": torch.cat([result["result_scores"], torch.tensor([0.95])]),
        }

    result = Evaluator(dataset, progress=False)(AnswerModel(dataset, one_false_box))
    written = write_report(result, tmp_path / "report", dataset, worst_count=4)
    metrics = json.loads(written["metrics"].read_text())
    assert metrics == json.loads(json.dumps(metrics_dict(result)))
    assert metrics["coco"]["AP"] == pytest.approx(result.coco.stats[0])
    assert [c["name"] for c in metrics["per_class"]] == ["circle", "square"]
    assert [c["category_id"] for c in metrics["per_class"]] == [5, 44]
    assert metrics["voc"]["mAP"] == pytest.approx(result.voc.map_area)
    detections = json.loads(written["detections"].read_text())
    assert len(detections) == sum(len(t["labels"]) + 1 for t in dataset.targets)
    assert [p.name for p in written["pr_curves"]] == ["pr_001_circle.png", "pr_002_square.png"]
    for path in [*written["pr_curves"], written["worst_pictures"]]:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = format_table(result)
    assert "circle" in table and "square" in table and "VOC mAP@0.5" in table


def test_no_worst_pictures_when_nothing_is_wrong(tmp_path):
    dataset = PictureSet(count=3)
    result = Evaluator(dataset, progress=False)(AnswerModel(dataset))
    assert write_report(result, tmp_path, dataset)["worst_pictures"] is None


def test_nan_and_missing_numbers_are_null_in_json(tmp_path):
    dataset = PictureSet(count=1)  # one box of class 1: class 2 has no object, and no small/large split
    result = evaluate_detections(
        [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "scores": torch.zeros(0)}],
        dataset.targets,
        dataset.class_names,
    )
    metrics = metrics_dict(result)
    assert metrics["per_class"][1]["VOC_AP"] is None and metrics["per_class"][1]["AP"] is None
    assert any(v is None for v in metrics["coco"].values())
    json.dumps(metrics, allow_nan=False)  # strict JSON: no NaN anywhere


def bccd_test_targets(class_names):
    """BCCD `test` ground truth through the package's VOC loader, keyed by picture name."""
    data = pytest.importorskip("ssd.data", reason="needs the package's dataset loaders")
    if not hasattr(data, "build_dataset"):
        pytest.skip("ssd.data.build_dataset is not available")
    dataset = data.build_dataset(shared_path(BCCD), "test")
    assert sorted(dataset.class_names) == sorted(class_names)
    targets = dataset_targets(dataset)
    return dataset, {str(t["file_name"]).rsplit("/", 1)[-1].rsplit(".", 1)[0]: t for t in targets}


def test_stored_bccd_detections_reproduce_torchvision_coco_stats():
    fixture = torch.load(shared_path(FIXTURES / "ssdlite320_bccd_trained.pt"), weights_only=True)
    dataset, target_of = bccd_test_targets(fixture["class_names"])
    assert len(dataset) == 72
    # Labels follow the fixture's class order; map them onto the loader's own by name.
    to_ours = torch.tensor([0] + [dataset.class_names.index(n) + 1 for n in fixture["class_names"]])
    detections = [
        {"boxes": d["boxes"], "scores": d["scores"], "labels": to_ours[d["labels"]]}
        for d in fixture["detections"]
    ]
    targets = [target_of[picture] for picture in fixture["test_ids"]]
    result = evaluate_detections(detections, targets, dataset.class_names)
    np.testing.assert_allclose(result.coco.stats, fixture["coco_stats"].numpy(), rtol=0, atol=1e-6)
    assert result.coco.stats[0] == pytest.approx(0.4619, abs=1e-4)
    # VOC mAP@0.5 sits near COCO's AP50 (101-point sampling vs the exact area).
    assert result.voc.map_area == pytest.approx(result.coco.stats[1], abs=0.01)
    assert not math.isnan(result.voc.map_11point)


def test_coco_mini_through_the_loader_matches_pycocotools_on_the_original_json():
    """The package's COCO loader, our ground truth and results file, against pycocotools on the JSON itself."""
    annotation_file = shared_path(COCO_MINI / "annotations" / "instances_val2017.json")
    dataset = build_dataset(COCO_MINI, "val")
    targets = dataset_targets(dataset)
    category_ids = dataset_category_ids(dataset)
    assert category_ids == sorted(
        json.loads(annotation_file.read_text())["categories"][i]["id"] for i in range(80)
    )
    rng = np.random.default_rng(0)
    detections = [
        {
            "boxes": t["boxes"].double() + torch.from_numpy(rng.uniform(-4, 4, tuple(t["boxes"].shape))),
            "labels": t["labels"],
            "scores": torch.from_numpy(rng.uniform(0, 1, len(t["labels"]))),
        }
        for t in targets
    ]
    result = evaluate_detections(detections, targets, dataset.class_names, category_ids)
    results = result.coco_results()
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(annotation_file))
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(results), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    # Image and category ids are COCO's own: every detection lands on its source box's picture and category.
    by_image = {}
    for annotation in coco_gt.dataset["annotations"]:
        by_image.setdefault(annotation["image_id"], set()).add(annotation["category_id"])
    assert all(r["category_id"] in by_image[r["image_id"]] for r in results)
    # All 12 numbers match, small/medium/large included: the loader hands over COCO's own (mask) areas.
    np.testing.assert_allclose(np.asarray(result.coco.stats), evaluator.stats, atol=1e-9)
    assert 0.3 < result.coco.stats[0] < 1.0
