"""`ssd serve` through FastAPI's TestClient: the endpoints, every bad request, metrics, loading, batching."""

import asyncio
import io
import threading
import time

import numpy as np
import pytest
import torch
from data_writers import write_bomb
from PIL import Image

pytest.importorskip("fastapi", reason="ssd serve needs the [serve] extra")
from fastapi.testclient import TestClient  # noqa: E402

import ssd  # noqa: E402
from ssd.models.checkpoint import model_checkpoint, save_checkpoint  # noqa: E402
from ssd.serve import app as app_module  # noqa: E402
from ssd.serve.app import create_app  # noqa: E402
from ssd.serve.batcher import MicroBatcher  # noqa: E402
from ssd.serve.settings import ServeSettings  # noqa: E402

CLASSES = ["cat", "dog", "bird"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    model = ssd.build_model("mobilenetv3_ssd", num_classes=4, class_names=CLASSES, input_size=256)
    return save_checkpoint(tmp_path_factory.mktemp("serve") / "model.pt", model_checkpoint(model))


def jpeg(width=200, height=150, seed=0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    stream = io.BytesIO()
    Image.fromarray(pixels).save(stream, format="JPEG")
    return stream.getvalue()


def ready_client(app) -> TestClient:
    # Faults of ours reach the test as the 500 a client gets, not as the exception.
    client = TestClient(app, raise_server_exceptions=False)
    client.__enter__()
    deadline = time.monotonic() + 60
    while client.get("/health").status_code != 200:
        assert time.monotonic() < deadline, client.get("/health").json()
        time.sleep(0.05)
    return client


@pytest.fixture(scope="module")
def client(weights):
    client = ready_client(create_app(ServeSettings(str(weights), threads=1, max_upload_mb=1)))
    yield client
    client.__exit__(None, None, None)


def test_health_model_and_page(client):
    assert client.get("/health/live").json() == {"status": "alive"}
    assert client.get("/health").json()["status"] == "ready"
    model = client.get("/v1/model").json()
    assert model["classes"] == CLASSES and model["input_size"] == [256, 256]
    assert model["backend"] == "pytorch" and model["precision"] == "fp32" and model["max_batch"] == 8
    assert len(model["colours"]) == 3 and all(c.startswith("#") and len(c) == 7 for c in model["colours"])
    page = client.get("/")
    assert page.status_code == 200 and "/page/page.js" in page.text
    # Everything the page needs is served by the app itself: it must work offline.
    assert "http" not in page.text.replace("http-equiv", "")
    assert client.get("/page/page.js").status_code == 200 and client.get("/page/page.css").status_code == 200


def test_detect_answers_in_the_pictures_own_pixels(client):
    answer = client.post("/v1/detect?score=0", files={"image": ("a.jpg", jpeg(200, 150), "image/jpeg")})
    assert answer.status_code == 200
    body = answer.json()
    assert (body["width"], body["height"]) == (200, 150)
    assert body["model"] == "mobilenetv3_ssd (model.pt)" and body["time_ms"] > 0
    assert 0 < len(body["detections"]) <= 100
    for detection in body["detections"]:
        x1, y1, x2, y2 = detection["box"]
        assert 0 <= x1 <= x2 <= 200 and 0 <= y1 <= y2 <= 150
        assert detection["name"] == CLASSES[detection["label"] - 1]
    scores = [d["score"] for d in body["detections"]]
    assert scores == sorted(scores, reverse=True)


def test_raw_body_and_multipart_give_the_same_detections(client):
    picture = jpeg(seed=3)
    raw = client.post("/v1/detect?score=0.1", content=picture).json()
    form = client.post("/v1/detect", files={"image": picture}, data={"score": "0.1"}).json()
    assert raw["detections"] == form["detections"]


def test_score_classes_and_max_det_filter(client):
    picture = jpeg(seed=1)
    every = client.post("/v1/detect?score=0", content=picture).json()["detections"]
    top = every[0]["score"]
    high = client.post(f"/v1/detect?score={top}", content=picture).json()["detections"]
    assert high and all(d["score"] >= top for d in high)
    three = client.post("/v1/detect?score=0&max_det=3", content=picture).json()["detections"]
    assert three == every[:3]
    dogs = client.post("/v1/detect?score=0&classes=dog,3", content=picture).json()["detections"]
    assert dogs and all(d["label"] in (2, 3) for d in dogs)
    # `every` stops at 100 detections: its dogs and birds are the first of the filtered answer.
    kept = [d for d in every if d["label"] in (2, 3)]
    assert dogs[: len(kept)] == kept


@pytest.mark.parametrize(
    "request_kwargs, status, message",
    [
        ({"content": b""}, 400, "empty upload"),
        ({"content": b"this is text, not a picture"}, 400, "not a picture"),
        ({"content": jpeg()[:2000]}, 400, "cannot be decoded"),
        ({"content": b"x" * (1024 * 1024 + 1)}, 413, "over the 1 MB upload limit (--max-upload-mb)"),
        ({"files": {"file": b"abc"}}, 400, "no field named 'image' in the form (fields given: 'file')"),
        ({"data": {"image": "text"}, "files": {"other": b"x"}}, 400, "the field 'image' holds text"),
        ({"content": b"x", "params": {"score": "nan"}}, 400, "score must be a number between 0 and 1"),
        ({"content": b"x", "params": {"score": "high"}}, 400, "score must be a number between 0 and 1"),
        ({"content": b"x", "params": {"max_det": "-1"}}, 400, "max_det must be a whole number"),
        (
            {"content": b"x", "params": {"classes": "zebra"}},
            400,
            "classes: unknown class 'zebra'; known: cat",
        ),
        ({"content": b"x", "params": {"scor": "0.1"}}, 400, "unknown parameter 'scor'; did you mean score?"),
        (
            {"files": {"image": b"x"}, "data": {"maxdet": "3"}},
            400,
            "unknown parameter 'maxdet'; did you mean max_det?",
        ),
        (
            {"content": b"--b\r\nbroken", "headers": {"content-type": "multipart/form-data"}},
            400,
            "multipart form cannot be read",
        ),
    ],
)
def test_bad_requests_get_a_4xx_naming_the_problem_and_the_server_stays_healthy(
    client, request_kwargs, status, message
):
    answer = client.post("/v1/detect", **request_kwargs)
    assert answer.status_code == status and message in answer.json()["error"]
    assert client.get("/health").status_code == 200


def test_a_decompression_bomb_is_refused_from_its_header(client, tmp_path):
    bomb = write_bomb(tmp_path / "bomb.png", 40_000, 40_000).read_bytes()
    answer = client.post("/v1/detect", files={"image": ("bomb.png", bomb, "image/png")})
    assert answer.status_code == 413
    assert "40000x40000 is 1,600,000,000 pixels" in answer.json()["error"]
    assert "--max-pixels" in answer.json()["error"]


def test_wrong_routes_and_methods_are_json(client):
    assert client.get("/v2/detect").json() == {"error": "no such route: GET /v2/detect"}
    answer = client.get("/v1/detect")
    assert answer.status_code == 405 and answer.json() == {"error": "/v1/detect does not take GET"}


def test_a_fault_inside_the_model_is_a_500_without_traceback_and_the_server_goes_on(client, monkeypatch):
    state = client.app.state.server
    original = state.detector

    class Broken:
        class_names, num_classes = original.class_names, original.num_classes

        def predict(self, pictures):
            raise RuntimeError("deep inside the network")

    monkeypatch.setattr(state, "detector", Broken())
    answer = client.post("/v1/detect", content=jpeg())
    assert answer.status_code == 500
    assert answer.json() == {"error": "internal error (RuntimeError); the server's log has the details"}
    monkeypatch.setattr(state, "detector", original)
    assert client.post("/v1/detect", content=jpeg()).status_code == 200


def test_metrics_count_requests_by_route_and_status(client):
    client.post("/v1/detect", content=jpeg())
    client.post("/v1/detect", content=b"")
    client.get("/no/such/page/12345")
    text = client.get("/metrics").text
    assert 'ssd_requests_total{method="POST",route="/v1/detect",status="200"}' in text
    assert 'ssd_request_errors_total{route="/v1/detect",status="400"}' in text
    assert 'route="unmatched"' in text and "/no/such/page" not in text
    assert 'ssd_request_latency_seconds_bucket{le="0.005",route="/v1/detect"}' in text
    assert "ssd_batch_size_count" in text and "ssd_queue_depth 0.0" in text


def test_health_is_503_until_the_model_is_loaded(weights, monkeypatch):
    release = threading.Event()
    real_load = app_module.load_detector

    def slow_load(*args, **kwargs):
        release.wait(30)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(app_module, "load_detector", slow_load)
    with TestClient(create_app(ServeSettings(str(weights), threads=1))) as client:
        assert (
            client.get("/health").status_code == 503 and client.get("/health").json()["status"] == "loading"
        )
        assert client.get("/health/live").status_code == 200
        assert client.post("/v1/detect", content=jpeg()).json() == {"error": "the model is still loading"}
        release.set()
        deadline = time.monotonic() + 30
        while client.get("/health").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_a_file_that_cannot_be_loaded_keeps_health_failing_with_the_reason(tmp_path):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    with TestClient(create_app(ServeSettings(str(broken)))) as client:
        deadline = time.monotonic() + 30
        while client.get("/health").json()["status"] == "loading":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        answer = client.get("/health")
        assert answer.status_code == 503 and "broken.pt" in answer.json()["error"]


def test_settings_are_checked():
    for bad in ({"max_batch": 0}, {"max_wait_ms": float("nan")}, {"max_upload_mb": 0}, {"threads": 0}):
        with pytest.raises(ssd.errors.UserError, match="--" + next(iter(bad)).replace("_", "-")):
            ServeSettings("w.pt", **bad)
    settings = ServeSettings("w.pt", class_names=("a", "b"), max_batch=4)
    assert ServeSettings.from_json(settings.to_json()) == settings


# The batcher on its own, with a stand-in model that tells which pictures it saw together.
def run_batcher(pictures, max_batch, max_wait_s, predict=None):
    batches = []

    def record(batch):
        batches.append([int(p) for p in batch])
        time.sleep(0.02)
        return [{"picture": p} for p in batch]

    async def main():
        batcher = MicroBatcher(predict or record, max_batch, max_wait_s)
        batcher.start()
        results = await asyncio.gather(
            *(batcher.detect(torch.tensor(p)) for p in pictures), return_exceptions=True
        )
        await batcher.stop()
        return results

    return asyncio.run(main()), batches


def test_concurrent_pictures_are_gathered_up_to_max_batch_and_answered_to_their_own_request():
    results, batches = run_batcher(range(10), max_batch=4, max_wait_s=0.05)
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sorted(sum(batches, [])) == list(range(10))
    assert [int(r["picture"]) for r in results] == list(range(10))


def test_a_lone_picture_waits_at_most_max_wait():
    started = time.perf_counter()
    _, batches = run_batcher([7], max_batch=8, max_wait_s=0.05)
    assert batches == [[7]] and time.perf_counter() - started < 1.0


def test_a_failing_batch_fails_its_requests_only():
    def fail(batch):
        raise RuntimeError("model fault")

    results, _ = run_batcher(range(3), max_batch=8, max_wait_s=0.01, predict=fail)
    assert all(isinstance(r, RuntimeError) for r in results)
