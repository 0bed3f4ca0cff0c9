"""Procedural synthetic town: the world every accuracy figure of this project is measured on.

Synthetic, and labelled so everywhere: KITTI, VIGOR and their satellite tiles cannot be
downloaded here. The town is built so that the gaps a real ground-to-satellite localizer
faces are present and tunable (:class:`WorldConfig`): trees hiding the road from above,
cars that moved between the satellite capture and the drive, satellite shadows, and a
colour/illumination shift between the two sensors.

Everything is in the ``map`` ENU frame (metres, x east, y north) centred on the geo-anchor;
the ground layer is a raster at ``ground_metres_per_px`` whose pixel ``(r, c)`` centre lies at
``x = (c - (N - 1) / 2) * res``, ``y = ((N - 1) / 2 - r) * res``.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import cv2
import numpy as np
from numpy.typing import NDArray

from g2s_localization.geo.geodesy import EnuFrame
from g2s_localization.synthetic.surface_detail import ground_detail

# Ground material ids, also used by tests to find lane markings and crosswalks.
GRASS, DIRT, ASPHALT, SIDEWALK, MARKING = 0, 1, 2, 3, 4
PARKING_STRIP_M = 2.5
CAR_COLOURS = np.array([[0.8, 0.8, 0.82], [0.1, 0.1, 0.12], [0.6, 0.1, 0.1], [0.15, 0.25, 0.55], [0.5, 0.5, 0.5]])
ROAD_MARGIN_M = 150.0  # rotated 100 m patch (72 m) + GNSS error + a partial zoom-19 tile (50 m)


@dataclass(frozen=True)
class WorldConfig:
    """Seed, size and the difficulty knob of each gap. Defaults: a small, moderately hard town."""

    seed: int = 0
    style: str = "suburb"  # "suburb" or "downtown": block size, building height, tree density
    size_m: float = 600.0
    anchor_lat_deg: float = 49.0114
    anchor_lon_deg: float = 8.4165
    ground_metres_per_px: float = 0.1
    lane_width_m: float = 3.5
    tree_density: float = 1.0  # 0 = no trees; trees along roads hide the road from above
    parked_car_density: float = 1.0
    car_change_fraction: float = 0.5  # share of cars present in only one of satellite / drive
    traffic_density: float = 1.0  # moving cars in the lanes (seen at different places by each capture)
    shadow_strength: float = 0.45  # 0 = no satellite shadows
    colour_shift: float = 1.0  # 0 = camera and satellite see identical colours
    season_shift: float = 0.0  # 0..1: the satellite captured in another season (foliage and grass turn)
    tile_jpeg_quality: int = 0  # 0 = lossless tiles; else JPEG compression artefacts at this quality
    tile_misregistration_m: float = 0.0  # the orthophoto sits this far off its true place (seeded direction)
    ground_texture: float = 0.0  # 0..1: road wear (patches, cracks, stains, manholes) and lawn stripes
    roof_texture: float = 0.0  # 0..1: pitched roofs (lit and shaded faces), chimneys, solar panels (satellite)
    street_regularity: float = 0.0  # 0..1: look-alike streets: straight lattice, even tree rows, row houses

    def __post_init__(self) -> None:
        if self.style not in ("suburb", "downtown"):
            raise ValueError(f"unknown style {self.style!r}; expected 'suburb' or 'downtown'")
        if not (0.0 <= self.season_shift <= 1.0 and 0 <= self.tile_jpeg_quality <= 100
                and 0.0 <= self.tile_misregistration_m <= 5.0):
            raise ValueError("season_shift must be in 0..1, tile_jpeg_quality in 0..100, tile_misregistration_m in 0..5")
        if not all(0.0 <= v <= 1.0 for v in (self.ground_texture, self.roof_texture, self.street_regularity)):
            raise ValueError("ground_texture, roof_texture and street_regularity must be in 0..1")
        if not 2 * ROAD_MARGIN_M + 50.0 <= self.size_m <= 2000.0:
            raise ValueError(f"size_m must be within {2 * ROAD_MARGIN_M + 50.0:.0f}..2000 m")


@dataclass
class World:
    """A generated town: ground raster, 3-D primitives and the road graph."""

    config: WorldConfig
    ground_rgb: NDArray[np.uint8]  # (N, N, 3) colours seen from any sensor
    ground_material: NDArray[np.uint8]  # (N, N) material ids
    boxes: NDArray[np.float64]  # (B, 7): cx, cy, z0, length, width, height, yaw
    box_colours: NDArray[np.float64]  # (B, 2, 3): facade / body and roof colours in 0..1
    box_kind: NDArray[np.int8]  # (B,): 0 building, 1 car
    box_in_satellite: NDArray[np.bool_]  # (B,)
    box_in_drive: NDArray[np.bool_]  # (B,)
    trunks: NDArray[np.float64]  # (T, 4): cx, cy, radius, height
    canopies: NDArray[np.float64]  # (T, 4): cx, cy, cz, radius
    nodes: NDArray[np.float64]  # (K, 2) road intersections
    edges: list[tuple[int, int]] = field(default_factory=list)
    traffic: NDArray[np.float64] = field(default_factory=lambda: np.zeros((0, 4)))  # edge, phase m, speed, side
    traffic_colours: NDArray[np.float64] = field(default_factory=lambda: np.zeros((0, 2, 3)))

    @property
    def enu_frame(self) -> EnuFrame:
        return EnuFrame(self.config.anchor_lat_deg, self.config.anchor_lon_deg)

    @property
    def road_width_m(self) -> float:
        """Kerb to kerb: one lane and one parking strip each way."""
        return 2.0 * (self.config.lane_width_m + PARKING_STRIP_M)

    def lane_pose(self, edge: int, distance_m: float, reverse: bool = False) -> tuple[float, float, float]:
        """``(x, y, yaw)`` of a vehicle in the right-hand lane of road ``edge``, ``distance_m`` along it
        (from its second node towards its first when ``reverse``)."""
        a, b = self.edges[edge][::-1] if reverse else self.edges[edge]
        pa, pb = self.nodes[a], self.nodes[b]
        d = (pb - pa) / np.linalg.norm(pb - pa)
        p = pa + d * distance_m + np.array([d[1], -d[0]]) * self.config.lane_width_m / 2.0
        return float(p[0]), float(p[1]), math.atan2(float(d[1]), float(d[0]))

    def traffic_boxes(self, time_s: float) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Moving cars at ``time_s``: boxes ``(M, 7)`` like :attr:`boxes`, colours ``(M, 2, 3)``.

        Each drives its road in its own lane at constant speed and starts over at the road's end.
        """
        boxes = np.zeros((len(self.traffic), 7))
        for i, (edge, phase, speed, side) in enumerate(self.traffic):
            a, b = self.edges[int(edge)]
            length = float(np.linalg.norm(self.nodes[b] - self.nodes[a]))
            x, y, yaw = self.lane_pose(int(edge), (phase + speed * time_s) % length, reverse=side < 0)
            boxes[i] = [x, y, 0.0, 4.4, 1.8, 1.5, yaw]
        return boxes, self.traffic_colours

    def ground_px(self, x: NDArray, y: NDArray) -> tuple[NDArray, NDArray]:
        """ENU metres to continuous ground-raster ``(col, row)`` (pixel centres at integers)."""
        half = (self.ground_rgb.shape[0] - 1) / 2.0
        res = self.config.ground_metres_per_px
        return np.asarray(x) / res + half, half - np.asarray(y) / res


