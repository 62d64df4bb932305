"""Every module of the package imports on its own, first, in a process where no other module of the package
was imported (no import-order dependence, no cycle that only shows when a module is imported first). Slow: one
process per module, forked from an interpreter that has imported torch, transformers and pandas only
(tests/slow/fork_imports.py says why that keeps the check)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from package_modules import modules

pytestmark = pytest.mark.slow

HELPER = Path(__file__).with_name("fork_imports.py")


def _failures(names: list[str], env: dict | None = None) -> dict[str, str]:
    r = subprocess.run([sys.executable, str(HELPER), *names], capture_output=True, text=True, timeout=1200, env=env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_each_module_imports_first_in_its_own_process():
    failed = _failures(sorted(modules()))
    assert not failed, "\n".join(f"{n}: {err}" for n, err in failed.items())


def test_the_check_catches_a_module_that_only_imports_after_another(tmp_path):
    """`pkg.b` reaches `pkg.a` without importing it: fine after `pkg.a` in one interpreter, caught here."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "a.py").write_text("X = 1\n")
    (tmp_path / "pkg" / "b.py").write_text("import pkg\n\nY = pkg.a.X\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    one = subprocess.run([sys.executable, "-c", "import pkg.a, pkg.b"], env=env, capture_output=True, cwd=tmp_path)
    assert one.returncode == 0, one.stderr  # order-dependent, not broken
    failed = _failures(["pkg.a", "pkg.b"], env)
    assert list(failed) == ["pkg.b"] and "has no attribute 'a'" in failed["pkg.b"], failed
