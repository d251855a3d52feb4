"""TorchScript: the network traced and frozen (post-processing compiled), run with `torch.jit.load`.

A TorchScript file is a program: run only ones you trust. It is read only under a name ending in
`.torchscript` or `.ts` (`ssd.models.model_files`), and before `torch.jit.load` runs anything in it, the
archive must hold our metadata and match its checksum.

The checksum. A TorchScript file is a zip archive whose members sit under one top folder (named after the
file first saved to). Its SHA-256 is stored as the extra file `extra/ssd.sha256`, and it is the SHA-256 of
every other member, in the order of their names without the top folder, each hashed as its name, a newline,
its length in decimal, a newline and its bytes. Two members are left out: the checksum itself, and
`.data/serialization_id`, an identifier torch writes anew for each archive (it changes with the extra files,
not with the model). So it covers the code, the constants, the weights and the `ssd` metadata.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
import zipfile
from pathlib import Path

import torch
from torch import Tensor, nn

from ssd.deploy.formats.base import ExportFormat
from ssd.deploy.graphs import DetectionGraph, NetworkGraph
from ssd.deploy.predictor import CHECKSUM_KEY, METADATA_KEY, ExportedPredictor, verify_checksum
from ssd.deploy.threads import set_inference_threads
from ssd.errors import UserError
from ssd.models.model_files import archive_names, is_torchscript_archive

METADATA_MEMBER = f"extra/{METADATA_KEY}.json"
CHECKSUM_MEMBER = f"extra/{CHECKSUM_KEY}"
_NOT_HASHED = {CHECKSUM_MEMBER, ".data/serialization_id"}


def torchscript_checksum(source: str | Path | io.BytesIO) -> tuple[str | None, str, dict[str, bytes]]:
    """(the recorded SHA-256 or None, the SHA-256 of the content as the module docstring defines it, the
    `extra/` members by name). Reads the archive with `zipfile` only: nothing in it is unpickled or run.
    Raises `zipfile.BadZipFile` (a member failing its CRC, say) for a damaged archive."""
    digest = hashlib.sha256()
    extras: dict[str, bytes] = {}
    with zipfile.ZipFile(source) as archive:
        members = sorted(
            (name.split("/", 1)[1] if "/" in name else name, name)
            for name in archive.namelist()
            if not name.endswith("/")
        )
        for inner, name in members:
            if inner.startswith("extra/"):
                extras[inner] = archive.read(name)
            if inner in _NOT_HASHED:
                continue
            content = archive.read(name)
            digest.update(f"{inner}\n{len(content)}\n".encode())
            digest.update(content)
    recorded = extras.get(CHECKSUM_MEMBER)
    return (
        (recorded.decode("ascii", errors="replace") if recorded is not None else None),
        digest.hexdigest(),
        extras,
    )


def write_torchscript(
    model: nn.Module, path: Path, example: Tensor, with_postprocess: bool, dynamic_batch: bool, metadata: str
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript is in maintenance in PyTorch 2.x; it still runs
        network = torch.jit.trace(NetworkGraph(model).eval(), example, check_trace=False)
        if with_postprocess:
            module = torch.jit.script(DetectionGraph(model, network).eval())
        else:
            module = torch.jit.freeze(network)  # weights become constants: a faster, smaller graph
        # Saved once in memory to hash the members, then to the file with the hash: torch writes the same
        # members both times (only `.data/serialization_id` differs, and it is not hashed).
        first = io.BytesIO()
        torch.jit.save(module, first, _extra_files={f"{METADATA_KEY}.json": metadata})
        first.seek(0)
        _, digest, _ = torchscript_checksum(first)
        extra_files = {f"{METADATA_KEY}.json": metadata, CHECKSUM_KEY: digest}
        torch.jit.save(module, str(path), _extra_files=extra_files)


class TorchScriptPredictor(ExportedPredictor):
    """An exported TorchScript file run with `torch.jit.load`."""

    backend = "torchscript"

    def __init__(self, path: str | Path, threads: int | None = None):
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: no such TorchScript file")
        metadata, recorded, actual = _read_before_loading(path)
        verify_checksum(path, recorded, actual)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is in maintenance; it runs
                self.module = torch.jit.load(str(path), map_location="cpu")
        except Exception as error:  # torch.jit raises RuntimeError and others for a foreign file
            raise UserError(f"{path}: not a TorchScript file torch can load ({error})") from error
        if threads:
            set_inference_threads(threads)
        super().__init__(path, metadata, None)

    def run_graph(self, batch: Tensor) -> list[Tensor]:
        return list(self.module(batch))


def _read_before_loading(path: Path) -> tuple[dict, str | None, str]:
    """The metadata and the recorded and actual checksums, read from the zip directory and members alone;
    a one-line error for a file that is no TorchScript archive of ours."""
    if not is_torchscript_archive(path):
        names = archive_names(path)
        if names is not None and "data.pkl" in names:
            raise UserError(
                f"{path}: a PyTorch weights file (torch.save), not a TorchScript program; name it "
                f"{path.with_suffix('.pt').name}"
            )
        raise UserError(
            f"{path}: named .torchscript, but not a TorchScript archive (damaged, or another file)"
        )
    try:
        recorded, actual, extras = torchscript_checksum(path)
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise UserError(f"{path}: a damaged TorchScript archive ({error})") from None
    if METADATA_MEMBER not in extras:
        raise UserError(
            f"{path}: not a model exported by `ssd export` (no ssd metadata in it), so it was not loaded"
        )
    try:
        metadata = json.loads(extras[METADATA_MEMBER].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{path}: its ssd metadata is not valid JSON ({error})") from None
    if not isinstance(metadata, dict):
        raise UserError(f"{path}: its ssd metadata is not a JSON object")
    return metadata, recorded, actual


TORCHSCRIPT = ExportFormat(
    name="torchscript",
    suffix=".torchscript",
    any_batch_size=True,  # the traced graph takes any batch size
    write=write_torchscript,
    predictor=TorchScriptPredictor,
)
