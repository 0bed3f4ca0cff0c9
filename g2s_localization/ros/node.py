"""``g2s_node``: the ROS 2 edge. Subscribes camera + CameraInfo, NavSatFix and Imu (sensor-data
QoS), pairs them in time, registers the image against the satellite tile cache off the executor
thread (queue of one: stale frames are dropped and counted), and publishes:

* ``~/pose``            geometry_msgs/PoseWithCovarianceStamped, frame ``map``, image stamp
* ``/tf``               map->odom when an odom->base_link transform is seen, else map->base_link
* ``~/status``          g2s_localization_msgs/RegistrationStatus (every processed frame)
* ``/diagnostics``      diagnostic_msgs/DiagnosticArray
* ``~/satellite_prior`` sensor_msgs/Image: heading-aligned patch around the prior (SA-Occ BEV prior)

With ``relocalization_map`` set, frames without usable GNSS (or whose registration lands beyond
``relocalization_gate_m`` of the fix) are relocalized over the whole cache along the track that
odom->base_link describes (:mod:`g2s_localization.relocalization.relocalizer`; a place index's
retrievals are verified against ``relocalization_features``); they publish with state RELOCALIZED
once unambiguous.

Resources are created in :meth:`G2SNode.configure` (parameters and what they open:
:mod:`.node_config`) and released in :meth:`G2SNode.shutdown`.
"""
from __future__ import annotations

import math
import queue
import signal
import sys
import threading
import time
from dataclasses import replace

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from g2s_localization_msgs.msg import RegistrationStatus
from geometry_msgs.msg import PoseWithCovarianceStamped, TransformStamped
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image, Imu, NavSatFix
from tf2_msgs.msg import TFMessage

from g2s_localization.geo.geodesy import EnuFrame, quaternion_xyzw_to_yaw, yaw_to_quaternion_xyzw
from g2s_localization.ros.messages import (
    attitude_from_imu,
    camera_from_info,
    compose_planar,
    fill_pose,
    fix_from_navsatfix,
    image_to_rgb,
    invert_planar,
    pose_covariance_6x6,
    rgb_to_image,
    stamp_to_nanoseconds,
    stamp_to_seconds,
)
from g2s_localization.ros.node_config import PARAMETERS, ConfigurationError, open_localizer
from g2s_localization.runtime.message_decoding import (
    StaticTransforms, add_static_transforms, odometry_from_msg, sensor_mount,
)
from g2s_localization.runtime.timing import FrameTimings
from g2s_localization.runtime.pipeline import Frame, Localizer, Outcome, State
from g2s_localization.runtime.sync import NearestBuffer
from g2s_localization.runtime.tracking import MAX_ODOMETRY_AGE_S

CAMERA_INFO_WAIT_S = 1.0  # how long a frame waits for the first CameraInfo before it is BAD_INPUT
LEVELS = {State.OK: DiagnosticStatus.OK, State.RELOCALIZED: DiagnosticStatus.OK,
          State.LOW_CONFIDENCE: DiagnosticStatus.WARN, State.NO_GNSS: DiagnosticStatus.WARN,
          State.STALE_IMU: DiagnosticStatus.WARN, State.INITIALIZING: DiagnosticStatus.WARN,
          State.UNRELIABLE: DiagnosticStatus.WARN,
          State.OUTSIDE_COVERAGE: DiagnosticStatus.ERROR, State.BAD_INPUT: DiagnosticStatus.ERROR}


