"""The synthetic world: procedural towns, satellite tiles, the camera renderer and noisy drives.

Offline only: nothing on the vehicle imports this."""
