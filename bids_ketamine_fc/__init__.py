"""bids_ketamine_fc: seed-to-voxel resting-state connectivity as a BIDS-App."""

__version__ = "0.1.0"
