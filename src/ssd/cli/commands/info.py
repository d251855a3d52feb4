"""`ssd info`: the architectures, or one model's summary (parameters, default boxes, maps, FLOPs)."""

import argparse

HELP = "list architectures, or summarise one (parameters, default boxes, feature maps, FLOPs)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", help="summarise this architecture (default: list them all)")
    parser.add_argument(
        "--num-classes", type=int, default=91, help="classes including the background (default 91)"
    )
    parser.add_argument("--input-size", type=int, help="another input size (the default boxes follow)")
    parser.add_argument("--weights", help="summarise the model in this checkpoint instead")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    import json

    import ssd
    from ssd.models.registry import get_architecture
    from ssd.models.summary import format_summary

    if args.weights:
        from ssd.models.checkpoint import load_model

        model = load_model(args.weights, arch=args.arch)
    elif args.arch:
        overrides = {"input_size": args.input_size} if args.input_size else {}
        model = ssd.build_model(args.arch, num_classes=args.num_classes, **overrides)
    else:
        for name in ssd.available_architectures():
            print(f"{name:24s} {get_architecture(name).description}")
        return 0
    summary = model.summary()
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0
