"""`ssd detect`: detections for pictures, folders and videos; annotated pictures, a JSON file, YOLO txt."""

from __future__ import annotations

import argparse

from ssd.cli.arguments import (
    add_dataset_arguments,
    add_device_argument,
    add_model_file_arguments,
    add_threads_argument,
    class_names_from,
    require_at_least,
)

HELP = "detect objects in pictures, folders and videos; write annotated pictures and detections JSON"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="*", metavar="INPUT", help="pictures, videos or folders (recursive)")
    parser.add_argument("--datapath", help="a dataset: detect on the pictures of one of its splits")
    parser.add_argument(
        "--split",
        help="with --datapath: the split, matched by meaning (default: the split the checkpoint validated "
        "on, else the validation split, else test)",
    )
    add_model_file_arguments(
        parser,
        "a checkpoint of ours, a torchvision SSD file (with --arch), an exported .onnx / .xml / .torchscript, or a "
        "pretrained name (ssd weights list)",
        class_names=True,
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
    parser.add_argument("--yolo", action="store_true", help="also write YOLO txt files (labels/...)")
    parser.add_argument(
        "--no-pictures", action="store_true", help="write only the detections, no annotated pictures"
    )
    add_dataset_arguments(parser)
    add_device_argument(parser)
    add_threads_argument(parser)


def run(args: argparse.Namespace) -> int:
    from ssd.cli.detect_files import DetectionRun
    from ssd.deploy.loading import load_detector
    from ssd.device import choose_device
    from ssd.errors import UserError

    require_at_least("--batch-size", args.batch_size, 1)
    require_at_least("--max-det", args.max_det, 1)
    if not args.inputs and args.datapath is None:
        raise UserError("give the pictures, videos or folders to detect on, or a dataset with --datapath")
    if args.split is not None and args.datapath is None:
        raise UserError("--split chooses a split of the dataset given with --datapath")
    if not 0.0 <= args.score <= 1.0:
        raise UserError(f"--score must be between 0 and 1, got {args.score}")
    class_names = class_names_from(args.class_names)
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
        max_pixels=args.max_pixels,
    )
    inputs = list(args.inputs)
    if args.datapath is not None:
        inputs += _dataset_pictures(args)
    summary = detection_run.run(inputs)
    print(summary.describe())
    return 0 if summary.processed else 1


def _dataset_pictures(args: argparse.Namespace) -> list[str]:
    """The pictures of the split of `--datapath` chosen as `ssd eval` chooses it."""
    import warnings

    from ssd.data import build_dataset
    from ssd.evaluation.split_choice import split_to_evaluate

    choice = split_to_evaluate(args.datapath, args.split, args.weights)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # `ssd data check` is where a dataset's problems are listed
        dataset = build_dataset(
            args.datapath,
            choice.split,
            val_fraction=choice.val_fraction,
            split_seed=choice.split_seed,
            image_root=args.image_root,
            max_pixels=args.max_pixels,
            verify="exists",
        )
    print(
        f"detecting on split '{choice.split}' of {args.datapath} ({len(dataset)} pictures): {choice.reason}"
    )
    return [str(record.path) for record in dataset.records]
