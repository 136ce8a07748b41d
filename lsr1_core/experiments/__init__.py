"""What is left of the report commands inside the library: ``headroom`` (``python -m lsr1_core.experiments.headroom``),
which moves to the top-level ``experiments/`` package beside the others (issue 25). Nothing in the library imports
this package."""
