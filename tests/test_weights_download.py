"""Pretrained weights by name: downloaded once into torch's cache, checked against the hash in their name,
refused when tampered, explained when offline. Files come from a local HTTP server in a thread, never from
the internet: small stand-in state dicts whose names carry the start of their own SHA-256, put in the
catalog in place of torchvision's entries."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import json
import socket
import threading
from pathlib import Path

import pytest
import torch
from conftest import FIXTURES, shared_path
from PIL import Image

import ssd
from ssd.cli.main import main
from ssd.errors import UserError
from ssd.models.checkpoint import load_model, load_weights_for_finetuning
from ssd.models.weights.catalog import BASE_URL_VARIABLE, CATALOG, COCO, IMAGENET, PretrainedWeights
from ssd.models.weights.download import cache_dir
from ssd.models.weights.resolve import pretrained_config_overrides, resolve_weights

# What torchvision publishes (the brief's list), so a typo in the table cannot pass unnoticed.
PUBLISHED = {
    "ssdlite320_mobilenet_v3_large": "ssdlite320_mobilenet_v3_large_coco-a79551df.pth",
    "ssd300_vgg16": "ssd300_vgg16_coco-b556d3b4.pth",
    "mobilenet_v3_large": "mobilenet_v3_large-8738ca79.pth",
    "mobilenet_v3_large_v2": "mobilenet_v3_large-5c1a4163.pth",
    "vgg16": "vgg16-397923af.pth",
    "vgg16_features": "vgg16_features-amdegroot-88682ab5.pth",
    "resnet50": "resnet50-0676ba61.pth",
    "resnet50_v2": "resnet50-11ad3fa6.pth",
}


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the folder, counts requests, and cuts short the files listed in `server.cut_short`."""

    def do_GET(self):
        self.server.requests.append(self.path)
        if self.path.lstrip("/") in self.server.cut_short:
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"x" * 1000)  # then the connection closes: 99 kB never arrive
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A local server for `tmp_path/served`, set as the weights address; TORCH_HOME under `tmp_path`."""
    served = tmp_path / "served"
    served.mkdir()
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Handler, directory=str(served))
    )
    httpd.requests, httpd.cut_short, httpd.folder = [], set(), served
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.setenv(BASE_URL_VARIABLE, f"http://127.0.0.1:{httpd.server_address[1]}/models")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    # Served under /models/ like download.pytorch.org, to show the base is the folder, not the host.
    (served / "models").mkdir()
    httpd.folder = served / "models"
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def stand_in(server, monkeypatch, name, state, kind=IMAGENET, archs=("mobilenetv3_small_ssd",)) -> bytes:
    """Serve `state` as the catalog's file for `name`, named with the start of its SHA-256."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    content = buffer.getvalue()
    file_name = f"{name}-{hashlib.sha256(content).hexdigest()[:8]}.pth"
    (server.folder / file_name).write_bytes(content)
    monkeypatch.setitem(CATALOG, name, PretrainedWeights(name, file_name, kind, archs, "a stand-in"))
    return content


def small_state() -> dict[str, torch.Tensor]:
    return {"features.0.weight": torch.arange(12.0).reshape(3, 4)}


def cache_files() -> list[str]:
    folder = cache_dir()
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_the_catalog_holds_torchvision_published_files_and_their_hashes():
    for name, file_name in PUBLISHED.items():
        entry = CATALOG[name]
        assert entry.file_name == file_name
        # torchvision's convention: the hex after the last '-' starts the file's SHA-256.
        assert entry.sha256_prefix == file_name.rsplit("-", 1)[1].removesuffix(".pth")
        assert entry.url("https://download.pytorch.org/models") == (
            f"https://download.pytorch.org/models/{file_name}"
        )
    assert CATALOG["ssdlite320_mobilenet_v3_large"].kind == COCO
    assert CATALOG["ssdlite320_mobilenet_v3_large"].archs == ("mobilenetv3_ssd",)
    assert CATALOG["ssd300_vgg16"].archs == ("vgg16_ssd300",)
    assert CATALOG["vgg16_features"].archs == CATALOG["vgg16"].archs == ("vgg16_ssd300", "vgg16_ssd512")
    for entry in CATALOG.values():
        assert len(entry.sha256_prefix) >= 8
        for arch in entry.archs:
            assert arch in ssd.available_architectures()


def test_a_good_file_is_downloaded_once_then_served_from_the_cache(server, monkeypatch, capsys):
    content = stand_in(server, monkeypatch, "mobilenet_v3_small", small_state())
    path = resolve_weights("mobilenet_v3_small")
    assert path.parent == Path(server.folder.parents[1], "torch_home", "hub", "checkpoints")
    assert path.read_bytes() == content and len(server.requests) == 1
    err = capsys.readouterr().err
    assert f"downloading {CATALOG['mobilenet_v3_small'].url()}" in err  # with a progress bar on stderr
    assert resolve_weights("mobilenet_v3_small") == path
    assert len(server.requests) == 1, "the second use made a request"
    assert cache_files() == [path.name], "a temporary file was left behind"


