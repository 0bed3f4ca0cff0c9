"""The package's layout is its architecture: what runs on the vehicle never imports offline tooling,
only the ROS edge imports ROS, and no module imports itself back through others.

Imports are read from the source with ``ast`` (every import, also inside functions and
``TYPE_CHECKING`` blocks), never by importing the modules.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "g2s_localization"

VEHICLE = ("geo", "cameras", "registration", "relocalization", "runtime", "ros")
OFFLINE = ("data", "synthetic", "training", "evaluation")
# Each concern and the concerns it may import (besides itself); the top-level modules that are
# not concerns (cli, cli_maps, demo, __main__) may import anything.
ALLOWED: dict[str, set[str]] = {
    "config": set(),
    "geo": set(),
    "cameras": set(),
    "registration": {"config", "geo", "cameras"},
    "relocalization": {"config", "geo", "cameras", "registration"},
    "runtime": {"config", "geo", "cameras", "registration", "relocalization"},
    "ros": {"config", "geo", "cameras", "registration", "relocalization", "runtime"},
    "data": {"config", "geo", "cameras", "registration", "runtime"},
    "synthetic": {"config", "geo", "cameras", "data", "runtime"},
    "training": {"config", "geo", "cameras", "registration", "relocalization", "runtime", "data"},
    "evaluation": {"config", "geo", "cameras", "registration", "relocalization", "runtime", "ros", "data"},
}
ENTRY_POINTS = {"cli", "cli_maps", "demo", "__main__", "__init__"}
ROS_ROOTS = {"rclpy", "rcl_interfaces", "tf2_ros", "launch", "launch_ros"}
MAX_LINES = 400


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, root: Path = PACKAGE) -> set[str]:
    """Absolute names of everything ``path`` (a module under ``root``) imports: ``from x import y``
    gives ``x`` and ``x.y``, relative imports resolved."""
    tree = ast.parse(path.read_text(), str(path))
    own = module_name(path, root)
    package = own if path.name == "__init__.py" else own.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            found.add(source)
            found.update(f"{source}.{alias.name}" for alias in node.names)
    return found


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def internal_imports(path: Path) -> set[str]:
    """The package's own modules that ``path`` imports."""
    return {name for name in imports_of(path) if name in MODULES and name != module_name(path)}


def concern(module: str) -> str:
    """``g2s_localization.geo.tiles`` -> ``geo``; ``g2s_localization.cli`` -> ``cli``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


class TestLayout:
    def test_every_module_belongs_to_a_known_concern(self) -> None:
        unknown = {m for m in MODULES if concern(m) not in ALLOWED and concern(m) not in ENTRY_POINTS}
        assert not unknown, f"modules outside the known concerns: {sorted(unknown)}"

    def test_vehicle_and_offline_partition_the_concerns(self) -> None:
        assert set(VEHICLE) | set(OFFLINE) | {"config"} == set(ALLOWED)

    @pytest.mark.parametrize("module", sorted(MODULES))
    def test_module_is_small(self, module: str) -> None:
        lines = len(MODULES[module].read_text().splitlines())
        assert lines <= MAX_LINES, f"{module} has {lines} lines; split it by responsibility"


class TestImportDirection:
    @pytest.mark.parametrize("module", sorted(MODULES))
    def test_imports_only_allowed_concerns(self, module: str) -> None:
        own = concern(module)
        if own in ENTRY_POINTS:
            return
        bad = sorted(m for m in internal_imports(MODULES[module])
                     if concern(m) != own and concern(m) not in ALLOWED[own])
        assert not bad, f"{module} ({own}) may not import {bad}"

    def test_vehicle_code_never_reaches_offline_code(self) -> None:
        """Transitively: a vehicle install never drags the world generator, training or plotting in."""
        for module in (m for m in MODULES if concern(m) in VEHICLE):
            seen, stack = set(), [module]
            while stack:
                for dep in internal_imports(MODULES[stack.pop()]):
                    assert concern(dep) not in OFFLINE and concern(dep) not in ENTRY_POINTS - {"__init__"}, (
                        f"{module} reaches {dep}")
                    if dep not in seen:
                        seen.add(dep)
                        stack.append(dep)

    @pytest.mark.parametrize("module", sorted(MODULES))
    def test_only_the_ros_edge_imports_ros(self, module: str) -> None:
        ros = sorted(name for name in imports_of(MODULES[module])
                     if name.split(".")[0] in ROS_ROOTS or name.split(".")[0].endswith("_msgs"))
        if concern(module) != "ros":
            assert not ros, f"{module} imports {ros}: only g2s_localization.ros may"

    @pytest.mark.parametrize("module", sorted(m for m in MODULES if concern(m) in VEHICLE))
    def test_vehicle_code_does_not_plot(self, module: str) -> None:
        assert not any(name.split(".")[0] == "matplotlib" for name in imports_of(MODULES[module]))

    def test_no_import_cycles(self) -> None:
        graph = {m: internal_imports(p) for m, p in MODULES.items()}
        # a package's __init__ is imported by its modules implicitly; none here imports back, so
        # cycles through it are real cycles too
        state: dict[str, int] = {}  # 1 on the stack, 2 done

        def visit(node: str, trail: list[str]) -> None:
            state[node] = 1
            for dep in sorted(graph[node]):
                if state.get(dep) == 1:
                    cycle = trail[trail.index(dep):] + [dep] if dep in trail else [node, dep]
                    pytest.fail(f"import cycle: {' -> '.join(cycle)}")
                if dep not in state:
                    visit(dep, trail + [dep])
            state[node] = 2

        for module in sorted(graph):
            if module not in state:
                visit(module, [module])


class TestCheckerSeesImports:
    """The checks above are only as good as the import reader: show it on known source."""

    def test_reads_relative_function_local_and_type_checking_imports(self, tmp_path: Path) -> None:
        package = tmp_path / "g2s_localization" / "ros"
        package.mkdir(parents=True)
        source = package / "probe.py"
        source.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..synthetic import world\n"
                          "def f():\n    from .node import main\n    import rclpy.node\n")
        found = imports_of(source, tmp_path / "g2s_localization")
        assert {"g2s_localization.synthetic.world", "g2s_localization.ros.node", "rclpy.node"} <= found
