"""Developer tools that are not part of the app or the library: the app benchmark (``python -m
tools.bench_app``) and the headless-Chromium helpers it shares with tests/test_browser_e2e.py."""
