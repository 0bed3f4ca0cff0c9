"""The ROS 2 edge: the node, message conversions and bag replay. The only subpackage that imports rclpy."""
