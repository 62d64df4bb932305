"""mechsteer: declarative mechanistic steering studies.

A study is one YAML file (models x steering vectors x conditions x evaluations/readouts x seeds).
`mechsteer run study.yaml` (or `mechsteer.load_study(path).run()`) validates it, compiles it into
content-hashed cells, executes the cells that are not cached yet inside hook scopes that always clean up,
and writes records, tables and plots.

The public names below come from `mechsteer.api` and are imported on first use, so that `import
mechsteer.errors` (or `mechsteer validate`) does not pull in pandas, torch or transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "Study": "mechsteer.api",
    "load_study": "mechsteer.api",
    "load_results": "mechsteer.api",
    "diff": "mechsteer.api",
    "list_outputs": "mechsteer.api",
    "load_model": "mechsteer.api",
    "steering": "mechsteer.api",
    "plan_status": "mechsteer.api",
    "run_plan": "mechsteer.api",
    "rehearsal_plan": "mechsteer.api",
    "rehearse": "mechsteer.api",
    "Results": "mechsteer.results",
    "RehearsalWarning": "mechsteer.results",
    "Plan": "mechsteer.engine.plan",
    "VectorSet": "mechsteer.vectors.vector_set",
    "MechsteerError": "mechsteer.errors",
    "SpecError": "mechsteer.errors",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use (PEP 562), so importing the package stays cheap."""
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mechsteer' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public names, including those not imported yet (for completion in notebooks)."""
    return sorted(__all__)
