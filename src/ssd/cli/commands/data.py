"""`ssd data`: look at a dataset before training on it.

ssd data check PATH [--split S] [--strict]     what it holds and every problem in it
ssd data show PATH [--preset ssd] [--out grid.png]   a grid of augmented pictures with their boxes
ssd data synthetic OUT [--train N] [--val N] [--test N]   write the built-in synthetic data as COCO
ssd data convert SRC --to coco|voc|yolo OUT [--split S]   write a dataset in another format
"""

from __future__ import annotations

import argparse

from ssd.cli.arguments import add_dataset_arguments, output_file

HELP = "check a dataset, show its augmentation, convert it to another format, or write the synthetic data"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    check = sub.add_parser("check", help="what a dataset holds and every problem in it")
    check.add_argument("path", help="dataset folder (COCO, VOC, YOLO), COCO JSON, or 'synthetic'")
    check.add_argument("--split", action="append", help="split to check (repeatable; default: every split)")
    check.add_argument("--strict", action="store_true", help="exit with status 1 when any problem is found")
    add_dataset_arguments(check)

    show = sub.add_parser("show", help="write a grid of augmented pictures with their boxes to a PNG")
    show.add_argument("path", help="dataset folder (COCO, VOC, YOLO), COCO JSON, or 'synthetic'")
    show.add_argument("--split", default="train", help="matched by meaning: train finds train2017")
    add_dataset_arguments(show)
    show.add_argument(
        "--preset", default="ssd", help="augmentation preset: ssd, ssdlite, ssdlite_zoom or none"
    )
    show.add_argument("--size", type=int, default=300, help="side of the augmented pictures, pixels")
    show.add_argument("--pictures", type=int, default=4, help="rows: how many pictures")
    show.add_argument("--columns", type=int, default=5, help="the stored picture, then columns-1 draws")
    show.add_argument("--seed", type=int, default=0)
    show.add_argument(
        "--out", default="augmentation.png", help="picture to write, or a folder for augmentation.png in it"
    )

    synthetic = sub.add_parser("synthetic", help="write the built-in synthetic dataset as COCO")
    synthetic.add_argument("out", help="folder to write (annotations/, train/, val/, test/)")
    synthetic.add_argument("--train", type=int, default=1000)
    synthetic.add_argument("--val", type=int, default=200)
    synthetic.add_argument("--test", type=int, default=200)
    synthetic.add_argument("--seed", type=int, default=0)

    convert = sub.add_parser("convert", help="write a dataset as COCO, VOC or YOLO (pictures are copied)")
    convert.add_argument("src", help="dataset folder (COCO, VOC, YOLO) or COCO JSON")
    # Checked by the conversion rather than argparse, so a wrong name is the usual one-line error.
    convert.add_argument("--to", required=True, metavar="coco|voc|yolo", help="format to write")
    convert.add_argument("out", help="folder to write; must be new or empty")
    convert.add_argument(
        "--split", action="append", help="split to convert (repeatable; default: every split)"
    )


def run(args: argparse.Namespace) -> int:
    actions = {"check": _check, "show": _show, "synthetic": _synthetic, "convert": _convert}
    return actions[args.data_command](args)


def _check(args: argparse.Namespace) -> int:
    from ssd.data import available_splits, detect_format, is_automatically_split
    from ssd.data.checks import check_split, format_report
    from ssd.data.splits import AUTOMATIC_SPLITS, VAL_FRACTION, WHOLE

    fmt, root = detect_format(args.path)
    if args.split:
        splits = args.split
        print(f"{root}: {fmt} dataset, splits {', '.join(splits)}")
    elif is_automatically_split(args.path):
        # Each picture is checked once; training divides them into train and val itself.
        splits = [WHOLE]
        print(
            f"{root}: {fmt} dataset without splits of its own; training divides it into "
            f"{' and '.join(AUTOMATIC_SPLITS)} ({VAL_FRACTION:g} for validation unless `ssd train --val-fraction` says otherwise)"
        )
    else:
        splits = available_splits(args.path)
        print(f"{root}: {fmt} dataset, splits {', '.join(splits)}")
    problems = 0
    for split in splits:
        report = check_split(args.path, split, image_root=args.image_root, max_pixels=args.max_pixels)
        problems += len(report.problems)
        print()
        print(format_report(report))
    if problems and args.strict:
        print(f"\n{problems} problem(s) found; --strict fails the check")
        return 1
    return 0


def _show(args: argparse.Namespace) -> int:
    import warnings

    from ssd.cli.data_show import augmentation_grid, save_grid
    from ssd.data import build_dataset, build_transforms
    from ssd.errors import UserError

    if args.pictures < 1 or args.columns < 1 or args.size < 8:
        raise UserError("--pictures and --columns must be at least 1, --size at least 8")
    out = output_file(args.out, "augmentation.png")
    if out.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"):
        raise UserError(f"--out {args.out}: give a picture file name, such as grid.png")
    transform = build_transforms(args.preset, args.size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # `ssd data check` is where problems are reported
        dataset = build_dataset(args.path, args.split, image_root=args.image_root, max_pixels=args.max_pixels)
    grid = augmentation_grid(dataset, transform, args.size, args.pictures, args.columns, args.seed)
    out = save_grid(grid, out)
    print(
        f"wrote {out}: {args.pictures} pictures of {dataset.source}, preset '{args.preset}', "
        f"{args.columns - 1} draws each after the stored picture"
    )
    return 0


def _synthetic(args: argparse.Namespace) -> int:
    from ssd.data import write_synthetic_coco

    sizes = {
        split: n for split, n in (("train", args.train), ("val", args.val), ("test", args.test)) if n > 0
    }
    written = write_synthetic_coco(args.out, sizes, seed=args.seed)
    for split, json_path in written.items():
        print(f"{split}: {sizes[split]} pictures, {json_path}")
    return 0


def _convert(args: argparse.Namespace) -> int:
    import warnings

    from ssd.data import convert_dataset

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # problems in the source are counted in each split's line instead
        written = convert_dataset(args.src, args.to, args.out, args.split)
    for report in written:
        print(report.line())
    print(f"wrote {args.out}: {args.to} dataset converted from {args.src}")
    return 0
