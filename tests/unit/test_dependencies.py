"""pyproject's dependencies say what mechsteer needs, no more, no less: the torch floor that makes
`torch.load(weights_only=True)` a real refusal of pickled code, every declared dependency imported somewhere
or marked `# indirect:` with what needs it (and that need checked by hiding the package), and every
third-party module the package imports declared."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = ROOT / "pyproject.toml"
PROJECT = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
DEPENDENCIES = [Requirement(d) for d in PROJECT["dependencies"]]
OPTIONAL = [Requirement(d) for extra in PROJECT["optional-dependencies"].values() for d in extra]

# What breaks without each indirect dependency, as a snippet (the package hidden from imports must make it fail).
INDIRECT_PROBES = {
    "accelerate": ("accelerate", "import lm_eval.models.huggingface"),
    "antlr4-python3-runtime": ("antlr4", "import math_verify; math_verify.parse('$\\\\frac{1}{2}$')"),
    "pyarrow": (
        "pyarrow",
        "import os, tempfile, pandas as pd; pd.DataFrame({'a': [1]}).to_parquet(os.path.join(tempfile.mkdtemp(), 'x.parquet'))",
    ),
    "tabulate": ("tabulate", "import pandas as pd; pd.DataFrame({'a': [1]}).to_markdown()"),
}


def _indirect() -> dict[str, str]:
    """Dependencies whose pyproject line carries `# indirect: <what needs it>` (canonical name -> reason)."""
    out = {}
    for line in PYPROJECT.read_text(encoding="utf-8").splitlines():
        match = re.match(r'\s*"([^"]+)",\s*#\s*indirect:\s*(\S.*)$', line)
        if match:
            out[canonicalize_name(Requirement(match.group(1)).name)] = match.group(2)
    return out


def _imported_modules(*folders: str) -> set[str]:
    """Top-level module names imported (anywhere, at any depth) by the Python files under `folders`."""
    names: set[str] = set()
    for folder in folders:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
    return names


def _modules_of_distributions() -> dict[str, set[str]]:
    """Installed distribution (canonical name) -> the top-level modules it provides."""
    out: dict[str, set[str]] = {}
    for module, dists in packages_distributions().items():
        for dist in dists:
            out.setdefault(canonicalize_name(dist), set()).add(module)
    return out


def test_torch_floor_is_2_6():
    (torch,) = [r for r in DEPENDENCIES if r.name == "torch"]
    assert torch.specifier.contains("2.6.0") and torch.specifier.contains("2.13.0")
    for bypassable in ("2.4.0", "2.5.1"):
        assert not torch.specifier.contains(bypassable), f"torch {bypassable} allowed: weights_only is bypassable"


def test_every_declared_dependency_is_imported_or_a_documented_indirect_requirement():
    imported = _imported_modules("mechsteer", "tests", "scripts", "benchmarks")
    provides = _modules_of_distributions()
    indirect = _indirect()
    unused = []
    for req in DEPENDENCIES:
        name = canonicalize_name(req.name)
        modules = provides.get(name)
        assert modules, f"{req.name} is declared but not installed here: cannot tell what it provides"
        if not modules & imported and name not in indirect:
            unused.append(req.name)
    assert unused == [], f"declared, never imported, not marked '# indirect:' in pyproject.toml: {unused}"
    for name in indirect:
        assert not provides[name] & imported, f"{name} is imported directly: drop its '# indirect:' mark"


@pytest.fixture(scope="module")
def probe_runs() -> dict[str, tuple[tuple[int, str], tuple[int, str]]]:
    """name -> ((exit code, stderr) of its probe with the package hidden, the same with it), one interpreter per
    run, as many at once as there are CPUs (each is mostly the import of a large library)."""

    def run(code: str) -> tuple[int, str]:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
        return r.returncode, r.stderr

    jobs = {}
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        for name, (module, snippet) in INDIRECT_PROBES.items():
            hidden = f"import sys; sys.modules[{module!r}] = None\n{snippet}"
            jobs[name] = (pool.submit(run, hidden), pool.submit(run, snippet))
    return {name: (without.result(), with_it.result()) for name, (without, with_it) in jobs.items()}


@pytest.mark.parametrize("name", sorted(INDIRECT_PROBES))
def test_each_indirect_requirement_is_really_needed(name, probe_runs):
    assert name in _indirect(), f"{name} has a probe but no '# indirect:' line in pyproject.toml"
    (without_rc, without_err), (with_rc, with_err) = probe_runs[name]
    assert without_rc != 0, f"works without {name}: it is not needed for this"
    assert "ImportError" in without_err or "ModuleNotFoundError" in without_err, without_err[-2000:]
    assert with_rc == 0, with_err[-2000:]


def test_every_indirect_requirement_has_a_probe():
    assert sorted(_indirect()) == sorted(INDIRECT_PROBES)


def test_every_third_party_module_the_package_imports_is_declared():
    declared = {canonicalize_name(r.name) for r in DEPENDENCIES + OPTIONAL}
    provides = _modules_of_distributions()
    by_module = {m: dist for dist, modules in provides.items() for m in modules}
    third_party = _imported_modules("mechsteer") - set(sys.stdlib_module_names) - {"mechsteer", "__future__"}
    # a module of an optional distribution not installed here (vllm in the main venv) must carry its name
    undeclared = sorted(m for m in third_party if by_module.get(m, canonicalize_name(m)) not in declared)
    assert undeclared == [], f"mechsteer imports modules of undeclared distributions: {undeclared}"
