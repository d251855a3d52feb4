"""Pictures with labelled boxes: one colour per class, the class name and score above each box."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont
from torch import Tensor


def class_colour(label: int) -> tuple[int, int, int]:
    """A bright colour per class; successive labels are far apart in hue (golden-ratio steps)."""
    hue = (label * 0.618033988749895) % 1.0
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(red * 255), int(green * 255), int(blue * 255)


def class_name(label: int, class_names: Sequence[str] | None) -> str:
    """Label 1..K to its name (`class_names[label - 1]`), or `class <label>` without names."""
    if class_names is not None and 1 <= label <= len(class_names):
        return str(class_names[label - 1])
    return f"class {label}"


def draw_detections(
    picture: Image.Image,
    boxes: Tensor,
    labels: Tensor,
    scores: Tensor | None = None,
    class_names: Sequence[str] | None = None,
) -> Image.Image:
    """A copy of `picture` with each box drawn in its class's colour and captioned `name score` (the name
    alone for ground truth, `scores=None`). Line width and captions scale with the picture."""
    canvas = picture.convert("RGB")
    draw = ImageDraw.Draw(canvas)
    width = max(2, round(max(canvas.size) / 400))
    font = ImageFont.load_default(size=max(11, round(max(canvas.size) / 50)))
    # Lowest scores first, so the most confident boxes and captions end up on top.
    for index in reversed(range(len(labels))):
        label = int(labels[index])
        x1, y1, x2, y2 = (float(v) for v in boxes[index])
        colour = class_colour(label)
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=width)
        caption = class_name(label, class_names)
        if scores is not None:
            caption += f" {float(scores[index]):.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), caption, font=font)
        text_w, text_h = right - left, bottom - top + 4
        text_y = y1 - text_h if y1 - text_h >= 0 else y1  # inside the box when at the top edge
        draw.rectangle((x1, text_y, x1 + text_w + 4, text_y + text_h), fill=colour)
        draw.text((x1 + 2, text_y + 2 - top), caption, fill=(0, 0, 0), font=font)
    return canvas
