"""Deployment v2: nothing runs that was not asked to, exported files carry a checksum, and `ssd.load`.

A file is run as TorchScript only when its name ends in .torchscript or .ts; a TorchScript archive named
like weights (.pt, .pth) is refused by every command with one line, and its code never runs. ONNX and
TorchScript exports carry the SHA-256 of their content, checked on load. `ssd.load` opens every format, and
`ssd eval` measures an export as it measures its checkpoint.
"""

from __future__ import annotations

import ctypes
import io
import json
import shutil
import socket
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FIXTURES, shared_path
from PIL import Image

import ssd
from ssd.cli.main import main
from ssd.data.formats.synthetic import CLASS_NAMES, write_synthetic_coco
from ssd.deploy.export import export_model
from ssd.deploy.formats import EXPORT_FORMATS, load_predictor
from ssd.deploy.formats.onnx import OnnxPredictor, onnx_checksum
from ssd.deploy.formats.torchscript import TorchScriptPredictor, torchscript_checksum
from ssd.deploy.graphs import NetworkGraph
from ssd.deploy.predictor import CHECKSUM_KEY, METADATA_KEY, UnverifiedExportWarning, export_metadata
from ssd.errors import UserError
from ssd.models.checkpoint import (
    checkpoint_arch,
    load_model,
    load_weights_for_finetuning,
    model_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from ssd.models.fold import prepare_for_inference
from ssd.models.model_files import EXPORTED_SUFFIXES, model_file_kind

SRC = Path(__file__).resolve().parents[1] / "src"
MARKER = "TROJAN-FORWARD-RAN"
DAMAGED = "content does not match its checksum: damaged or edited"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("deploy")


@pytest.fixture(scope="module")
def checkpoint(tiny_model, folder) -> Path:
    return save_checkpoint(folder / "tiny.pt", model_checkpoint(tiny_model))


@pytest.fixture(scope="module")
def onnx_export(tiny_model, folder) -> Path:
    path = folder / "tiny.onnx"
    export_model(tiny_model, path, "onnx")
    return path


@pytest.fixture(scope="module")
def torchscript_export(tiny_model, folder) -> Path:
    path = folder / "tiny.torchscript"
    export_model(tiny_model, path, "torchscript")
    return path


@pytest.fixture(scope="module")
def picture(folder) -> Path:
    pixels = torch.randint(0, 256, (48, 64, 3), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    path = folder / "pictures" / "noise.png"
    path.parent.mkdir()
    Image.fromarray(pixels.numpy()).save(path)
    return path


class _Trojan(torch.nn.Module):
    """The tiny model's real network, wrapped in a forward that prints a marker first: a file that looks
    like one of our exports in every way (metadata, checksum) but runs code of its author's choosing."""

    def __init__(self, network):
        super().__init__()
        self.network = network

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        print("TROJAN-FORWARD-RAN")
        return self.network(images)


class _Printer(torch.nn.Module):
    """A TorchScript program of someone else's: no ssd metadata, and a forward that prints the marker."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        print("TROJAN-FORWARD-RAN")
        return images


def _save_torchscript(module, path: Path, metadata: str | None, checksum: bool = True) -> Path:
    """`torch.jit.save` with our metadata and, like `ssd export`, the checksum of the content."""
    extra = {f"{METADATA_KEY}.json": metadata} if metadata is not None else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is in maintenance; it still saves
        if checksum:
            first = io.BytesIO()
            torch.jit.save(module, first, _extra_files=extra)
            first.seek(0)
            extra[CHECKSUM_KEY] = torchscript_checksum(first)[1]
        torch.jit.save(module, str(path), _extra_files=extra)
    return path


@pytest.fixture(scope="module")
def trojan(tiny_model, folder) -> Path:
    """The trojan saved as `trojan.pt`, holding `extra/ssd.json` (as the old content sniffing wanted)."""
    prepared = prepare_for_inference(tiny_model, channels_last=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        network = torch.jit.trace(NetworkGraph(prepared).eval(), torch.rand(1, 3, 64, 64), check_trace=False)
        module = torch.jit.script(_Trojan(network))
    metadata = json.dumps(export_metadata(prepared, "network"))
    return _save_torchscript(module, folder / "trojan.pt", metadata)


@pytest.fixture(scope="module")
def dataset(folder) -> Path:
    """Eight synthetic pictures written as a COCO dataset (split `test`)."""
    write_synthetic_coco(folder / "synthetic", {"test": 8}, image_size=96)
    return folder / "synthetic"


def _flush_c_streams() -> None:
    """TorchScript's `print` writes through C's stdio, which buffers; flush it so capfd sees every byte."""
    ctypes.CDLL(None).fflush(None)


def _output(capfd) -> tuple[str, str]:
    _flush_c_streams()
    captured = capfd.readouterr()
    return captured.out, captured.err


def _assert_refused_in_one_line(err: str, out: str, name: str, *words: str) -> None:
    assert MARKER not in out and MARKER not in err
    assert "Traceback" not in err and "Traceback" not in out
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and name in lines[0], lines[0]
    for word in words:
        assert word in lines[0], lines[0]


# 1. Nothing runs that was not asked to


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("suffix", [".pt", ".pth"])
@pytest.mark.parametrize("command", ["detect", "eval", "bench", "export", "info", "serve"])
def test_a_torchscript_archive_named_as_weights_is_refused_by_every_command(
    command, suffix, trojan, picture, dataset, tmp_path, capfd
):
    weights = tmp_path / f"model{suffix}"
    shutil.copy(trojan, weights)
    argv = {
        "detect": [
            "detect",
            "--weights",
            str(weights),
            str(picture),
            "--out",
            str(tmp_path / "out"),
            "--threads",
            "1",
        ],
        "eval": ["eval", "--weights", str(weights), "--datapath", str(dataset), "--split", "test"],
        "bench": ["bench", "--weights", str(weights), "--runs", "5"],
        "export": ["export", "--weights", str(weights), "--out", str(tmp_path / "model.onnx")],
        "info": ["info", "--weights", str(weights)],
        "serve": ["serve", "--weights", str(weights), "--port", str(_free_port()), "--threads", "1"],
    }[command]
    if command == "serve":
        pytest.importorskip("fastapi")
    assert main(argv) == 2
    out, err = _output(capfd)
    _assert_refused_in_one_line(
        err, out, str(weights), "a TorchScript program, not a weights file", "rename it model.torchscript"
    )
    assert not (tmp_path / "out").exists() and not (tmp_path / "model.onnx").exists()


def test_ssd_load_and_every_reader_of_weights_refuse_it(trojan, tiny_model, capfd):
    message = r"trojan\.pt: a TorchScript program, not a weights file.*rename it trojan\.torchscript$"
    for read in (
        ssd.load,
        load_model,
        read_checkpoint,
        checkpoint_arch,
        lambda path: load_weights_for_finetuning(tiny_model, path),
    ):
        with pytest.raises(UserError, match=message):
            read(trojan)
    out, err = _output(capfd)
    assert MARKER not in out + err


@pytest.mark.parametrize("suffix", [".torchscript", ".ts", ".TorchScript"])
def test_the_same_file_runs_only_when_named_torchscript(trojan, picture, tmp_path, capfd, suffix):
    named = tmp_path / f"trusted{suffix}"
    shutil.copy(trojan, named)
    detector = ssd.load(named)
    assert isinstance(detector, TorchScriptPredictor)
    assert MARKER not in _output(capfd)[0]  # loading alone does not run forward
    detector.predict([torch.zeros(3, 40, 50, dtype=torch.uint8)])
    assert MARKER in _output(capfd)[0]
    if suffix == ".torchscript":  # and `ssd detect` runs it the same way
        out_dir = tmp_path / "out"
        argv = ["detect", "--weights", str(named), str(picture), "--out", str(out_dir), "--threads", "1"]
        assert main(argv) == 0
        assert MARKER in _output(capfd)[0]


def test_a_torchscript_name_on_another_file_is_refused_in_one_line(checkpoint, tiny_model, tmp_path, capfd):
    weights = tmp_path / "weights.torchscript"
    shutil.copy(checkpoint, weights)
    with pytest.raises(
        UserError, match=r"weights\.torchscript: a PyTorch weights file .*name it weights\.pt$"
    ):
        ssd.load(weights)
    noise = tmp_path / "noise.ts"
    noise.write_bytes(bytes(range(256)) * 4)
    argv = ["detect", "--weights", str(noise), str(tmp_path), "--out", str(tmp_path / "o"), "--threads", "1"]
    assert main(argv) == 2
    out, err = _output(capfd)
    _assert_refused_in_one_line(err, out, str(noise), "not a TorchScript archive")
    # A TorchScript program without our metadata is not ours: refused before torch.jit.load sees it.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        printer = torch.jit.script(_Printer())
    foreign = _save_torchscript(printer, tmp_path / "f.ts", None, False)
    with pytest.raises(UserError, match=r"f\.ts: not a model exported by `ssd export`"):
        ssd.load(foreign)
    assert MARKER not in "".join(_output(capfd))


def test_an_exported_file_given_where_weights_are_needed_is_named(onnx_export, torchscript_export, capfd):
    for path, label in ((onnx_export, "ONNX"), (torchscript_export, "TorchScript")):
        with pytest.raises(UserError, match=f"named as an exported {label} model, not a weights file"):
            load_model(path)
    assert main(["export", "--weights", str(onnx_export), "--out", str(onnx_export.with_name("x.onnx"))]) == 2
    out, err = _output(capfd)
    _assert_refused_in_one_line(err, out, str(onnx_export), "named as an exported ONNX model")


def test_export_names_files_by_their_format(checkpoint, tiny_model, tmp_path, capfd):
    for name in ("model.pt", "model.pth", "model"):
        out = tmp_path / name
        assert (
            main(["export", "--weights", str(checkpoint), "--format", "torchscript", "--out", str(out)]) == 2
        )
        _, err = _output(capfd)
        assert "a TorchScript export must be named .torchscript or .ts" in err and str(out) in err
        assert "\n" not in err.strip() and not out.exists()
    with pytest.raises(UserError, match=r"model\.pt: an ONNX export must be named \.onnx"):
        export_model(tiny_model, tmp_path / "model.pt", "onnx", check=False)
    assert not (tmp_path / "model.pt").exists()


def test_every_format_reads_the_files_it_writes():
    for name, fmt in EXPORT_FORMATS.items():
        assert model_file_kind(f"best{fmt.suffix}") == name
    assert set(EXPORTED_SUFFIXES.values()) == set(EXPORT_FORMATS)
    assert model_file_kind("best.pt") == model_file_kind("best.pth") == model_file_kind("best") == "weights"
    assert model_file_kind("best.TS") == "torchscript" and model_file_kind("best.ONNX") == "onnx"
    with pytest.raises(UserError, match=r"best\.pt: not named as an exported model"):
        load_predictor("best.pt")


# 2. Checksums


def test_exports_carry_the_checksum_of_their_content_and_load_without_warning(
    onnx_export, torchscript_export
):
    import onnx

    model = onnx.load(str(onnx_export))
    entries = {entry.key: entry.value for entry in model.metadata_props}
    recorded, actual = onnx_checksum(onnx_export.read_bytes())
    assert entries[CHECKSUM_KEY] == recorded == actual and len(actual) == 64
    assert json.loads(entries[METADATA_KEY])["class_names"] == CLASS_NAMES
    recorded, actual, extras = torchscript_checksum(torchscript_export)
    assert recorded == actual and f"extra/{METADATA_KEY}.json" in extras
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning at all
        OnnxPredictor(onnx_export, threads=1)
        TorchScriptPredictor(torchscript_export)


def _overwrite_inside_a_weight(path: Path, out: Path) -> Path:
    """A copy of an ONNX file with 8 bytes in the middle of its largest weight tensor changed."""
    import onnx

    largest = max(onnx.load(str(path)).graph.initializer, key=lambda tensor: len(tensor.raw_data))
    data = bytearray(path.read_bytes())
    start = bytes(data).find(largest.raw_data)
    assert start > 0 and len(largest.raw_data) > 64
    middle = start + len(largest.raw_data) // 2
    data[middle : middle + 8] = bytes(255 - b for b in data[middle : middle + 8])
    out.write_bytes(bytes(data))
    return out


def test_a_damaged_onnx_file_is_refused_in_one_line(onnx_export, picture, dataset, tmp_path, capfd):
    damaged = _overwrite_inside_a_weight(onnx_export, tmp_path / "damaged.onnx")
    with pytest.raises(UserError, match=rf"damaged\.onnx: {DAMAGED}$"):
        ssd.load(damaged)
    for argv in (
        ["detect", "--weights", str(damaged), str(picture), "--out", str(tmp_path / "out"), "--threads", "1"],
        ["eval", "--weights", str(damaged), "--datapath", str(dataset), "--split", "test"],
        ["bench", "--weights", str(damaged), "--runs", "5"],
    ):
        assert main(argv) == 2
        out, err = _output(capfd)
        _assert_refused_in_one_line(err, out, str(damaged), DAMAGED)


def test_edited_metadata_is_refused_too(onnx_export, tmp_path):
    import onnx

    model = onnx.load(str(onnx_export))
    for entry in model.metadata_props:
        if entry.key == METADATA_KEY:
            metadata = json.loads(entry.value)
            metadata["class_names"] = ["cat", "dog", "fish", "bird", "cow"]
            entry.value = json.dumps(metadata)
    onnx.save(model, str(tmp_path / "edited.onnx"))
    with pytest.raises(UserError, match=DAMAGED):
        OnnxPredictor(tmp_path / "edited.onnx")


def test_an_edited_torchscript_file_is_refused_before_it_is_loaded(torchscript_export, tmp_path, capfd):
    edited = tmp_path / "edited.torchscript"
    with zipfile.ZipFile(torchscript_export) as source, zipfile.ZipFile(edited, "w") as target:
        for info in source.infolist():
            content = source.read(info)
            if info.filename.endswith(f"extra/{METADATA_KEY}.json"):
                content = content.replace(b'"circle"', b'"sphere"')
            target.writestr(info, content)
    with pytest.raises(UserError, match=rf"edited\.torchscript: {DAMAGED}$"):
        ssd.load(edited)


def test_an_export_from_before_checksums_loads_with_a_warning(
    onnx_export, torchscript_export, picture, tmp_path, capfd
):
    import onnx

    model = onnx.load(str(onnx_export))
    kept = [entry for entry in model.metadata_props if entry.key != CHECKSUM_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    old = tmp_path / "old.onnx"
    onnx.save(model, str(old))
    with pytest.warns(UnverifiedExportWarning, match=r"old\.onnx: exported without a checksum"):
        detector = ssd.load(old)
    assert len(detector.predict([torch.zeros(3, 30, 40, dtype=torch.uint8)])) == 1
    # On the command line: a `warning:` line, and the command does its work.
    argv = ["detect", "--weights", str(old), str(picture), "--out", str(tmp_path / "out"), "--threads", "1"]
    assert main(argv) == 0
    _, err = _output(capfd)
    assert "warning: " in err and "old.onnx: exported without a checksum" in err and "Traceback" not in err
    # The same for TorchScript: the checksum file left out.
    old_ts = tmp_path / "old.torchscript"
    with zipfile.ZipFile(torchscript_export) as source, zipfile.ZipFile(old_ts, "w") as target:
        for info in source.infolist():
            if not info.filename.endswith(f"extra/{CHECKSUM_KEY}"):
                target.writestr(info, source.read(info))
    with pytest.warns(UnverifiedExportWarning, match=r"old\.torchscript: exported without a checksum"):
        ssd.load(old_ts)


def test_an_onnx_file_of_other_bytes_is_one_line(tmp_path):
    for content in (b"", b"not onnx at all", b"\x08\x07\x12\xff\xff"):
        bogus = tmp_path / "bogus.onnx"
        bogus.write_bytes(content)
        with pytest.raises(UserError, match=r"bogus\.onnx: ") as error:
            ssd.load(bogus)
        assert "\n" not in str(error.value)


# 3. ssd.load, and every format through `ssd eval` and `ssd bench`


def test_import_ssd_stays_light_and_offers_load():
    code = (
        "import sys, ssd; assert 'load' in ssd.__all__ and 'load' in dir(ssd); print('torch' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(SRC)},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_ssd_load_gives_the_same_detector_for_every_format(
    tiny_model, checkpoint, onnx_export, torchscript_export
):
    pictures = [
        torch.randint(0, 256, (3, 48, 64), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
        for seed in (2, 3)
    ]
    expected = tiny_model.predict(pictures)
    for path in (checkpoint, onnx_export, torchscript_export):
        detector = ssd.load(path, device="cpu")
        assert torch.get_num_threads() == 1  # the caller's thread count is left alone
        assert detector.class_names == CLASS_NAMES and detector.input_size == (64, 64)
        assert detector.num_classes == 6
        results = detector.predict(pictures)
        assert len(results) == 2
        for ours, theirs in zip(expected, results, strict=True):
            assert set(theirs) == set(ours)
            assert theirs["result_boxes"].shape[1] == 4 and theirs["result_confs"].shape[1] == 6
            best = ours["result_scores"].argmax()
            assert (theirs["result_scores"].max() - ours["result_scores"][best]).abs() < 1e-4


def test_ssd_load_takes_a_torchvision_file_with_its_arch():
    path = shared_path(FIXTURES / "ssdlite320_mobilenet_v3_large.pt")
    with pytest.raises(UserError, match=r"say which architecture it is \(--arch\)"):
        ssd.load(path)
    detector = ssd.load(path, arch="mobilenetv3_ssd", device="cpu")
    assert detector.input_size == (320, 320) and detector.num_classes == 91
    (result,) = detector.predict([torch.zeros(3, 100, 120, dtype=torch.uint8)])
    assert {"result_boxes", "result_labels", "result_scores", "result_confs"} <= set(result)


def _write_detections_as_ground_truth(model, dataset: Path) -> None:
    """Make the synthetic COCO split's boxes the model's own best detections (two per picture), so the
    untrained model scores a high mAP, and any export that detects otherwise scores visibly lower."""
    annotation_file = dataset / "annotations" / "instances_test.json"
    coco = json.loads(annotation_file.read_text())
    annotations = []
    for image in coco["images"]:
        pixels = np.asarray(Image.open(dataset / "test" / image["file_name"]).convert("RGB")).copy()
        pixels = torch.from_numpy(pixels).permute(2, 0, 1)
        (detections,) = model.predict([pixels])
        for box, label in zip(detections["result_boxes"][:2], detections["result_labels"][:2], strict=True):
            x1, y1, x2, y2 = (float(v) for v in box)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image["id"],
                    "category_id": coco["categories"][int(label) - 1]["id"],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
    coco["annotations"] = annotations
    annotation_file.write_text(json.dumps(coco))


def test_ssd_eval_of_an_export_gives_its_checkpoints_figures(
    tiny_model, checkpoint, onnx_export, torchscript_export, folder, tmp_path, capsys
):
    data = tmp_path / "own"
    shutil.copytree(folder / "synthetic", data)
    _write_detections_as_ground_truth(tiny_model, data)
    metrics = {}
    for path in (checkpoint, onnx_export, torchscript_export):
        out = tmp_path / f"report_{path.suffix[1:]}"
        argv = ["eval", "--weights", str(path), "--datapath", str(data), "--split", "test", "--out", str(out)]
        assert main([*argv, "--workers", "0", "--worst", "0"]) == 0
        metrics[path.suffix] = json.loads((out / "metrics.json").read_text())
    capsys.readouterr()
    reference = metrics[".pt"]
    assert reference["coco"]["AP50"] > 0.5  # a figure worth comparing
    for suffix in (".onnx", ".torchscript"):
        assert metrics[suffix]["num_images"] == reference["num_images"] == 8
        assert metrics[suffix]["coco_stats"] == pytest.approx(reference["coco_stats"], abs=1e-3)
        assert metrics[suffix]["voc"]["mAP"] == pytest.approx(reference["voc"]["mAP"], abs=1e-3)
        assert metrics[suffix]["run"]["arch"] == "mobilenetv3_small_ssd"


def test_ssd_bench_runs_an_export_as_its_runtime(onnx_export, tmp_path, capfd):
    out = tmp_path / "bench.json"
    argv = ["bench", "--weights", str(onnx_export), "--runs", "5", "--threads", "1", "--json", str(out)]
    assert main(argv) == 0
    (result,) = json.loads(out.read_text())["results"]
    assert result["backend"] == "onnx" and result["graph"] == "network" and result["file"] == "tiny.onnx"
    assert result["batch1"]["p50_ms"] > 0 and result["split_batch1"]["postprocess_ms"] > 0
    assert result["network_gflop_per_picture"] > 0
    _output(capfd)
    assert main(["bench", "--weights", str(onnx_export), "--backend", "torch", "--runs", "5"]) == 2
    out_text, err = _output(capfd)
    _assert_refused_in_one_line(err, out_text, str(onnx_export), "runs with its own runtime (onnx)")
