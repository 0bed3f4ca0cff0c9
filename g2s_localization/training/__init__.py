"""Training: weak (GNSS / compass) and full supervision of the registration network, and the LPN
place head. Offline only."""
