"""Load a repository script (benchmarks/*.py, scripts/*.py, not part of the package) as a module for tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load_script(rel: str):
    """Import `REPO/rel` (e.g. "benchmarks/studies.py") under its file stem."""
    spec = importlib.util.spec_from_file_location(Path(rel).stem, REPO / rel)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
