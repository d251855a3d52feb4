"""Pictures with labelled boxes, drawn the same way in every picture the package writes.

- every box takes its class's colour (`ssd.evaluation.palette`);
- ground truth is a thin dashed outline, a prediction a solid one captioned `name score` on its colour;
- an error is named in words on its box (`missed`, `false`), never by a colour of its own;
- `with_legend` adds a band under a picture saying all this, and which colour is which class.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from ssd.evaluation.palette import class_colour, text_colour

__all__ = [
    "class_colour",
    "class_name",
    "draw_detections",
    "draw_ground_truth",
    "tensor_picture",
    "with_legend",
]

LEGEND_GREY = (200, 200, 200)


def class_name(label: int, class_names: Sequence[str] | None) -> str:
    """Label 1..K to its name (`class_names[label - 1]`), or `class <label>` without names."""
    if class_names is not None and 1 <= label <= len(class_names):
        return str(class_names[label - 1])
    return f"class {label}"


def tensor_picture(image: Tensor) -> Image.Image:
    """A (3, H, W) tensor as a PIL picture: uint8, or floats in 0..1 (scaled) or 0..255."""
    array = image.detach().permute(1, 2, 0).cpu().numpy()
    if array.dtype != np.uint8:
        array = array * (255.0 if array.size and array.max() <= 1.0 else 1.0)
        array = np.clip(array, 0, 255).astype(np.uint8)
    return Image.fromarray(array)


def _font(picture_side: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=max(11, round(picture_side / 50)))


def _line_width(picture_side: int) -> int:
    return max(2, round(picture_side / 400))


def _dashed_rectangle(draw: ImageDraw.ImageDraw, box, colour, width: int) -> None:
    """Dashes of `colour` with black between them: visible on any background, also on an object of the
    class's own colour. PIL draws no dashed lines: each side is cut into dashes, starting at the corners."""
    x1, y1, x2, y2 = box
    draw.rectangle(box, outline=(0, 0, 0), width=width)
    dash = max(4, 3 * width)
    corners = ((x1, y1, x2, y1), (x2, y1, x2, y2), (x2, y2, x1, y2), (x1, y2, x1, y1))
    for ax, ay, bx, by in corners:
        length = max(abs(bx - ax), abs(by - ay))
        if length <= 0:
            continue
        for start in np.arange(0, length, 2 * dash):
            end = min(start + dash, length)
            draw.line(
                (
                    ax + (bx - ax) * start / length,
                    ay + (by - ay) * start / length,
                    ax + (bx - ax) * end / length,
                    ay + (by - ay) * end / length,
                ),
                fill=colour,
                width=width,
            )


