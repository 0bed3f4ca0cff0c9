"""Test imagery with known geometry: flat ground of random patches (no repeating pattern, so every
pose is distinct), as an aerial image and as a panorama standing on it."""
from __future__ import annotations

import cv2
import numpy as np

from g2s_localization.cameras.equirectangular import EquirectangularCamera


def random_patches(size: int, count: int, seed: int, background: int = 80) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.full((size, size, 3), background, np.uint8)
    for _ in range(count):
        x, y = rng.integers(0, size, 2)
        w, h = rng.integers(size // 120 + 4, size // 14 + 5, 2)
        image[y:y + h, x:x + w] = rng.integers(0, 255)
    return image


def panorama_on_ground(aerial: np.ndarray, camera_px: tuple[float, float], metres_per_px: float,
                       model: EquirectangularCamera, height_m: float, sky=(230, 200, 160)) -> np.ndarray:
    """What ``model`` (north-referenced azimuths) sees ``height_m`` above ``camera_px`` of the aerial."""
    u, v = np.meshgrid(np.arange(model.width), np.arange(model.height))
    azimuth, elevation = model.pixel_to_direction(u, v)
    below = elevation < -0.01
    dist = np.where(below, height_m / np.tan(-np.where(below, elevation, -1.0)), 0.0)
    px = camera_px[0] + dist * np.sin(azimuth) / metres_per_px
    py = camera_px[1] - dist * np.cos(azimuth) / metres_per_px
    panorama = cv2.remap(aerial, px.astype(np.float32), py.astype(np.float32), cv2.INTER_LINEAR)
    panorama[~below] = sky
    return panorama
