"""The ending every report command shares: the command line that made a report, the JSON result under
``<out>/results/``, the Markdown page beside it, and the machine it ran on.

    cmd = command("dims", "--steps 20")                # "python -m experiments.dims --steps 20"
    write_report("docs", "dims", res, markdown(res, cmd))   # docs/results/dims.json, docs/results_dims.md

Nothing here computes a number: the JSON is ``json.dumps(result, indent=1, ...)`` and the page is written as
given, byte for byte what each command wrote before it used this helper.
"""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import torch

PREFIX = "python -m experiments."


def command(name: str, *options: str) -> str:
    """``python -m experiments.<name>`` followed by the non-empty ``options``, as the reports quote it."""
    return " ".join([PREFIX + name, *(o for o in options if o)])


def out_dir(parser, out) -> Path:
    """``--out`` as a Path; a file there is refused through ``parser.error`` before anything runs."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        parser.error(f"--out {path} is a file, not a directory")
    return path


def write_report(out, name: str, result, markdown: str | None, *, md_name: str | None = None,
                 echo: bool = True, **json_options) -> Path | None:
    """Write ``<out>/results/<name>.json`` (``result``: JSON-able, or text already serialised; None: no JSON)
    with ``json.dumps(result, indent=1, **json_options)``, then ``markdown`` as ``<out>/<md_name>`` (default
    ``results_<name>.md``) and print it when ``echo``. Returns the Markdown file's path (None when none)."""
    out = Path(out)
    if result is not None:
        (out / "results").mkdir(parents=True, exist_ok=True)
        text = result if isinstance(result, str) else json.dumps(result, indent=1, **json_options)
        (out / "results" / f"{name}.json").write_text(text)
    if markdown is None:
        return None
    out.mkdir(parents=True, exist_ok=True)
    path = out / (md_name or f"results_{name}.md")
    path.write_text(markdown)
    if echo:
        print(markdown)
    return path


def machine() -> str:
    """CPU model, cores, torch version and threads, GPU and Python version: the reports' "Machine:" line."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (f"{cpu}; {os.cpu_count()} logical cores; torch {torch.__version__}; "
            f"{torch.get_num_threads()} torch threads; GPU: {gpu}; Python {platform.python_version()}")