def _caption(draw, font, x: float, y: float, text: str, colour, above: bool = True) -> None:
    """`text` on a patch of `colour`, above the point (inside the box when there is no room above)."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    text_w, text_h = right - left, bottom - top + 4
    text_y = y - text_h if above and y - text_h >= 0 else y
    x = max(0.0, min(x, draw.im.size[0] - text_w - 4))  # a box at the right edge keeps its whole caption
    draw.rectangle((x, text_y, x + text_w + 4, text_y + text_h), fill=colour)
    draw.text((x + 2, text_y + 2 - top), text, fill=text_colour(colour), font=font)


def draw_ground_truth(
    picture: Image.Image,
    boxes,
    labels,
    class_names: Sequence[str] | None = None,
    captions: bool = False,
    missed: Sequence[bool] | None = None,
) -> Image.Image:
    """A copy of `picture` with each ground-truth box as a thin dashed outline in its class's colour.

    `captions` names each box (for pictures that show ground truth alone); a box whose `missed` is true is
    drawn thicker and captioned `missed <name>`, whatever `captions` says.
    """
    canvas = picture.convert("RGB")
    draw = ImageDraw.Draw(canvas)
    side = max(canvas.size)
    width, font = max(1, _line_width(side) - 1), _font(side)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(labels).reshape(-1)
    for index, (box, label) in enumerate(zip(boxes, labels, strict=True)):
        colour = class_colour(int(label))
        is_missed = bool(missed[index]) if missed is not None else False
        _dashed_rectangle(draw, tuple(float(v) for v in box), colour, width * 2 if is_missed else width)
        if is_missed or captions:
            text = ("missed " if is_missed else "") + class_name(int(label), class_names)
            # Below the top edge, inside the box: a prediction's caption sits above its box.
            _caption(draw, font, float(box[0]), float(box[1]), text, colour, above=False)
    return canvas


def draw_detections(
    picture: Image.Image,
    boxes: Tensor,
    labels: Tensor,
    scores: Tensor | None = None,
    class_names: Sequence[str] | None = None,
    false: Sequence[bool] | None = None,
) -> Image.Image:
    """A copy of `picture` with each predicted box drawn solid in its class's colour and captioned
    `name score` (`false name score` where `false` marks it as matching no object). Line width and
    captions scale with the picture."""
    canvas = picture.convert("RGB")
    draw = ImageDraw.Draw(canvas)
    side = max(canvas.size)
    width, font = _line_width(side), _font(side)
    # Lowest scores first, so the most confident boxes and captions end up on top.
    for index in reversed(range(len(labels))):
        label = int(labels[index])
        x1, y1, x2, y2 = (float(v) for v in boxes[index])
        colour = class_colour(label)
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=width)
        caption = class_name(label, class_names)
        if scores is not None:
            caption += f" {float(scores[index]):.2f}"
        if false is not None and false[index]:
            caption = "false " + caption
        _caption(draw, font, x1, y1, caption, colour)
    return canvas


def with_legend(
    picture: Image.Image,
    class_names: Sequence[str],
    labels: Iterable[int] | None = None,
    ground_truth: bool = True,
    predictions: bool = True,
    score_threshold: float | None = None,
    errors: bool = False,
) -> Image.Image:
    """`picture` with a band below it: how ground truth and predictions are drawn, and each class's colour.

    `labels` limits the colour key to the classes shown (all classes by default); `errors` adds the words
    an error carries (`missed`, `false`).
    """
    side = max(1, picture.width)
    font = ImageFont.load_default(size=max(12, min(18, round(side / 70))))
    entries: list[tuple[str, object, str]] = []  # (kind, colour, text)
    if ground_truth:
        entries.append(("dashed", LEGEND_GREY, "ground truth (dashed)"))
    if predictions:
        where = f", score >= {score_threshold:.2f}" if score_threshold is not None else ""
        entries.append(("solid", LEGEND_GREY, f"prediction: name score (solid{where})"))
    if errors:
        entries.append(("text", None, "'missed': object not found   'false': prediction matching no object"))
    shown = sorted({int(v) for v in labels}) if labels is not None else range(1, len(class_names) + 1)
    entries += [("swatch", class_colour(label), class_name(label, class_names)) for label in shown]

    probe = ImageDraw.Draw(picture)
    line_h = probe.textbbox((0, 0), "Hg", font=font)[3] + 10
    mark_w, gap, margin = 2 * line_h, line_h, 8
    # Lay the entries out in lines no wider than the picture.
    placed, x, y = [], margin, margin
    for kind, colour, text in entries:
        text_w = probe.textbbox((0, 0), text, font=font)[2]
        item_w = (0 if kind == "text" else mark_w + 6) + text_w
        if x > margin and x + item_w > side - margin:
            x, y = margin, y + line_h
        placed.append((kind, colour, text, x, y))
        x += item_w + gap
    band = Image.new("RGB", (picture.width, y + line_h + margin), (24, 24, 24))
    draw = ImageDraw.Draw(band)
    for kind, colour, text, x, y in placed:
        middle = y + line_h // 2
        if kind == "dashed":
            _dashed_rectangle(draw, (x, middle - 5, x + mark_w, middle + 5), colour, 2)
        elif kind == "solid":
            draw.rectangle((x, middle - 5, x + mark_w, middle + 5), outline=colour, width=3)
        elif kind == "swatch":
            draw.rectangle((x, middle - 7, x + mark_w, middle + 7), fill=colour)
        text_x = x if kind == "text" else x + mark_w + 6
        draw.text((text_x, middle), text, fill=(235, 235, 235), font=font, anchor="lm")
    out = Image.new("RGB", (picture.width, picture.height + band.height))
    out.paste(picture.convert("RGB"), (0, 0))
    out.paste(band, (0, picture.height))
    return out
