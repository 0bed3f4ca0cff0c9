"""The ROS-free per-frame pipeline: time pairing, gating and state, and the reference EKF."""
