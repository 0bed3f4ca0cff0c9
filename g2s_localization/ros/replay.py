"""``g2s replay BAG``: publish a rosbag2 over DDS with /clock, no rosbag2_py needed.

Messages go out as the raw CDR bytes stored in the bag (``publish_raw``), on publishers typed
by the bag's message types, paced by their timestamps divided by ``rate``. /clock carries the
bag time so nodes run with ``use_sim_time``. ``--loop`` replays again from the start, which
makes the clock jump back: exactly the bag-loop case nodes must survive.
"""
from __future__ import annotations

import importlib
import time
from pathlib import Path

import rclpy
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock

from g2s_localization.runtime.bag_files import open_bag


def message_class(msgtype: str):
    """``sensor_msgs/msg/Image`` -> the rclpy class, via the installed interface package."""
    package, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{package}.{kind}"), name)


def replay(bag: str | Path, rate: float = 1.0, topics: list[str] | None = None, loops: int = 1,
           wait_for_subscribers_s: float = 10.0, context: rclpy.Context | None = None,
           settle_s: float = 2.0, wait_topics: list[str] | None = None) -> int:
    """Publish the bag; returns the number of messages sent.

    Publishing starts once some subscriber has matched (plus ``settle_s`` for the other topics),
    or, with ``wait_topics``, once every one of those topics has a subscriber; either way after
    at most ``wait_for_subscribers_s``.
    """
    if rate <= 0:
        raise ValueError(f"rate must be positive, got {rate}")
    own_context = context is None
    if own_context:
        context = rclpy.Context()
        rclpy.init(context=context)
    node = Node("g2s_bag_replay", context=context)
    sent = 0
    try:
        with open_bag(bag) as reader:
            connections = [c for c in reader.connections if topics is None or c.topic in topics]
            qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
            latched = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE,
                                 durability=DurabilityPolicy.TRANSIENT_LOCAL)  # as tf2's static broadcaster
            publishers = {c.id: node.create_publisher(message_class(c.msgtype), c.topic,
                                                      latched if c.topic == "/tf_static" else qos)
                          for c in connections}
            clock_pub = node.create_publisher(Clock, "/clock", 10)
            deadline = time.monotonic() + wait_for_subscribers_s
            by_topic = {c.topic: publishers[c.id] for c in connections}
            missing = [t for t in (wait_topics or []) if t not in by_topic]
            if missing:
                raise ValueError(f"{bag} has no topic(s) {missing}")

            def ready() -> bool:
                if wait_topics:
                    return all(by_topic[t].get_subscription_count() > 0 for t in wait_topics)
                return any(p.get_subscription_count() for p in publishers.values())

            while time.monotonic() < deadline and not ready():
                time.sleep(0.05)
            if ready() and not wait_topics:
                time.sleep(settle_s)  # discovery matches topics one by one: let the others catch up
            for _ in range(loops):
                start_wall, start_bag = None, None
                for conn, stamp_ns, raw in reader.messages(connections=connections):
                    if start_wall is None:
                        start_wall, start_bag = time.monotonic(), stamp_ns
                    due = start_wall + (stamp_ns - start_bag) * 1e-9 / rate
                    delay = due - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    clock = Clock()
                    clock.clock.sec, clock.clock.nanosec = stamp_ns // 1_000_000_000, stamp_ns % 1_000_000_000
                    clock_pub.publish(clock)
                    publishers[conn.id].publish(bytes(raw))
                    sent += 1
    finally:
        node.destroy_node()
        if own_context:
            rclpy.shutdown(context=context)
    return sent
