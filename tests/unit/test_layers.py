"""The package's layer order (README, "Design"): each module imports only from its own layer or the layers
below it (every import, module-level or inside a function), and module-level imports form no cycle. Static
analysis of the source, so it is fast and names the offending line; `tests/slow/test_import_isolation.py`
also imports every module in a fresh interpreter."""

from __future__ import annotations

import ast
from pathlib import Path

from package_modules import PACKAGE, modules

LAYERS: list[tuple[int, tuple[str, ...]]] = [
    (
        1,
        (
            "mechsteer.errors",
            "mechsteer.registry",
            "mechsteer.atomic",
            "mechsteer.hooks",
            "mechsteer.vectors",
            "mechsteer.progress",
            "mechsteer.hub",
            "mechsteer.machine",
            "mechsteer.file_hash",
        ),
    ),
    (2, ("mechsteer.spec",)),
    (3, ("mechsteer.models", "mechsteer.backends")),
    (
        4,
        (
            "mechsteer.interventions",
            "mechsteer.positions",
            "mechsteer.capture",
            "mechsteer.replay",
            "mechsteer.sequences",
        ),
    ),
    (5, ("mechsteer.generation", "mechsteer.measurement", "mechsteer.eval", "mechsteer.readouts", "mechsteer.diffsae")),
    (6, ("mechsteer.engine",)),
    (7, ("mechsteer.report", "mechsteer.results", "mechsteer.comparison")),
    (8, ("mechsteer.train", "mechsteer.builders")),
    (9, ("mechsteer.api", "mechsteer.cli")),
]
"""Layer of each module prefix. The package's own `__init__` is the API's lazy front door (layer 9)."""


def layer_of(module: str) -> int:
    if module == "mechsteer.__version__":
        return 1  # the version string is the one thing the package front door holds itself
    if module == "mechsteer":
        return 9
    for level, prefixes in LAYERS:
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return level
    raise AssertionError(f"module {module} has no layer: add its prefix to LAYERS (and to the README)")


def imports(path: Path, top_level_only: bool) -> list[tuple[str, int]]:
    """(imported mechsteer module, line) pairs; `top_level_only` skips imports inside functions."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    out = []
    for node in nodes:
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names if a.name.startswith("mechsteer")]
        elif (
            isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mechsteer") and node.level == 0
        ):
            known = modules()
            for a in node.names:  # `from mechsteer.spec import kinds` imports the submodule
                sub = f"{node.module}.{a.name}"
                out.append((sub if sub in known or sub == "mechsteer.__version__" else node.module, node.lineno))
    return out


def test_every_module_has_a_layer():
    for name in modules():
        layer_of(name)


def test_no_module_imports_a_higher_layer():
    bad = []
    for name, path in sorted(modules().items()):
        mine = layer_of(name)
        for target, line in imports(path, top_level_only=False):
            if layer_of(target) > mine:
                bad.append(
                    f"{path.relative_to(PACKAGE.parent)}:{line}: {name} (layer {mine}) imports {target} "
                    f"(layer {layer_of(target)})"
                )
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_module_level_imports_have_no_cycle():
    known = modules()
    graph = {
        name: {t for t, _ in imports(path, top_level_only=True) if t in known and t != name}
        for name, path in known.items()
    }
    # a package's __init__ importing its own submodules is how packages work, not a cycle
    graph = {n: {t for t in ts if not t.startswith(n + ".")} for n, ts in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for t in sorted(graph[n]):
            if state.get(t) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(t) :] + [t]))
            if t not in state:
                visit(t)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)


def test_no_public_name_is_shadowed_by_a_submodule():
    """`import mechsteer.x` sets the attribute `x` on the package: an API name equal to a submodule's name
    would turn into that module once anything imports it (`ms.diff` became a module that way once)."""
    import mechsteer

    clashes = [n for n in mechsteer.__all__ if (PACKAGE / f"{n}.py").exists() or (PACKAGE / n).is_dir()]
    assert not clashes, f"public names that are also submodules: {clashes}"
