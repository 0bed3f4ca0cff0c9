"""Dataset readers and writers: KITTI raw, VIGOR, University-1652 layouts, registration samples, rosbag2.

Offline only: nothing on the vehicle imports this."""
