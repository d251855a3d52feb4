"""Errors a user can act on. The CLI prints them as one line, without a traceback.

Also the two helpers every layer uses to word such a line: `did_you_mean` (the closest known names to a
mistyped one) and `require_extra` (an optional package, or the `pip install` that provides it).
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterable
from types import ModuleType


class UserError(Exception):
    """A problem the user can fix: a bad argument, a file that does not fit, a broken dataset."""


class WeightsMismatchError(UserError):
    """A weights file that does not fit the model; the message lists every key or shape that differs."""


class DatasetError(UserError):
    """A dataset that cannot be used; the message names the file and the problem."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped a run after it wrote what it needs to go on; the message says how."""

    def __init__(self, message: str, signal_number: int = 2):
        super().__init__(message)
        self.message = message
        self.exit_code = 128 + signal_number  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


class MissingExtraError(UserError):
    """An optional package a feature needs is not installed; the message names the `pip install` to run."""


def did_you_mean(word: str, known: Iterable[str]) -> str:
    """'; did you mean X?' (or 'X or Y?') for the known names closest to a mistyped `word`, else ''."""
    close = difflib.get_close_matches(word, list(known), n=2, cutoff=0.6)
    return f"; did you mean {' or '.join(close)}?" if close else ""


# The optional extras of pyproject.toml ([project.optional-dependencies]) and the packages each installs.
# The message names the packages themselves: `pip install "ssd[onnx]"` would fetch an unrelated PyPI
# project of the same name where the toolkit was installed from a checkout.
EXTRAS = {
    "onnx": "onnx onnxruntime",
    "openvino": "openvino onnx onnxruntime",
    "video": "opencv-python-headless",
    "tensorboard": "tensorboard",
    "fast-eval": "faster-coco-eval",
    "serve": "fastapi 'uvicorn[standard]' python-multipart prometheus_client",
    "ray": "'ray[serve]' fastapi 'uvicorn[standard]' python-multipart prometheus_client",
}


def require_extra(module: str, extra: str, purpose: str) -> ModuleType:
    """`import module`, or a one-line `MissingExtraError`: '<purpose> needs <module>, which is not installed:
    pip install <packages> (the "<extra>" extra)'. `purpose` says what needs it, e.g. 'exporting to ONNX'."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        install = f'pip install {EXTRAS[extra]} (the "{extra}" extra of ssd)'
        if isinstance(error, ModuleNotFoundError):
            raise MissingExtraError(f"{purpose} needs {module}, which is not installed: {install}") from None
        # Installed but broken (a missing shared library, a version clash): its own words are the clue.
        raise MissingExtraError(
            f"{purpose} needs {module}, which is installed but does not import ({error}); reinstall it: {install}"
        ) from error
