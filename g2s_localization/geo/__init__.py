"""Maps and geodesy: WGS84 <-> ENU, Web-Mercator tiles, the tile cache and its metric crops.

No torch here: a map tool can use it without the learning stack."""
