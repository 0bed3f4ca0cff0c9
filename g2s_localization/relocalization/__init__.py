"""Relocalization without GNSS: satellite feature maps, the LPN place index, and the relocalizer
that searches them along the dead-reckoned track before fine registration."""
