"""`ssd serve --ray`: the same app as Ray Serve replicas on a local Ray bound to 127.0.0.1 (skipped where
Ray is not installed: it is the optional extra [ray], not part of [dev])."""

import pytest

pytest.importorskip("ray.serve", reason="Ray Serve is not installed (pip install 'ray[serve]')")

from test_serve_process import Server, random_weights  # noqa: E402, F401 (random_weights is a fixture)

pytestmark = pytest.mark.slow


def test_two_replicas_answer_like_one_process(random_weights, tmp_path):  # noqa: F811
    from PIL import Image

    Image.new("RGB", (120, 90), (200, 120, 40)).save(tmp_path / "p.png")
    picture = (tmp_path / "p.png").read_bytes()
    alone = Server("--weights", str(random_weights))
    try:
        expected = alone.detect(picture, "?score=0")
    finally:
        alone.stop()
    replicas = Server("--weights", str(random_weights), "--ray", "--replicas", "2")
    try:
        answers = [replicas.detect(picture, "?score=0") for _ in range(4)]
    finally:
        assert replicas.stop() == 0
    assert all(answer["detections"] == expected["detections"] for answer in answers)
