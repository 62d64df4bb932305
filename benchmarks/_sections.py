"""Where benchmark scripts write their figures, and the machine facts every section carries: each script writes
`benchmarks/results/<script_stem>.md` (its section: command, settings, machine facts, numbers) and
`benchmarks/results/<script_stem>.json` (raw numbers); `benchmarks/collect.py` concatenates the sections into
benchmarks/results.md and fills the README's marker blocks. No figure is typed by hand."""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"


def setup_env(offline: bool = True) -> None:
    if offline:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))


def command_line() -> str:
    return "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]])


def machine_facts() -> dict:
    """CPU model and its bf16-relevant flags, cores, load, versions (torch imported by the caller already)."""
    import torch

    from mechsteer import machine

    flags = machine.read_cpu_flags() or set()
    model = machine.cpu_model()
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cpu": model,
        "cpu_flags": {f: f in flags for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")},
        "cores": os.cpu_count(),
        "load_avg_1m_at_start": round(load[0], 2) if load else None,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }


def facts_lines(facts: dict) -> list[str]:
    flags = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in facts["cpu_flags"].items())
    return [
        f"- machine: {facts['cpu']}, {facts['cores']} cores shared with other jobs (1-min load "
        f"{facts['load_avg_1m_at_start']} at start), {facts['torch_threads']} torch thread(s)",
        f"- CPU flags: {flags}",
        f"- python {facts['python']}, torch {facts['torch']}, {facts['platform']}",
    ]


def section_path(stem: str) -> Path:
    return RESULTS / f"{stem}.md"


def write_section(
    stem: str, lines: list[str] | str, data: dict | list | None = None, results_dir: Path = RESULTS
) -> Path:
    """Write benchmarks/results/<stem>.md (and .json when `data` is given) atomically; returns the .md path.
    `results_dir` moves both files (tests write into a temporary folder)."""
    from mechsteer.atomic import atomic_write_text

    results_dir.mkdir(parents=True, exist_ok=True)
    md = results_dir / f"{stem}.md"
    atomic_write_text(md, (lines if isinstance(lines, str) else "\n".join(lines)).rstrip() + "\n")
    if data is not None:
        atomic_write_text(results_dir / f"{stem}.json", json.dumps(data, indent=2, default=str) + "\n")
    print(f"wrote {md} and {md.with_suffix('.json')}")
    return md