def test_a_named_imagenet_backbone_builds_the_model_it_needs_with_any_class_count(server, monkeypatch):
    # The ImageNet MobileNetV3 file needs the full tail; the name alone builds the model that way.
    source = ssd.build_model("mobilenetv3_small_ssd", num_classes=2, reduced_tail=False)
    state = {
        k.removeprefix("backbone."): v + 0.25
        for k, v in source.state_dict().items()
        if k.startswith("backbone.features.") and not k.endswith("num_batches_tracked")
    }
    state["classifier.0.weight"] = torch.zeros(8, 4)
    stand_in(server, monkeypatch, "mobilenet_v3_small", state)
    assert pretrained_config_overrides("mobilenet_v3_small", "mobilenetv3_small_ssd") == {
        "reduced_tail": False
    }

    model = ssd.build_model("mobilenetv3_small_ssd", num_classes=4, weights="mobilenet_v3_small")
    assert model.config.backbone_options["reduced_tail"] is False and model.num_classes == 4
    loaded = model.state_dict()
    for key, value in state.items():
        if key.startswith("features."):
            assert torch.equal(loaded[f"backbone.{key}"], value), key
    # Training's loader takes the name too, from the same cache.
    notes = load_weights_for_finetuning(
        ssd.build_model("mobilenetv3_small_ssd", num_classes=7, reduced_tail=False), "mobilenet_v3_small"
    )
    assert "backbone only" in notes[0] and len(server.requests) == 1


def test_a_tampered_download_is_refused_and_removed(server, monkeypatch):
    stand_in(server, monkeypatch, "mobilenet_v3_small", small_state())
    entry = CATALOG["mobilenet_v3_small"]
    tampered = b"not the published bytes"
    (server.folder / entry.file_name).write_bytes(tampered)
    with pytest.raises(UserError) as error:
        resolve_weights("mobilenet_v3_small")
    message = str(error.value)
    assert entry.file_name in message and entry.sha256_prefix in message
    assert hashlib.sha256(tampered).hexdigest() in message and "\n" not in message
    assert cache_files() == [], "the refused file, or its temporary file, is still there"


def test_a_wrong_cached_file_is_removed_and_downloaded_again(server, monkeypatch, capsys):
    content = stand_in(server, monkeypatch, "mobilenet_v3_small", small_state())
    entry = CATALOG["mobilenet_v3_small"]
    cache_dir().mkdir(parents=True)
    (cache_dir() / entry.file_name).write_bytes(b"a copy that went wrong")
    path = resolve_weights("mobilenet_v3_small")
    assert path.read_bytes() == content and len(server.requests) == 1
    assert "removed it, downloading it again" in capsys.readouterr().err


def test_an_interrupted_download_leaves_no_file(server, monkeypatch):
    stand_in(server, monkeypatch, "mobilenet_v3_small", small_state())
    server.cut_short.add(f"models/{CATALOG['mobilenet_v3_small'].file_name}")
    with pytest.raises(UserError, match="broke off|got 1000 of 100000 bytes"):
        resolve_weights("mobilenet_v3_small")
    assert cache_files() == []


def test_offline_says_which_address_to_fetch_and_where_to_put_it(tmp_path, monkeypatch):
    with socket.socket() as probe:  # a port nobody listens on: the connection is refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv(BASE_URL_VARIABLE, f"http://127.0.0.1:{port}/models")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    entry = CATALOG["ssd300_vgg16"]
    with pytest.raises(UserError) as error:
        ssd.build_model("vgg16_ssd300", weights="ssd300_vgg16")
    message = str(error.value)
    assert f"http://127.0.0.1:{port}/models/{entry.file_name}" in message
    assert str(tmp_path / "torch_home" / "hub" / "checkpoints" / entry.file_name) in message
    assert "\n" not in message and cache_files() == []


def test_weights_list_shows_each_name_its_address_and_whether_cached(server, monkeypatch, capsys):
    stand_in(server, monkeypatch, "mobilenet_v3_small", small_state())
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    base = f"http://127.0.0.1:{server.server_address[1]}/models"
    for name in PUBLISHED:
        assert name in out and f"{base}/{PUBLISHED[name]}" in out
    assert "COCO SSD for vgg16_ssd300" in out and "ImageNet backbone for resnet50_ssd300" in out
    assert "cached: " not in out and server.requests == []
    assert main(["weights", "download", "mobilenet_v3_small", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["weights", "list"]) == 0
    assert f"cached: {cache_dir() / CATALOG['mobilenet_v3_small'].file_name}" in capsys.readouterr().out


def test_an_unknown_name_gets_did_you_mean_and_a_wrong_architecture_no_download(server, capsys):
    with pytest.raises(UserError, match=r"ssd300_vgg: no such weights file.*did you mean ssd300_vgg16\?"):
        ssd.build_model("vgg16_ssd300", weights="ssd300_vgg")
    assert main(["weights", "download", "resnet5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean resnet50" in err and "known names: " in err
    with pytest.raises(UserError, match="for resnet50_ssd300, not for mobilenetv3_ssd"):
        ssd.build_model("mobilenetv3_ssd", weights="resnet50")
    assert server.requests == []


@pytest.mark.slow
def test_a_named_coco_ssd_detects_without_arch(server, monkeypatch, tmp_path):
    """`ssd detect --weights NAME`: the name says the architecture and the file the class count."""
    trained = torch.load(shared_path(FIXTURES / "ssdlite320_bccd_trained.pt"), weights_only=True)
    stand_in(
        server,
        monkeypatch,
        "ssdlite320_mobilenet_v3_large",
        trained["state_dict"],
        COCO,
        ("mobilenetv3_ssd",),
    )
    model = load_model("ssdlite320_mobilenet_v3_large")
    assert model.config.arch == "mobilenetv3_ssd" and model.num_classes == 4
    picture = tmp_path / "picture.png"
    Image.new("RGB", (64, 48), (120, 30, 200)).save(picture)
    out = tmp_path / "out"
    args = ["detect", "--weights", "ssdlite320_mobilenet_v3_large", str(picture), "--out", str(out)]
    assert main([*args, "--device", "cpu"]) == 0
    assert isinstance(json.loads((out / "detections.json").read_text()), list)
    assert len(server.requests) == 1
