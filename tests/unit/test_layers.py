"""The package's layer order (README, "Design"): each module imports only from its own layer or the layers
below it, imports form no cycle, and a kind's registered implementation is never above the module that calls
it through the registry. Static analysis of the source, so it is fast and names the offending line;
`tests/slow/test_import_isolation.py` also imports every module in a fresh interpreter.

Every import counts: module-level, inside a function, and under `if TYPE_CHECKING:` (a type-only import still
ties two modules together). A registration `@vector_kind("x", impl="mechsteer.builders.x:build")` is an
import in disguise: the module that calls `VECTOR_KINDS.impl(...)` runs the target, so the target's layer
must not be above that caller's."""

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
            "mechsteer.safe_text",
            "mechsteer.stats",
            "mechsteer.cell_tables",
        ),
    ),
    # `train.layout` (where a training run writes what) is torch-free and imports only `spec`: the compiler
    # locates `trained` runs with it while binding kinds, so it sits with the spec layer.
    (2, ("mechsteer.spec", "mechsteer.train.layout")),
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
    (6, ("mechsteer.train", "mechsteer.builders")),
    (7, ("mechsteer.engine",)),
    (8, ("mechsteer.report", "mechsteer.results", "mechsteer.comparison")),
    (9, ("mechsteer.api", "mechsteer.cli")),
]
"""Layer of each module prefix. The package's own `__init__` is the API's lazy front door (layer 9)."""

REGISTRIES = ("INTERVENTION_KINDS", "VECTOR_KINDS", "READOUT_KINDS", "MEASUREMENT_KINDS")
"""The kind registries of `mechsteer.spec.kinds` whose `impl(...)` / `report(...)` calls run a registered
target."""


def layer_of(module: str) -> int:
    if module == "mechsteer.__version__":
        return 1  # the version string is the one thing the package front door holds itself
    if module == "mechsteer":
        return 9
    for level, prefixes in LAYERS:
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return level
    raise AssertionError(f"module {module} has no layer: add its prefix to LAYERS (and to the README)")


def imports(path: Path, known: dict[str, Path] | None = None) -> list[tuple[str, int]]:
    """(imported mechsteer module, line) pairs of every import in a file: module-level, inside functions,
    under `if TYPE_CHECKING:` or `try:`. `known`: the package's modules (to tell `from pkg import submodule`
    from `from module import name`)."""
    known = modules() if known is None else known
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names if a.name.startswith("mechsteer")]
        elif (
            isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mechsteer") and node.level == 0
        ):
            for a in node.names:  # `from mechsteer.spec import kinds` imports the submodule
                sub = f"{node.module}.{a.name}"
                out.append((sub if sub in known or sub == "mechsteer.__version__" else node.module, node.lineno))
    return out


def import_graph(known: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the package modules it imports (every import, see `imports`). A package's `__init__`
    importing its own submodules is how packages work, not an edge."""
    graph = {name: {t for t, _ in imports(path, known) if t in known and t != name} for name, path in known.items()}
    return {n: {t for t in ts if not t.startswith(n + ".")} for n, ts in graph.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of the graph as [a, b, ..., a] (depth first, deterministic), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for t in sorted(graph.get(n, ())):
            if state.get(t) == 1:
                return stack[stack.index(t) :] + [t]
            if t not in state:
                found = visit(t)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def registry_callers(known: dict[str, Path]) -> dict[tuple[str, str], set[str]]:
    """(registry, "impl" | "report") -> the modules that call it (`VECTOR_KINDS.impl(name)`): the modules that
    run the targets registered there."""
    out: dict[tuple[str, str], set[str]] = {}
    for name, path in known.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("impl", "report")
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id in REGISTRIES
            ):
                out.setdefault((node.func.value.id, node.func.attr), set()).add(name)
    return out


def registrations() -> dict[tuple[str, str], list[tuple[str, str]]]:
    """(registry, "impl" | "report") -> [(kind, "module:attr" target)] of every registered kind."""
    import mechsteer.spec.kinds as kinds

    kinds.load_all()
    out: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for reg_name in REGISTRIES:
        reg = getattr(kinds, reg_name)
        for kind in reg.names():
            k = reg.kind(kind)
            out.setdefault((reg_name, "impl"), []).append((kind, k.impl))
            if k.report:
                out.setdefault((reg_name, "report"), []).append((kind, k.report))
    return out


def target_violations(regs: dict, callers: dict) -> list[str]:
    """Registration targets above a module that calls them through their registry (or outside the package)."""
    bad = []
    for key, targets in sorted(regs.items()):
        for kind, target in targets:
            module = target.partition(":")[0]
            if not module.startswith("mechsteer."):
                bad.append(f"{key[0]} {kind!r}: {key[1]} target {target} is not a mechsteer module")
                continue
            for caller in sorted(callers.get(key, ())):
                if layer_of(module) > layer_of(caller):
                    bad.append(
                        f"{key[0]} {kind!r}: {key[1]} target {module} (layer {layer_of(module)}) is run by "
                        f"{caller} (layer {layer_of(caller)}) through {key[0]}.{key[1]}()"
                    )
    return bad


# ------------------------------------------------------------------------------------------- the package


def test_every_module_has_a_layer():
    for name in modules():
        layer_of(name)


def test_no_module_imports_a_higher_layer():
    bad = []
    for name, path in sorted(modules().items()):
        mine = layer_of(name)
        for target, line in imports(path):
            if layer_of(target) > mine:
                bad.append(
                    f"{path.relative_to(PACKAGE.parent)}:{line}: {name} (layer {mine}) imports {target} "
                    f"(layer {layer_of(target)})"
                )
    assert not bad, "upward imports:\n" + "\n".join(bad)


HEAVY = ("torch", "transformers", "vllm", "lm_eval")
"""Libraries the study language must not import: `mechsteer validate` and `plan` run without them (reading a
safetensors header with `safetensors.safe_open` needs no torch, so it is not one)."""


def heavy_imports(path: Path) -> list[tuple[str, int]]:
    """(heavy library, line) of every import of one in a file, at any level."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        out += [(n, node.lineno) for n in names if n.split(".")[0] in HEAVY]
    return out


def test_the_study_language_imports_no_heavy_library():
    bad = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: {name} imports {lib}"
        for name, path in sorted(modules().items())
        if layer_of(name) == 2
        for lib, line in heavy_imports(path)
    ]
    assert not bad, "the spec layer (layer 2) must stay torch-free:\n" + "\n".join(bad)


