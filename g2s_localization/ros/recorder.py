"""Run ``g2s_node`` as its own process on a bag replayed over DDS, and record what it publishes.

The evaluation side (:mod:`g2s_localization.evaluation.replay_eval`) scores the recording; it gets
plain arrays and state names here, so only this edge touches rclpy and message classes.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from g2s_localization_msgs.msg import RegistrationStatus
from geometry_msgs.msg import PoseWithCovarianceStamped
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

from g2s_localization.geo.geodesy import quaternion_xyzw_to_yaw
from g2s_localization.ros.messages import stamp_to_nanoseconds

STATE_NAMES = {getattr(RegistrationStatus, a): a[len("STATE_"):] for a in dir(RegistrationStatus)
               if a.startswith("STATE_")}


@dataclass
class NodeRecording:
    """What the node published, keyed by image stamp (ns): poses ``(east, north, yaw)`` in ``map``
    with their ``(3, 3)`` covariance (x, y, yaw rows of the 6x6), and how many statuses of each state."""

    poses: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    states: dict[str, int] = field(default_factory=dict)
    diagnostics: dict[str, str] = field(default_factory=dict)  # the node's last diagnostic key-values
    replay_s: float = 0.0  # wall time of the replay
    node_cpu_s: float = 0.0  # CPU time (user + system) of the node process during the replay
    node_peak_rss_mib: float = 0.0


class Recorder(Node):
    def __init__(self, context: rclpy.Context, node_name: str = "g2s_localization") -> None:
        super().__init__("g2s_evaluation_recorder", context=context)
        self.recording = NodeRecording()
        self._state_counts: dict[int, int] = {}
        self.create_subscription(PoseWithCovarianceStamped, f"/{node_name}/pose", self._on_pose, 100)
        self.create_subscription(RegistrationStatus, f"/{node_name}/status", self._on_status, 100)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 100)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.startswith("g2s_localization"):
                self.recording.diagnostics = {kv.key: kv.value for kv in status.values}

    def _on_pose(self, msg: PoseWithCovarianceStamped) -> None:
        p, q = msg.pose.pose.position, msg.pose.pose.orientation
        c6 = np.array(msg.pose.covariance).reshape(6, 6)
        self.recording.poses[stamp_to_nanoseconds(msg.header.stamp)] = (
            np.array([p.x, p.y, quaternion_xyzw_to_yaw((q.x, q.y, q.z, q.w))]), c6[np.ix_([0, 1, 5], [0, 1, 5])])

    def _on_status(self, msg: RegistrationStatus) -> None:
        self._state_counts[msg.state] = self._state_counts.get(msg.state, 0) + 1

    def finish(self) -> NodeRecording:
        """The recording, with the state counts named and in state order."""
        self.recording.states = {STATE_NAMES.get(s, str(s)): c for s, c in sorted(self._state_counts.items())}
        return self.recording


LOCAL_TRANSPORT_PROFILE = "fastdds_localhost_shm.xml"


def local_transport_profile() -> Path | None:
    """The package's loopback Fast DDS profile (shared memory with room for camera images), from
    the source tree or an installed share folder; None when neither has it."""
    candidates = [Path(__file__).resolve().parents[2] / "config",
                  Path(sys.prefix) / "share" / "g2s_localization" / "config"]
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory("g2s_localization")) / "config")
    except (ImportError, LookupError, ValueError, OSError):  # not installed, or no ament environment
        pass
    return next((c / LOCAL_TRANSPORT_PROFILE for c in candidates if (c / LOCAL_TRANSPORT_PROFILE).is_file()), None)


def run_node_on_bag(bag: Path, tiles: Path, weights: str, rate: float, datum: tuple[float, float, float],
                    input_topics: list[str], log_path: Path, node_params: dict[str, str] | None = None
                    ) -> NodeRecording:
    """Node process (with extra ``node_params``) + replay process (which starts once
    ``input_topics``, what the node subscribes to, are matched); returns what the node published.

    All three run on this machine, so unless ``FASTDDS_DEFAULT_PROFILES_FILE`` says otherwise they
    talk over shared memory (:func:`local_transport_profile`): Fast DDS's default UDP transport loses
    a large share of 1.4 MB images at 10 Hz, which would measure the network, not the node."""
    profile = local_transport_profile()
    if profile is not None:
        os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(profile))
    context = rclpy.Context()
    rclpy.init(context=context)
    recorder = Recorder(context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(recorder)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    node_cmd = [sys.executable, "-m", "g2s_localization.ros.node", "--ros-args", "-p", f"tiles_path:={tiles}",
                "-p", f"datum_lat_deg:={datum[0]}", "-p", f"datum_lon_deg:={datum[1]}", "-p", "use_sim_time:=true"]
    if weights:  # an empty override does not parse; the node's default is the shipped weights
        node_cmd += ["-p", f"weights:={weights}"]
    for name, value in (node_params or {}).items():
        node_cmd += ["-p", f"{name}:={value}"]
    with log_path.open("w") as log:
        node = subprocess.Popen(node_cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 120
            while recorder.count_publishers("/g2s_localization/status") == 0:
                if node.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"g2s_node did not start; see {log_path}")
                time.sleep(0.1)
            time.sleep(1.0)
            cpu_before, started = _process_cpu_s(node.pid), time.monotonic()
            subprocess.run([sys.executable, "-m", "g2s_localization.cli", "replay", str(bag), "--rate", str(rate),
                            "--wait-timeout", "30", "--wait-for", *input_topics],
                           check=True, stdout=log, stderr=subprocess.STDOUT)
            recorder.recording.replay_s = time.monotonic() - started
            recorder.recording.node_cpu_s = _process_cpu_s(node.pid) - cpu_before
            time.sleep(2.0)  # the last frames are still being registered
            recorder.recording.node_peak_rss_mib = _peak_rss_mib(node.pid)
        finally:
            if node.poll() is None:
                node.send_signal(2)
                try:
                    node.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    node.kill()
    executor.shutdown()
    recorder.destroy_node()
    rclpy.shutdown(context=context)
    return recorder.finish()


def _process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _peak_rss_mib(pid: int) -> float:
    """Peak resident memory of a process (Linux /proc ``VmHWM``; 0 elsewhere)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError):
        pass
    return 0.0
