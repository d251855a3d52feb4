"""`ssd export`: ONNX or TorchScript, network alone or with post-processing, checked against PyTorch."""

from __future__ import annotations

import argparse

from ssd.cli.arguments import add_model_file_arguments, beside_weights, class_names_from, output_file

HELP = "export to ONNX or TorchScript (optionally with NMS in the graph); the file is checked against PyTorch"

# The names of `ssd.deploy.formats.EXPORT_FORMATS`, written out because importing that table imports torch,
# and `ssd export --help` must not wait for torch; tests/test_cli_manners.py checks the two agree.
FORMATS = ("onnx", "torchscript")
DEFAULT_FORMAT = "onnx"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_file_arguments(
        parser, "a checkpoint of ours or a torchvision SSD file (with --arch)", class_names=True
    )
    parser.add_argument("--format", choices=FORMATS, default=DEFAULT_FORMAT)
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


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ssd.data.pictures import read_picture
    from ssd.deploy.export import export_model
    from ssd.deploy.formats import EXPORT_FORMATS
    from ssd.models.checkpoint import load_model

    class_names = class_names_from(args.class_names)
    model = load_model(args.weights, arch=args.arch, num_classes=args.num_classes, class_names=class_names)
    export_format = EXPORT_FORMATS[args.format]
    name = Path(args.weights).stem + ("_post" if args.with_postprocess else "") + export_format.suffix
    out = output_file(args.out, name) if args.out else beside_weights(args.weights, name)
    pictures = [read_picture(Path(p)) for p in args.check_pictures] if args.check_pictures else None
    report = export_model(
        model,
        out,
        args.format,
        with_postprocess=args.with_postprocess,
        dynamic_batch=args.dynamic_batch,
        pictures=pictures,
    )
    graph = "network and post-processing" if report.with_postprocess else "network only"
    batch = "any batch size" if report.dynamic_batch or export_format.any_batch_size else "batch of 1"
    print(f"wrote {out} ({report.format}, {graph}, {batch})")
    for line in report.checks:
        print(f"  check: {line}")
    return 0
