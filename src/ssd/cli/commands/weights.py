"""`ssd weights`: the pretrained weights that `--weights NAME` and `build_model(weights=NAME)` take.

ssd weights list              each name, what it is and for which architecture, its address, whether cached
ssd weights download NAME...  fetch them into the cache now (e.g. before going offline), checked
"""

from __future__ import annotations

import argparse

HELP = "list the pretrained weights names (torchvision's COCO SSDs, ImageNet backbones), or download them"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="weights_command", metavar="ACTION", required=True)
    sub.add_parser("list", help="each name, what it is, its address and whether it is cached")
    download = sub.add_parser("download", help="download names into torch's cache now, checked")
    download.add_argument("names", nargs="+", metavar="NAME", help="names from `ssd weights list`")
    download.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    actions = {"list": _list, "download": _download}
    return actions[args.weights_command](args)


def _list(args: argparse.Namespace) -> int:
    from ssd.models.weights.catalog import CATALOG
    from ssd.models.weights.download import cache_dir, cached_path

    print(f"pretrained weights (cache: {cache_dir()})")
    width = max(len(name) for name in CATALOG)
    for name, entry in CATALOG.items():
        print(f"{name:{width}s}  {entry.kind_text} for {', '.join(entry.archs)}: {entry.about}")
        print(f"{'':{width}s}    {entry.url()}")
        path = cached_path(entry)
        # Presence only: the hash is checked when the file is used, not for every line of a listing.
        cached = f"cached: {path}" if path.is_file() else "not cached (downloaded on first use)"
        print(f"{'':{width}s}    {cached}")
    return 0


def _download(args: argparse.Namespace) -> int:
    from ssd.errors import UserError
    from ssd.models.weights.catalog import find_pretrained, unknown_weights_message
    from ssd.models.weights.download import fetch_weights

    entries = [find_pretrained(name) for name in args.names]
    for name, entry in zip(args.names, entries, strict=True):
        if entry is None:
            raise UserError(unknown_weights_message(name))
    for entry in entries:
        print(f"{entry.name}: {fetch_weights(entry, progress=not args.quiet)}")
    return 0
