"""The one picture reader: decompression bombs, broken files, 16-bit / palette / CMYK modes, EXIF orientation."""

import argparse
import json
import shutil
import struct
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from conftest import BCCD, FIXTURES, shared_path
from data_writers import png_chunk, write_bomb, write_truncated_jpeg
from PIL import Image, ImageCms

from ssd.data.pictures import (
    MAX_PIXELS,
    PictureInfo,
    UnreadablePicture,
    boxes_as_shown,
    picture_info,
    picture_size,
    read_picture,
)

RED, BLUE = (255, 0, 0), (0, 0, 255)


def pixel(picture, y: int, x: int) -> tuple[int, ...]:
    return tuple(int(v) for v in picture[:, y, x])


def close_to(found, expected, tolerance: int = 12) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(found, expected, strict=True))


@pytest.fixture
def no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# --- decompression bombs -------------------------------------------------------------------------------


def test_a_bomb_is_refused_from_its_header_naming_its_size(tmp_path, no_warnings):
    bomb = write_bomb(tmp_path / "bomb.png", 30000, 30000)
    assert bomb.stat().st_size < 2000
    for read in (read_picture, picture_info, lambda p: picture_size(p, "header")):
        with pytest.raises(UnreadablePicture) as error:
            read(bomb)
        assert error.value.path == bomb
        assert "30000x30000" in error.value.reason and "900,000,000 pixels" in error.value.reason
        assert f"{MAX_PIXELS:,}" in error.value.reason and "--max-pixels" in error.value.reason
    assert MAX_PIXELS == 89_478_485


def test_max_pixels_refuses_and_allows_beyond_pillows_own_limit(tmp_path, monkeypatch, no_warnings):
    # Pillow's global limit lowered so that a 100x100 picture is a "bomb" to Pillow (above twice its
    # limit: DecompressionBombError) and a 40x40 one draws its warning, while memory stays small.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    large = write_bomb(tmp_path / "large.png", 100, 100, complete=True)
    middle = write_bomb(tmp_path / "middle.png", 40, 40, complete=True)
    assert read_picture(large).shape == (3, 100, 100)  # MAX_PIXELS, ours, is far above 10,000
    assert read_picture(middle, max_pixels=1600).shape == (3, 40, 40)
    assert picture_info(large, "decode", max_pixels=10_000) == PictureInfo(100, 100, 100, 100, 1)
    with pytest.raises(UnreadablePicture, match=r"100x100 is 10,000 pixels, more than the 9,999 allowed"):
        read_picture(large, max_pixels=9_999)
    with pytest.raises(UnreadablePicture, match="100x100"):
        picture_size(large, "header", max_pixels=5000)
    assert Image.MAX_IMAGE_PIXELS == 1000, "Pillow's global is put back after every call"


def test_threads_reading_at_once_leave_pillows_limit_as_it_was(tmp_path, monkeypatch, no_warnings):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    large = write_bomb(tmp_path / "large.png", 100, 100, complete=True)  # decoded with the limit lifted
    small = write_bomb(tmp_path / "small.png", 10, 10, complete=True)  # decoded outside the lock
    with ThreadPoolExecutor(4) as pool:
        shapes = list(pool.map(lambda path: tuple(read_picture(path).shape), [large, small] * 20))
    assert shapes == [(3, 100, 100), (3, 10, 10)] * 20
    assert Image.MAX_IMAGE_PIXELS == 1000


# --- files that are not pictures ------------------------------------------------------------------------


def test_truncated_jpeg_is_sized_from_its_header_and_refused_when_decoded(tmp_path):
    path = write_truncated_jpeg(tmp_path / "cut.jpg", width=64, height=48)
    assert picture_size(path, "header") == (48, 64) and picture_size(path, "exists") == (48, 64)
    for read in (lambda p: picture_info(p, "decode"), read_picture):
        with pytest.raises(UnreadablePicture, match="picture cannot be decoded"):
            read(path)


