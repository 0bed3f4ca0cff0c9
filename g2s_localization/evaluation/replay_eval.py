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
from g2s_localization.runtime.bag_files import open_bag, resolve_bag
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
    source: str = ""  # where the ground truth came from


def _nearest(stamps: np.ndarray, values: np.ndarray, query: np.ndarray) -> np.ndarray:
    index = np.clip(np.searchsorted(stamps, query), 1, len(stamps) - 1)
    left_closer = np.abs(stamps[index - 1] - query) <= np.abs(stamps[index] - query)
    return values[np.where(left_closer, index - 1, index)]


def read_truth(bag: str | Path, datum: EnuFrame, topics: dict[str, str] | None = None,
               truth_tf: tuple[str, str] = ("map", "base_link")) -> BagTruth:
    """Ground truth at the image stamps (``/ground_truth/pose``, else ``truth_tf`` parent -> child on
    ``/tf``) and what GNSS, IMU and odometry said there (NaN where the bag lacks them)."""
    topics = {**TOPICS, **(topics or {})}
    gt, fixes, imus, odoms = [], [], [], []
    wanted = {topics["gt_pose"], topics["fix"], topics["imu"], topics["odom"], "/tf"}
    ts = typestore()
    with open_bag(bag) as reader:  # only these topics: the images are most of the bag
        for conn, stamp, raw in reader.messages(connections=[c for c in reader.connections if c.topic in wanted]):
            m = ts.deserialize_cdr(raw, conn.msgtype)
            if conn.topic == topics["gt_pose"]:
                q = m.pose.orientation
                gt.append((stamp, m.pose.position.x, m.pose.position.y, quaternion_xyzw_to_yaw((q.x, q.y, q.z, q.w))))
            elif conn.topic == "/tf":
                for t in m.transforms:
                    if (t.header.frame_id, t.child_frame_id) == truth_tf:
                        q, p = t.transform.rotation, t.transform.translation
                        gt.append((stamp, p.x, p.y, quaternion_xyzw_to_yaw((q.x, q.y, q.z, q.w)), 1))
            elif conn.topic == topics["fix"]:
                ok = m.status.status >= 0 and math.isfinite(m.latitude)
                e, n, _ = datum.to_enu(m.latitude, m.longitude) if ok else (math.nan, math.nan, 0.0)
                fixes.append((stamp, e, n, math.sqrt(m.position_covariance[0]) if ok else math.nan))
            elif conn.topic == topics["imu"]:
                q = m.orientation
                imus.append((stamp, quaternion_xyzw_to_yaw((q.x, q.y, q.z, q.w))))
            elif conn.topic == topics["odom"]:
                odoms.append((stamp, m.twist.twist.linear.x, m.twist.twist.angular.z))
    source = f"{truth_tf[0]} -> {truth_tf[1]} on /tf"
    if any(len(g) == 4 for g in gt):  # a ground-truth topic wins over /tf
        gt = [g for g in gt if len(g) == 4]
        source = f"{topics['gt_pose']} (as g2s kitti-to-bag writes it: SYNTHETIC for this project's drives)"
    if not gt:
        raise ValueError(f"{bag} has no ground truth: neither {topics['gt_pose']} nor {truth_tf[0]} -> "
                         f"{truth_tf[1]} on /tf (see README, 'Your own bag')")
    gt_a = np.array([g[:4] for g in gt], dtype=np.float64)
    gt_a = gt_a[np.argsort(gt_a[:, 0], kind="stable")]
    stamps = gt_a[:, 0].astype(np.int64)

    def at_stamps(rows: list, columns: int) -> np.ndarray:
        if not rows:
            return np.full((len(stamps), columns), np.nan)
        a = np.array(rows, dtype=np.float64)
        return _nearest(a[:, 0], a[:, 1:], stamps)

    fix_a, imu_a, odom_a = at_stamps(fixes, 3), at_stamps(imus, 1), at_stamps(odoms, 2)
    return BagTruth(stamps, gt_a[:, 1:4], fix_a[:, :2], fix_a[:, 2], imu_a[:, 0], odom_a[:, 0], odom_a[:, 1],
                    source)


