"""ament_python package; also a plain pip-installable package (the venv route in the README)."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "g2s_localization"

setup(
    name=PACKAGE,
    version="0.1.0",
    description="Ground-to-satellite camera localization for ROS 2",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    package_data={f"{PACKAGE}.registration": ["weights/*.safetensors"],
                  f"{PACKAGE}.relocalization": ["weights/*.safetensors"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", sorted(glob("config/*.yaml") + glob("config/*.xml"))),
    ],
    install_requires=["numpy", "scipy", "opencv-python-headless", "PyYAML", "tqdm", "torch", "safetensors"],
    zip_safe=True,
    entry_points={
        "console_scripts": [
            f"g2s = {PACKAGE}.cli:main",
            f"g2s_node = {PACKAGE}.ros.node:main",
        ],
    },
)
