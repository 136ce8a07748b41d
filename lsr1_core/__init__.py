"""lsr1_core: L-SR1, the learned symmetric-rank-one optimizer, with classical baselines."""
__version__ = "0.1.0"
