"""Ground-to-satellite camera localization for ROS 2.

Everything below :mod:`g2s_localization.node` is plain Python + torch and runs without ROS.
"""

__version__ = "0.1.0"
