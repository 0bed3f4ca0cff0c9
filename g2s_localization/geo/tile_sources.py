"""Where satellite tiles live on disk: XYZ folders (``z/x/y.png``) and MBTiles (SQLite).

Sources only fetch encoded bytes; decoding, caching and cropping live in :mod:`.tiles`.
Both formats are the ones tile servers and tools (gdal2tiles, MapTiler, QGIS) write, so a
real cache drops in unchanged.
"""
from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Protocol

IMAGE_EXTENSIONS = ("png", "jpg", "jpeg", "webp")


class TileError(Exception):
    """Base class of every tile-cache failure the node turns into a diagnostic."""


class OutsideCoverageError(TileError):
    """The requested area is not (fully) covered by the tile cache."""


class CorruptTileError(TileError):
    """A tile or tile database exists but cannot be read or decoded."""


class TilePathError(TileError):
    """A tile path would leave the cache root (e.g. through a symlink)."""


def _check_tile_address(z: int, x: int, y: int) -> None:
    for name, value in (("z", z), ("x", x), ("y", y)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"tile {name} must be an int, got {type(value).__name__}")
    if not 0 <= z <= 30:
        raise ValueError(f"zoom {z} outside 0..30")
    if not (0 <= x < 2**z and 0 <= y < 2**z):
        raise OutsideCoverageError(f"tile {z}/{x}/{y} does not exist in the Web-Mercator world")


class TileSource(Protocol):
    """Anything that returns the encoded image bytes of an XYZ tile, or None where it has none."""

    zoom_levels: tuple[int, ...]

    def read(self, z: int, x: int, y: int) -> bytes | None: ...

    def close(self) -> None: ...


class XyzDirectorySource:
    """A ``root/z/x/y.<ext>`` tile folder. Every path is checked to stay inside ``root``."""

    def __init__(self, root: str | Path, extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise OutsideCoverageError(f"tile folder {self.root} does not exist")
        self.extensions = extensions
        self.zoom_levels = tuple(
            sorted(int(p.name) for p in self.root.iterdir() if p.is_dir() and p.name.isdigit())
        )
        if not self.zoom_levels:
            raise OutsideCoverageError(f"tile folder {self.root} has no zoom-level folders (expected z/x/y.png)")

    def tile_path(self, z: int, x: int, y: int) -> Path | None:
        """Existing file for a tile, resolved and verified to lie inside the root."""
        _check_tile_address(z, x, y)
        for ext in self.extensions:
            path = self.root / str(z) / str(x) / f"{y}.{ext}"
            if path.is_file():
                resolved = path.resolve()
                if not resolved.is_relative_to(self.root):
                    raise TilePathError(f"tile {z}/{x}/{y} resolves to {resolved}, outside the cache root")
                return resolved
        return None

    def read(self, z: int, x: int, y: int) -> bytes | None:
        path = self.tile_path(z, x, y)
        if path is None:
            return None
        try:
            return path.read_bytes()
        except OSError as exc:
            raise CorruptTileError(f"cannot read tile {path}: {exc}") from exc

    def close(self) -> None:
        """Nothing to release; present for the :class:`TileSource` protocol."""


class MBTilesSource:
    """An MBTiles 1.3 database, opened read-only. Rows are TMS (y flipped)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).resolve()
        if not self.path.is_file():
            raise OutsideCoverageError(f"MBTiles file {self.path} does not exist")
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
            rows = self._db.execute("SELECT DISTINCT zoom_level FROM tiles ORDER BY zoom_level").fetchall()
            self.metadata = dict(self._db.execute("SELECT name, value FROM metadata").fetchall())
        except sqlite3.DatabaseError as exc:
            raise CorruptTileError(f"{self.path} is not a readable MBTiles database: {exc}") from exc
        self.zoom_levels = tuple(int(r[0]) for r in rows)
        if not self.zoom_levels:
            raise OutsideCoverageError(f"MBTiles file {self.path} holds no tiles")

    def read(self, z: int, x: int, y: int) -> bytes | None:
        _check_tile_address(z, x, y)
        tms_row = 2**z - 1 - y
        try:
            with self._lock:
                row = self._db.execute(
                    "SELECT tile_data FROM tiles WHERE zoom_level=? AND tile_column=? AND tile_row=?",
                    (z, x, tms_row),
                ).fetchone()
        except sqlite3.DatabaseError as exc:
            raise CorruptTileError(f"cannot read tile {z}/{x}/{y} from {self.path}: {exc}") from exc
        return None if row is None else bytes(row[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


def open_tile_source(path: str | Path) -> TileSource:
    """Open a tile folder or an ``.mbtiles`` file by looking at what ``path`` is."""
    p = Path(path)
    if p.is_dir():
        return XyzDirectorySource(p)
    if p.suffix.lower() == ".mbtiles":
        return MBTilesSource(p)
    raise OutsideCoverageError(f"{p} is neither a z/x/y tile folder nor an .mbtiles file")


# ----------------------------------------------------------------------------- writers
def write_xyz_tile(root: str | Path, z: int, x: int, y: int, encoded: bytes, ext: str = "png") -> Path:
    """Store one encoded tile as ``root/z/x/y.ext``."""
    _check_tile_address(z, x, y)
    path = Path(root) / str(z) / str(x) / f"{y}.{ext}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encoded)
    return path


class MBTilesWriter:
    """Creates an MBTiles 1.3 file (``metadata`` + ``tiles`` tables)."""

    def __init__(self, path: str | Path, name: str, image_format: str = "png", attribution: str = "") -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.unlink(missing_ok=True)
        self._db = sqlite3.connect(self.path)
        self._db.execute("CREATE TABLE metadata (name TEXT, value TEXT)")
        self._db.execute(
            "CREATE TABLE tiles (zoom_level INTEGER, tile_column INTEGER, tile_row INTEGER, tile_data BLOB)"
        )
        self._db.execute("CREATE UNIQUE INDEX tile_index ON tiles (zoom_level, tile_column, tile_row)")
        self._meta = {"name": name, "format": image_format, "type": "baselayer", "version": "1.3"}
        if attribution:
            self._meta["attribution"] = attribution

    def add(self, z: int, x: int, y: int, encoded: bytes) -> None:
        _check_tile_address(z, x, y)
        self._db.execute("INSERT OR REPLACE INTO tiles VALUES (?, ?, ?, ?)", (z, x, 2**z - 1 - y, encoded))

    def close(self, bounds: tuple[float, float, float, float] | None = None) -> None:
        """Write metadata (``bounds`` = west, south, east, north degrees) and commit."""
        zooms = [r[0] for r in self._db.execute("SELECT DISTINCT zoom_level FROM tiles")]
        if zooms:
            self._meta.update(minzoom=str(min(zooms)), maxzoom=str(max(zooms)))
        if bounds is not None:
            self._meta["bounds"] = ",".join(f"{b:.8f}" for b in bounds)
        self._db.executemany("INSERT INTO metadata VALUES (?, ?)", sorted(self._meta.items()))
        self._db.commit()
        self._db.close()
