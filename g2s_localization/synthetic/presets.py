"""Named difficulty presets of the world and the drive camera.

``default`` is the town the shipped weights and README figures use. ``hard`` widens every gap
between the satellite capture and the drive as it is in real data: another season and low sun
(long shadows), compressed and misregistered tiles, most cars moved, denser trees over the road
and more traffic, and a camera with auto-exposure swings, white-balance drift, noise, motion blur
and vignetting. ``harder`` is ``hard`` with textured ground and roofs (road wear, lawn stripes,
pitched roofs with chimneys and panels) and look-alike streets (a straight lattice with even tree
rows and row houses). Single knobs (``g2s make-world --shadows ...``) override the preset.
"""
from __future__ import annotations

from dataclasses import fields, replace

from g2s_localization.synthetic.camera_render import HARD_CAMERA, CameraEffects
from g2s_localization.synthetic.world import WorldConfig

PRESETS = ("default", "hard", "harder")

HARD_WORLD = {"tree_density": 1.8, "parked_car_density": 1.6, "car_change_fraction": 0.9, "traffic_density": 2.0,
              "shadow_strength": 0.7, "colour_shift": 1.6, "season_shift": 0.8, "tile_jpeg_quality": 40,
              "tile_misregistration_m": 0.3}
# hard, plus textured ground and roofs and look-alike streets (kept apart so hard's figures stay reproducible)
HARDER_WORLD = {**HARD_WORLD, "ground_texture": 1.0, "roof_texture": 1.0, "street_regularity": 0.8}


def world_config(preset: str = "default", **overrides: object) -> WorldConfig:
    """The preset's world, with ``overrides`` (WorldConfig fields; None = the preset's value)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {', '.join(PRESETS)}")
    known = {f.name for f in fields(WorldConfig)}
    unknown = set(overrides) - known
    if unknown:
        raise ValueError(f"unknown world settings: {', '.join(sorted(unknown))}")
    config = replace(WorldConfig(), **{"hard": HARD_WORLD, "harder": HARDER_WORLD}.get(preset, {}))
    return replace(config, **{k: v for k, v in overrides.items() if v is not None})


def camera_effects(preset: str = "default") -> CameraEffects:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {', '.join(PRESETS)}")
    return HARD_CAMERA if preset in ("hard", "harder") else CameraEffects()
