"""A reference planar EKF: wheel/IMU odometry prediction, absolute pose or position updates with
Mahalanobis gating. It shows what an EKF (robot_localization style) gets out of the node's
poses compared with GNSS alone; it is an evaluation tool, not part of the node.

State ``(x, y, yaw)`` in ``map`` (ENU), covariance 3x3.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

CHI2_99 = {2: 9.210340371976182, 3: 11.344866730144373}


@dataclass
class PlanarEkf:
    x: NDArray[np.float64]
    P: NDArray[np.float64]
    speed_noise_mps: float = 0.1  # per sqrt(s): wheel odometry
    yaw_rate_noise_rad_s: float = 0.005  # per sqrt(s): gyro
    accepted: int = 0
    rejected: int = 0
    history: list = field(default_factory=list)

    def predict(self, speed_mps: float, yaw_rate_rad_s: float, dt: float) -> None:
        if dt <= 0:
            return
        yaw = self.x[2]
        c, s = math.cos(yaw), math.sin(yaw)
        self.x = self.x + np.array([speed_mps * c * dt, speed_mps * s * dt, yaw_rate_rad_s * dt])
        self.x[2] = math.atan2(math.sin(self.x[2]), math.cos(self.x[2]))
        F = np.array([[1.0, 0.0, -speed_mps * s * dt], [0.0, 1.0, speed_mps * c * dt], [0.0, 0.0, 1.0]])
        G = np.array([[c * dt, 0.0], [s * dt, 0.0], [0.0, dt]])
        Qu = np.diag([self.speed_noise_mps**2 / dt, self.yaw_rate_noise_rad_s**2 / dt])
        self.P = F @ self.P @ F.T + G @ Qu @ G.T

    def update(self, z: NDArray[np.float64], R: NDArray[np.float64], gate: bool = True) -> bool:
        """Absolute measurement of ``(x, y)`` or ``(x, y, yaw)``; gated at the 99 % chi-square."""
        n = len(z)
        H = np.eye(3)[:n]
        innovation = np.asarray(z, np.float64) - H @ self.x
        if n == 3:
            innovation[2] = math.atan2(math.sin(innovation[2]), math.cos(innovation[2]))
        S = H @ self.P @ H.T + R
        d2 = float(innovation @ np.linalg.solve(S, innovation))
        if gate and d2 > CHI2_99[n]:
            self.rejected += 1
            return False
        K = self.P @ H.T @ np.linalg.inv(S)
        self.x = self.x + K @ innovation
        self.x[2] = math.atan2(math.sin(self.x[2]), math.cos(self.x[2]))
        I_KH = np.eye(3) - K @ H
        self.P = I_KH @ self.P @ I_KH.T + K @ R @ K.T  # Joseph form: stays symmetric positive
        self.accepted += 1
        return True


def run_filter(times: NDArray, speeds: NDArray, yaw_rates: NDArray, initial: NDArray, initial_cov: NDArray,
               measurements: dict[int, tuple[NDArray, NDArray]]) -> tuple[NDArray, PlanarEkf]:
    """Filter over frames ``k``; ``measurements[k] = (z, R)`` are applied after predicting to ``k``."""
    ekf = PlanarEkf(np.asarray(initial, np.float64).copy(), np.asarray(initial_cov, np.float64).copy())
    track = np.zeros((len(times), 3))
    for k in range(len(times)):
        if k > 0:
            ekf.predict(float(speeds[k - 1]), float(yaw_rates[k - 1]), float(times[k] - times[k - 1]))
        if k in measurements:
            ekf.update(*measurements[k])
        track[k] = ekf.x
    return track, ekf