def evaluate_bag(bag: str | Path, tiles: str | Path, out_dir: str | Path, weights: str = "", rate: float = 1.0,
                 datum: tuple[float, float, float] | None = None, topics: dict[str, str] | None = None,
                 truth_tf: tuple[str, str] = ("map", "base_link")) -> Path:
    """Run the node on ``bag`` (a rosbag2 folder, a bare .mcap / .db3, or a folder holding one) and
    score it; ``datum`` (lat, lon, alt) anchors ``map`` when the bag does not say; ``topics``
    (keys of ``TOPICS``) names the bag's own topics, which the node is pointed at."""
    bag, tiles, out = resolve_bag(bag), Path(tiles), Path(out_dir)
    datum_tuple = datum or read_bag_datum(bag)
    if datum_tuple is None:
        raise ValueError(f"{bag} carries no map datum: pass --datum LAT,LON[,ALT] (the origin of its map frame)")
    out.mkdir(parents=True, exist_ok=True)
    datum = EnuFrame(*datum_tuple[:2])
    truth = read_truth(bag, datum, topics, truth_tf)
    names = {**TOPICS, **(topics or {})}
    node_topics = {f"{k}_topic": names[k] for k in ("image", "camera_info", "fix", "imu")}
    with open_bag(bag) as reader:  # replay starts once the node subscribes to every input the bag has
        present = {c.topic for c in reader.connections}
    inputs = [t for t in node_topics.values() if t in present]
    recording = run_node_on_bag(bag, tiles, weights, rate, datum_tuple, inputs, out / "node.log", node_topics)
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
    gnss_ok = np.isfinite(truth.gnss[:, 0]) & np.isfinite(truth.imu_yaw)
    if gnss_ok.any():
        gnss_cov = np.array([np.diag([s * s, s * s, math.radians(2.0) ** 2]) for s in truth.gnss_sigma[gnss_ok]])
        g_errs = frame_errors(truth.truth[gnss_ok, :2], truth.truth[gnss_ok, 2], truth.gnss[gnss_ok],
                              truth.imu_yaw[gnss_ok], gnss_cov)
        rows["GNSS + compass"] = summarize(g_errs)
        series["GNSS + compass"] = (truth.stamps_ns[gnss_ok], g_errs.position_m)
        cdfs["GNSS + compass"] = g_errs

    ekf_rows = {}
    if gnss_ok.any() and np.isfinite(truth.speed).all():  # the reference EKF needs odometry and a GNSS start
        times = (truth.stamps_ns - truth.stamps_ns[0]) * 1e-9
        first = int(np.argmax(gnss_ok))
        init = np.array([truth.gnss[first, 0], truth.gnss[first, 1], truth.imu_yaw[first]])
        init_cov = np.diag([100.0, 100.0, math.radians(5.0) ** 2])
        fused_meas = {k: (node_est[k], node_cov[k]) for k in np.nonzero(have)[0]}
        gnss_meas = {k: (truth.gnss[k], np.eye(2) * truth.gnss_sigma[k] ** 2) for k in np.nonzero(gnss_ok)[0]}
        for name, meas in (("EKF odometry + g2s", fused_meas), ("EKF odometry + GNSS", gnss_meas)):
            track, ekf = run_filter(times, truth.speed, truth.yaw_rate, init, init_cov, meas)
            err = np.hypot(*(track[:, :2] - truth.truth[:, :2]).T)
            settled = err[n // 5:]  # after the filter has converged from the GNSS start
            ekf_rows[name] = {"rms_m": float(np.sqrt(np.mean(settled**2))),
                              "p95_m": float(np.percentile(settled, 95)), "max_m": float(settled.max()),
                              "accepted": ekf.accepted, "gated_out": ekf.rejected}
            series[name] = (truth.stamps_ns, err)

    from g2s_localization.evaluation.plots import plot_error_cdfs, plot_error_over_time, plot_trajectory

    figures = [("trajectory", plot_trajectory(tiles, datum, truth.truth[:, :2], truth.gnss, node_est[:, :2],
                                              out / "trajectory.png"))]
    if series:
        figures.append(("error over time", plot_error_over_time(series, out / "error_over_time.png")))
    if cdfs:
        figures.append(("CDF", plot_error_cdfs(cdfs, out / "error_cdf.png")))
    ekf_table = "\n".join(["| track | RMS (m) | p95 (m) | max (m) | updates accepted | gated out |", "|---|---|---|---|---|---|"]
                          + [f"| {k} | {v['rms_m']:.2f} | {v['p95_m']:.2f} | {v['max_m']:.2f} | {v['accepted']} | "
                             f"{v['gated_out']} |" for k, v in ekf_rows.items()]) if ekf_rows else \
        "Not run: the bag lacks odometry or GNSS."
    state_line = ", ".join(f"{s}: {c}" for s, c in recording.states.items())
    registration = format_table(rows) if rows else "No pose to score: the node published none."
    text = (f"# Replay evaluation of {bag.name}\n\nGround truth: {truth.source}.\n\n"
            f"{n} camera frames; node poses received for {int(have.sum())}; statuses: {state_line}.\n\n"
            f"## Registration against ground truth\n\n{registration}\n\n"
            f"## Reference EKF (after the first 20 % of the drive)\n\n{ekf_table}\n\n"
            + "\n\n".join(f"![{label}]({path.name})" for label, path in figures) + "\n")
    (out / "report.md").write_text(text)
    (out / "metrics.json").write_text(json.dumps({"registration": rows, "ekf": ekf_rows, "states": recording.states,
                                                 "frames": n, "poses": int(have.sum())}, indent=2))
    return out / "report.md"
