"""Pictures of the pixels: the focal-plane mosaic and the zooms as PNG (Pillow, no
matplotlib: a 1000 x 1100 mosaic is written in tens of milliseconds) and the mosaic as a
FITS image with a sky WCS (TAN-SIP fitted through VISQL's focal-plane model), for ds9 and
astrometry.net.

One grey scale for the whole plane (ds9's zscale by default, or asinh), computed on the
bias-subtracted mosaic, so that hot pixels and saturated stars do not set it; no-data pixels
(gaps) are dark grey, missing or unreadable quadrants a mid-grey cell with a cross.
Overlays are drawn on the picture: CCD labels, a compass (N and E from the pointing), a scale
bar and a title strip.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

GAP_GREY = 38  # no data: between quadrants and CCDs
MISSING_GREY = 128  # a quadrant that is missing or could not be read
TITLE_HEIGHT = 26
FOOTER_HEIGHT = 64


def grey_levels(image: np.ndarray, stretch: str = "zscale") -> tuple[float, float]:
    """The (black, white) levels of a picture: zscale (ds9's, robust to outliers) or the
    0.5 and 99.5 percentiles for asinh; finite pixels only."""
    from astropy.visualization import ZScaleInterval

    values = image[np.isfinite(image)]
    if values.size == 0:
        return 0.0, 1.0
    if values.size > 400_000:  # a regular sample is as good and far faster
        values = values[:: values.size // 400_000]
    if stretch == "asinh":
        lo, hi = np.percentile(values, [0.5, 99.5])
    else:
        # ds9 samples 600-1000 pixels; 5000 regular ones settle the levels to a few per cent
        # (its rejection loop convolves the whole sample: cost grows with it)
        sample = values[:: max(1, values.size // 5000)]
        lo, hi = ZScaleInterval(n_samples=sample.size).get_limits(sample)
    if not hi > lo:
        hi = lo + 1.0
    return float(lo), float(hi)


def to_grey(image: np.ndarray, levels: tuple[float, float], stretch: str = "zscale") -> np.ndarray:
    """uint8 picture of `image` between `levels` (linear, or asinh above black); NaN as the
    gap grey."""
    lo, hi = levels
    scaled = (image - lo) / (hi - lo)
    if stretch == "asinh":
        scaled = np.arcsinh(10.0 * np.clip(scaled, 0, None)) / np.arcsinh(10.0)
    out = np.clip(scaled * 254.0 + 1.0, 1.0, 255.0)  # 0 is kept for nothing
    out = np.where(np.isfinite(image), out, GAP_GREY)
    return out.astype(np.uint8)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _png(picture: Image.Image, level: int = 3) -> bytes:
    buf = io.BytesIO()
    picture.save(buf, format="PNG", compress_level=level)  # 3: a quarter of 6's time
    return buf.getvalue()


def _title_strip(picture: Image.Image, title: str) -> Image.Image:
    """The picture with a title strip on top (text cut to the width, never off the edge)."""
    width = picture.width
    grey = picture.mode == "L"
    out = Image.new(picture.mode, (width, picture.height + TITLE_HEIGHT), 20 if grey else (20,) * 3)
    out.paste(picture, (0, TITLE_HEIGHT))
    draw = ImageDraw.Draw(out)
    font = _font(15)
    text = title
    while text and draw.textlength(text, font=font) > width - 12:
        text = text[:-2]
    if text != title:
        text = text[:-1] + "…"
    draw.text((6, 4), text, fill=235 if grey else (235,) * 3, font=font)
    return out


def _arrow(draw: ImageDraw.ImageDraw, start: tuple[float, float], vec: tuple[float, float],
           length: float, label: str, colour: tuple[int, int, int]) -> None:  # fmt: skip
    x0, y0 = start
    x1, y1 = x0 + vec[0] * length, y0 + vec[1] * length
    draw.line([(x0, y0), (x1, y1)], fill=colour, width=2)
    back = np.array([-vec[0], -vec[1]])
    side = np.array([-vec[1], vec[0]])
    for s in (1, -1):
        tip = np.array([x1, y1]) + 8 * back + 4 * s * side
        draw.line([(x1, y1), (float(tip[0]), float(tip[1]))], fill=colour, width=2)
    draw.text((x1 + vec[0] * 10 - 4, y1 + vec[1] * 10 - 7), label, fill=colour, font=_font(13))


def mosaic_png(
    grey: np.ndarray,
    *,
    title: str,
    ccd_labels: Mapping[str, tuple[float, float]] = {},
    missing_cells: Sequence[tuple[int, int, int, int]] = (),
    north_east: tuple[tuple[float, float], tuple[float, float]] | None = None,
    arcsec_per_pixel: float | None = None,
    note: str = "",
) -> bytes:
    """The mosaic picture as PNG bytes. `grey`: uint8, row 0 at low Y (drawn at the bottom:
    X right, Y up as in every focal-plane map); `ccd_labels`: name -> (col, row) of the label
    centre; `missing_cells`: (col0, row0, width, height) drawn mid-grey and crossed;
    `north_east`: unit vectors of N and E in (X, Y); `arcsec_per_pixel`: for the scale bar.
    The compass, scale bar and `note` go in a strip below the picture, off the data."""
    height, width = grey.shape
    rgb = np.repeat(grey[::-1, :, None], 3, axis=2)
    picture = Image.fromarray(rgb, "RGB")
    draw = ImageDraw.Draw(picture)
    for c0, r0, w, h in missing_cells:
        top = height - (r0 + h)
        box = [c0, top, c0 + w - 1, top + h - 1]
        draw.rectangle(box, fill=(MISSING_GREY,) * 3, outline=(200, 60, 60))
        draw.line([(box[0], box[1]), (box[2], box[3])], fill=(200, 60, 60))
        draw.line([(box[0], box[3]), (box[2], box[1])], fill=(200, 60, 60))
    font = _font(max(10, min(16, width // 70)))
    for name, (col, row) in ccd_labels.items():
        y = height - row
        draw.text((col, y), name, fill=(255, 210, 60), font=font, anchor="mm",
                  stroke_width=2, stroke_fill=(0, 0, 0))  # fmt: skip
    framed = Image.new("RGB", (width, height + FOOTER_HEIGHT), (20, 20, 20))
    framed.paste(picture, (0, 0))
    foot = ImageDraw.Draw(framed)
    if north_east is not None:
        (nx, ny), (ex, ey) = north_east
        start = (width - 60.0, height + FOOTER_HEIGHT / 2)
        _arrow(foot, start, (nx, -ny), 24, "N", (120, 220, 255))
        _arrow(foot, start, (ex, -ey), 16, "E", (120, 220, 255))
    if arcsec_per_pixel:
        _scale_bar(foot, height + FOOTER_HEIGHT / 2, arcsec_per_pixel)
    if note:
        foot.text((width / 2, height + FOOTER_HEIGHT / 2), note, fill=(200, 200, 200),
                  font=_font(12), anchor="mm")  # fmt: skip
    return _png(_title_strip(framed, title))


def _scale_bar(draw: ImageDraw.ImageDraw, y: float, arcsec_per_px: float) -> None:
    """A bar of a round number of arcmin (or arcsec), 60-200 picture pixels long."""
    for arcsec in (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200):
        px = arcsec / arcsec_per_px
        if px >= 60 or arcsec == 1200:
            break
    label = f"{arcsec // 60}'" if arcsec >= 60 else f'{arcsec}"'
    x0 = 12
    draw.line([(x0, y + 6), (x0 + px, y + 6)], fill=(255, 255, 255), width=3)
    draw.text((x0 + px / 2, y - 8), label, fill=(255, 255, 255), font=_font(13), anchor="mm")


def zoom_png(image: np.ndarray, *, title: str, stretch: str = "zscale") -> bytes:
    """A full-resolution zoom (float, bias subtracted, row 0 at low Y) as PNG bytes, its
    own grey scale."""
    grey = to_grey(image, grey_levels(image, stretch), stretch)
    picture = Image.fromarray(np.ascontiguousarray(grey[::-1]), "L")
    return _png(_title_strip(picture, title), level=1)  # pixel noise: zlib gains little
