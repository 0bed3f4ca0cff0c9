"""Figures for reports: error CDFs and a satellite overlay of prior, estimate, truth and score map."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never opens a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from g2s_localization.evaluation.metrics import FrameErrors  # noqa: E402


def _save(fig, path: str | Path, dpi: int) -> Path:
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out


def plot_error_cdfs(runs: dict[str, FrameErrors], path: str | Path) -> Path:
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    panels = (("lateral error (m)", lambda e: np.abs(e.lateral_m), 10.0),
              ("longitudinal error (m)", lambda e: np.abs(e.longitudinal_m), 10.0),
              ("position error (m)", lambda e: e.position_m, 10.0),
              ("yaw error (deg)", lambda e: np.abs(e.yaw_deg), 10.0))
    for ax, (label, values, xmax) in zip(axes, panels):
        for name, errors in runs.items():
            v = np.sort(values(errors))
            ax.plot(v, np.arange(1, len(v) + 1) / len(v), label=name)
        ax.set_xlim(0, xmax)
        ax.set_ylim(0, 1)
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("fraction of frames")
    axes[-1].legend(loc="lower right", fontsize=8)
    fig.suptitle("registration error CDFs (synthetic data)")
    return _save(fig, path, 110)


def plot_overlay(satellite: np.ndarray, metres_per_px: float, truth_fl: tuple[float, float],
                 estimate_fl: tuple[float, float], covariance_fl: np.ndarray, score_map: np.ndarray | None,
                 path: str | Path) -> Path:
    """Heading-aligned patch (prior at the centre) with truth, estimate, its 95 % ellipse and scores.

    Positions are (forward, left) metres in the prior's heading frame.
    """
    h, w = satellite.shape[:2]
    c = ((w - 1) / 2, (h - 1) / 2)
    to_px = lambda fl: (c[0] - fl[1] / metres_per_px, c[1] - fl[0] / metres_per_px)  # noqa: E731
    fig, axes = plt.subplots(1, 2 if score_map is not None else 1, figsize=(11, 5.5), squeeze=False)
    ax = axes[0, 0]
    ax.imshow(satellite)
    ax.plot(*c, "y+", ms=14, mew=2, label="prior")
    ax.plot(*to_px(truth_fl), "go", ms=8, label="truth")
    ax.plot(*to_px(estimate_fl), "rx", ms=10, mew=2, label="estimate")
    values, vectors = np.linalg.eigh(covariance_fl[:2, :2])
    t = np.linspace(0, 2 * np.pi, 100)
    ring = vectors @ (np.sqrt(np.maximum(values, 0) * 5.991)[:, None] * np.stack([np.cos(t), np.sin(t)]))
    pts = [to_px((estimate_fl[0] + a, estimate_fl[1] + b)) for a, b in ring.T]
    ax.plot([p[0] for p in pts], [p[1] for p in pts], "r-", lw=1, label="95 % ellipse")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("satellite patch, forward up (synthetic)")
    if score_map is not None:
        axes[0, 1].imshow(score_map, cmap="magma")
        axes[0, 1].set_title("translation score map (max over yaw)")
    return _save(fig, path, 100)


def plot_error_over_time(series: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path) -> Path:
    """Position error (m) against time for several tracks; ``series[name] = (stamps_ns, errors)``."""
    fig, ax = plt.subplots(figsize=(11, 3.8))
    t0 = min(int(s[0][0]) for s in series.values() if len(s[0]))
    for name, (stamps, errors) in series.items():
        ax.plot((np.asarray(stamps) - t0) * 1e-9, errors, ".-" if len(errors) < 400 else "-", ms=3, label=name)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("position error (m)")
    ax.set_yscale("symlog", linthresh=1.0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path, 110)


def plot_trajectory(tiles_path: str | Path, datum, truth_en: np.ndarray, gnss_en: np.ndarray, node_en: np.ndarray,
                    path: str | Path) -> Path:
    """Truth, GNSS and node positions over a north-up satellite crop of the area they cover."""
    from g2s_localization.geo.tile_sources import TileError, open_tile_source
    from g2s_localization.geo.tiles import TileCache

    centre = np.nanmean(truth_en, axis=0)
    half = float(np.nanmax(np.abs(truth_en - centre))) + 30.0
    size = 900
    mpp = 2 * half / size
    lat, lon, _ = datum.to_geodetic(np.array([centre[0], centre[1], 0.0]))
    fig, ax = plt.subplots(figsize=(8, 8))
    try:
        patch = TileCache(open_tile_source(tiles_path)).crop(float(lat), float(lon), None, size, mpp)
        ax.imshow(patch.image, extent=(centre[0] - half, centre[0] + half, centre[1] - half, centre[1] + half))
    except TileError:
        ax.set_facecolor("0.9")  # outside the cache: draw the tracks alone
    ax.plot(truth_en[:, 0], truth_en[:, 1], "g-", lw=2, label="ground truth")
    ax.plot(gnss_en[:, 0], gnss_en[:, 1], "y.", ms=3, label="GNSS")
    ax.plot(node_en[:, 0], node_en[:, 1], "r.", ms=3, label="g2s node")
    ax.set_xlabel("east (m)")
    ax.set_ylabel("north (m)")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title("trajectory over the satellite tiles (synthetic)")
    return _save(fig, path, 100)
