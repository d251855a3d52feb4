"""Pretrained weights files, downloaded once into torch's hub cache and checked against their published hash.

The cache is torch's own (`torch.hub.get_dir()/checkpoints`, which follows TORCH_HOME), so a file torchvision
already downloaded is used as it is, and the other way round. A download goes to a temporary file in the
cache folder and is renamed only once its SHA-256 matches: an interrupted or tampered download never leaves a
file under the final name. A cached file is checked again on every use (a second or so for VGG's 528 MB),
because the offline message asks people to copy files there by hand.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO

import torch
from tqdm import tqdm

from ssd.errors import UserError
from ssd.models.weights.catalog import PretrainedWeights
from ssd.version import __version__

_CHUNK = 1 << 20
# Seconds to wait for a connection or for the next chunk: long enough for a slow link, short enough that a
# dead one is reported rather than hanging a training run.
_TIMEOUT_S = 60


def cache_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def cached_path(entry: PretrainedWeights) -> Path:
    """Where the file is, or will be once downloaded."""
    return cache_dir() / entry.file_name


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_weights(entry: PretrainedWeights, base_url: str | None = None, progress: bool = True) -> Path:
    """The checked file of `entry` in the cache, downloading it first if it is not there (or is not right)."""
    target = cached_path(entry)
    if target.is_file():
        got = sha256_of(target)
        if got.startswith(entry.sha256_prefix):
            return target
        target.unlink(missing_ok=True)
        print(
            f"{target}: SHA-256 {got} does not start with the published {entry.sha256_prefix}; "
            "removed it, downloading it again",
            file=sys.stderr,
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    _download(entry.url(base_url), target, entry.sha256_prefix, progress)
    return target


def _download(url: str, target: Path, sha256_prefix: str, progress: bool) -> None:
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as stream:
            got = _copy_from(url, stream, target, progress)
            stream.flush()
            os.fsync(stream.fileno())
        if not got.startswith(sha256_prefix):
            raise UserError(
                f"{target.name} from {url}: SHA-256 {got} does not start with the published "
                f"{sha256_prefix}; the file was refused and removed"
            )
        os.replace(temporary, target)
    except BaseException:  # also Ctrl-C: never leave a partial file behind
        Path(temporary).unlink(missing_ok=True)
        raise


def _copy_from(url: str, stream: BinaryIO, target: Path, progress: bool) -> str:
    """Write what `url` serves to `stream`, with a progress bar on stderr; returns its SHA-256."""
    put_it = f"fetch {url} on a machine that can reach it and put the file at {target}"
    request = urllib.request.Request(url, headers={"User-Agent": f"ssd/{__version__}"})
    try:
        response = urllib.request.urlopen(request, timeout=_TIMEOUT_S)
    except urllib.error.HTTPError as error:
        raise UserError(f"{url}: the server answered HTTP {error.code} {error.reason}; {put_it}") from None
    except (urllib.error.URLError, OSError) as error:  # refused, no route, no name, timed out
        reason = getattr(error, "reason", error)
        raise UserError(f"cannot download {url} ({reason}): offline? {put_it}") from None
    digest = hashlib.sha256()
    received = 0
    length = response.headers.get("Content-Length")
    total = int(length) if length and length.isdigit() else None
    if progress:
        print(f"downloading {url} to {target}", file=sys.stderr)
    with (
        response,
        tqdm(
            total=total,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=target.name,
            file=sys.stderr,
            disable=not progress,
        ) as bar,
    ):
        while True:
            try:
                chunk = response.read(_CHUNK)
            except (http.client.HTTPException, OSError) as error:  # connection reset, timed out, cut short
                raise UserError(
                    f"{url}: the download broke off after {received} bytes ({type(error).__name__}); "
                    "nothing was kept, run it again"
                ) from None
            if not chunk:
                break
            stream.write(chunk)
            digest.update(chunk)
            received += len(chunk)
            bar.update(len(chunk))
    if total is not None and received != total:
        raise UserError(f"{url}: got {received} of {total} bytes; nothing was kept, run it again")
    return digest.hexdigest()
