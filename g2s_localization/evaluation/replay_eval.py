"""``g2s evaluate BAG``: the node as a separate process, the bag replayed over DDS, the node's output
recorded and scored against the bag's ground truth, plus the reference EKF (odometry + node
poses vs odometry + GNSS). Writes a markdown report with plots.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from g2s_localization.data.bag_io import TOPICS, read_bag_datum, typestore
from g2s_localization.evaluation.metrics import format_table, frame_errors, summarize
from g2s_localization.geo.geodesy import EnuFrame, quaternion_xyzw_to_yaw
from g2s_localization.ros.recorder import run_node_on_bag
from g2s_localization.ros.replay import open_bag, resolve_bag
from g2s_localization.runtime.ekf import run_filter


@dataclass
class BagTruth:
    stamps_ns: np.ndarray  # (N,) image stamps
    truth: np.ndarray  # (N, 3) east, north, yaw of base_link in map
    gnss: np.ndarray  # (N, 2) east, north; NaN without fix
    gnss_sigma: np.ndarray  # (N,)
    imu_yaw: np.ndarray  # (N,)
    speed: np.ndarray  # (N,) wheel odometry
    yaw_rate: np.ndarray  # (N,)


def _nearest(stamps: np.ndarray, values: np.ndarray, query: np.ndarray) -> np.ndarray:
    index = np.clip(np.searchsorted(stamps, query), 1, len(stamps) - 1)
    left_closer = np.abs(stamps[index - 1] - query) <= np.abs(stamps[index] - query)
    return values[np.where(left_closer, index - 1, index)]


def read_truth(bag: str | Path, datum: EnuFrame) -> BagTruth:
    gt, fixes, imus, odoms = [], [], [], []
    wanted = {TOPICS["gt_pose"], TOPICS["fix"], TOPICS["imu"], TOPICS["odom"]}
    ts = typestore()
    with open_bag(bag) as reader:  # only these topics: the images are most of the bag
        for conn, stamp, raw in reader.messages(connections=[c for c in reader.connections if c.topic in wanted]):
            m = ts.deserialize_cdr(raw, conn.msgtype)
            if conn.topic == TOPICS["gt_pose"]:
                q = m.pose.orientation
                gt.append((stamp, m.pose.position.x, m.pose.position.y, quaternion_xyzw_to_yaw((q.x, q.y, q.z, q.w))))
            elif conn.topic == TOPICS["fix"]:
                ok = m.status.status >= 0 and math.isfinite(m.latitude)
                e, n, _ = datum.to_enu(m.latitude, m.longitude) if ok else (math.nan, math.nan, 0.0)
                fixes.append((stamp, e, n, math.sqrt(m.position_covariance[0]) if ok else math.nan))
            elif conn.topic == TOPICS["imu"]:
                q = m.orientation
                imus.append((stamp, quaternion_xyzw_to_yaw((q.x, q.y, q.z, q.w))))
            elif conn.topic == TOPICS["odom"]:
                odoms.append((stamp, m.twist.twist.linear.x, m.twist.twist.angular.z))
    for name, key, found in (("ground-truth pose", "gt_pose", gt), ("GNSS", "fix", fixes), ("IMU", "imu", imus),
                             ("odometry", "odom", odoms)):
        if not found:
            raise ValueError(f"{bag} has no {name} messages on {TOPICS[key]}: evaluation needs "
                             f"{', '.join(TOPICS[k] for k in ('gt_pose', 'fix', 'imu', 'odom'))} as g2s kitti-to-bag "
                             f"writes them (see README, 'Your own bag')")
    gt_a, fix_a, imu_a, odom_a = (np.array(x, dtype=np.float64) for x in (gt, fixes, imus, odoms))
    stamps = gt_a[:, 0].astype(np.int64)
    return BagTruth(stamps, gt_a[:, 1:4], _nearest(fix_a[:, 0], fix_a[:, 1:3], stamps),
                    _nearest(fix_a[:, 0], fix_a[:, 3], stamps), _nearest(imu_a[:, 0], imu_a[:, 1], stamps),
                    _nearest(odom_a[:, 0], odom_a[:, 1], stamps), _nearest(odom_a[:, 0], odom_a[:, 2], stamps))


def evaluate_bag(bag: str | Path, tiles: str | Path, out_dir: str | Path, weights: str = "", rate: float = 1.0,
                 datum: tuple[float, float, float] | None = None) -> Path:
    """Run the node on ``bag`` (a rosbag2 folder, a bare .mcap / .db3, or a folder holding one) and
    score it; ``datum`` (lat, lon, alt) anchors ``map`` when the bag does not say."""
    bag, tiles, out = resolve_bag(bag), Path(tiles), Path(out_dir)
    datum_tuple = datum or read_bag_datum(bag)
    if datum_tuple is None:
        raise ValueError(f"{bag} carries no map datum: pass --datum LAT,LON[,ALT] (the origin of its map frame)")
    out.mkdir(parents=True, exist_ok=True)
    datum = EnuFrame(*datum_tuple[:2])
    truth = read_truth(bag, datum)
    inputs = [TOPICS[k] for k in ("image", "camera_info", "fix", "imu")]  # what the node subscribes to
    recording = run_node_on_bag(bag, tiles, weights, rate, datum_tuple, inputs, out / "node.log")
    n = len(truth.stamps_ns)
    node_est = np.full((n, 3), np.nan)
    node_cov = np.tile(np.eye(3), (n, 1, 1))
    for k, stamp in enumerate(truth.stamps_ns):
        if int(stamp) in recording.poses:
            node_est[k], node_cov[k] = recording.poses[int(stamp)]
    have = np.isfinite(node_est[:, 0])

    rows, series, cdfs = {}, {}, {}
    if have.any():
        errs = frame_errors(truth.truth[have, :2], truth.truth[have, 2], node_est[have, :2], node_est[have, 2],
                            node_cov[have])
        rows["g2s node"] = summarize(errs)
        series["g2s node"] = (truth.stamps_ns[have], errs.position_m)
        cdfs["g2s node"] = errs
    gnss_ok = np.isfinite(truth.gnss[:, 0])
    gnss_cov = np.array([np.diag([s * s, s * s, math.radians(2.0) ** 2]) for s in truth.gnss_sigma[gnss_ok]])
    g_errs = frame_errors(truth.truth[gnss_ok, :2], truth.truth[gnss_ok, 2], truth.gnss[gnss_ok], truth.imu_yaw[gnss_ok],
                          gnss_cov)
    rows["GNSS + compass"] = summarize(g_errs)
    series["GNSS + compass"] = (truth.stamps_ns[gnss_ok], g_errs.position_m)
    cdfs["GNSS + compass"] = g_errs

    times = (truth.stamps_ns - truth.stamps_ns[0]) * 1e-9
    first = int(np.argmax(gnss_ok))
    init = np.array([truth.gnss[first, 0], truth.gnss[first, 1], truth.imu_yaw[first]])
    init_cov = np.diag([100.0, 100.0, math.radians(5.0) ** 2])
    fused_meas = {k: (node_est[k], node_cov[k]) for k in np.nonzero(have)[0]}
    gnss_meas = {k: (truth.gnss[k], np.eye(2) * truth.gnss_sigma[k] ** 2) for k in np.nonzero(gnss_ok)[0]}
    ekf_rows = {}
    for name, meas in (("EKF odometry + g2s", fused_meas), ("EKF odometry + GNSS", gnss_meas)):
        track, ekf = run_filter(times, truth.speed, truth.yaw_rate, init, init_cov, meas)
        err = np.hypot(*(track[:, :2] - truth.truth[:, :2]).T)
        settled = err[n // 5:]  # after the filter has converged from the GNSS start
        ekf_rows[name] = {"rms_m": float(np.sqrt(np.mean(settled**2))), "p95_m": float(np.percentile(settled, 95)),
                          "max_m": float(settled.max()), "accepted": ekf.accepted, "gated_out": ekf.rejected}
        series[name] = (truth.stamps_ns, err)

    from g2s_localization.evaluation.plots import plot_error_cdfs, plot_error_over_time, plot_trajectory

    cdf = plot_error_cdfs(cdfs, out / "error_cdf.png")
    over_time = plot_error_over_time(series, out / "error_over_time.png")
    trajectory = plot_trajectory(tiles, datum, truth.truth[:, :2], truth.gnss, node_est[:, :2], out / "trajectory.png")
    ekf_table = "\n".join(["| track | RMS (m) | p95 (m) | max (m) | updates accepted | gated out |", "|---|---|---|---|---|---|"]
                          + [f"| {k} | {v['rms_m']:.2f} | {v['p95_m']:.2f} | {v['max_m']:.2f} | {v['accepted']} | "
                             f"{v['gated_out']} |" for k, v in ekf_rows.items()])
    state_line = ", ".join(f"{s}: {c}" for s, c in recording.states.items())
    text = (f"# Replay evaluation of {bag.name} (SYNTHETIC data)\n\n"
            f"{n} camera frames; node poses received for {int(have.sum())}; statuses: {state_line}.\n\n"
            f"## Registration against ground truth\n\n{format_table(rows)}\n\n"
            f"## Reference EKF (after the first 20 % of the drive)\n\n{ekf_table}\n\n"
            f"![trajectory]({trajectory.name})\n\n![error over time]({over_time.name})\n\n![CDF]({cdf.name})\n")
    (out / "report.md").write_text(text)
    (out / "metrics.json").write_text(json.dumps({"registration": rows, "ekf": ekf_rows, "states": recording.states,
                                                 "frames": n, "poses": int(have.sum())}, indent=2))
    return out / "report.md"
