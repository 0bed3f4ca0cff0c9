"""Camera geometry: intrinsics, the camera-to-ground rotation and the image-to-BEV projection."""
