"""`ssd eval`: COCO and VOC metrics of a model on a dataset split, with a report a person can read."""

from __future__ import annotations

import argparse

from ssd.cli.arguments import (
    add_dataset_arguments,
    add_device_argument,
    add_model_file_arguments,
    beside_weights,
    require_at_least,
)

HELP = "evaluate a model on a dataset split: COCO and VOC metrics, per-class table, PR curves, worst pictures"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_file_arguments(
        parser,
        "a training checkpoint, torchvision SSD weights (with --arch), an exported .onnx / .xml / .torchscript, or a "
        "pretrained name (ssd weights list)",
        class_names=False,
    )
    parser.add_argument("--datapath", required=True, help="the dataset's folder (COCO, VOC or YOLO layout)")
    parser.add_argument(
        "--split",
        help="split to evaluate, matched by meaning: val finds val2017 or valid (default: the split the "
        "checkpoint validated on, else the validation split, else test; of a dataset without splits, all of it)",
    )
    add_dataset_arguments(parser)
    parser.add_argument(
        "--out", help="folder for the report (default: <weights>_eval_<split>/, beside the weights file)"
    )
    parser.add_argument("--batch-size", type=int, default=8, help="pictures per forward pass (default: 8)")
    parser.add_argument("--workers", type=int, default=2, help="processes reading pictures (default: 2)")
    add_device_argument(parser)
    parser.add_argument(
        "--coco-backend",
        choices=("pycocotools", "faster-coco-eval"),
        default="pycocotools",
        help="library computing the COCO numbers; both give the same results (default: %(default)s)",
    )
    parser.add_argument(
        "--worst", type=int, default=16, help="pictures in the worst-pictures grid; 0 for none (default: 16)"
    )
    parser.add_argument(
        "--score-threshold",
        type=float,
        default=0.5,
        help="score from which a detection counts as kept, for the worst-pictures grid (default: 0.5)",
    )


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ssd.data import build_dataset
    from ssd.deploy.loading import load_detector
    from ssd.device import choose_device
    from ssd.errors import UserError
    from ssd.evaluation.evaluator import Evaluator
    from ssd.evaluation.report import format_table, write_report
    from ssd.evaluation.split_choice import split_to_evaluate
    from ssd.models.weights.resolve import weights_and_arch

    require_at_least("--batch-size", args.batch_size, 1)
    if args.workers < 0:
        raise UserError(f"--workers cannot be negative, got {args.workers}")
    device = choose_device(args.device)
    given_weights = args.weights  # the report goes beside this file (see `beside_weights`)
    args.weights, args.arch = weights_and_arch(args.weights, args.arch)  # a pretrained name: its cached file

    choice = split_to_evaluate(args.datapath, args.split, args.weights)
    print(f"evaluating split '{choice.split}' of {args.datapath}: {choice.reason}")
    # The split as the run built it (a synthetic one's size, say); flags given here win.
    built_with = dict(choice.dataset_options)
    built_with.update(
        {k: v for k, v in (("image_root", args.image_root), ("max_pixels", args.max_pixels)) if v is not None}
    )
    dataset = build_dataset(
        args.datapath,
        choice.split,
        val_fraction=choice.val_fraction,
        split_seed=choice.split_seed,
        **built_with,
    )
    # A torchvision file's class count is read from its classification head unless given; the evaluator
    # then says plainly if it does not fit the dataset. A checkpoint's `predict` runs its inference form, as
    # training's evaluation does, so the figures training logged are repeated; an exported file (.onnx, .xml,
    # .torchscript) runs as `ssd detect` runs it.
    model = load_detector(
        args.weights, arch=args.arch, num_classes=args.num_classes, device=device, prepare=False
    )
    if model.class_names is not None and list(model.class_names) != list(dataset.class_names):
        raise UserError(
            f"{args.weights} was trained on classes {list(model.class_names)}, but {args.datapath} has "
            f"{list(dataset.class_names)}"
        )

    evaluator = Evaluator(
        dataset, batch_size=args.batch_size, num_workers=args.workers, coco_backend=args.coco_backend
    )
    result = evaluator(model)
    print(format_table(result))

    default_out = beside_weights(given_weights, f"{Path(given_weights).stem}_eval_{choice.split}")
    out_dir = Path(args.out) if args.out else default_out
    run = {"weights": str(args.weights), "datapath": str(args.datapath), "split": choice.split}
    run["arch"] = model.config.arch
    written = write_report(result, out_dir, dataset, args.worst, args.score_threshold, run)
    print(f"\nreport written to {out_dir}/: metrics.json, detections_coco.json, pr_curves/", end="")
    print(", worst_pictures.png" if written.get("worst_pictures") else "")
    return 0
