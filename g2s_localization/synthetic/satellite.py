"""Orthographic satellite image of a synthetic :class:`~.world.World`, exported as real tiles.

The satellite "capture" differs from the drive on purpose: its own set of parked cars, sun
shadows, trees seen from above (hiding the road) and its own colour response. Export goes
through Web-Mercator XYZ tiles and MBTiles exactly like a downloaded tile cache, so the
online code path (:class:`~g2s_localization.geo.tiles.TileCache`) is the one measured.
"""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

from g2s_localization.geo.geodesy import latlon_from_world_pixel, tile_index
from g2s_localization.geo.tile_sources import MBTilesWriter, write_xyz_tile
from g2s_localization.synthetic.surface_detail import paint_roof_detail
from g2s_localization.synthetic.world import World, _box_corners

SATELLITE_METRES_PER_PX = 0.2
SATELLITE_CAPTURE_TIME_S = 1000.0  # where the moving cars are when the satellite passes


def satellite_colour_response(image: NDArray[np.float32], seed: int, strength: float) -> NDArray[np.float32]:
    """Per-sensor colour and illumination: channel gains, gamma and haze, in 0..1 floats."""
    rng = np.random.default_rng(seed + 7919)
    gain = 1.0 + strength * rng.uniform(-0.12, 0.12, 3)
    gamma = 1.0 + strength * rng.uniform(-0.25, 0.25)
    haze = strength * rng.uniform(0.0, 0.08)
    return np.clip(np.power(np.clip(image, 0, 1), gamma) * gain * (1 - haze) + haze, 0, 1)


