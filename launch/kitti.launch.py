"""Launch g2s_node with the KITTI parameters (needs a ROS 2 install with launch_ros).

    ros2 launch g2s_localization kitti.launch.py params_file:=my.yaml use_sim_time:=true namespace:=car1
"""
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription


def generate_launch_description() -> LaunchDescription:
    params_file = LaunchConfiguration("params_file")
    use_sim_time = LaunchConfiguration("use_sim_time")
    namespace = LaunchConfiguration("namespace")
    return LaunchDescription([
        DeclareLaunchArgument(
            "params_file",
            default_value=PathJoinSubstitution([FindPackageShare("g2s_localization"), "config", "kitti.yaml"]),
            description="g2s_node parameter file (set tiles_path in it)"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="use /clock (bag replay)"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node"),
        Node(
            package="g2s_localization",
            executable="g2s_node",
            name="g2s_localization",
            namespace=namespace,
            parameters=[params_file, {"use_sim_time": use_sim_time}],
            output="screen",
        ),
    ])
