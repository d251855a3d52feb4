"""Several pictures in one: square cells in rows, each picture fitted into its cell, with an optional title."""

from __future__ import annotations

import math
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

CELL_BACKGROUND = (32, 32, 32)


def fit_into(picture: Image.Image, side: int) -> tuple[Image.Image, float]:
    """`picture` scaled so its longer side is `side`, and the scale (boxes multiply by it)."""
    scale = side / max(picture.size)
    size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
    return picture.resize(size), scale


def mosaic(
    cells: Sequence[Image.Image],
    columns: int,
    titles: Sequence[str] | None = None,
    gap: int = 4,
) -> Image.Image:
    """`cells` (already fitted, all within one square side) in rows of `columns`, each titled when `titles`."""
    side = max(max(cell.size) for cell in cells)
    columns = max(1, min(columns, len(cells)))
    rows = math.ceil(len(cells) / columns)
    font = ImageFont.load_default(size=max(11, round(side / 24)))
    title_h = (ImageDraw.Draw(cells[0]).textbbox((0, 0), "Hg", font=font)[3] + 8) if titles else 0
    grid = Image.new(
        "RGB",
        (columns * (side + gap) - gap, rows * (side + title_h + gap) - gap),
        (0, 0, 0),
    )
    draw = ImageDraw.Draw(grid)
    for index, cell in enumerate(cells):
        x = (index % columns) * (side + gap)
        y = (index // columns) * (side + title_h + gap)
        grid.paste(Image.new("RGB", (side, side + title_h), CELL_BACKGROUND), (x, y))
        if titles:
            draw.text(
                (x + 4, y + 4),
                _shortened(draw, titles[index], font, side - 8),
                fill=(235, 235, 235),
                font=font,
            )
        grid.paste(cell, (x, y + title_h))
    return grid


def _shortened(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """`text`, cut in the middle with '...' until it fits `width` pixels (a file name keeps both ends)."""
    if draw.textlength(text, font=font) <= width:
        return text
    keep = len(text)
    while keep > 2:
        keep -= 1
        short = text[: keep // 2] + "..." + text[len(text) - keep // 2 :]
        if draw.textlength(short, font=font) <= width:
            return short
    return text[:1]
