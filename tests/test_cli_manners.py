"""The command line's manners (issue #15): --version, a start-up without torch, one line for a missing
optional package, the architecture read from the checkpoint, outputs beside their input, "did you mean",
a folder named as a folder, and bad weights files named for what they are, never by an internal exception."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import torch

import ssd
from ssd.cli.main import main
from ssd.errors import MissingExtraError, UserError, did_you_mean, require_extra
from ssd.models.checkpoint import load_model, model_checkpoint, save_checkpoint

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A small checkpoint of ours (mobilenetv3_small_ssd at 64 pixels, 2 classes), in a folder of its own."""
    model = ssd.build_model("mobilenetv3_small_ssd", num_classes=3, class_names=["a", "b"], input_size=64)
    return save_checkpoint(tmp_path_factory.mktemp("run") / "best.pt", model_checkpoint(model))


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


# 1. --version


def test_version_flag_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"ssd {ssd.__version__}\n"


# 2. start-up without torch


def _run_python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, timeout=120
    )


def test_help_of_every_command_imports_no_torch():
    result = _run_python(
        """
        import contextlib, io, sys, time
        start = time.perf_counter()
        from ssd.cli.main import COMMANDS, main
        for argv in [["--help"]] + [[name, "--help"] for name in COMMANDS]:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
                main(argv)
        assert "torch" not in sys.modules, "torch was imported"
        print(time.perf_counter() - start)
        """
    )
    assert result.returncode == 0, result.stderr
    # Measured: about 0.03 s for all of them; torch alone takes 2 s here. The bound only guards against
    # something heavy creeping back into start-up, with room for a busy shared machine.
    assert float(result.stdout) < 1.0


