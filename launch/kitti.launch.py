"""Launch g2s_node with the KITTI parameters (needs a ROS 2 install, or the ros2 CLI wheels).

    ros2 launch g2s_localization kitti.launch.py tiles_path:=/maps/area.mbtiles use_sim_time:=true
    ros2 launch g2s_localization kitti.launch.py namespace:=car1 image_topic:=/kitti/camera_color_left/image_raw

``params_file`` keys its parameters with ``/**`` so they apply under any namespace; ``tiles_path``
and ``weights`` given here override the file's. The four inputs are remapped from the node's
default topics (``/camera/image_raw``, ``/camera/camera_info``, ``/gnss/fix``, ``/imu/data``).
"""
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.launch_context import LaunchContext
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription

INPUTS = {  # launch argument -> the node's default topic
    "image_topic": "/camera/image_raw",
    "camera_info_topic": "/camera/camera_info",
    "fix_topic": "/gnss/fix",
    "imu_topic": "/imu/data",
}


def _node(context: LaunchContext) -> list[Node]:
    value = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    overrides = {"use_sim_time": value("use_sim_time").lower() in ("true", "1", "yes")}
    overrides.update({name: value(name) for name in ("tiles_path", "weights") if value(name)})
    return [Node(
        package="g2s_localization",
        executable="g2s_node",
        name="g2s_localization",
        namespace=value("namespace"),
        parameters=[value("params_file"), overrides],
        remappings=[(default, value(argument)) for argument, default in INPUTS.items() if value(argument) != default],
        output="screen",
    )]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        DeclareLaunchArgument(
            "params_file",
            default_value=PathJoinSubstitution([FindPackageShare("g2s_localization"), "config", "kitti.yaml"]),
            description="g2s_node parameter file"),
        DeclareLaunchArgument("tiles_path", default_value="", description="XYZ folder or .mbtiles ('' = the file's)"),
        DeclareLaunchArgument("weights", default_value="",
                              description="safetensors weights or 'baseline' ('' = the file's)"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="use /clock (bag replay)"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node"),
        *(DeclareLaunchArgument(argument, default_value=default, description=f"remap the node's {default}")
          for argument, default in INPUTS.items()),
        OpaqueFunction(function=_node),
    ])
