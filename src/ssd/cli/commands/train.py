"""`ssd train`: train a detector on a dataset; with no arguments, mobilenetv3_ssd on the synthetic shapes."""

from __future__ import annotations

import argparse

HELP = "train a detector (no arguments: mobilenetv3_ssd on built-in synthetic data, a few minutes on a CPU)"


def _flag(parser, name: str, kind=str, help: str = "", **extra) -> None:
    # Every default is None: only what a user types overrides the YAML file and the recipe (see options.py).
    parser.add_argument(name, type=kind, default=None, help=help, **extra)


def _switch(parser, name: str, help: str) -> None:
    parser.add_argument(name, action=argparse.BooleanOptionalAction, default=None, help=help)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("model and data")
    _flag(data, "--arch", help="architecture (default: mobilenetv3_ssd; see `ssd info`)")
    _flag(data, "--datapath", help="dataset folder (COCO, VOC, YOLO), a COCO JSON, or 'synthetic' (default)")
    _flag(
        data,
        "--train-split",
        help="split to train on, matched by meaning: train finds train2017 (default: the training split)",
    )
    _flag(
        data,
        "--val-split",
        help="split evaluated after each epoch (default: the validation split, else test; 'none': off)",
    )
    _flag(
        data,
        "--val-fraction",
        float,
        "of a dataset without splits, the part held out for validation, a fixed choice (default: 0.1)",
    )
    _flag(data, "--image-root", help="where a COCO JSON's pictures are, when not beside it or in images/")
    _flag(
        data,
        "--max-pixels",
        int,
        "pictures larger than this are refused as decompression bombs (default: 89478485, PIL's)",
    )
    _flag(data, "--num-classes", int, "classes INCLUDING the background (default: the dataset's count + 1)")
    _flag(data, "--input-size", int, "square input size in pixels (default: the architecture's)")
    _flag(
        data,
        "--anchor-scales",
        help="default-box scales: 'auto' (default, synthetic: 'default'; the first map's fitted to the training boxes), 'default' (the architecture's) or 's1,...,s(m+1)'",
    )
    _flag(
        data,
        "--augment",
        help="augmentation preset: ssd, ssdlite, ssdlite_zoom or none (default: the architecture's recipe: for "
        "mobilenetv3_ssd ssdlite, and ssdlite_zoom from 40 epochs on; ssdlite for mobilenetv3_small_ssd; else ssd)",
    )
    _flag(data, "--synthetic-train", int, "pictures in the synthetic train split")
    _flag(data, "--synthetic-val", int, "pictures in the synthetic val split")
    _flag(data, "--synthetic-image-size", int, "side of the synthetic pictures")
    data.add_argument(
        "--strict-data",
        "--strict",
        dest="strict_data",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="refuse the data, listing every problem, before training instead of skipping bad files",
    )

    schedule = parser.add_argument_group("optimisation")
    _flag(schedule, "--epochs", int, "epochs (default: 80; synthetic: 10)")
    _flag(schedule, "--batch-size", int, "pictures per step and process (default: 16)")
    _flag(
        schedule,
        "--lr",
        float,
        "learning rate for --lr-batch pictures (default: 0.003; AdamW works from about 1e-4 to 0.01, SGD from 1e-3 to 0.1)",
    )
    _flag(
        schedule,
        "--lr-batch",
        int,
        "global batch the lr is meant for; scaled linearly (default: --batch-size)",
    )
    _flag(schedule, "--optimizer", help="adamw (default) or sgd (with momentum)")
    _flag(schedule, "--momentum", float, "SGD momentum / AdamW beta1 (default: 0.9)")
    _flag(schedule, "--weight-decay", float, "never on BatchNorm or biases (default: 4e-5; synthetic: 5e-4)")
    _flag(schedule, "--scheduler", help="cosine (default) or multistep, after the warm-up")
    _flag(
        schedule,
        "--milestones",
        help="multistep epochs, or fractions of the run, comma-separated (default: 0.67,0.89)",
    )
    _flag(schedule, "--gamma", float, "multistep factor (default: 0.1)")
    _flag(
        schedule,
        "--warmup-epochs",
        float,
        "linear warm-up length in epochs, may be fractional (default: 2; synthetic: 0.5)",
    )
    _flag(schedule, "--warmup-factor", float, "lr multiplier at the first step (default: 0.001)")
    _flag(schedule, "--min-lr-ratio", float, "cosine ends at lr times this (default: 0.01; synthetic: 0)")
    _flag(schedule, "--clip-grad", float, "max gradient norm, 0: off (default: 10)")
    _switch(
        schedule,
        "--ema",
        "keep an exponential moving average of the weights; evaluate and ship it (default: on; synthetic: off)",
    )
    _flag(schedule, "--ema-decay", float, "EMA decay (default: 0.9998)")
    _flag(
        schedule,
        "--precise-bn",
        int,
        "training batches that recompute BatchNorm statistics before each evaluation (default: 0; synthetic: 8)",
    )

    loss = parser.add_argument_group("loss")
    _flag(
        loss,
        "--matcher",
        help="atss (default: an IoU threshold per object, from the default boxes near it), iou (SSD's: 0.5 for "
        "every object) or hungarian (one default box per object)",
    )
    _flag(
        loss,
        "--iou-threshold",
        float,
        "with --matcher iou: IoU from which a default box matches an object (default: 0.5)",
    )
    _flag(loss, "--loc-loss", help="smooth_l1 (default), l1 or giou")
    _flag(
        loss,
        "--cls-loss",
        help="ce (SSD's cross-entropy with hard negative mining), quality (a positive's target probability is "
        "the IoU of its box) or focal (RetinaNet's focal loss on every default box, no mining); default: ce",
    )
    _flag(loss, "--loc-weight", float, "weight of the localisation loss (default: 1)")
    _flag(loss, "--neg-pos-ratio", float, "hard negatives per positive (default: 3)")

    tune = parser.add_argument_group("fine-tuning and resuming")
    _flag(
        tune,
        "--weights",
        help="start from our checkpoint, a torchvision SSD checkpoint, an ImageNet backbone file, or a "
        "pretrained name, downloaded once (ssd weights list)",
    )
    _flag(tune, "--freeze-backbone", int, "epochs during which the backbone does not learn (default: 0)")
    _flag(tune, "--resume", help="continue a run from its checkpoint (runs/<name>/last.pt or the run folder)")

    machine = parser.add_argument_group("machine and outputs")
    _flag(machine, "--device", help="auto (default: CUDA when present), cpu, cuda, cuda:N or mps")
    _switch(
        machine,
        "--amp",
        "mixed precision: fp16 on CUDA, bf16 on a CPU with AVX512-BF16 or AMX (default: on for CUDA only)",
    )
    _switch(
        machine,
        "--channels-last",
        "channels-last memory format (default: on for CUDA, and on a CPU for mobilenetv3_ssd)",
    )
    _switch(machine, "--sync-bn", "BatchNorm statistics over all processes under torchrun")
    _flag(machine, "--workers", int, "data-loading processes (default: 0 on a CPU, up to 8 on a GPU)")
    _flag(machine, "--seed", int, "random seed (default: 0)")
    _flag(machine, "--eval-every", int, "evaluate every N epochs (and after the last; default: 1)")
    _flag(
        machine,
        "--patience",
        int,
        "stop when validation mAP has not improved for N evaluations; best.pt stays (default: 0, never)",
    )
    _flag(machine, "--eval-batch-size", int, "pictures per evaluation forward pass (default: 8)")
    _flag(machine, "--max-bad-steps", int, "non-finite losses in a row before stopping (default: 5)")
    _flag(
        machine,
        "--val-pictures",
        int,
        "validation pictures drawn with predictions per evaluation (default: 4)",
    )
    _switch(machine, "--tensorboard", "TensorBoard logs (default: when tensorboard is installed)")
    _flag(machine, "--project", help="folder of runs (default: runs)")
    _flag(machine, "--name", help="run name: outputs go to <project>/<name>/ (default: <arch>_<dataset>)")
    _flag(machine, "--save", help="also write the final checkpoint here")
    _flag(machine, "--save-period", int, "also keep <run>/epoch_NNN.pt every N epochs (default: none)")
    _flag(machine, "--config", help="YAML file of options (keys as the flags); flags typed here win")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    import sys

    from ssd.training.options import TrainOptions, resolve_options
    from ssd.training.trainer import Trainer

    given = {
        k: v
        for k, v in vars(args).items()
        if not k.startswith("_") and k not in ("command", "config", "quiet")
    }
    if args.resume is not None:
        if args.config is not None:
            from ssd.errors import UserError

            raise UserError(
                "--resume continues a run with the options it was started with; --config cannot change them"
            )
        # A resumed run keeps its stored options; the trainer checks which of these few may change.
        changes = {k: v for k, v in given.items() if v is not None and k != "resume"}
        trainer = Trainer(
            TrainOptions(resume=args.resume), list(sys.argv), progress=not args.quiet, resume_changes=changes
        )
    else:
        trainer = Trainer(resolve_options(given, args.config), list(sys.argv), progress=not args.quiet)
    try:
        trainer.fit()
    except OSError as error:  # a plot or a log the disk refused (a checkpoint says so itself)
        if error.filename is None:
            raise
        from ssd.errors import UserError

        raise UserError(f"{error.filename}: {error.strerror or error}") from None
    return 0
