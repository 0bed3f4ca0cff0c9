"""Fine registration of a camera image against the satellite patch around a prior.

The network, its correlation search, the registrars behind one interface, checkpoints and the
shipped weights. Runs on the vehicle."""
