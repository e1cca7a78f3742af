"""A small line plot written as PNG with Pillow (matplotlib is not in Kaggle's kernel list we
rely on, and one plot does not earn a dependency)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = ["line_plot"]

_COLOURS = (
    (31, 119, 180),
    (214, 39, 40),
    (44, 160, 44),
    (148, 103, 189),
    (255, 127, 14),
    (23, 190, 207),
)


def line_plot(
    path: Path | str,
    series: Sequence[tuple[str, Sequence[tuple[float, float]]]],
    *,
    title: str,
    x_label: str,
    y_label: str,
    size: tuple[int, int] = (900, 560),
) -> None:
    """Draw each ``(label, [(x, y), ...])`` as a line with dots; write the PNG atomically."""
    from PIL import Image, ImageDraw, ImageFont

    from runtime.contract.files import replacing

    points = [p for _, line in series for p in line]
    if not points:
        raise ValueError("nothing to plot")
    width, height = size
    left, right, top, bottom = 70, 20, 40, 60 + 16 * len(series)
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x0, x1 = x0 - 0.05, x1 + 0.05
    pad = (y1 - y0) * 0.08 or 0.01
    y0, y1 = y0 - pad, y1 + pad

    def at(x: float, y: float) -> tuple[float, float]:
        return (
            left + (x - x0) / (x1 - x0) * (width - left - right),
            height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom),
        )

    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    draw.text((left, 12), title, fill="black", font=font)
    plot_bottom = height - bottom
    draw.rectangle((left, top, width - right, plot_bottom), outline="black")
    for n in range(6):  # ticks and grid lines
        x = x0 + (x1 - x0) * n / 5
        y = y0 + (y1 - y0) * n / 5
        px, _ = at(x, y0)
        _, py = at(x0, y)
        draw.line((px, top, px, plot_bottom), fill=(230, 230, 230))
        draw.line((left, py, width - right, py), fill=(230, 230, 230))
        draw.text((px - 12, plot_bottom + 6), f"{x:.2f}", fill="black", font=font)
        draw.text((8, py - 6), f"{y:.4f}", fill="black", font=font)
    draw.text(((left + width - right) / 2 - 30, plot_bottom + 24), x_label, fill="black", font=font)
    draw.text((8, top - 16), y_label, fill="black", font=font)
    for index, (label, line) in enumerate(series):
        colour = _COLOURS[index % len(_COLOURS)]
        coords = [at(x, y) for x, y in sorted(line)]
        if len(coords) > 1:
            draw.line(coords, fill=colour, width=2)
        for cx, cy in coords:
            draw.ellipse((cx - 3, cy - 3, cx + 3, cy + 3), fill=colour)
        legend_y = plot_bottom + 40 + 16 * index
        draw.line((left, legend_y + 6, left + 24, legend_y + 6), fill=colour, width=3)
        draw.text((left + 32, legend_y), label, fill="black", font=font)
    with replacing(path) as temporary:
        image.save(temporary, format="PNG")
