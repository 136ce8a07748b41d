"""Scripts that regenerate the numbers and figures in docs/ (run each with ``python -m``)."""
