"""The commands that write the project's reports (docs/results_*.md, docs/benchmarks*.md and their JSON under
docs/results/): not installed with the library, run from the repository root as ``python -m experiments.<name>``.
See README.md here for the list; ``_report`` is their shared ending."""