def test_public_names_are_lazy_but_work():
    result = _run_python(
        """
        import sys
        import ssd
        assert "torch" not in sys.modules
        assert {"build_model", "SSDConfig", "MultiBoxLoss"} <= set(dir(ssd))
        model = ssd.build_model("mobilenetv3_small_ssd", num_classes=3, input_size=64)
        print(type(model).__name__, ssd.available_architectures()[0])
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["SSD", "mobilenetv3_small_ssd"]
    assert set(ssd.__all__) <= set(dir(ssd))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        ssd.nothing  # noqa: B018


# 3. a missing optional package is one line naming the pip install


def test_require_extra_names_the_pip_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # makes `import onnx` fail as if it were not installed
    with pytest.raises(MissingExtraError) as error:
        require_extra("onnx", "onnx", "exporting to ONNX")
    assert str(error.value) == (
        'exporting to ONNX needs onnx, which is not installed: pip install onnx onnxruntime (the "onnx" '
        "extra of ssd)"
    )
    assert require_extra("json", "onnx", "anything").dumps([]) == "[]"


@pytest.mark.parametrize("missing", ["onnx", "onnxruntime"])
def test_export_without_onnx_is_one_line_and_writes_nothing(
    monkeypatch, capsys, tmp_path, checkpoint, missing
):
    monkeypatch.setitem(sys.modules, missing, None)
    out = tmp_path / "model.onnx"
    assert main(["export", "--weights", str(checkpoint), "--out", str(out)]) == 2
    assert f"needs {missing}, which is not installed: pip install onnx onnxruntime" in _error_line(capsys)
    assert not out.exists()


def test_bench_onnx_without_onnxruntime_is_one_line(monkeypatch, capsys, checkpoint):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert main(["bench", "--weights", str(checkpoint), "--backend", "onnx", "--runs", "5"]) == 2
    assert "pip install onnx onnxruntime" in _error_line(capsys)


def test_video_without_opencv_names_the_package(monkeypatch, tmp_path):
    from ssd.cli.media import open_video

    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(
        MissingExtraError, match="reading videos needs cv2.*pip install opencv-python-headless"
    ):
        open_video(tmp_path / "clip.mp4")


def test_missing_coco_backend_fails_before_the_inference_pass(monkeypatch):
    from ssd.data import build_dataset
    from ssd.evaluation.evaluator import Evaluator

    monkeypatch.setitem(sys.modules, "faster_coco_eval", None)
    dataset = build_dataset("synthetic", "val")
    with pytest.raises(MissingExtraError, match="pip install faster-coco-eval"):
        Evaluator(dataset, coco_backend="faster-coco-eval")


def test_tensorboard_asked_for_but_missing_names_the_package(monkeypatch, tmp_path):
    from ssd.training.hooks.tensorboard import _tensorboard_writer

    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(MissingExtraError, match="--tensorboard needs tensorboard.*pip install tensorboard"):
        _tensorboard_writer(tmp_path, wanted=True)
    assert _tensorboard_writer(tmp_path, wanted=None) is None  # not asked for: the run goes on without


# 4. architecture and classes from the checkpoint


@pytest.fixture
def benchmarked(monkeypatch):
    """`ssd bench` with the timing replaced: the model it would measure."""
    import ssd.deploy.benchmark as benchmark

    seen = {}

    def fake_benchmark(model, picture, **options):
        seen["model"] = model
        return {}

    monkeypatch.setattr(benchmark, "benchmark_model", fake_benchmark)
    monkeypatch.setattr(benchmark, "format_results", lambda results, machine_info=None: "")
    monkeypatch.setattr(benchmark, "machine", lambda: {})
    return seen


def test_bench_reads_the_architecture_from_the_checkpoint(benchmarked, checkpoint):
    assert main(["bench", "--weights", str(checkpoint)]) == 0
    model = benchmarked["model"]
    assert (model.config.arch, model.num_classes, model.class_names) == (
        "mobilenetv3_small_ssd",
        3,
        ["a", "b"],
    )


def test_bench_refuses_another_architecture_and_needs_something(benchmarked, capsys, checkpoint):
    assert main(["bench", "--weights", str(checkpoint), "--arch", "mobilenetv3_ssd"]) == 2
    assert "holds a mobilenetv3_small_ssd model, not mobilenetv3_ssd" in _error_line(capsys)
    assert main(["bench"]) == 2
    assert "--arch" in _error_line(capsys)


@pytest.mark.parametrize("command", [["info"], ["export"], ["detect", "a.jpg"]])
def test_an_arch_contradicting_the_checkpoint_is_refused(capsys, checkpoint, command):
    assert main([*command, "--weights", str(checkpoint), "--arch", "vgg16_ssd300"]) == 2
    assert "holds a mobilenetv3_small_ssd model, not vgg16_ssd300" in _error_line(capsys)


def test_training_from_a_checkpoint_trains_its_architecture(checkpoint):
    from ssd.training.options import resolve_options

    assert resolve_options({"weights": str(checkpoint)}).arch == "mobilenetv3_small_ssd"
    # Asking for another one is kept (the trainer then refuses the checkpoint as not fitting).
    assert resolve_options({"weights": str(checkpoint), "arch": "vgg16_ssd300"}).arch == "vgg16_ssd300"


# 5. outputs beside their input


def test_export_writes_beside_the_weights_by_default(monkeypatch, tmp_path, checkpoint):
    import ssd.deploy.export as export

    written = []

    def fake_export(model, path, format, **options):
        written.append(Path(path))
        return export.ExportReport(Path(path), format, options["with_postprocess"], False)

    monkeypatch.setattr(export, "export_model", fake_export)
    monkeypatch.chdir(tmp_path)  # another folder than the checkpoint's
    assert (
        main(["export", "--weights", str(checkpoint), "--format", "torchscript", "--with-postprocess"]) == 0
    )
    assert written == [checkpoint.parent / "best_post.torchscript"]


def test_an_output_file_given_as_a_folder_gets_its_default_name_inside(benchmarked, capsys, tmp_path):
    assert main(["bench", "--arch", "mobilenetv3_small_ssd", "--json", str(tmp_path)]) == 0
    assert (tmp_path / "bench.json").is_file()
    assert main(["data", "show", "synthetic", "--out", str(tmp_path / "grid")]) == 2
    assert "give a picture file name" in _error_line(capsys)


def test_outputs_of_a_pretrained_name_go_to_the_current_folder(tmp_path, checkpoint):
    from ssd.cli.arguments import beside_weights

    assert beside_weights(checkpoint, "best_eval_val") == checkpoint.parent / "best_eval_val"
    # A name such as ssd300_vgg16 is downloaded into torch's cache: not a place for the user's outputs.
    assert beside_weights("ssd300_vgg16", "ssd300_vgg16.onnx") == Path("ssd300_vgg16.onnx")


def test_the_export_command_offers_every_export_format():
    from ssd.cli.commands import export
    from ssd.deploy.formats import DEFAULT_FORMAT, EXPORT_FORMATS

    assert set(export.FORMATS) == set(EXPORT_FORMATS) and export.DEFAULT_FORMAT == DEFAULT_FORMAT


# 6. did you mean


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["evl"], "invalid choice: 'evl'"),
        (["bench", "--backend", "onx"], "did you mean onnx?"),
        (["detect", "--weights", "w.pt", "--batchsize", "2", "a.jpg"], "did you mean --batch-size?"),
        (
            ["eval", "--batchsize", "2"],
            "--batchsize is not an option of ssd eval; did you mean --batch-size?",
        ),
        (["data", "check", "synthetic", "--strct"], "did you mean --strict?"),
        (["--versoin"], "did you mean --version?"),
    ],
)
def test_mistyped_names_get_a_suggestion(capsys, argv, expected):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert expected in capsys.readouterr().err


def test_an_abbreviated_option_still_works(benchmarked):
    assert main(["bench", "--arch", "mobilenetv3_small_ssd", "--num-cl", "3"]) == 0
    assert benchmarked["model"].num_classes == 3


def test_mistyped_architecture_gets_a_suggestion(capsys):
    assert main(["info", "--arch", "mobilenet_ssd"]) == 2
    assert "unknown architecture 'mobilenet_ssd'" in (line := _error_line(capsys))
    assert line.endswith("did you mean mobilenetv3_ssd or mobilenetv3_small_ssd?")
    assert did_you_mean("zzz", ["mobilenetv3_ssd"]) == ""


# 7. a folder where a file is expected


def test_a_folder_given_as_weights_is_named_as_a_folder(capsys, tmp_path):
    for argv in (["eval", "--datapath", "synthetic"], ["detect", "a.jpg"], ["export"], ["bench"], ["info"]):
        assert main([*argv, "--weights", f"{tmp_path}/"]) == 2
        assert _error_line(capsys).endswith(": is a folder, not a weights file"), argv
    with pytest.raises(UserError, match="is a folder, not a weights file"):
        load_model(tmp_path)
    assert main(["train", "--config", str(tmp_path)]) == 2
    assert _error_line(capsys).endswith(": is a folder, not a config file")


# 8. no internal exception text


def _zip_of_text(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a.txt", "hello")


BAD_FILES = {
    "numbers.pt": (lambda p: torch.save({101: 1}, p), "a PyTorch file, but not a weights file"),
    "random.pt": (lambda p: p.write_bytes(bytes(range(7, 256)) * 8), "not a file PyTorch wrote"),
    "archive.pt": (_zip_of_text, "a zip archive of other files"),
    "empty.pt": (lambda p: p.write_bytes(b""), "the file is empty"),
    "cut.pt": (lambda p: p.write_bytes(b"PK\x03\x04 cut short"), "damaged or truncated"),
    "object.pt": (lambda p: torch.save(torch.nn.Linear(2, 2), p), "could run code"),
    "partial.pt": (lambda p: torch.save({"format": "ssd-checkpoint"}, p), "without its arch, config"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_a_bad_weights_file_gets_one_line_naming_it(capsys, tmp_path, name):
    write, expected = BAD_FILES[name]
    write(tmp_path / name)
    assert main(["eval", "--weights", str(tmp_path / name), "--datapath", "synthetic"]) == 2
    line = _error_line(capsys)
    assert line.startswith(f"error: {tmp_path / name}: ") and expected in line
    assert "Error" not in line.removeprefix("error:"), line  # no KeyError, UnpicklingError, RuntimeError ...


def test_weights_that_do_not_fit_their_own_checkpoint_are_one_line(tmp_path, checkpoint):
    content = torch.load(checkpoint, weights_only=True)
    content["model"] = {"conv.weight": torch.zeros(1)}
    torch.save(content, tmp_path / "edited.pt")
    with pytest.raises(UserError, match=r"edited.pt: its weights do not fit the mobilenetv3_small_ssd model"):
        load_model(tmp_path / "edited.pt")


def test_outputs_of_weights_in_a_read_only_folder_go_to_the_current_folder(tmp_path, checkpoint):
    from ssd.cli.arguments import beside_weights

    shared = tmp_path / "shared_models"
    shared.mkdir()
    weights = shared / "best.pt"
    weights.write_bytes(checkpoint.read_bytes())
    shared.chmod(0o555)  # as a shared models folder is: even root's outputs stay out of it
    try:
        assert beside_weights(weights, "best.onnx") == Path("best.onnx")
    finally:
        shared.chmod(0o755)
