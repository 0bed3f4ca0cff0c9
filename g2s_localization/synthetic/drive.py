"""Vehicle drives through a synthetic world: exact poses at 10 Hz plus the noisy GNSS and IMU a
real car would have recorded. Weak supervision only ever sees the noisy measurements.

GNSS error model (per horizontal axis): a first-order Gauss-Markov bias (slowly wandering,
``gnss_bias_sigma_m`` stationary std, ``gnss_bias_tau_s`` correlation time), white noise,
multipath jumps (Poisson onsets, each a constant offset for a few seconds) and outages
(Poisson onsets; no fix at all). Heading: Gauss-Markov bias plus white noise.
IMU (REP-145, body frame x forward, y left, z up): gyro rates and specific force (at rest the
accelerometer reads +9.81 m/s^2 on z) with white noise and constant biases.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from g2s_localization.synthetic.world import World

GRAVITY = 9.80665


@dataclass(frozen=True)
class DriveConfig:
    seed: int = 0
    duration_s: float = 30.0
    rate_hz: float = 10.0
    speed_mps: float = 9.0
    max_lateral_accel_mps2: float = 2.0
    gnss_bias_sigma_m: float = 5.0
    gnss_bias_tau_s: float = 60.0
    gnss_white_sigma_m: float = 0.8
    multipath_per_s: float = 0.02
    multipath_sigma_m: float = 8.0
    multipath_duration_s: float = 3.0
    outage_per_s: float = 0.01
    outage_duration_s: float = 4.0
    heading_bias_sigma_deg: float = 2.0
    heading_bias_tau_s: float = 120.0
    heading_white_sigma_deg: float = 0.3
    gyro_noise_rad_s: float = 0.002
    gyro_bias_rad_s: float = 0.001
    accel_noise_mps2: float = 0.05
    accel_bias_mps2: float = 0.05
    body_jitter_rad: float = 0.004  # pitch / roll of the body on its suspension


@dataclass
class Drive:
    """A recorded drive. Index ``k`` is frame ``k`` (image, GNSS, IMU share the 10 Hz clock)."""

    config: DriveConfig
    times_s: NDArray[np.float64]  # (T,)
    true_xy: NDArray[np.float64]  # (T, 2) base_link in map, metres
    true_yaw: NDArray[np.float64]  # (T,) ENU yaw
    true_pitch_roll: NDArray[np.float64]  # (T, 2)
    speed_mps: NDArray[np.float64]  # (T,)
    gnss_xy: NDArray[np.float64]  # (T, 2); NaN during outages
    gnss_valid: NDArray[np.bool_]  # (T,)
    heading_yaw: NDArray[np.float64]  # (T,) measured ENU yaw
    gyro: NDArray[np.float64]  # (T, 3) rad/s, body frame
    accel: NDArray[np.float64]  # (T, 3) m/s^2, body frame specific force


def plan_route(world: World, length_m: float, rng: np.random.Generator) -> NDArray[np.float64]:
    """Random walk over the road graph (no U-turns), as a dense right-lane centre line."""
    neighbours: dict[int, list[int]] = {i: [] for i in range(len(world.nodes))}
    for a, b in world.edges:
        neighbours[a].append(b)
        neighbours[b].append(a)
    a, b = world.edges[int(rng.integers(len(world.edges)))]
    path, total = [a, b], float(np.linalg.norm(world.nodes[b] - world.nodes[a]))
    while total < length_m + 60.0:
        options = [n for n in neighbours[path[-1]] if n != path[-2]] or [path[-2]]
        nxt = options[int(rng.integers(len(options)))]
        total += float(np.linalg.norm(world.nodes[nxt] - world.nodes[path[-1]]))
        path.append(nxt)
    centre = world.nodes[path]
    lane_offset = world.config.lane_width_m / 2.0
    dense = []
    for p, q in zip(centre[:-1], centre[1:]):  # offset each segment to the right lane, sample at 0.25 m
        d = (q - p) / np.linalg.norm(q - p)
        right = np.array([d[1], -d[0]]) * lane_offset
        steps = np.arange(0.0, np.linalg.norm(q - p), 0.25)
        dense.append(p + right + steps[:, None] * d)
    line = np.concatenate(dense)
    kernel = np.ones(49) / 49.0  # 12 m moving average rounds the corners into drivable arcs
    padded = np.pad(line, ((24, 24), (0, 0)), mode="edge")
    smooth = np.stack([np.convolve(padded[:, i], kernel, mode="valid") for i in range(2)], -1)
    return smooth[24:-24] if len(smooth) > 200 else smooth


def _gauss_markov(rng: np.random.Generator, n: int, dims: int, sigma: float, tau: float, dt: float) -> NDArray:
    phi = math.exp(-dt / tau)
    out = np.empty((n, dims))
    out[0] = rng.normal(0.0, sigma, dims)
    drive = rng.normal(0.0, sigma * math.sqrt(1 - phi * phi), (n, dims))
    for k in range(1, n):
        out[k] = phi * out[k - 1] + drive[k]
    return out


def _poisson_windows(rng: np.random.Generator, times: NDArray, rate: float, duration: float) -> list[tuple[float, float]]:
    starts, t = [], float(times[0])
    while rate > 0:
        t += rng.exponential(1.0 / rate)
        if t > times[-1]:
            break
        starts.append((t, t + duration))
    return starts


def simulate_drive(world: World, config: DriveConfig | None = None) -> Drive:
    """Drive along a random route for ``duration_s``; deterministic for ``config.seed``."""
    cfg = config or DriveConfig()
    rng = np.random.default_rng(cfg.seed * 7919 + world.config.seed)
    dt = 1.0 / cfg.rate_hz
    n = int(round(cfg.duration_s * cfg.rate_hz))
    line = plan_route(world, cfg.speed_mps * cfg.duration_s, rng)
    seg = np.linalg.norm(np.diff(line, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    heading = np.unwrap(np.arctan2(np.gradient(line[:, 1]), np.gradient(line[:, 0])))
    curvature = np.abs(np.gradient(heading) / np.maximum(np.gradient(arc), 1e-6))
    v_limit = np.minimum(cfg.speed_mps, np.sqrt(cfg.max_lateral_accel_mps2 / np.maximum(curvature, 1e-6)))
    v_limit = np.convolve(np.pad(v_limit, 40, mode="edge"), np.ones(81) / 81, mode="valid")  # brake early
    s, speeds = np.zeros(n), np.zeros(n)
    for k in range(n):
        speeds[k] = float(np.interp(s[k], arc, v_limit))
        if k + 1 < n:
            s[k + 1] = min(s[k] + speeds[k] * dt, arc[-1])
    xy = np.stack([np.interp(s, arc, line[:, 0]), np.interp(s, arc, line[:, 1])], -1)
    yaw_unwrapped = np.interp(s, arc, heading)
    yaw = (yaw_unwrapped + math.pi) % (2 * math.pi) - math.pi
    times = np.arange(n) * dt
    pitch_roll = _gauss_markov(rng, n, 2, cfg.body_jitter_rad, 1.0, dt)

    bias = _gauss_markov(rng, n, 2, cfg.gnss_bias_sigma_m, cfg.gnss_bias_tau_s, dt)
    gnss = xy + bias + rng.normal(0.0, cfg.gnss_white_sigma_m, (n, 2))
    for start, stop in _poisson_windows(rng, times, cfg.multipath_per_s, cfg.multipath_duration_s):
        gnss[(times >= start) & (times < stop)] += rng.normal(0.0, cfg.multipath_sigma_m, 2)
    valid = np.ones(n, bool)
    for start, stop in _poisson_windows(rng, times, cfg.outage_per_s, cfg.outage_duration_s):
        valid[(times >= start) & (times < stop)] = False
    gnss[~valid] = np.nan

    heading_bias = _gauss_markov(rng, n, 1, math.radians(cfg.heading_bias_sigma_deg), cfg.heading_bias_tau_s, dt)[:, 0]
    heading_meas = yaw + heading_bias + rng.normal(0.0, math.radians(cfg.heading_white_sigma_deg), n)
    heading_meas = (heading_meas + math.pi) % (2 * math.pi) - math.pi

    yaw_rate = np.gradient(yaw_unwrapped, dt)
    forward_accel = np.gradient(speeds, dt)
    gyro = np.stack([np.gradient(pitch_roll[:, 1], dt), np.gradient(pitch_roll[:, 0], dt), yaw_rate], -1)
    gyro += rng.normal(0.0, cfg.gyro_bias_rad_s, 3) + rng.normal(0.0, cfg.gyro_noise_rad_s, (n, 3))
    accel = np.stack([forward_accel, speeds * yaw_rate, np.full(n, GRAVITY)], -1)
    accel += rng.normal(0.0, cfg.accel_bias_mps2, 3) + rng.normal(0.0, cfg.accel_noise_mps2, (n, 3))
    return Drive(cfg, times, xy, yaw, pitch_roll, speeds, gnss, valid, heading_meas, gyro, accel)
