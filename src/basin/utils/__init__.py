"""Small shared helpers: atomic file writes, checkpoints, devices, seeding, run records."""