def render_satellite(world: World, metres_per_px: float = SATELLITE_METRES_PER_PX) -> NDArray[np.uint8]:
    """North-up orthophoto ``(M, M, 3)`` of the whole world, centred on the anchor."""
    cfg = world.config
    size = int(round(cfg.size_m / metres_per_px))
    image = cv2.resize(world.ground_rgb, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    half = (size - 1) / 2.0

    def to_px(xy: NDArray) -> NDArray[np.int32]:
        cols = xy[..., 0] / metres_per_px + half
        rows = half - xy[..., 1] / metres_per_px
        return np.round(np.stack([cols, rows], -1) * 16).astype(np.int32)  # 4 fractional bits

    rng = np.random.default_rng(cfg.seed + 104729)
    sun_azimuth = rng.uniform(0, 2 * math.pi)
    shadow_per_metre = 1.0 / math.tan(math.radians(rng.uniform(35, 60)))
    shadow_dir = -np.array([math.cos(sun_azimuth), math.sin(sun_azimuth)]) * shadow_per_metre

    traffic, traffic_colours = world.traffic_boxes(SATELLITE_CAPTURE_TIME_S)
    boxes = np.concatenate([world.boxes[world.box_in_satellite], traffic])
    colours = np.concatenate([world.box_colours[world.box_in_satellite], traffic_colours])
    kinds = np.concatenate([world.box_kind[world.box_in_satellite], np.ones(len(traffic), np.int8)])
    shadow = np.zeros((size, size), np.uint8)
    for box in boxes:
        base = _box_corners(box[0], box[1], box[3], box[4], box[6])
        hull = cv2.convexHull(to_px(np.concatenate([base, base + shadow_dir * box[5]])))
        cv2.fillPoly(shadow, [hull], 1, cv2.LINE_AA, 4)
    for canopy in world.canopies:
        centre = to_px(canopy[:2] + shadow_dir * canopy[2])
        cv2.circle(shadow, tuple(int(v) for v in centre), int(canopy[3] / metres_per_px * 16), 1, -1, cv2.LINE_AA, 4)
    image *= 1.0 - cfg.shadow_strength * shadow[..., None].astype(np.float32)

    sun_xy = np.array([math.cos(sun_azimuth), math.sin(sun_azimuth)])
    roof_rng = np.random.default_rng(cfg.seed + 6151)  # own stream: untextured worlds unchanged
    for k in np.argsort(boxes[:, 5], kind="stable"):  # low objects first, tall roofs on top
        box, (_, roof) = boxes[k], colours[k]
        corners = to_px(_box_corners(box[0], box[1], box[3], box[4], box[6]))
        cv2.fillPoly(image, [corners], tuple(float(c) for c in roof), cv2.LINE_AA, 4)
        if kinds[k] == 0 and cfg.roof_texture > 0:
            paint_roof_detail(image, box, roof, to_px, sun_xy, cfg.roof_texture, roof_rng)
        if kinds[k] == 0:  # roof outline
            cv2.polylines(image, [corners], True, tuple(float(c) * 0.7 for c in roof), 2, cv2.LINE_AA, 4)
        else:  # windscreen: a dark band across the front third of the car
            front = _box_corners(box[0] + 0.6 * math.cos(box[6]), box[1] + 0.6 * math.sin(box[6]), 0.9, 1.6, box[6])
            cv2.fillPoly(image, [to_px(front)], (0.12, 0.14, 0.16), cv2.LINE_AA, 4)
    texture = cv2.GaussianBlur(rng.normal(0, 1, (size, size)).astype(np.float32), (0, 0), 1.5)
    canopy_layer = np.zeros((size, size), np.float32)
    for canopy in world.canopies:
        centre = to_px(canopy[:2])
        cv2.circle(canopy_layer, tuple(int(v) for v in centre), int(canopy[3] / metres_per_px * 16), 1.0, -1,
                   cv2.LINE_AA, 4)
    green = np.stack([0.16 + 0.05 * texture, 0.33 + 0.08 * texture, 0.12 + 0.04 * texture], -1)
    alpha = np.clip(canopy_layer, 0, 1)[..., None]
    image = image * (1 - alpha) + green * alpha
    image = satellite_colour_response(image, cfg.seed, cfg.colour_shift)
    image = other_season(image, cfg.season_shift)
    out = (image * 255.0 + 0.5).astype(np.uint8)
    if cfg.tile_jpeg_quality:  # the imagery provider's compression
        encoded = cv2.imencode(".jpg", cv2.cvtColor(out, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY,
                                                                              cfg.tile_jpeg_quality])[1]
        out = cv2.cvtColor(cv2.imdecode(encoded, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return out


def other_season(image: NDArray[np.float32], strength: float) -> NDArray[np.float32]:
    """Vegetation of another season: green-dominant pixels (grass, canopies) turn towards straw and
    brown by ``strength`` (0..1); grey roads and roofs keep their colour."""
    if strength <= 0:
        return image
    r, g, b = image[..., 0], image[..., 1], image[..., 2]
    greenness = np.clip((g - np.maximum(r, b)) * 6.0, 0.0, 1.0)[..., None] * strength
    autumn = np.stack([0.55 * g + 0.45 * r + 0.1, 0.75 * g, 0.6 * b], -1)
    return np.clip(image * (1 - greenness) + autumn * greenness, 0.0, 1.0)


def misregistration_en(world: World) -> tuple[float, float]:
    """Where the orthophoto is put relative to the truth (east, north metres): a seeded direction at
    ``tile_misregistration_m``, as real imagery is off by a few decimetres."""
    angle = np.random.default_rng(world.config.seed + 15485867).uniform(0, 2 * math.pi)
    return (world.config.tile_misregistration_m * math.cos(angle), world.config.tile_misregistration_m * math.sin(angle))


def export_tiles(world: World, satellite: NDArray[np.uint8], out_dir: str | Path, zooms: tuple[int, ...] = (19, 20),
                 metres_per_px: float = SATELLITE_METRES_PER_PX, mbtiles: bool = True,
                 progress: bool = False) -> list[tuple[int, int, int]]:
    """Resample the orthophoto into Web-Mercator tiles under ``out_dir/tiles`` (+ ``area.mbtiles``).

    Only tiles lying wholly inside the world are written, so the cache never claims coverage it
    does not have.
    """
    out = Path(out_dir)
    frame = world.enu_frame
    half_m = world.config.size_m / 2.0 - 1.0
    corner_lat, corner_lon, _ = frame.to_geodetic(np.array([[-half_m, -half_m, 0.0], [half_m, half_m, 0.0]]))
    writer = MBTilesWriter(out / "area.mbtiles", name=f"synthetic town seed {world.config.seed}",
                           attribution="synthetic (g2s_localization world generator)") if mbtiles else None
    half_px = (satellite.shape[0] - 1) / 2.0
    written = []
    jobs = []
    for z in zooms:
        x0, y1 = tile_index(float(corner_lat[0]), float(corner_lon[0]), z)  # south-west
        x1, y0 = tile_index(float(corner_lat[1]), float(corner_lon[1]), z)  # north-east
        jobs += [(z, x, y) for x in range(x0 + 1, x1) for y in range(y0 + 1, y1)]  # interior tiles only
    offsets = np.arange(256) + 0.5
    shift_e, shift_n = misregistration_en(world)
    for z, x, y in tqdm(jobs, desc="tiles", disable=not progress, unit="tile"):
        wx, wy = np.meshgrid(x * 256 + offsets, y * 256 + offsets, indexing="xy")
        lat, lon = latlon_from_world_pixel(wx, wy, z)
        enu = frame.to_enu(lat, lon)
        map_x = ((enu[..., 0] - shift_e) / metres_per_px + half_px).astype(np.float32)
        map_y = (half_px - (enu[..., 1] - shift_n) / metres_per_px).astype(np.float32)
        tile = cv2.remap(satellite, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        png = cv2.imencode(".png", cv2.cvtColor(tile, cv2.COLOR_RGB2BGR))[1].tobytes()
        write_xyz_tile(out / "tiles", z, x, y, png)
        if writer is not None:
            writer.add(z, x, y, png)
        written.append((z, x, y))
    if writer is not None:
        writer.close(bounds=(float(corner_lon[0]), float(corner_lat[0]), float(corner_lon[1]), float(corner_lat[1])))
    return written
