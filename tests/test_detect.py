"""`ssd detect` end to end: a folder with a corrupt file and a video, filters, outputs, exported models."""

import json
import shutil

import numpy as np
import pytest
from conftest import BCCD, FIXTURES, shared_path

from ssd.cli.main import main

WEIGHTS = FIXTURES / "ssdlite320_bccd_trained.pt"
NAMES = "Platelets,RBC,WBC"
DETECT = [
    "detect",
    "--weights",
    str(WEIGHTS),
    "--arch",
    "mobilenetv3_ssd",
    "--class-names",
    NAMES,
    "--threads",
    "1",
]


def write_video(path, frames: int = 5) -> None:
    cv2 = pytest.importorskip("cv2")
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (320, 240))
    for i in range(frames):
        frame = np.full((240, 320, 3), 200, np.uint8)
        cv2.circle(frame, (60 + 20 * i, 120), 40, (120, 60, 160), -1)
        writer.write(frame)
    writer.release()


@pytest.fixture
def inputs(tmp_path):
    shared_path(WEIGHTS)
    folder = tmp_path / "inputs"
    (folder / "nested").mkdir(parents=True)
    pictures = sorted(shared_path(BCCD / "JPEGImages").glob("*.jpg"))[:3]
    for picture in pictures[:2]:
        shutil.copy(picture, folder / picture.name)
    shutil.copy(pictures[2], folder / "nested" / "third.png")  # a JPEG named .png still decodes
    (folder / "nested" / "broken.jpg").write_bytes(b"\xff\xd8 this is not a picture")
    (folder / "notes.txt").write_text("ignored: not a picture extension")
    (folder / "nested" / "broken.mp4").write_bytes(b"not a video either" * 10)
    write_video(folder / "clip.mp4")
    return folder


def test_detect_on_a_folder_with_a_corrupt_file_and_a_video(inputs, tmp_path, capsys):
    out = tmp_path / "out"
    argv = DETECT
    code = main(argv + [str(inputs), "--out", str(out), "--batch-size", "2", "--yolo", "--score", "0.5"])
    assert code == 0
    captured = capsys.readouterr()
    assert "3 pictures and 5 video frames" in captured.out
    assert "skipped 2 unreadable inputs" in captured.out
    assert "broken.jpg: cannot read the picture" in captured.out and "broken.mp4: cannot" in captured.out
    results = json.loads((out / "detections.json").read_text())
    files = {r["file_name"] for r in results}
    assert "inputs/nested/third.png" in files and all("broken" not in f for f in files)
    for entry in results:
        assert entry["score"] >= 0.5
        assert entry["category_name"] == NAMES.split(",")[entry["category_id"] - 1]
        assert len(entry["bbox"]) == 4 and entry["bbox"][2] >= 0 and entry["bbox"][3] >= 0
    frames = {r["frame"] for r in results if r["file_name"] == "inputs/clip.mp4"}
    assert frames <= set(range(5))
    # Annotated outputs: pictures at their relative paths, the video re-encoded.
    assert (out / "inputs" / "nested" / "third.png").is_file()
    assert len(list((out / "inputs").glob("BloodImage_*.jpg"))) == 2
    assert (out / "inputs" / "clip.mp4").stat().st_size > 0
    # YOLO files: one per picture / frame, class = label - 1, normalised centre and size.
    first_picture = sorted(p for p in (out / "labels" / "inputs").glob("BloodImage_*.txt"))[0]
    rows = [line.split() for line in first_picture.read_text().splitlines()]
    assert rows and all(len(r) == 6 and 0 <= int(r[0]) <= 2 for r in rows)
    assert all(0 <= float(v) <= 1 for r in rows for v in r[1:5])
    assert len(list((out / "labels" / "inputs" / "clip").glob("*.txt"))) == 5


def test_classes_and_max_det_filter(inputs, tmp_path):
    picture = next(inputs.glob("BloodImage_*.jpg"))
    out = tmp_path / "out"
    argv = DETECT
    assert (
        main(argv + [str(picture), "--out", str(out), "--classes", "RBC", "--max-det", "4", "--no-pictures"])
        == 0
    )
    results = json.loads((out / "detections.json").read_text())
    assert 0 < len(results) <= 4 and {r["category_name"] for r in results} == {"RBC"}
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    assert not list(out.glob("*.jpg"))


def test_bad_arguments_are_one_line_errors(inputs, tmp_path, capsys):
    argv = DETECT
    assert main(argv + [str(inputs), "--out", str(tmp_path / "o"), "--classes", "Neutrophil"]) == 2
    assert "unknown class 'Neutrophil'" in capsys.readouterr().err
    assert main(["detect", "--weights", str(tmp_path / "absent.pt"), str(inputs)]) == 2
    assert "absent.pt: no such weights file" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(argv + [str(empty), "--out", str(tmp_path / "o2")]) == 2
    assert "no pictures or videos found" in capsys.readouterr().err


def test_detect_with_an_exported_onnx_model_gives_the_same_json(inputs, tmp_path):
    from ssd.deploy.export import export_model
    from ssd.models.checkpoint import load_model

    model = load_model(shared_path(WEIGHTS), arch="mobilenetv3_ssd", class_names=NAMES.split(","))
    onnx_path = tmp_path / "bccd.onnx"
    export_model(model, onnx_path, "onnx", with_postprocess=False, dynamic_batch=True, check=False)
    picture_folder = tmp_path / "pictures"
    picture_folder.mkdir()
    for picture in list(inputs.glob("BloodImage_*.jpg")):
        shutil.copy(picture, picture_folder)
    outputs = {}
    for name, weights in [("torch", shared_path(WEIGHTS)), ("onnx", onnx_path)]:
        argv = [
            "detect",
            "--weights",
            str(weights),
            str(picture_folder),
            "--out",
            str(tmp_path / name),
            "--threads",
            "1",
        ]
        if name == "torch":
            argv += ["--arch", "mobilenetv3_ssd", "--class-names", NAMES]
        assert main(argv + ["--no-pictures"]) == 0
        outputs[name] = json.loads((tmp_path / name / "detections.json").read_text())
    assert len(outputs["torch"]) == len(outputs["onnx"]) > 0
    for ours, theirs in zip(outputs["torch"], outputs["onnx"], strict=True):
        assert ours["category_name"] == theirs["category_name"] and ours["file_name"] == theirs["file_name"]
        assert np.allclose(ours["bbox"], theirs["bbox"], rtol=1e-3, atol=0.02)
        assert abs(ours["score"] - theirs["score"]) < 1e-4
