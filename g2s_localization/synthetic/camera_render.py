"""Vehicle camera views of a synthetic :class:`~.world.World` by vectorised ray casting (torch).

Rays from every pixel hit the textured ground plane, boxes (buildings, cars), vertical
cylinders (tree trunks) and spheres (canopies). Each primitive only tests the rays inside
its projected bounding window, so a 1242x375 frame costs a fraction of a second on one core.
Only cars present *during the drive* are drawn; the satellite capture has its own set.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import Tensor

from g2s_localization.cameras.pinhole import PinholeCamera, rotation_ground_from_camera
from g2s_localization.synthetic.world import World

KITTI_CAMERA = PinholeCamera(721.5377, 721.5377, 609.5593, 172.854, 1242, 375)
"""KITTI raw left colour camera (P_rect_02 of 2011_09_26)."""


@dataclass(frozen=True)
class CameraRig:
    """Camera intrinsics and mounting: the optical centre is ``height_m`` above the road,
    ``forward_m`` ahead of and ``left_m`` left of base_link, its axis turned ``yaw_rad`` left."""

    camera: PinholeCamera = KITTI_CAMERA
    height_m: float = 1.65
    pitch_rad: float = 0.0
    roll_rad: float = 0.0
    forward_m: float = 0.0
    left_m: float = 0.0
    yaw_rad: float = 0.0


@dataclass(frozen=True)
class CameraEffects:
    """What a real camera adds, per frame (seeded): auto-exposure swings, white-balance drift,
    sensor noise, motion blur along the image rows and lens vignetting. Defaults: today's mild noise only."""

    exposure_stops: float = 0.0  # exposure varies within +- this many stops between frames
    white_balance: float = 0.0  # per-channel gains vary within +- this fraction
    noise_sigma: float = 0.012  # additive Gaussian noise, 0..1 intensity
    motion_blur_px: int = 0  # horizontal box blur up to this length (turning, vibration)
    vignetting: float = 0.0  # corner darkening (0 = none, 0.4 = corners at 60 %)

    def apply(self, colour: Tensor, seed: int) -> Tensor:
        """``colour`` ``(H, W, 3)`` in 0..1 -> the same with this frame's effects."""
        noise = torch.randn(colour.shape, generator=torch.Generator().manual_seed(seed)) * self.noise_sigma
        gen = torch.Generator().manual_seed(seed + 1000003)  # apart from the noise: defaults render as before
        uniform = lambda n: torch.rand(n, generator=gen) * 2 - 1  # noqa: E731
        if self.exposure_stops or self.white_balance:
            colour = colour * 2.0 ** (self.exposure_stops * uniform(1)) * (1 + self.white_balance * uniform(3))
        if self.motion_blur_px > 1:
            length = int(torch.randint(1, self.motion_blur_px + 1, (1,), generator=gen))
            if length > 1:
                kernel = torch.full((3, 1, 1, length), 1.0 / length)
                colour = F.conv2d(F.pad(colour.permute(2, 0, 1)[None], (length // 2, (length - 1) // 2, 0, 0), "replicate"),
                                  kernel, groups=3)[0].permute(1, 2, 0)
        if self.vignetting > 0:
            h, w = colour.shape[:2]
            y = torch.linspace(-1, 1, h)[:, None]
            x = torch.linspace(-1, 1, w)[None, :]
            colour = colour * (1 - self.vignetting * ((x**2 + y**2) / 2))[..., None]
        return colour + noise


HARD_CAMERA = CameraEffects(exposure_stops=0.5, white_balance=0.08, noise_sigma=0.03, motion_blur_px=5,
                            vignetting=0.35)
"""The camera of the hard preset (``g2s make-drive --preset hard``)."""

DRIVE_RIG = CameraRig(forward_m=1.2, left_m=0.3, yaw_rad=math.radians(1.0))
"""The rig drives are rendered with unless told otherwise: the camera ahead of and left of
base_link and turned a degree, as on a car, so that a forgotten lever arm shows in every figure."""


def camera_colour_response(image: Tensor, seed: int, strength: float) -> Tensor:
    """The drive camera's own gains, gamma and white balance (differs from the satellite's)."""
    rng = np.random.default_rng(seed + 15485863)
    gain = torch.tensor(1.0 + strength * rng.uniform(-0.15, 0.15, 3), dtype=image.dtype)
    gamma = 1.0 + strength * float(rng.uniform(-0.2, 0.2))
    return torch.clamp(image.clamp(0, 1) ** gamma * gain, 0, 1)


class CameraRenderer:
    """Holds the world as tensors once; :meth:`render` draws one frame."""

    def __init__(self, world: World, rig: CameraRig = CameraRig(), max_distance_m: float = 120.0,
                 effects: CameraEffects = CameraEffects()) -> None:
        self.world, self.rig, self.max_distance_m, self.effects = world, rig, max_distance_m, effects
        ground = torch.from_numpy(world.ground_rgb).permute(2, 0, 1)[None].float() / 255.0
        self.ground_levels = [ground, F.avg_pool2d(ground, 4)]  # near: 0.1 m, far: 0.4 m texels
        keep = world.box_in_drive
        self.boxes = torch.from_numpy(world.boxes[keep]).float()
        self.box_colours = torch.from_numpy(world.box_colours[keep]).float()
        self.box_kind = world.box_kind[keep]
        self.trunks = torch.from_numpy(world.trunks).float()
        self.canopies = torch.from_numpy(world.canopies).float()
        cam = rig.camera
        v, u = torch.meshgrid(torch.arange(cam.height, dtype=torch.float32),
                              torch.arange(cam.width, dtype=torch.float32), indexing="ij")
        self.rays_cam = torch.stack([(u - cam.cx) / cam.fx, (v - cam.cy) / cam.fy, torch.ones_like(u)], -1)

    def render(self, x: float, y: float, yaw: float, pitch_offset: float = 0.0, roll_offset: float = 0.0,
               noise_seed: int | None = None, time_s: float = 0.0) -> NDArray[np.uint8]:
        """RGB ``(H, W, 3)`` view from base_link at ENU ``(x, y)`` heading ``yaw`` (REP-103).

        Moving traffic is drawn where it is at ``time_s``; a car overlapping the ego vehicle
        (within 5 m) is left out rather than rendered around the camera.
        """
        rig, cam = self.rig, self.rig.camera
        pitch = torch.tensor([rig.pitch_rad + pitch_offset], dtype=torch.float32)
        roll = torch.tensor([rig.roll_rad + roll_offset], dtype=torch.float32)
        c, s = math.cos(yaw), math.sin(yaw)
        R_map_ground = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float32)
        R_map_cam = R_map_ground @ rotation_ground_from_camera(pitch, roll)[0]
        origin = torch.tensor([x, y, rig.height_m], dtype=torch.float32)
        rays = self.rays_cam @ R_map_cam.T  # (H, W, 3), optical depth parameterisation
        depth = torch.full(rays.shape[:2], math.inf, dtype=torch.float32)
        colour = self._sky(rays)
        self._ground(origin, rays, depth, colour)
        traffic, traffic_colours = self.world.traffic_boxes(time_s)
        clear = np.hypot(traffic[:, 0] - x, traffic[:, 1] - y) > 5.0
        boxes = torch.cat([self.boxes, torch.from_numpy(traffic[clear]).float()])
        colours = torch.cat([self.box_colours, torch.from_numpy(traffic_colours[clear]).float()])
        kinds = np.concatenate([self.box_kind, np.ones(int(clear.sum()), np.int8)])
        for window, hit_t, hit_colour in self._objects(origin, rays, R_map_cam, boxes, colours, kinds):
            (v0, v1, u0, u1) = window
            closer = hit_t < depth[v0:v1, u0:u1]
            depth[v0:v1, u0:u1] = torch.where(closer, hit_t, depth[v0:v1, u0:u1])
            colour[v0:v1, u0:u1] = torch.where(closer[..., None], hit_colour, colour[v0:v1, u0:u1])
        distance = depth * rays.norm(dim=-1)
        fog = (1.0 - torch.exp(-distance.clamp(max=1e4) / 400.0)).float()[..., None]
        colour = colour * (1 - fog) + torch.tensor([0.78, 0.82, 0.88]) * fog
        colour = camera_colour_response(colour, self.world.config.seed, self.world.config.colour_shift)
        if noise_seed is not None:
            colour = self.effects.apply(colour, noise_seed)
        del cam
        return (colour.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).numpy()

    # ------------------------------------------------------------------ pieces
    @staticmethod
    def _sky(rays: Tensor) -> Tensor:
        elevation = (rays[..., 2] / rays.norm(dim=-1)).clamp(0, 1).float()[..., None]
        horizon, zenith = torch.tensor([0.82, 0.86, 0.92]), torch.tensor([0.45, 0.62, 0.88])
        return horizon + (zenith - horizon) * elevation.sqrt()

    def _ground(self, origin: Tensor, rays: Tensor, depth: Tensor, colour: Tensor) -> None:
        down = rays[..., 2] < -1e-9
        t = torch.where(down, -origin[2] / rays[..., 2].clamp(max=-1e-9), torch.full_like(depth, math.inf))
        hit = origin + t[..., None] * rays
        distance = (hit[..., :2] - origin[:2]).norm(dim=-1)
        valid = down & (distance < self.max_distance_m)
        world = self.world
        cols, rows = world.ground_px(hit[..., 0].numpy(), hit[..., 1].numpy())
        n = world.ground_rgb.shape[0]
        grid = torch.stack([torch.from_numpy(cols) * 2 / (n - 1) - 1, torch.from_numpy(rows) * 2 / (n - 1) - 1], -1)
        grid = grid.float()[None]
        near = F.grid_sample(self.ground_levels[0], grid, align_corners=True, padding_mode="border")[0]
        far = F.grid_sample(self.ground_levels[1], grid, align_corners=False, padding_mode="border")[0]
        blend = ((distance - 12.0) / 10.0).clamp(0, 1).float()
        texture = (near * (1 - blend) + far * blend).permute(1, 2, 0)
        inside = (grid[0].abs() <= 1).all(-1)
        texture = torch.where(inside[..., None], texture, torch.tensor([0.29, 0.44, 0.2]))
        depth[valid] = t[valid]
        colour[valid] = texture[valid]

    def _window(self, corners: Tensor, origin: Tensor, R_map_cam: Tensor) -> tuple[int, int, int, int] | None:
        cam = self.rig.camera
        local = (corners - origin) @ R_map_cam  # optical frame
        if bool((local[:, 2] <= 0.05).all()):
            return None
        if bool((local[:, 2] <= 0.05).any()):
            return 0, cam.height, 0, cam.width
        u = local[:, 0] / local[:, 2] * cam.fx + cam.cx
        v = local[:, 1] / local[:, 2] * cam.fy + cam.cy
        u0, u1 = max(0, int(u.min()) - 1), min(cam.width, int(u.max()) + 2)
        v0, v1 = max(0, int(v.min()) - 1), min(cam.height, int(v.max()) + 2)
        return (v0, v1, u0, u1) if u0 < u1 and v0 < v1 else None

    def _objects(self, origin: Tensor, rays: Tensor, R_map_cam: Tensor, boxes: Tensor, colours: Tensor,
                 kinds: NDArray[np.int8]):
        """Yield ``(window, t, colour)`` per primitive that may be visible."""
        near = self.max_distance_m + 30.0
        for k in range(len(boxes)):
            box = boxes[k]
            if float((box[:2] - origin[:2]).norm()) > near:
                continue
            corners = _aabb_corners_of_box(box)
            window = self._window(corners, origin, R_map_cam)
            if window is not None:
                v0, v1, u0, u1 = window
                t, col = _hit_box(origin, rays[v0:v1, u0:u1], box, colours[k], int(kinds[k]))
                yield window, t, col
        for trunk, canopy in zip(self.trunks, self.canopies):
            if float((trunk[:2] - origin[:2]).norm()) > near:
                continue
            for kind, prim in (("trunk", trunk), ("canopy", canopy)):
                r = float(prim[2] if kind == "trunk" else prim[3])
                z0, z1 = (0.0, float(prim[3])) if kind == "trunk" else (float(prim[2]) - r, float(prim[2]) + r)
                corners = _cube_corners(float(prim[0]), float(prim[1]), r, z0, z1)
                window = self._window(corners, origin, R_map_cam)
                if window is None:
                    continue
                v0, v1, u0, u1 = window
                sub = rays[v0:v1, u0:u1]
                t, col = _hit_trunk(origin, sub, prim) if kind == "trunk" else _hit_canopy(origin, sub, prim)
                yield window, t, col


def _cube_corners(x: float, y: float, r: float, z0: float, z1: float) -> Tensor:
    xs, ys, zs = (x - r, x + r), (y - r, y + r), (z0, z1)
    return torch.tensor([[a, b, c] for a in xs for b in ys for c in zs], dtype=torch.float32)


def _aabb_corners_of_box(box: Tensor) -> Tensor:
    cx, cy, z0, length, width, height, yaw = (float(v) for v in box)
    c, s = math.cos(yaw), math.sin(yaw)
    pts = []
    for a in (-length / 2, length / 2):
        for b in (-width / 2, width / 2):
            for z in (z0, z0 + height):
                pts.append([cx + a * c - b * s, cy + a * s + b * c, z])
    return torch.tensor(pts, dtype=torch.float32)


def _hit_box(origin: Tensor, rays: Tensor, box: Tensor, colours: Tensor, kind: int) -> tuple[Tensor, Tensor]:
    """Slab test in the box frame; shaded facades with windows (buildings) or a glass band (cars)."""
    cx, cy, z0, length, width, height, yaw = (float(v) for v in box)
    c, s = math.cos(yaw), math.sin(yaw)
    rot = torch.tensor([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float32)  # map -> box
    o = rot @ (origin - torch.tensor([cx, cy, z0 + height / 2], dtype=torch.float32))
    d = rays @ rot.T
    half = torch.tensor([length / 2, width / 2, height / 2], dtype=torch.float32)
    inv = 1.0 / torch.where(d.abs() < 1e-12, torch.full_like(d, 1e-12), d)
    t1, t2 = (-half - o) * inv, (half - o) * inv
    t_near_axes = torch.minimum(t1, t2)
    t_near, axis = t_near_axes.max(-1)
    t_far = torch.maximum(t1, t2).min(-1).values
    hit = (t_near <= t_far) & (t_near > 0)
    t = torch.where(hit, t_near, torch.full_like(t_near, math.inf))
    p = o + t_near[..., None] * d  # hit point in box frame (centre origin)
    facade, roof = colours[0], colours[1]
    light = torch.tensor([0.9, 0.75, 0.6])[axis]  # a fixed sun: faces differ in brightness
    colour = facade * light[..., None]
    z = (p[..., 2] + height / 2).float()
    along = torch.where(axis == 0, p[..., 1], p[..., 0]).float()
    if kind == 0:
        frac_s, frac_z = torch.frac(along / 3.0 + 100.0), torch.frac(z / 3.2)
        window = (frac_s > 0.25) & (frac_s < 0.75) & (frac_z > 0.3) & (frac_z < 0.75) & (z > 1.0)
        colour = torch.where(window[..., None], torch.tensor([0.2, 0.24, 0.3]), colour)
    else:
        glass = z > 0.9
        colour = torch.where(glass[..., None], torch.tensor([0.1, 0.12, 0.15]), colour)
        colour = torch.where((z < 0.35)[..., None], torch.tensor([0.05, 0.05, 0.05]), colour)
    colour = torch.where((axis == 2)[..., None], roof.expand_as(colour), colour)
    return t, colour


def _hit_trunk(origin: Tensor, rays: Tensor, trunk: Tensor) -> tuple[Tensor, Tensor]:
    ox, oy = origin[0] - trunk[0], origin[1] - trunk[1]
    a = rays[..., 0] ** 2 + rays[..., 1] ** 2
    b = 2 * (ox * rays[..., 0] + oy * rays[..., 1])
    cc = ox * ox + oy * oy - trunk[2] ** 2
    disc = b * b - 4 * a * cc
    t = (-b - disc.clamp(min=0).sqrt()) / (2 * a.clamp(min=1e-12))
    z = origin[2] + t * rays[..., 2]
    hit = (disc > 0) & (t > 0) & (z >= 0) & (z <= trunk[3])
    shade = 0.7 + 0.3 * torch.sin(z * 7.0).float()
    colour = torch.tensor([0.33, 0.24, 0.16]) * shade[..., None]
    return torch.where(hit, t, torch.full_like(t, math.inf)), colour


def _hit_canopy(origin: Tensor, rays: Tensor, canopy: Tensor) -> tuple[Tensor, Tensor]:
    oc = origin - canopy[:3]
    a = (rays * rays).sum(-1)
    b = 2 * (rays @ oc)
    cc = oc @ oc - canopy[3] ** 2
    disc = b * b - 4 * a * cc
    t = (-b - disc.clamp(min=0).sqrt()) / (2 * a)
    hit = (disc > 0) & (t > 0)
    p = origin + t[..., None] * rays - canopy[:3]
    leaves = (torch.sin(p[..., 0] * 5.1) * torch.sin(p[..., 1] * 4.3) * torch.sin(p[..., 2] * 6.7)).float()
    light = (0.75 + 0.25 * (p[..., 2] / canopy[3])).float()
    colour = torch.tensor([0.18, 0.36, 0.13]) * (light * (0.85 + 0.25 * leaves))[..., None]
    return torch.where(hit, t, torch.full_like(t, math.inf)), colour
