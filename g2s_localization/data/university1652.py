"""The University-1652 folder layout: ``<root>/<folder>/<building id>/<image>``."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class LabelledImage:
    path: Path
    label: str


def read_university1652(root: str | Path, folder: str) -> list[LabelledImage]:
    """Images of one University-1652 folder, e.g. ``test/query_drone`` or ``train/satellite``.

    Layout: ``<root>/<folder>/<building id>/<image>``; the building id is the label.
    """
    base = Path(root) / folder
    if not base.is_dir():
        raise FileNotFoundError(f"{base} is not a University-1652 folder")
    items = [LabelledImage(p, d.name) for d in sorted(base.iterdir()) if d.is_dir()
             for p in sorted(d.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    if not items:
        raise FileNotFoundError(f"{base} holds no images in <building id>/ folders")
    return items
