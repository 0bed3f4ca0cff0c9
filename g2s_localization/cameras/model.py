"""The camera-model interface every registration path uses: an image size and a projection of
optical-frame points (x right, y down, z forward; REP-103 ``*_optical``) to pixels with integer
pixel centres. Implemented by :class:`~.pinhole.PinholeCamera`, :class:`~.distortion.DistortedCamera`
(raw images as ``CameraInfo`` describes them) and :class:`~.equirectangular.EquirectangularCamera`
(panoramas), so BEV projection (:func:`~.bev.bev_pixels`) has one code path for all of them."""
from __future__ import annotations

from typing import Protocol

from torch import Tensor


class CameraModel(Protocol):
    @property
    def width(self) -> int: ...

    @property
    def height(self) -> int: ...

    def project(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, N, 3)`` optical-frame points -> ``(B, N, 2)`` pixels and ``(B, N)`` whether seen."""
        ...
