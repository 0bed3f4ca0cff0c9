"""Ground-to-satellite camera localization for ROS 2.

What runs on the vehicle lives in ``geo``, ``cameras``, ``registration``, ``relocalization``,
``runtime`` and ``ros`` (the only subpackage that imports rclpy); offline tooling in ``data``,
``synthetic``, ``training`` and ``evaluation``. Vehicle code never imports offline code.
"""

__version__ = "0.1.0"
