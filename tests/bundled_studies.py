"""The bundled studies, loaded and compiled once per test session: a loaded study's spec and a compiled plan are
frozen values, so the tests that only read them share one copy (loading the 48 study and profile pairs takes
seconds, compiling them several more). A test that edits a study, or compiles it into a real folder, loads
its own."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from mechsteer.engine.plan import Plan, compile_study
from mechsteer.spec.document import LoadedStudy
from mechsteer.spec.loader import load_study

STUDIES = Path(__file__).resolve().parent.parent / "studies"


def _path(name: str | Path) -> Path:
    return (name if isinstance(name, Path) else STUDIES / f"{name}.yaml").resolve()


def bundled_study(name: str | Path, profile: str | None = None) -> LoadedStudy:
    """`studies/<name>.yaml` (or a path) with `profile` merged, validated once per session."""
    return _load(_path(name), profile)


def bundled_plan(name: str | Path, profile: str | None = None) -> Plan:
    """The compiled plan of `bundled_study(name, profile)` (output root `/nonexistent`: nothing is written)."""
    return _compile(_path(name), profile)


@cache
def _load(path: Path, profile: str | None) -> LoadedStudy:
    return load_study(path, profile)


@cache
def _compile(path: Path, profile: str | None) -> Plan:
    return compile_study(_load(path, profile), output_root="/nonexistent")
