"""Approximate-time pairing of a camera stream with GNSS and IMU streams (no message_filters).

The camera drives: each image takes, from each other stream, the message nearest in time
within a slop. Streams may run at any rates; buffers are short and bounded, and a stamp
far older than the newest (a bag loop, a clock reset) clears them instead of matching stale data.
"""
from __future__ import annotations

import bisect
import threading
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class NearestBuffer(Generic[T]):
    """Recent ``(stamp, value)`` pairs in time order; thread-safe."""

    def __init__(self, horizon_s: float = 2.0, max_items: int = 400, jump_back_s: float = 0.5) -> None:
        self.horizon_s, self.max_items, self.jump_back_s = horizon_s, max_items, jump_back_s
        self._stamps: deque[float] = deque()
        self._values: deque[T] = deque()
        self._lock = threading.Lock()

    def add(self, stamp_s: float, value: T) -> None:
        with self._lock:
            if self._stamps and stamp_s < self._stamps[-1] - self.jump_back_s:
                self._stamps.clear()  # time went backwards: old entries describe another timeline
                self._values.clear()
            if self._stamps and stamp_s < self._stamps[-1]:  # slightly out of order: insert in place
                index = bisect.bisect(list(self._stamps), stamp_s)
                self._stamps.insert(index, stamp_s)
                self._values.insert(index, value)
            else:
                self._stamps.append(stamp_s)
                self._values.append(value)
            newest = self._stamps[-1]
            while self._stamps and (len(self._stamps) > self.max_items or self._stamps[0] < newest - self.horizon_s):
                self._stamps.popleft()
                self._values.popleft()

    def nearest(self, stamp_s: float, slop_s: float) -> tuple[float, T] | None:
        """The entry closest to ``stamp_s`` if within ``slop_s``, else None."""
        with self._lock:
            if not self._stamps:
                return None
            stamps = list(self._stamps)
            i = bisect.bisect_left(stamps, stamp_s)
            best = min((j for j in (i - 1, i) if 0 <= j < len(stamps)), key=lambda j: abs(stamps[j] - stamp_s))
            if abs(stamps[best] - stamp_s) > slop_s:
                return None
            return stamps[best], self._values[best]

    def newest_stamp(self) -> float | None:
        with self._lock:
            return self._stamps[-1] if self._stamps else None

    def clear(self) -> None:
        with self._lock:
            self._stamps.clear()
            self._values.clear()

    def __len__(self) -> int:
        return len(self._stamps)
