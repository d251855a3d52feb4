"""`ssd serve` as a real process on 127.0.0.1: the same detections as `ssd detect`, concurrent clients,
SIGTERM with a request in flight, and the web page driven in headless Chromium."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from conftest import BCCD, FIXTURES, shared_path

pytest.importorskip("fastapi", reason="ssd serve needs the [serve] extra")

import ssd  # noqa: E402
from ssd.cli.main import main  # noqa: E402
from ssd.models.checkpoint import model_checkpoint, save_checkpoint  # noqa: E402

pytestmark = pytest.mark.slow
BCCD_WEIGHTS = FIXTURES / "ssdlite320_bccd_trained.pt"
BCCD_MODEL = [
    "--weights",
    str(BCCD_WEIGHTS),
    "--arch",
    "mobilenetv3_ssd",
    "--class-names",
    "Platelets,RBC,WBC",
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """`python -m ssd serve ...` on a free port, stopped (SIGTERM) when the test is done with it."""

    def __init__(self, *arguments: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [
            sys.executable,
            "-m",
            "ssd",
            "serve",
            *arguments,
            "--port",
            str(self.port),
            "--threads",
            "1",
        ]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 90
        while not self._healthy():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.process.kill()
                raise AssertionError(f"ssd serve did not start: {self.process.stdout.read()}")
            time.sleep(0.2)

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=2) as answer:
                return answer.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def detect(self, picture: bytes, query: str = "") -> dict:
        request = urllib.request.Request(self.url + "/v1/detect" + query, data=picture, method="POST")
        with urllib.request.urlopen(request, timeout=60) as answer:
            return json.loads(answer.read())

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        finally:
            if self.process.poll() is None:
                self.process.kill()


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    torch.manual_seed(0)
    model = ssd.build_model("mobilenetv3_ssd", num_classes=3, class_names=["cat", "dog"], input_size=256)
    return save_checkpoint(tmp_path_factory.mktemp("serve") / "model.pt", model_checkpoint(model))


def test_served_detections_equal_ssd_detect_under_concurrent_clients(tmp_path):
    shared_path(BCCD_WEIGHTS)
    pictures = sorted(shared_path(BCCD / "JPEGImages").glob("*.jpg"))[:6]
    folder = tmp_path / "pictures"
    folder.mkdir()
    for picture in pictures:
        shutil.copy(picture, folder / picture.name)
    out = tmp_path / "out"
    assert (
        main(["detect", *BCCD_MODEL, str(folder), "--out", str(out), "--no-pictures", "--threads", "1"]) == 0
    )
    expected: dict[str, list] = {picture.name: [] for picture in pictures}
    for entry in json.loads((out / "detections.json").read_text()):
        x, y, w, h = entry["bbox"]
        expected[Path(entry["file_name"]).name].append(
            (entry["category_id"], entry["category_name"], [x, y, x + w, y + h], entry["score"])
        )

    server = Server(*BCCD_MODEL, "--max-batch", "4")
    try:
        with ThreadPoolExecutor(6) as clients:  # six at once: the server gathers them into batches
            answers = list(clients.map(lambda p: server.detect(p.read_bytes()), pictures))
        metrics = urllib.request.urlopen(server.url + "/metrics", timeout=10).read().decode()
    finally:
        assert server.stop() == 0
    for picture, answer in zip(pictures, answers, strict=True):
        got = answer["detections"]
        assert len(got) == len(expected[picture.name]) > 0, picture.name
        for detection, (label, name, box, score) in zip(got, expected[picture.name], strict=True):
            assert (detection["label"], detection["name"]) == (label, name)
            assert detection["score"] == pytest.approx(score, abs=1e-4)
            assert detection["box"] == pytest.approx(box, abs=0.05)  # detect writes x, y, w, h to 0.01
    assert 'ssd_requests_total{method="POST",route="/v1/detect",status="200"} 6.0' in metrics


def test_sigterm_finishes_the_request_in_flight_then_stops(random_weights, tmp_path):
    from PIL import Image

    Image.new("RGB", (120, 90), (200, 120, 40)).save(tmp_path / "p.png")
    # A lone request waits up to 1.5 s for company: SIGTERM arrives while it waits.
    server = Server("--weights", str(random_weights), "--max-wait-ms", "1500")
    answers = []
    client = threading.Thread(target=lambda: answers.append(server.detect((tmp_path / "p.png").read_bytes())))
    client.start()
    time.sleep(0.5)
    started = time.monotonic()
    code = server.stop()
    client.join(30)
    assert code == 0 and time.monotonic() - started < 20
    assert answers and answers[0]["width"] == 120 and answers[0]["height"] == 90


def test_a_bad_weights_file_is_one_line_and_nothing_listens(tmp_path):
    (tmp_path / "folder.pt").mkdir()
    port = str(free_port())
    result = subprocess.run(
        [sys.executable, "-m", "ssd", "serve", "--weights", str(tmp_path / "folder.pt"), "--port", port],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'folder.pt'}: is a folder, not a weights file"
    ]


def chromium() -> str:
    path = os.environ.get("SSD_TEST_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("no Chromium installed (Debian: apt-get install chromium); .ci/run installs it")
    return path


def test_the_page_shows_a_picture_with_its_boxes_in_a_real_browser(random_weights, tmp_path):
    playwright_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs playwright")
    executable = chromium()
    from PIL import Image, ImageDraw

    picture = Image.new("RGB", (320, 240), (235, 235, 235))
    ImageDraw.Draw(picture).ellipse((80, 60, 220, 190), fill=(90, 40, 140))
    picture.save(tmp_path / "upload.jpg")
    server = Server("--weights", str(random_weights))
    try:
        expected = server.detect((tmp_path / "upload.jpg").read_bytes(), "?score=0.05")["detections"]
        with playwright_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=executable,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"],
            )
            try:
                page = browser.new_page(viewport={"width": 1100, "height": 700})
                page.goto(server.url + "/")
                page.wait_for_function(
                    "document.getElementById('model').textContent.includes('mobilenetv3_ssd')"
                )
                page.set_input_files("#file", str(tmp_path / "upload.jpg"))
                page.wait_for_selector("body[data-detected]", timeout=30_000)
                # The slider filters what came back, without a new request.
                page.eval_on_selector(
                    "#score", "s => { s.value = '0'; s.dispatchEvent(new Event('input')); }"
                )
                assert page.locator("li.detection").count() == len(expected) > 0
                page.screenshot(path=str(tmp_path / "page.png"))
                stroke = page.evaluate(DRAWN_STROKE, expected[0])
                page.eval_on_selector(
                    "#score", "s => { s.value = '1'; s.dispatchEvent(new Event('input')); }"
                )
                assert page.locator("li.detection").count() == sum(d["score"] >= 1 for d in expected)
            finally:
                browser.close()
    finally:
        server.stop()
    assert (tmp_path / "page.png").stat().st_size > 10_000
    assert stroke["drawn"] == pytest.approx(stroke["expected"], abs=40), stroke


# The colour on the canvas on the left edge of a detection's box, and the class colour the page gives it.
DRAWN_STROKE = """d => {
  const canvas = document.getElementById('canvas');
  const x = Math.round(d.box[0]) + 1, y = Math.round((d.box[1] + d.box[3]) / 2);
  const drawn = Array.from(canvas.getContext('2d').getImageData(x, y, 1, 1).data.slice(0, 3));
  const probe = document.createElement('canvas').getContext('2d');
  probe.fillStyle = classColour(d.label);
  probe.fillRect(0, 0, 1, 1);
  return {drawn, expected: Array.from(probe.getImageData(0, 0, 1, 1).data.slice(0, 3))};
}"""


def test_two_workers_answer_every_request_once_health_says_ready(random_weights, tmp_path):
    from PIL import Image

    Image.new("RGB", (100, 80), (20, 160, 90)).save(tmp_path / "p.png")
    server = Server("--weights", str(random_weights), "--workers", "2")
    try:
        # Each worker loads its model before it takes connections, so none answers 503 "still loading".
        answers = [server.detect((tmp_path / "p.png").read_bytes()) for _ in range(8)]
    finally:
        assert server.stop() == 0
    assert all((answer["width"], answer["height"]) == (100, 80) for answer in answers)