def test_missing_text_and_folder_are_one_line_reasons(tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("just words, no picture")
    folder = tmp_path / "x.jpg"
    folder.mkdir()
    expected = {
        tmp_path / "absent.jpg": "picture not found",
        text: "not a picture",
        folder: "a folder, not a picture",
    }
    for path, reason in expected.items():
        for read in (read_picture, picture_info):
            with pytest.raises(UnreadablePicture) as error:
                read(path)
            assert reason in error.value.reason and str(error.value) == f"{path}: {error.value.reason}"
            assert str(path) not in error.value.reason


def test_unknown_verify_level_is_a_programming_error(tmp_path):
    with pytest.raises(ValueError, match="verify"):
        picture_info(tmp_path / "a.jpg", "pixels")


# --- modes ----------------------------------------------------------------------------------------------


def test_16_bit_grey_png_keeps_its_brightness(tmp_path):
    path = tmp_path / "grey16.png"
    Image.fromarray(np.full((6, 8), 32768, np.uint16)).save(path)
    assert Image.open(path).mode.startswith("I")
    picture = read_picture(path)
    assert picture.shape == (3, 6, 8) and picture.dtype == torch.uint8
    assert abs(picture.float().mean().item() - 128) <= 1


def test_16_bit_rgb_png_keeps_its_brightness(tmp_path):
    width, height = 4, 3
    row = b"\x00" + struct.pack(">HHH", 65535, 32768, 0) * width  # filter byte, then 16-bit R, G, B
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)  # 16 bits, RGB
    path = tmp_path / "rgb16.png"
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(row * height))
        + png_chunk(b"IEND", b"")
    )
    assert close_to(pixel(read_picture(path), 1, 1), (255, 128, 0), tolerance=1)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (np.full((4, 4), 32768, np.int32), 128),  # I within 16 bits: the 16-bit range
        (np.full((4, 4), 0.5, np.float32), 128),  # F within 0..1
        (np.full((4, 4), 200.0, np.float32), 200),  # F beyond 1: already 0..255
    ],
)
def test_32_bit_integer_and_float_tiffs(tmp_path, values, expected):
    path = tmp_path / "deep.tif"
    Image.fromarray(values).save(path)
    assert close_to(pixel(read_picture(path), 0, 0), (expected,) * 3, tolerance=1)


def test_palette_with_transparency_keeps_its_colours_without_warning(tmp_path, no_warnings):
    palette = Image.new("P", (6, 4), 0)
    palette.paste(1, (3, 0, 6, 4))  # index 0 on the left half, 1 on the right
    palette.putpalette([*RED, *BLUE] + [0] * 762)
    path = tmp_path / "palette.png"
    palette.save(path, transparency=bytes([0, 255]))  # index 0 fully transparent, as bytes per entry
    picture = read_picture(path)
    assert pixel(picture, 0, 0) == RED and pixel(picture, 0, 5) == BLUE  # alpha dropped, colour kept


@pytest.mark.parametrize("mode", ["1", "L", "LA", "RGBA"])
def test_other_modes_convert(tmp_path, mode):
    path = tmp_path / f"{mode}.png"
    Image.new("RGB", (5, 4), (255, 255, 255)).convert(mode).save(path)
    assert pixel(read_picture(path), 2, 2) == (255, 255, 255)


def test_lab_tiff_converts(tmp_path):
    path = tmp_path / "lab.tif"
    Image.new("LAB", (5, 4), (255, 128, 128)).save(path)  # L = 100, a = b = 0: white
    assert close_to(pixel(read_picture(path), 0, 0), (255, 255, 255), tolerance=3)


def test_gif_gives_its_first_frame(tmp_path):
    path = tmp_path / "two.gif"
    first, second = Image.new("RGB", (6, 6), RED), Image.new("RGB", (6, 6), BLUE)
    first.save(path, save_all=True, append_images=[second])
    assert pixel(read_picture(path), 3, 3) == RED


def write_cmyk_red(path, **options):
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(path, quality=95, **options)
    return path


def test_cmyk_jpeg_reads_red(tmp_path):
    path = write_cmyk_red(tmp_path / "cmyk.jpg")
    assert close_to(pixel(read_picture(path), 8, 8), RED)


def test_cmyk_with_a_profile_that_does_not_fit_falls_back_to_pillows_conversion(tmp_path):
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()  # RGB profile, CMYK pixels
    for profile in (srgb, b"not an ICC profile at all"):
        path = write_cmyk_red(tmp_path / "cmyk_profile.jpg", icc_profile=profile)
        assert Image.open(path).info["icc_profile"] == profile
        assert close_to(pixel(read_picture(path), 8, 8), RED)


def test_cmyk_with_a_profile_goes_through_it(tmp_path, monkeypatch):
    # No CMYK profile ships with Pillow or this machine: the transformation is stood in for, to show the
    # embedded profile is what converts the colours when there is one.
    used = []

    def profile_to_profile(picture, source, target, outputMode):
        used.append((picture.mode, source, outputMode))
        return Image.new("RGB", picture.size, BLUE)

    monkeypatch.setattr(ImageCms, "profileToProfile", profile_to_profile)
    monkeypatch.setattr(ImageCms, "ImageCmsProfile", lambda stream: stream.read())
    path = write_cmyk_red(tmp_path / "cmyk_profile.jpg", icc_profile=b"a press profile")
    assert pixel(read_picture(path), 8, 8) == BLUE
    assert used == [("CMYK", b"a press profile", "RGB")]


# --- EXIF orientation -----------------------------------------------------------------------------------


