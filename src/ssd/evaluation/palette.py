"""The one colour of each class, used by every picture and plot, so a class looks the same everywhere.

Label 1..K is an object class; label 0, the background, is a neutral grey. The first twenty classes take
hand-picked, clearly different colours; beyond them the hue steps by the golden ratio, which keeps any two
successive labels far apart.
"""

from __future__ import annotations

import colorsys

BACKGROUND_COLOUR = (160, 160, 160)

# Bright enough that a caption in black or white (whichever reads better, `text_colour`) stays legible.
_FIRST = (
    (255, 56, 56),
    (0, 194, 255),
    (72, 249, 10),
    (255, 178, 29),
    (203, 56, 255),
    (0, 212, 187),
    (255, 112, 31),
    (100, 115, 255),
    (207, 210, 49),
    (255, 55, 199),
    (61, 219, 134),
    (255, 157, 151),
    (44, 153, 168),
    (146, 204, 23),
    (132, 56, 255),
    (26, 147, 52),
    (255, 149, 200),
    (0, 24, 236),
    (82, 0, 133),
    (52, 69, 147),
)


def class_colour(label: int) -> tuple[int, int, int]:
    """RGB 0..255 of label `label` (1..K; 0 is the background)."""
    label = int(label)
    if label <= 0:
        return BACKGROUND_COLOUR
    if label <= len(_FIRST):
        return _FIRST[label - 1]
    hue = (label * 0.618033988749895) % 1.0
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(red * 255), int(green * 255), int(blue * 255)


def class_colour_float(label: int) -> tuple[float, float, float]:
    """The same colour as matplotlib takes it (0..1)."""
    return tuple(channel / 255 for channel in class_colour(label))


def text_colour(background: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black on light colours, white on dark ones (by perceived luminance)."""
    red, green, blue = background
    return (0, 0, 0) if 0.299 * red + 0.587 * green + 0.114 * blue > 140 else (255, 255, 255)
