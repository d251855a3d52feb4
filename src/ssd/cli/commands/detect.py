"""`ssd detect`: detections for pictures, folders and videos; annotated pictures, a JSON file, YOLO txt."""

from __future__ import annotations

import argparse

HELP = "detect objects in pictures, folders and videos; write annotated pictures and detections JSON"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="pictures, videos or folders (recursive)")
    parser.add_argument(
        "--weights",
        required=True,
        help="a checkpoint of ours, a torchvision SSD file (with --arch), or an exported .onnx / TorchScript",
    )
    parser.add_argument("--out", default="detections", help="output folder (default: detections)")
    parser.add_argument("--score", type=float, default=0.3, help="lowest score kept (default: 0.3)")
    parser.add_argument(
        "--classes",
        nargs="+",
        default=None,
        metavar="CLASS",
        help="keep only these classes (names or labels 1..K)",
    )
    parser.add_argument("--max-det", type=int, default=100, help="most detections per picture (default: 100)")
    parser.add_argument("--batch-size", type=int, default=8, help="pictures or frames per batch (default: 8)")
    parser.add_argument("--arch", default=None, help="architecture of a torchvision weights file")
    parser.add_argument(
        "--num-classes", type=int, default=None, help="classes of a torchvision file (with background)"
    )
    parser.add_argument(
        "--class-names",
        default=None,
        metavar="A,B,...",
        help="names of labels 1..K, comma-separated, when the file has none",
    )
    parser.add_argument("--yolo", action="store_true", help="also write YOLO txt files (labels/...)")
    parser.add_argument(
        "--no-pictures", action="store_true", help="write only the detections, no annotated pictures"
    )
    parser.add_argument(
        "--device", default="auto", help="auto (the GPU if torch sees one), cpu, cuda or cuda:N"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads (default: one per CPU not busy with other work)",
    )


def run(args: argparse.Namespace) -> int:
    from ssd.cli.detect_files import DetectionRun, load_detector
    from ssd.device import choose_device
    from ssd.errors import UserError

    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.max_det < 1:
        raise UserError(f"--max-det must be at least 1, got {args.max_det}")
    if not 0.0 <= args.score <= 1.0:
        raise UserError(f"--score must be between 0 and 1, got {args.score}")
    class_names = [n.strip() for n in args.class_names.split(",")] if args.class_names else None
    detector = load_detector(
        args.weights,
        arch=args.arch,
        num_classes=args.num_classes,
        class_names=class_names,
        threads=args.threads,
        device=choose_device(args.device),
    )
    detection_run = DetectionRun(
        detector,
        out_dir=args.out,
        score_threshold=args.score,
        classes=args.classes,
        max_detections=args.max_det,
        batch_size=args.batch_size,
        write_pictures=not args.no_pictures,
        write_yolo=args.yolo,
    )
    summary = detection_run.run(args.inputs)
    print(summary.describe())
    return 0 if summary.processed else 1
