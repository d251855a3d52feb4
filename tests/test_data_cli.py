"""`ssd data check / show / synthetic` and how `build_dataset` recognises (or refuses) a path."""

from __future__ import annotations

import pytest
from data_writers import write_truncated_jpeg, write_voc
from PIL import Image

from ssd.cli.main import main
from ssd.data import build_dataset, detect_format
from ssd.errors import DatasetError


def test_check_reports_contents_and_every_problem(tmp_path, capsys):
    root = write_voc(
        tmp_path / "voc",
        {"1": [("cat", 1, 1, 30, 30), ("dog", 5, 5, 5, 9)], "2": [("cat", 2, 2, 9, 9)]},
        splits={"train": ["1", "2"], "val": ["1"]},
    )
    write_truncated_jpeg(root / "JPEGImages" / "2.jpg")
    assert main(["data", "check", str(root)]) == 0
    out = capsys.readouterr().out
    assert "voc dataset, splits train, val" in out
    assert "split 'train'" in out and "split 'val'" in out
    assert "1 pictures, 1 boxes, 2 classes (num_classes = 3 with background)" in out
    assert "1.xml: object 2 'dog' box (5, 5, 5, 9) has zero size (dropped box)" in out
    assert "2.jpg: picture cannot be decoded" in out
    assert "problems: 2 (1 dropped box, 1 skipped picture)" in out
    assert main(["data", "check", str(root), "--split", "train", "--strict"]) == 1


def test_check_of_a_missing_path_is_one_line_error(tmp_path, capsys):
    assert main(["data", "check", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no such file or folder" in err and "Traceback" not in err


def test_show_writes_a_grid_png(tmp_path, capsys):
    out = tmp_path / "grid.png"
    code = main(
        [
            "data",
            "show",
            "synthetic",
            "--split",
            "val",
            "--pictures",
            "2",
            "--columns",
            "3",
            "--size",
            "64",
            "--out",
            str(out),
        ]
    )
    assert code == 0 and out.exists()
    assert Image.open(out).size == (3 * 64 + 2 * 4, 2 * 64 + 4)
    assert main(["data", "show", "synthetic", "--preset", "nope", "--out", str(out)]) == 2
    assert "unknown augmentation preset" in capsys.readouterr().err


def test_synthetic_command_writes_a_coco_dataset(tmp_path):
    assert main(["data", "synthetic", str(tmp_path), "--train", "3", "--val", "2", "--test", "0"]) == 0
    assert detect_format(tmp_path)[0] == "coco"
    assert len(build_dataset(tmp_path, "val")) == 2


def test_paths_that_are_no_dataset_are_clear_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="not a dataset folder. Expected Pascal VOC"):
        build_dataset(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(DatasetError, match="must be a COCO JSON"):
        build_dataset(tmp_path / "notes.txt")
    with pytest.raises(DatasetError, match="unknown split"):
        build_dataset("synthetic", "holdout")
    with pytest.raises(DatasetError, match="synthetic dataset only"):
        write_voc(tmp_path / "voc", {"1": []})
        build_dataset(tmp_path / "voc", num_images=3)
