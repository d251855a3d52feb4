"""`ssd export`: ONNX, TorchScript or OpenVINO IR, network alone or with post-processing, checked against
PyTorch; bf16 OpenVINO (`--precision bf16`); and INT8 ONNX or OpenVINO (`--int8`), calibrated on a dataset
and checked by its mAP (`ssd.deploy.quantize`)."""

from __future__ import annotations

import argparse

from ssd.cli.arguments import add_model_file_arguments, beside_weights, class_names_from, output_file

HELP = (
    "export to ONNX, TorchScript or OpenVINO (optionally with NMS in the graph); the file is checked against "
    "PyTorch"
)

# The names of `ssd.deploy.formats.EXPORT_FORMATS`, written out because importing that table imports torch,
# and `ssd export --help` must not wait for torch; tests/test_cli_manners.py checks the two agree.
FORMATS = ("onnx", "torchscript", "openvino")
PRECISIONS = ("fp32", "bf16")
DEFAULT_FORMAT = "onnx"
# `ssd.deploy.quantize`'s defaults, written out for the same reason (tests/test_export_int8.py checks them).
DEFAULT_CALIBRATION_PICTURES = 64
DEFAULT_MAX_MAP_DROP = 0.01
INT8_OPTIONS = ("--calibration", "--calibration-pictures", "--max-map-drop")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_file_arguments(
        parser, "a checkpoint of ours or a torchvision SSD file (with --arch)", class_names=True
    )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default=DEFAULT_FORMAT,
        help="onnx (onnxruntime), torchscript, or openvino (an IR: .xml with its .bin; extra [openvino])",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="what the file runs in: fp32, or bf16 for --format openvino on a CPU with AVX512-BF16 or AMX "
        "(checked: 95%% of fp32's top 100 detections at IoU >= 0.9)",
    )
    parser.add_argument(
        "--with-postprocess",
        action="store_true",
        help="put decoding, top-k and NMS in the graph (outputs: boxes, scores, labels, confs, num_detections)",
    )
    parser.add_argument("--dynamic-batch", action="store_true", help="any batch size (default: batch of 1)")
    parser.add_argument(
        "--out",
        default=None,
        help="output file, or a folder for the default name (default: beside the weights file, its name "
        "with the format's ending)",
    )
    parser.add_argument(
        "--check-pictures",
        nargs="+",
        default=None,
        metavar="PICTURE",
        help="pictures for the final check (default: random ones)",
    )
    int8 = parser.add_argument_group(
        "INT8 (ONNX or OpenVINO; onnxruntime's post-training static quantization)"
    )
    int8.add_argument(
        "--int8",
        action="store_true",
        help="quantize the export to INT8 (convolutions and matrix products; the rest, NMS included, "
        "stays float), calibrated on --calibration, then check its mAP against fp32's",
    )
    int8.add_argument(
        "--calibration",
        default=None,
        metavar="DATAPATH",
        help="dataset (any layout ssd reads) whose training split calibrates --int8 and whose validation "
        "split checks it",
    )
    int8.add_argument(
        "--calibration-pictures",
        type=int,
        default=None,
        metavar="N",
        help=f"pictures of the training split to calibrate on (default: {DEFAULT_CALIBRATION_PICTURES})",
    )
    int8.add_argument(
        "--max-map-drop",
        type=float,
        default=None,
        metavar="D",
        help="fail, writing nothing, when INT8 mAP@[.5:.95] is below fp32's by more than this "
        f"(default: {DEFAULT_MAX_MAP_DROP})",
    )


def _check_int8_options(args: argparse.Namespace) -> None:
    """One line for an INT8 option that cannot work, before anything is loaded; fills in the defaults."""
    from ssd.errors import UserError

    given = [flag for flag in INT8_OPTIONS if getattr(args, flag[2:].replace("-", "_")) is not None]
    if not args.int8:
        if given:
            raise UserError(f"{given[0]} is for INT8 exports: add --int8 (with --calibration DATAPATH)")
        return
    if args.format not in ("onnx", "openvino"):
        raise UserError(
            f"--int8 quantizes ONNX graphs with onnxruntime; it does not apply to --format {args.format} "
            "(use --format onnx or openvino)"
        )
    if args.precision != "fp32":
        raise UserError("--int8 and --precision bf16 are two precisions: choose one")
    if args.calibration is None:
        raise UserError(
            "--int8 needs --calibration DATAPATH: the dataset whose pictures calibrate and check it"
        )
    if args.calibration_pictures is None:
        args.calibration_pictures = DEFAULT_CALIBRATION_PICTURES
    if args.max_map_drop is None:
        args.max_map_drop = DEFAULT_MAX_MAP_DROP

    from ssd.deploy.quantize import check_int8_settings, require_quantization_packages

    check_int8_settings(args.calibration_pictures, args.max_map_drop)
    require_quantization_packages()


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ssd.data.pictures import read_picture
    from ssd.deploy.export import export_model
    from ssd.deploy.formats import EXPORT_FORMATS
    from ssd.models.checkpoint import load_model

    _check_int8_options(args)
    class_names = class_names_from(args.class_names)
    model = load_model(args.weights, arch=args.arch, num_classes=args.num_classes, class_names=class_names)
    export_format = EXPORT_FORMATS[args.format]
    ending = (
        ("_post" if args.with_postprocess else "")
        + ("_int8" if args.int8 else "")
        + ("_bf16" if args.precision == "bf16" else "")  # beside the fp32 file, not over it
        + export_format.suffix
    )
    name = Path(args.weights).stem + ending
    out = output_file(args.out, name) if args.out else beside_weights(args.weights, name)
    pictures = [read_picture(Path(p)) for p in args.check_pictures] if args.check_pictures else None
    if args.int8:
        return _export_int8(args, model, out, pictures)
    report = export_model(
        model,
        out,
        args.format,
        with_postprocess=args.with_postprocess,
        dynamic_batch=args.dynamic_batch,
        pictures=pictures,
        precision=args.precision,
    )
    graph = "network and post-processing" if report.with_postprocess else "network only"
    batch = "any batch size" if report.dynamic_batch or export_format.any_batch_size else "batch of 1"
    print(f"wrote {out} ({report.format}, {report.precision}, {graph}, {batch})")
    for line in report.checks:
        print(f"  check: {line}")
    return 0


def _export_int8(args: argparse.Namespace, model, out, pictures) -> int:
    from ssd.deploy.quantize import export_int8
    from ssd.models.weights.resolve import weights_and_arch

    weights, _ = weights_and_arch(args.weights, args.arch)  # a pretrained name: its cached file
    report = export_int8(
        model,
        out,
        args.calibration,
        weights=weights,
        calibration_pictures=args.calibration_pictures,
        max_map_drop=args.max_map_drop,
        with_postprocess=args.with_postprocess,
        dynamic_batch=args.dynamic_batch,
        check_pictures=pictures,
        say=lambda line: print(line, flush=True),
        format=args.format,
    )
    graph = "network and post-processing" if report.with_postprocess else "network only"
    batch = "any batch size" if report.dynamic_batch else "batch of 1"
    print(f"wrote {out} ({args.format}, int8, {graph}, {batch})")
    for line in report.fp32_checks:
        print(f"  fp32 check: {line}")
    for line in report.notes:
        print(f"  note: {line}")
    print(f"  int8 check: {report.describe_check()}")
    return 0