def generate_world(config: WorldConfig | None = None) -> World:
    """Deterministic town for ``config.seed``; same seed, same world, bit for bit."""
    config = config or WorldConfig()
    rng = np.random.default_rng(config.seed)
    n_px = int(round(config.size_m / config.ground_metres_per_px))
    nodes, edges = _road_graph(config, rng)
    material = np.full((n_px, n_px), GRASS, dtype=np.uint8)
    world = World(config, np.zeros((n_px, n_px, 3), np.uint8), material,
                  np.zeros((0, 7)), np.zeros((0, 2, 3)), np.zeros(0, np.int8), np.zeros(0, bool),
                  np.zeros(0, bool), np.zeros((0, 4)), np.zeros((0, 4)), nodes, edges)
    _paint_dirt(world, rng)
    _paint_roads(world)
    world.ground_rgb = _texture(world.ground_material, rng)
    world.ground_rgb = ground_detail(world.ground_rgb, material == ASPHALT, material == GRASS,
                                     config.ground_metres_per_px, config.ground_texture,
                                     np.random.default_rng(config.seed + 31337))  # own stream: others unchanged
    _paint_markings(world)
    buildings = _place_buildings(world, rng)
    cars, in_sat, in_drive = _place_cars(world, rng)
    world.boxes = np.concatenate([buildings[0], cars[0]])
    world.box_colours = np.concatenate([buildings[1], cars[1]])
    world.box_kind = np.concatenate([np.zeros(len(buildings[0]), np.int8), np.ones(len(cars[0]), np.int8)])
    world.box_in_satellite = np.concatenate([np.ones(len(buildings[0]), bool), in_sat])
    world.box_in_drive = np.concatenate([np.ones(len(buildings[0]), bool), in_drive])
    world.trunks, world.canopies = _place_trees(world, rng)
    world.traffic, world.traffic_colours = _place_traffic(world, rng)  # last: earlier content stays seed-stable
    return world


