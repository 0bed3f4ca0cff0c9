"""Real cross-view pairs in the ``pairs.yaml`` format: a street-level panorama, a north-up aerial
image, and where on the aerial the camera stood.

Format: ``defaults`` (any pair key) and ``pairs`` (a list; each ``id``, ``ground``, ``aerial``,
``camera_px`` and overrides). Paths are relative to the file. ``camera_px`` is ``(x right,
y down)`` with pixel centres at integers. ``ground_model`` is ``equirectangular_band`` (horizon at
``band_horizon_row``, the middle row when absent) or ``equirectangular`` (full sphere). Keys this
reader does not know are reported, not fatal: other sets in the format may carry more.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, fields
from pathlib import Path

import cv2
import numpy as np
import yaml
from numpy.typing import NDArray

from g2s_localization.cameras.equirectangular import EquirectangularCamera

GROUND_MODELS = ("equirectangular_band", "equirectangular")


@dataclass(frozen=True)
class RealPair:
    id: str
    ground: Path
    aerial: Path
    camera_px: tuple[float, float]
    ground_model: str = "equirectangular_band"
    azimuth_at_column0_deg: float = -180.0
    vertical_fov_deg_approx: float = math.nan
    camera_height_m_range: tuple[float, float] = (2.0, 3.0)
    aerial_north_up: bool = True
    aerial_metres_per_px_range: tuple[float, float] = (0.2, 0.3)
    band_horizon_row: float | None = None

    def load_ground(self) -> tuple[NDArray[np.uint8], EquirectangularCamera]:
        """The panorama (RGB) and its camera model."""
        image = read_rgb(self.ground)
        h, w = image.shape[:2]
        if self.ground_model == "equirectangular":
            return image, EquirectangularCamera.full_sphere(w, h, self.azimuth_at_column0_deg)
        horizon = (h - 1) / 2.0 if self.band_horizon_row is None else float(self.band_horizon_row)
        return image, EquirectangularCamera(w, h, horizon, self.azimuth_at_column0_deg)

    def load_aerial(self) -> NDArray[np.uint8]:
        return read_rgb(self.aerial)


def read_rgb(path: Path) -> NDArray[np.uint8]:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"cannot read image {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _pair(entry: dict, defaults: dict, base: Path) -> RealPair:
    merged = {**defaults, **entry}
    known = {f.name for f in fields(RealPair)}
    unknown = sorted(set(merged) - known)
    if unknown:
        warnings.warn(f"pair {merged.get('id', '?')}: ignoring keys {unknown}", stacklevel=3)
    values = {k: v for k, v in merged.items() if k in known}
    for key in ("id", "ground", "aerial", "camera_px"):
        if key not in values:
            raise ValueError(f"pair {merged.get('id', '?')} lacks {key!r}")
    if values.get("ground_model", GROUND_MODELS[0]) not in GROUND_MODELS:
        raise ValueError(f"pair {values['id']}: ground_model must be one of {GROUND_MODELS}")
    if not values.get("aerial_north_up", True):
        raise ValueError(f"pair {values['id']}: only north-up aerial images are supported")
    for key in ("camera_px", "camera_height_m_range", "aerial_metres_per_px_range"):
        if key in values:
            pair_values = tuple(float(x) for x in values[key])
            if len(pair_values) != 2 or not all(math.isfinite(x) for x in pair_values):
                raise ValueError(f"pair {values['id']}: {key} must be two finite numbers")
            values[key] = pair_values
    lo, hi = values.get("aerial_metres_per_px_range", (0.2, 0.3))
    if not 0 < lo <= hi:
        raise ValueError(f"pair {values['id']}: aerial_metres_per_px_range must be positive and ordered")
    values["id"] = str(values["id"])
    values["ground"], values["aerial"] = base / values["ground"], base / values["aerial"]
    return RealPair(**values)


def read_pairs(path: str | Path) -> list[RealPair]:
    """Every pair of a ``pairs.yaml``; a malformed file raises ValueError naming what is wrong."""
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("pairs"), list):
        raise ValueError(f"{path} has no 'pairs' list")
    defaults = document.get("defaults") or {}
    return [_pair(entry, defaults, path.parent) for entry in document["pairs"]]
