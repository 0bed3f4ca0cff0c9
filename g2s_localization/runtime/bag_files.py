"""Opening rosbag2 recordings with ``rosbags`` (no ROS install): our own bags and other tools'.

Shared by the ROS edge's replay and the offline readers (training from bags, evaluation).
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rosbags.rosbag2 import Reader, ReaderError


BAG_SUFFIXES = (".mcap", ".db3")


def resolve_bag(path: str | Path) -> Path:
    """What to open for ``path``: a rosbag2 folder (with ``metadata.yaml``), a bare ``.mcap`` /
    ``.db3`` file, or a folder holding exactly one such file but no metadata (bags from other
    tools). Anything else raises ValueError saying what was found."""
    p = Path(path)
    if p.is_file():
        if p.suffix in BAG_SUFFIXES:
            return p
        raise ValueError(f"{p} is not a rosbag2 file (.mcap or .db3) or folder")
    if not p.is_dir():
        raise ValueError(f"{p} does not exist")
    if (p / "metadata.yaml").is_file():
        return p
    files = sorted(f for f in p.iterdir() if f.suffix in BAG_SUFFIXES)
    if len(files) == 1:
        return files[0]
    if not files:
        raise ValueError(f"{p} holds no rosbag2: no metadata.yaml and no .mcap or .db3 file")
    raise ValueError(f"{p} holds several bag files ({', '.join(f.name for f in files)}) and no metadata.yaml: "
                     f"name the one to use")


@contextmanager
def open_bag(path: str | Path) -> Iterator[Reader]:
    """An open rosbags reader for :func:`resolve_bag`'s path; a damaged bag raises ValueError."""
    bag = resolve_bag(path)
    try:
        reader = Reader(bag)
        reader.open()
    except ReaderError as exc:
        raise ValueError(f"cannot read bag {bag}: {exc}") from exc
    try:
        yield reader
    finally:
        reader.close()