# ----------------------------------------------------------------------------- roads
def _road_graph(config: WorldConfig, rng: np.random.Generator) -> tuple[NDArray, list[tuple[int, int]]]:
    """A jittered lattice of intersections; some links removed, all nodes kept connected."""
    block = 70.0 if config.style == "suburb" else 55.0
    # keep roads ROAD_MARGIN_M from the edge so heading-aligned patches around any GNSS fix on
    # a road stay inside the tile cache
    count = max(2, int((config.size_m - 2 * ROAD_MARGIN_M) // block) + 1)
    span = (count - 1) * block
    axis = np.linspace(-span / 2, span / 2, count)
    gx, gy = np.meshgrid(axis, axis, indexing="xy")
    jitter = 0.12 * (1.0 - config.street_regularity)  # 0: intersections in straight rows, long look-alike streets
    nodes = np.stack([gx.ravel(), gy.ravel()], -1) + rng.uniform(-jitter, jitter, (count * count, 2)) * block
    edges = []
    for r in range(count):
        for c in range(count):
            i = r * count + c
            if c + 1 < count:
                edges.append((i, i + 1))
            if r + 1 < count:
                edges.append((i, i + count))
    # drop a few interior links, never disconnecting a node
    order = rng.permutation(len(edges))
    degree = np.bincount(np.array(edges).ravel(), minlength=len(nodes))
    kept = set(range(len(edges)))
    for k in order[: int(len(edges) // 6 * (1.0 - config.street_regularity))]:
        a, b = edges[k]
        if degree[a] > 2 and degree[b] > 2:
            kept.discard(k)
            degree[a] -= 1
            degree[b] -= 1
    return nodes, [edges[k] for k in sorted(kept)]


def _segment_px(world: World, a: int, b: int) -> tuple[tuple[int, int], tuple[int, int]]:
    (ca, ra), (cb, rb) = (world.ground_px(*world.nodes[i]) for i in (a, b))
    return (int(round(float(ca))), int(round(float(ra)))), (int(round(float(cb))), int(round(float(rb))))


def _paint_dirt(world: World, rng: np.random.Generator) -> None:
    n = world.ground_material.shape[0]
    for _ in range(6):
        centre = tuple(int(v) for v in rng.integers(0, n, 2))
        axes = tuple(int(v) for v in rng.integers(n // 40, n // 12, 2))
        cv2.ellipse(world.ground_material, centre, axes, float(rng.uniform(0, 180)), 0, 360, DIRT, -1)


def _paint_roads(world: World) -> None:
    res = world.config.ground_metres_per_px
    sidewalk = int(round((world.road_width_m + 6.0) / res))
    road = int(round(world.road_width_m / res))
    for thickness, material in ((sidewalk, SIDEWALK), (road, ASPHALT)):
        for a, b in world.edges:
            pa, pb = _segment_px(world, a, b)
            cv2.line(world.ground_material, pa, pb, material, thickness)
        for node in world.nodes:
            c, r = world.ground_px(*node)
            cv2.circle(world.ground_material, (int(round(float(c))), int(round(float(r)))), thickness // 2, material, -1)


def _paint_markings(world: World) -> None:
    """White dashed centre lines, solid edge lines and zebra crossings, in colour and material."""
    res = world.config.ground_metres_per_px
    half_road = world.road_width_m / 2.0
    line_px = max(1, int(round(0.15 / res)))
    white = (235, 235, 228)
    for a, b in world.edges:
        pa, pb = world.nodes[a], world.nodes[b]
        length = float(np.linalg.norm(pb - pa))
        direction = (pb - pa) / length
        normal = np.array([-direction[1], direction[0]])
        clear = world.road_width_m + 4.0  # keep the intersection box free of lines
        for s in np.arange(clear, length - clear, 6.0):  # 3 m dash, 3 m gap
            _marking_line(world, pa + direction * s, pa + direction * min(s + 3.0, length - clear), line_px, white)
        for side in (-1.0, 1.0):
            offset = normal * side * world.config.lane_width_m
            _marking_line(world, pa + direction * clear + offset, pb - direction * clear + offset, line_px, white)
        for end, sign in ((pa, 1.0), (pb, -1.0)):  # zebra stripes across the road at both ends
            centre = end + direction * sign * (world.road_width_m / 2.0 + 2.5)
            for k in np.arange(-half_road + 0.5, half_road - 0.4, 1.0):
                p = centre + normal * k
                _marking_line(world, p - direction * 1.5, p + direction * 1.5, int(round(0.5 / res)), white)


def _marking_line(world: World, p: NDArray, q: NDArray, thickness: int, colour: tuple[int, int, int]) -> None:
    (c0, r0), (c1, r1) = world.ground_px(*p), world.ground_px(*q)
    pts = (int(round(float(c0))), int(round(float(r0)))), (int(round(float(c1))), int(round(float(r1))))
    cv2.line(world.ground_rgb, *pts, colour, thickness)
    cv2.line(world.ground_material, *pts, MARKING, thickness)


def _texture(material: NDArray[np.uint8], rng: np.random.Generator) -> NDArray[np.uint8]:
    """Per-material base colour plus multi-scale noise, so surfaces are not flat."""
    base = np.array([[74, 112, 52], [131, 108, 78], [78, 78, 82], [168, 164, 156], [235, 235, 228]], np.float32)
    n = material.shape[0]
    noise = np.zeros((n, n), np.float32)
    for scale, amp in ((4, 10.0), (32, 12.0), (256, 10.0)):
        small = rng.normal(0.0, 1.0, (max(2, n // scale), max(2, n // scale))).astype(np.float32)
        noise += amp * cv2.resize(small, (n, n), interpolation=cv2.INTER_CUBIC)
    rgb = base[material] + noise[..., None] * np.array([0.9, 1.0, 0.8], np.float32)
    sidewalk = material == SIDEWALK
    grid = ((np.arange(n) % 20) == 0)  # 2 m paving joints at 0.1 m/px
    joints = sidewalk & (grid[None, :] | grid[:, None])
    rgb[joints] *= 0.8
    return np.clip(rgb, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- objects
def _free(world: World, x: float, y: float, radius: float, allowed: tuple[int, ...] = (GRASS, DIRT)) -> bool:
    c, r = world.ground_px(np.array([x - radius, x + radius]), np.array([y + radius, y - radius]))
    n = world.ground_material.shape[0]
    c0, c1, r0, r1 = int(c[0]), int(np.ceil(c[1])), int(r[0]), int(np.ceil(r[1]))
    if c0 < 0 or r0 < 0 or c1 >= n or r1 >= n:
        return False
    return bool(np.isin(world.ground_material[r0:r1 + 1, c0:c1 + 1], allowed).all())


def _place_buildings(world: World, rng: np.random.Generator) -> tuple[NDArray, NDArray]:
    cfg = world.config
    tall = cfg.style == "downtown"
    boxes, colours = _row_houses(world, np.random.default_rng(cfg.seed + 7757)) if cfg.street_regularity > 0 else ([], [])
    half = cfg.size_m / 2.0 - 10.0
    for _ in range(1500 if tall else 900):
        length, width = rng.uniform(8, 22), rng.uniform(7, 16)
        x, y, yaw = rng.uniform(-half, half), rng.uniform(-half, half), rng.choice([0.0, np.pi / 2]) + rng.normal(0, 0.05)
        radius = 0.5 * math.hypot(length, width) + 1.0
        if not _free(world, x, y, radius) or _overlaps(x, y, radius, boxes):
            continue
        height = rng.uniform(12, 30) if tall else rng.uniform(5, 11)
        boxes.append([x, y, 0.0, length, width, height, yaw])
        facade = rng.uniform(0.45, 0.85, 3) * np.array([1.0, 0.95, 0.9])
        roof = rng.choice([np.array([0.55, 0.25, 0.2]), np.array([0.35, 0.35, 0.38]), np.array([0.6, 0.58, 0.55])])
        colours.append([facade, roof * rng.uniform(0.85, 1.15)])
        _pave_plot(world, x, y, length, width, yaw)
    return np.array(boxes).reshape(-1, 7), np.array(colours).reshape(-1, 2, 3)


def _overlaps(x: float, y: float, radius: float, boxes: list) -> bool:
    """Whether a plot of ``radius`` at ``(x, y)`` reaches any placed building (bounding circles)."""
    return any(math.hypot(x - b[0], y - b[1]) < radius + 0.5 * math.hypot(b[3], b[4]) for b in boxes)


def _pave_plot(world: World, x: float, y: float, length: float, width: float, yaw: float) -> None:
    corners = _box_corners(x, y, length + 1.0, width + 1.0, yaw)
    cc, rr = world.ground_px(corners[:, 0], corners[:, 1])
    cv2.fillPoly(world.ground_material, [np.round(np.stack([cc, rr], -1)).astype(np.int32)], SIDEWALK)


def _row_houses(world: World, rng: np.random.Generator) -> tuple[list, list]:
    """Look-alike streets: identical houses at one pitch along both sides of every road, on a share
    ``street_regularity`` of the plots, so a stretch of street resembles the next one."""
    length, width, height, pitch = 10.0, 9.0, 7.0, 15.0
    setback = world.road_width_m / 2.0 + 3.0 + 8.0  # sidewalk, then a front yard
    facade, roof = np.array([0.72, 0.66, 0.6]), np.array([0.55, 0.25, 0.2])
    boxes: list = []
    for pa, span, direction, normal, yaw in _streets(world):
        for s in np.arange(pitch, span - pitch / 2, pitch):
            for side in (-1.0, 1.0):
                if rng.uniform() > world.config.street_regularity:
                    continue
                x, y = pa + direction * s + normal * side * setback
                radius = 0.5 * math.hypot(length, width) + 1.0
                if not _free(world, x, y, radius) or _overlaps(x, y, radius, boxes):
                    continue
                boxes.append([x, y, 0.0, length, width, height, yaw])
                _pave_plot(world, x, y, length, width, yaw)
    return boxes, [[facade, roof]] * len(boxes)


def _streets(world: World) -> Iterator[tuple[NDArray, float, NDArray, NDArray, float]]:
    """Each road's start, length (m), unit direction, unit left normal and yaw (ENU, rad)."""
    for a, b in world.edges:
        pa, pb = world.nodes[a], world.nodes[b]
        length = float(np.linalg.norm(pb - pa))
        direction = (pb - pa) / length
        yield pa, length, direction, np.array([-direction[1], direction[0]]), math.atan2(direction[1], direction[0])


def _box_corners(x: float, y: float, length: float, width: float, yaw: float) -> NDArray[np.float64]:
    c, s = math.cos(yaw), math.sin(yaw)
    local = np.array([[1, 1], [1, -1], [-1, -1], [-1, 1]]) * np.array([length / 2, width / 2])
    return local @ np.array([[c, s], [-s, c]]) + np.array([x, y])


def _place_cars(world: World, rng: np.random.Generator) -> tuple[tuple[NDArray, NDArray], NDArray, NDArray]:
    """Parked cars along kerbs; each is in the satellite image, the drive, or both."""
    cfg = world.config
    boxes, colours = [], []
    for pa, length, direction, normal, yaw in _streets(world):
        for s in np.arange(15.0, length - 15.0, 7.0):
            if rng.uniform() > 0.35 * cfg.parked_car_density:
                continue
            side = rng.choice([-1.0, 1.0])
            p = pa + direction * s + normal * side * (cfg.lane_width_m + PARKING_STRIP_M / 2)
            boxes.append([p[0], p[1], 0.0, 4.4, 1.8, 1.5, yaw + rng.normal(0, 0.03)])
            body = rng.choice(CAR_COLOURS)
            colours.append([body, body * 0.9])
    count = len(boxes)
    changed = rng.uniform(size=count) < cfg.car_change_fraction
    only_sat = changed & (rng.uniform(size=count) < 0.5)
    in_sat = ~changed | only_sat
    in_drive = ~changed | ~only_sat
    return (np.array(boxes).reshape(-1, 7), np.array(colours).reshape(-1, 2, 3)), in_sat, in_drive


def _place_traffic(world: World, rng: np.random.Generator) -> tuple[NDArray, NDArray]:
    """About one moving car per 60 m of lane, at 6-12 m/s."""
    rows = []
    for e, (a, b) in enumerate(world.edges):
        length = float(np.linalg.norm(world.nodes[b] - world.nodes[a]))
        for side in (-1.0, 1.0):
            for _ in range(rng.poisson(length / 60.0 * world.config.traffic_density)):
                rows.append([e, rng.uniform(0, length), rng.uniform(6.0, 12.0), side])
    body = CAR_COLOURS[rng.integers(len(CAR_COLOURS), size=len(rows))]
    return np.array(rows).reshape(-1, 4), np.stack([body, body * 0.9], 1).reshape(-1, 2, 3)


def _place_trees(world: World, rng: np.random.Generator) -> tuple[NDArray, NDArray]:
    """Street trees on sidewalks (canopies overhang the road) and scattered park trees."""
    cfg = world.config
    trunks = []
    kerb = world.road_width_m / 2.0 + 1.5
    for a, b in world.edges:
        pa, pb = world.nodes[a], world.nodes[b]
        length = float(np.linalg.norm(pb - pa))
        direction = (pb - pa) / length
        normal = np.array([-direction[1], direction[0]])
        for s in np.arange(12.0, length - 12.0, 11.0):
            for side in (-1.0, 1.0):
                regular = cfg.street_regularity  # evenly spaced, unbroken rows of street trees
                if rng.uniform() < (0.45 * (1.0 - regular) + 0.9 * regular) * cfg.tree_density:
                    p = pa + direction * (s + rng.uniform(-2, 2) * (1.0 - regular)) + normal * side * kerb
                    trunks.append([p[0], p[1], rng.uniform(0.15, 0.3), rng.uniform(2.5, 4.0)])
    half = cfg.size_m / 2.0 - 5.0
    for _ in range(int(150 * cfg.tree_density)):
        x, y = rng.uniform(-half, half, 2)
        if _free(world, x, y, 3.0):
            trunks.append([x, y, rng.uniform(0.15, 0.35), rng.uniform(2.0, 4.0)])
    trunks_arr = np.array(trunks).reshape(-1, 4)
    radius = rng.uniform(2.0, 3.8, len(trunks_arr))
    canopies = np.stack([trunks_arr[:, 0], trunks_arr[:, 1], trunks_arr[:, 3] + radius * 0.8, radius], -1)
    return trunks_arr, canopies.reshape(-1, 4)