class G2SNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("g2s_localization", **kwargs)
        for name, (default, description) in PARAMETERS.items():
            self.declare_parameter(name, default, ParameterDescriptor(description=description))
        self.localizer: Localizer | None = None
        self._queue: queue.Queue[Frame] = queue.Queue(maxsize=1)
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self.counters = {"received": 0, "processed": 0, "dropped": 0, "published": 0, "relocalized": 0,
                         "unreliable": 0}
        self.last_latency_s = math.nan
        self.timings = FrameTimings()

    def p(self, name: str):
        return self.get_parameter(name).value

    # ------------------------------------------------------------------ lifecycle
    def configure(self) -> None:
        """Validate parameters, open tiles and weights, create publishers/subscriptions, start the worker."""
        self.localizer, self._datum_set = open_localizer(self.p, self.get_logger().warning)
        registrar = self.localizer.registrar
        self.fixes: NearestBuffer = NearestBuffer()
        self.attitudes: NearestBuffer = NearestBuffer()
        self.odom: NearestBuffer = NearestBuffer()
        self.camera = None
        # without mount parameters the camera's place must come from /tf_static: wait for it a little
        self._camera_mount_known = any(self.p(f"camera_mount_{k}") != 0.0 for k in ("x_m", "y_m", "yaw_deg",
                                                                                     "pitch_deg"))
        self._first_frame_wall: float | None = None
        self.pose_pub = self.create_publisher(PoseWithCovarianceStamped, "~/pose", 10)
        self.status_pub = self.create_publisher(RegistrationStatus, "~/status", 10)
        self.sat_pub = self.create_publisher(Image, "~/satellite_prior", 2)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        try:  # a real ROS 2 install: the standard broadcaster; otherwise the same messages on /tf directly
            from tf2_ros import TransformBroadcaster

            self._broadcaster = TransformBroadcaster(self)
        except ImportError:
            self._broadcaster = None
            self.tf_pub = self.create_publisher(TFMessage, "/tf", 100)
        self.create_subscription(Image, self.p("image_topic"), self._on_image, qos_profile_sensor_data)
        self.create_subscription(CameraInfo, self.p("camera_info_topic"), self._on_info, qos_profile_sensor_data)
        self.create_subscription(NavSatFix, self.p("fix_topic"), self._on_fix, qos_profile_sensor_data)
        self.create_subscription(Imu, self.p("imu_topic"), self._on_imu, qos_profile_sensor_data)
        self.create_subscription(TFMessage, "/tf", self._on_tf, 100)
        self._static: StaticTransforms = {}
        self._sensor_frames = {"camera": "", "gnss": ""}
        latched = QoSProfile(depth=100, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                             reliability=ReliabilityPolicy.RELIABLE)  # as tf2's static broadcaster
        self.create_subscription(TFMessage, "/tf_static", self._on_tf_static, latched)
        if self.p("odometry_topic"):
            self.create_subscription(Odometry, self.p("odometry_topic"), self._on_odometry, qos_profile_sensor_data)
        self._worker = threading.Thread(target=self._run, name="g2s-registration", daemon=True)
        self._worker.start()
        self.get_logger().info(f"configured: tiles {self.p('tiles_path')}, registrar {registrar.name} on "
                               f"{registrar.device}")

    def shutdown(self) -> None:
        self._stop.set()
        if self._worker is not None:
            self._worker.join(timeout=5.0)

    # ------------------------------------------------------------------ callbacks
    def _on_info(self, msg: CameraInfo) -> None:
        try:
            self.camera = camera_from_info(msg)
        except ValueError as exc:
            self.get_logger().warn(f"ignoring camera info: {exc}", throttle_duration_sec=5.0)
        self._note_sensor_frame("camera", msg.header.frame_id)

    def _on_fix(self, msg: NavSatFix) -> None:
        fix = fix_from_navsatfix(msg)
        self.fixes.add(fix.stamp_s, fix)
        self._note_sensor_frame("gnss", msg.header.frame_id)

    def _on_tf_static(self, msg: TFMessage) -> None:
        add_static_transforms(self._static, msg)
        self._refresh_mounts()

    def _note_sensor_frame(self, sensor: str, frame_id: str) -> None:
        if frame_id and frame_id != self._sensor_frames[sensor]:
            self._sensor_frames[sensor] = frame_id
            self._refresh_mounts()

    def _refresh_mounts(self) -> None:
        """Camera and antenna mounts from /tf_static (base_frame -> the frames of CameraInfo and
        NavSatFix) as soon as they are known; until then the mount parameters stand."""
        for sensor, frame in self._sensor_frames.items():
            mount = sensor_mount(self._static, self.p("base_frame"), frame, sensor)
            if mount is None:
                continue
            attribute = f"{sensor}_mount"
            self._camera_mount_known |= sensor == "camera"
            if mount != getattr(self.localizer, attribute):
                setattr(self.localizer, attribute, mount)
                self.localizer.tracker.reset()  # a track found through the old mount is not base_link's
                self.get_logger().info(f"{sensor} mount from /tf_static ({self.p('base_frame')} -> {frame}): "
                                       f"{mount.forward_m:.2f} m ahead, {mount.left_m:.2f} m left, "
                                       f"yaw {round(math.degrees(mount.yaw_rad), 2) + 0.0:.2f} deg, "
                                       f"pitch {round(math.degrees(mount.pitch_rad), 2) + 0.0:.2f} deg")

    def _on_imu(self, msg: Imu) -> None:
        attitude = attitude_from_imu(msg)
        self.attitudes.add(attitude.stamp_s, attitude)

    def _on_tf(self, msg: TFMessage) -> None:
        for t in msg.transforms:
            if t.header.frame_id == self.p("odom_frame") and t.child_frame_id == self.p("base_frame"):
                q = t.transform.rotation
                yaw = quaternion_xyzw_to_yaw((q.x, q.y, q.z, q.w))
                self.odom.add(stamp_to_seconds(t.header.stamp), (t.transform.translation.x,
                                                                 t.transform.translation.y, yaw))

    def _on_odometry(self, msg: Odometry) -> None:
        """Dead reckoning from a wheel / visual odometry topic: the pose of its child in its parent frame."""
        self.odom.add(*odometry_from_msg(msg))

    def _on_image(self, msg: Image) -> None:
        self.counters["received"] += 1
        received = time.monotonic()
        stamp = stamp_to_seconds(msg.header.stamp)
        image, error = None, ""
        try:
            image = image_to_rgb(msg)
        except ValueError as exc:
            error = str(exc)
        # pairing with GNSS / IMU happens in the worker, once those streams have caught up
        frame = Frame(stamp, image, self.camera, None, None, error, stamp_to_nanoseconds(msg.header.stamp),
                      received_s=received, decode_s=time.monotonic() - received)
        try:
            self._queue.put_nowait(frame)
        except queue.Full:  # the registrar is busy: keep only the newest frame
            try:
                self._queue.get_nowait()
                self.counters["dropped"] += 1
            except queue.Empty:
                pass
            self._queue.put_nowait(frame)

    # ------------------------------------------------------------------ worker
    def _pair(self, frame: Frame) -> Frame:
        """Attach the GNSS fix and IMU attitude nearest to the image time, and the camera model.

        Messages of different topics arrive in any order, so wait (at most ``sync_slop_s`` of wall
        time) until each stream has reached the image stamp; slower streams then pair with their
        latest message if it is recent enough.
        """
        slop = self.p("sync_slop_s")
        deadline = time.monotonic() + slop
        while time.monotonic() < deadline and any(
                (b.newest_stamp() or -math.inf) < frame.stamp_s for b in (self.fixes, self.attitudes)):
            time.sleep(0.002)
        # the first CameraInfo may trail the first image (topics arrive in any order): wait for it
        camera_deadline = time.monotonic() + max(slop, CAMERA_INFO_WAIT_S)
        while frame.camera is None and self.camera is None and time.monotonic() < camera_deadline:
            time.sleep(0.002)
        fix = self.fixes.nearest(frame.stamp_s, max(slop, self.p("max_gnss_age_s")))
        att = self.attitudes.nearest(frame.stamp_s, max(slop, self.p("max_imu_age_s")))
        odom = self.odom.nearest(frame.stamp_s, max(slop, MAX_ODOMETRY_AGE_S))
        return replace(frame, camera=frame.camera or self.camera, gnss=fix[1] if fix else None,
                       attitude=att[1] if att else None, odometry=odom[1] if odom else None)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                frame = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            paired = time.monotonic()
            frame = self._pair(frame)
            wait_s = time.monotonic() - paired
            self.localizer.registrar.last_timings = {}
            start = time.perf_counter()
            if not self._datum_set and frame.gnss is not None and frame.gnss.has_fix:
                self.localizer.datum = EnuFrame(frame.gnss.lat_deg, frame.gnss.lon_deg)
                self._datum_set = True
                self.get_logger().info(f"map datum set to the first fix {frame.gnss.lat_deg:.7f}, "
                                       f"{frame.gnss.lon_deg:.7f}")
            waiting = ""
            try:
                waiting = self._waiting_for_camera_mount()
                outcome = Outcome(State.INITIALIZING, waiting, frame.stamp_s, stamp_ns=frame.stamp_ns) if waiting \
                    else self.localizer.process(frame)
            except Exception as exc:  # a bug must cost one frame, never the node
                outcome = Outcome(State.BAD_INPUT, f"internal error: {type(exc).__name__}: {exc}", frame.stamp_s,
                                  stamp_ns=frame.stamp_ns)
                self.get_logger().error(outcome.message)
            if outcome.state == State.INITIALIZING and not waiting:
                for buffer in (self.fixes, self.attitudes, self.odom):
                    buffer.clear()
            self.last_latency_s = time.perf_counter() - start
            self.counters["processed"] += 1
            self.counters["unreliable"] += outcome.state == State.UNRELIABLE
            publishing = time.monotonic()
            self._publish(outcome)
            done = time.monotonic()
            self.timings.add(done - frame.received_s, {"decode": frame.decode_s, "wait": wait_s,
                                                       **self.localizer.registrar.last_timings,
                                                       "publish": done - publishing})

    def _waiting_for_camera_mount(self) -> str:
        """Why this frame waits for /tf_static ('' when it need not): with no mount parameters set, a
        pose registered before the camera's mount is known would be the camera's, published as
        base_link's (a lever arm off). After ``tf_static_wait_s`` the parameters stand."""
        if self._camera_mount_known:
            return ""
        now = time.monotonic()
        self._first_frame_wall = self._first_frame_wall or now
        if now - self._first_frame_wall <= self.p("tf_static_wait_s"):
            return (f"waiting for /tf_static {self.p('base_frame')} -> {self._sensor_frames['camera'] or 'camera'} "
                    f"(up to {self.p('tf_static_wait_s'):g} s; then the camera_mount_* parameters)")
        self._camera_mount_known = True
        self.get_logger().warning(f"no /tf_static from {self.p('base_frame')} to the camera frame after "
                                  f"{self.p('tf_static_wait_s'):g} s: using the camera_mount_* parameters (camera at "
                                  f"base_link unless set)")
        return ""

    def _header(self, msg, stamp_ns: int, frame_id: str) -> None:
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(stamp_ns), 1_000_000_000)
        msg.header.frame_id = frame_id

    def _publish(self, outcome: Outcome) -> None:
        map_frame = self.p("map_frame")
        status = RegistrationStatus()
        self._header(status, outcome.stamp_ns, map_frame)
        status.state, status.message, status.confidence = int(outcome.state), outcome.message, float(outcome.confidence)
        if outcome.has_pose:
            pose = PoseWithCovarianceStamped()
            self._header(pose, outcome.stamp_ns, map_frame)
            fill_pose(pose.pose.pose, outcome.east_m, outcome.north_m, outcome.yaw_rad)
            pose.pose.covariance = pose_covariance_6x6(outcome.covariance)
            status.pose = pose.pose
            self.pose_pub.publish(pose)
            self.counters["published"] += 1
            self.counters["relocalized"] += outcome.state == State.RELOCALIZED
            if self.p("publish_tf"):
                self._publish_tf(outcome)
        self.status_pub.publish(status)
        if outcome.satellite is not None:
            sat = Image()
            self._header(sat, outcome.stamp_ns, self.p("base_frame"))
            self.sat_pub.publish(rgb_to_image(Image, sat.header, outcome.satellite))
        self._publish_diagnostics(outcome)

    def _publish_tf(self, outcome: Outcome) -> None:
        mode = self.p("tf_mode")
        odom = self.odom.nearest(outcome.stamp_s, MAX_ODOMETRY_AGE_S)
        t = TransformStamped()
        self._header(t, outcome.stamp_ns, self.p("map_frame"))
        T_map_base = (outcome.east_m, outcome.north_m, outcome.yaw_rad)
        if mode == "map_odom" or (mode == "auto" and odom is not None):
            if odom is None:
                return  # asked for map->odom but nobody publishes odom->base_link yet
            x, y, yaw = compose_planar(T_map_base, invert_planar(odom[1]))
            t.child_frame_id = self.p("odom_frame")
        else:
            x, y, yaw = T_map_base
            t.child_frame_id = self.p("base_frame")
        t.transform.translation.x, t.transform.translation.y = float(x), float(y)
        q = yaw_to_quaternion_xyzw(yaw)
        t.transform.rotation.x, t.transform.rotation.y, t.transform.rotation.z, t.transform.rotation.w = q
        if self._broadcaster is not None:
            self._broadcaster.sendTransform(t)
        else:
            self.tf_pub.publish(TFMessage(transforms=[t]))

    def _publish_diagnostics(self, outcome: Outcome) -> None:
        array = DiagnosticArray()
        self._header(array, outcome.stamp_ns, "")
        status = DiagnosticStatus(level=LEVELS[outcome.state], name="g2s_localization: registration",
                                  hardware_id="camera", message=outcome.message or outcome.state.name)
        values = {**{k: str(v) for k, v in self.counters.items()}, "state": outcome.state.name,
                  "confidence": f"{outcome.confidence:.3f}", "latency_ms": f"{1000 * self.last_latency_s:.1f}",
                  **{k: f"{v:.1f}" for k, v in self.timings.summary().items()}}
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        array.status = [status]
        self.diag_pub.publish(array)


def main(args: list[str] | None = None) -> int:
    """Run the node until SIGINT / SIGTERM (Ctrl-C, ``ros2 launch`` stopping it): exit 0, no traceback;
    1 when the configuration is unusable."""
    rclpy.init(args=args if args is not None else sys.argv)
    node = G2SNode()
    try:
        node.configure()
    except ConfigurationError as exc:
        node.get_logger().fatal(str(exc))
        node.destroy_node()
        rclpy.try_shutdown()
        return 1
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        # a launch system may signal twice (the process group and the process): finish cleaning up
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        node.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
