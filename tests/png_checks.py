"""What a written plot must hold: a PNG of the expected pixel size with series drawn on it.

A file size says nothing about content (a blank or one-colour figure is a large PNG too), so
the pixels are read back: mostly white background, some dark ink (axes, text), and a number
of distinct colour hues (the series: tiers, modes, strategies).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HUE_BINS = 12  # 30-degree sectors of the colour wheel
HUE_PIXELS = 150  # pixels a sector needs to count as a drawn colour (not antialiasing)


def drawn_hues(path: Path) -> int:
    """Number of hue sectors with at least :data:`HUE_PIXELS` saturated pixels."""
    rgb = _read(path)
    high, low = rgb.max(axis=2), rgb.min(axis=2)
    saturated = (high - low) >= 0.25
    r, g, b = (rgb[..., i][saturated] for i in range(3))
    span = (high - low)[saturated]
    hue = np.where(
        high[saturated] == r,
        ((g - b) / span) % 6,
        np.where(high[saturated] == g, (b - r) / span + 2, (r - g) / span + 4),
    )
    counts = np.bincount((hue * HUE_BINS / 6).astype(int) % HUE_BINS, minlength=HUE_BINS)
    return int((counts >= HUE_PIXELS).sum())


def assert_plot(path: Path, size: tuple[int, int] | None = None, hues: int = 2) -> None:
    """``path`` is a PNG of ``size`` (width, height) pixels, if given, on a white background
    with dark ink and at least ``hues`` distinct colours drawn."""
    rgb = _read(path)
    if size is not None:
        assert rgb.shape[:2] == (size[1], size[0]), (path, rgb.shape)
    white = (rgb.min(axis=2) > 0.98).mean()
    ink = (rgb.max(axis=2) < 0.3).mean()
    assert 0.5 < white < 0.98, (path, white)  # a background, and something on it
    assert ink > 0.002, (path, ink)  # axes, ticks and labels
    found = drawn_hues(path)
    assert found >= hues, (path, found, hues)


def _read(path: Path) -> np.ndarray:
    import matplotlib.image

    image = matplotlib.image.imread(str(path))
    assert image.ndim == 3 and image.shape[2] in (3, 4), (path, image.shape)
    return np.asarray(image[..., :3], dtype=np.float64)
