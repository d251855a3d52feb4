"""Shared test helpers: where the shared fixtures and datasets live, and a skip when they are absent."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURES = SHARED / "fixtures" / "torchvision"
BCCD = SHARED / "data" / "bccd" / "BCCD"
COCO_MINI = SHARED / "data" / "coco_mini"


def shared_path(path: Path) -> Path:
    """Return `path`, or skip the calling test with a reason when ../shared does not hold it."""
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared is only on the project's machines)")
    return path


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a whole module (its module-scoped exports too): these tests compare outputs,
    and on a busy 2-core machine torch's spinning OpenMP workers make small work several times slower.
    Use it with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_model():
    """mobilenetv3_small_ssd at 64 pixels with the synthetic dataset's five classes: fast to build and run
    (the model every export test writes and reads back)."""
    import ssd
    from ssd.data.formats.synthetic import CLASS_NAMES

    torch.manual_seed(0)
    return ssd.build_model(
        "mobilenetv3_small_ssd", num_classes=6, class_names=CLASS_NAMES, input_size=64
    ).eval()
