"""Where benchmark scripts write their figures: `benchmarks/results/<script_stem>.md` (the section, with the
command, settings, machine facts and numbers) and `benchmarks/results/<script_stem>.json` (raw numbers).
`benchmarks/collect.py` concatenates the sections into benchmarks/results.md. No figure is typed by hand."""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def command_line() -> str:
    """The command that produced a section, as a user would type it from the repository root."""
    return " ".join(shlex.quote(a) for a in ["python", *sys.argv])


def machine_facts() -> str:
    """One line of machine facts for a section."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), python {platform.python_version()}")


def section_path(stem: str) -> Path:
    return RESULTS / f"{stem}.md"


def write_section(stem: str, markdown: str, raw: dict | list | None = None, out: Path | None = None) -> Path:
    """Write `<stem>.md` (and `<stem>.json` when `raw` is given) under benchmarks/results/ (or at `out`)."""
    md = Path(out) if out is not None else section_path(stem)
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(markdown.rstrip() + "\n", encoding="utf-8")
    if raw is not None:
        md.with_suffix(".json").write_text(json.dumps(raw, indent=1) + "\n", encoding="utf-8")
    return md