def write_oriented(path, orientation: int | None, exif_bytes: bytes | None = None):
    """A 40x20 blue picture with a red 8x8 top-left corner as stored, tagged with `orientation`."""
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[...] = BLUE
    stored[:8, :8] = RED
    picture = Image.fromarray(stored)
    if path.suffix == ".tif":
        picture.save(path, tiffinfo={274: orientation})
        return path
    if exif_bytes is None:
        exif = Image.Exif()
        exif[274] = orientation
        exif_bytes = exif.tobytes()
    picture.save(path, exif=exif_bytes, quality=95)
    return path


def red_corner(picture) -> str:
    height, width = picture.shape[1:]
    corners = {"top left": (3, 3), "top right": (3, width - 4)}
    corners |= {"bottom left": (height - 4, 3), "bottom right": (height - 4, width - 4)}
    (found,) = [name for name, (y, x) in corners.items() if close_to(pixel(picture, y, x), RED, 40)]
    return found


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".tif"])
@pytest.mark.parametrize(
    ("orientation", "shown_size", "corner"),
    [(3, (20, 40), "bottom right"), (6, (40, 20), "top right"), (8, (40, 20), "bottom left")],
)
def test_exif_orientation_turns_the_picture(tmp_path, suffix, orientation, shown_size, corner):
    path = write_oriented(tmp_path / f"turned{suffix}", orientation)
    shown = read_picture(path)
    assert tuple(shown.shape[1:]) == shown_size and red_corner(shown) == corner
    stored = read_picture(path, orient=False)
    assert tuple(stored.shape[1:]) == (20, 40) and red_corner(stored) == "top left"
    info = picture_info(path)
    assert info == PictureInfo(*shown_size, stored_height=20, stored_width=40, orientation=orientation)
    assert picture_info(path, "decode") == info and picture_size(path, "header") == shown_size


@pytest.mark.parametrize(
    "exif_bytes",
    [
        b"Exif\x00\x00garbage",
        b"Exif\x00\x00II*\x00\xff\xff\xff\x7f",  # the first IFD far beyond the block
        # An orientation of 99 (there are 8).
        b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x01\x01\x12\x00\x03\x00\x00\x00\x01\x00\x63\x00\x00",
    ],
)
def test_broken_exif_reads_as_stored(tmp_path, exif_bytes):
    path = write_oriented(tmp_path / "broken_exif.jpg", None, exif_bytes=exif_bytes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow may warn "Corrupt EXIF data": harmless here
        picture = read_picture(path)
        info = picture_info(path)
    assert tuple(picture.shape[1:]) == (20, 40) and red_corner(picture) == "top left"
    assert info == PictureInfo(20, 40, 20, 40, 1)


# --- ssd detect -----------------------------------------------------------------------------------------


def test_detect_skips_a_bomb_and_detects_the_other_picture(tmp_path, capsys, no_warnings):
    from ssd.cli.main import main

    weights = shared_path(FIXTURES / "ssdlite320_bccd_trained.pt")
    good = sorted(shared_path(BCCD / "JPEGImages").glob("*.jpg"))[0]
    folder = tmp_path / "inputs"
    folder.mkdir()
    shutil.copy(good, folder / good.name)
    write_bomb(folder / "bomb.png", 30000, 30000)
    out = tmp_path / "out"
    detect = ["detect", "--weights", str(weights), "--arch", "mobilenetv3_ssd", "--threads", "1"]
    assert main(detect + [str(folder), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "1 pictures and 0 video frames" in printed and "skipped 1 unreadable inputs" in printed
    assert "bomb.png: cannot read the picture (30000x30000 is 900,000,000 pixels" in printed
    results = json.loads((out / "detections.json").read_text())
    assert results and {r["file_name"] for r in results} == {f"inputs/{good.name}"}
    assert (out / "inputs" / good.name).is_file() and not list(out.rglob("bomb*"))
    # --max-pixels: the same good picture refused below its size, nothing left to detect.
    assert (
        main(detect + [str(folder / good.name), "--out", str(tmp_path / "o2"), "--max-pixels", "1000"]) == 1
    )
    assert "more than the 1,000 allowed" in capsys.readouterr().out


def test_detect_help_states_the_package_limit():
    from ssd.cli.commands import detect

    parser = argparse.ArgumentParser()
    detect.add_arguments(parser)
    assert str(MAX_PIXELS) in " ".join(parser.format_help().split())


@pytest.mark.parametrize("orientation", range(1, 9))
def test_boxes_as_shown_follow_the_pixels_of_every_orientation(tmp_path, orientation):
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[2:8, 4:12] = RED  # the box (4, 2, 12, 8) in the stored pixels
    exif = Image.Exif()
    exif[274] = orientation
    path = tmp_path / "turned.png"
    Image.fromarray(stored).save(path, exif=exif.tobytes())
    shown = read_picture(path).permute(1, 2, 0).numpy()
    ys, xs = np.nonzero((shown[..., 0] > 200) & (shown[..., 2] < 50))
    red = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    moved = boxes_as_shown(torch.tensor([[4.0, 2.0, 12.0, 8.0]]), orientation, 40, 20)
    assert moved.tolist() == [red]