def test_imports_have_no_cycle():
    cycle = find_cycle(import_graph(modules()))
    assert cycle is None, "import cycle (function-level and TYPE_CHECKING imports count): " + " -> ".join(cycle)


def test_registration_targets_are_not_above_their_callers():
    callers = registry_callers(modules())
    regs = registrations()
    # every target is run through some registry call the scan sees (readouts are registered as readouts and
    # as measurements, and run as the latter), so the check below is not blind
    seen = {t for key, targets in regs.items() if callers.get(key) for _, t in targets}
    unseen = sorted({t for targets in regs.values() for _, t in targets} - seen)
    assert not unseen, f"no scanned module calls the registry that runs {unseen}"
    bad = target_violations(regs, callers)
    assert not bad, "registration targets above their callers:\n" + "\n".join(bad)


def test_no_public_name_is_shadowed_by_a_submodule():
    """`import mechsteer.x` sets the attribute `x` on the package: an API name equal to a submodule's name
    would turn into that module once anything imports it (`ms.diff` became a module that way once)."""
    import mechsteer

    clashes = [n for n in mechsteer.__all__ if (PACKAGE / f"{n}.py").exists() or (PACKAGE / n).is_dir()]
    assert not clashes, f"public names that are also submodules: {clashes}"


# ------------------------------------------------------------------------------------------- planted faults


def _tree(tmp_path: Path, files: dict[str, str]) -> dict[str, Path]:
    """A throwaway `mechsteer` package with these modules (dotted name -> source); its module map."""
    out = {}
    for name, src in files.items():
        path = tmp_path.joinpath(*name.split(".")).with_suffix(".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(src)
        out[name] = path
    return out


def test_a_cycle_through_function_level_and_type_checking_imports_is_caught(tmp_path):
    """The cycle `store <-> claims` this test once missed: one side imports at module level, the other only
    under TYPE_CHECKING; a function-level import closes a second one."""
    known = _tree(
        tmp_path,
        {
            "mechsteer.engine.store": "from mechsteer.engine.claims import Claim\n",
            "mechsteer.engine.claims": (
                "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from mechsteer.engine.store import CellStore\n"
            ),
            "mechsteer.spec.loader": "def load():\n    from mechsteer.spec.checks import check_study\n",
            "mechsteer.spec.checks": "from mechsteer.spec.loader import LoadedStudy\n",
        },
    )
    graph = import_graph(known)
    assert find_cycle(graph) == ["mechsteer.engine.claims", "mechsteer.engine.store", "mechsteer.engine.claims"]
    del graph["mechsteer.engine.claims"]
    assert find_cycle(graph) == ["mechsteer.spec.checks", "mechsteer.spec.loader", "mechsteer.spec.checks"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_a_heavy_import_in_the_spec_layer_is_caught(tmp_path):
    known = _tree(
        tmp_path, {"mechsteer.train.layout": "def f():\n    from torch import nn\n", "x": "import torchvision\n"}
    )
    assert heavy_imports(known["mechsteer.train.layout"]) == [("torch", 2)]
    assert heavy_imports(known["x"]) == []


def test_a_registration_target_above_its_caller_is_caught(tmp_path):
    """The engine (layer 7) running a builder that sat in layer 8 was such a case; a target in the CLI run by
    the vector building code must be named, and one in a lower layer passes."""
    known = _tree(
        tmp_path,
        {"mechsteer.builders.context": "def get(spec):\n    return VECTOR_KINDS.impl(spec.kind)(spec)\n"},
    )
    callers = registry_callers(known)
    assert callers == {("VECTOR_KINDS", "impl"): {"mechsteer.builders.context"}}
    regs = {("VECTOR_KINDS", "impl"): [("x", "mechsteer.cli.app:build_x"), ("y", "mechsteer.builders.y:build")]}
    (bad,) = target_violations(regs, callers)
    assert "'x'" in bad and "mechsteer.cli.app (layer 9)" in bad and "mechsteer.builders.context (layer 6)" in bad
    assert target_violations({("VECTOR_KINDS", "impl"): [("z", "elsewhere:build")]}, callers) == [
        "VECTOR_KINDS 'z': impl target elsewhere:build is not a mechsteer module"
    ]
