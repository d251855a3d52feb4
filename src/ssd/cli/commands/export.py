"""`ssd export`: ONNX or TorchScript, network alone or with post-processing, checked against PyTorch."""

from __future__ import annotations

import argparse

from ssd.cli.arguments import add_model_file_arguments, class_names_from

HELP = "export to ONNX or TorchScript (optionally with NMS in the graph); the file is checked against PyTorch"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_file_arguments(
        parser, "a checkpoint of ours or a torchvision SSD file (with --arch)", class_names=True
    )
    # The choices come from the table of export formats (imported here: see `ssd.cli.main` on start-up).
    from ssd.deploy.formats import DEFAULT_FORMAT, EXPORT_FORMATS

    parser.add_argument("--format", choices=tuple(EXPORT_FORMATS), default=DEFAULT_FORMAT)
    parser.add_argument(
        "--with-postprocess",
        action="store_true",
        help="put decoding, top-k and NMS in the graph (outputs: boxes, scores, labels, confs, num_detections)",
    )
    parser.add_argument("--dynamic-batch", action="store_true", help="any batch size (default: batch of 1)")
    parser.add_argument(
        "--out",
        default=None,
        help="output file (default: the weights' name with the format's ending, in the current folder)",
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

    weights = Path(args.weights)
    class_names = class_names_from(args.class_names)
    model = load_model(weights, arch=args.arch, num_classes=args.num_classes, class_names=class_names)
    export_format = EXPORT_FORMATS[args.format]
    suffix = export_format.suffix
    out = (
        Path(args.out)
        if args.out
        else Path(weights.stem + ("_post" if args.with_postprocess else "") + suffix)
    )
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
