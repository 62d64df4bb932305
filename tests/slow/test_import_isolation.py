"""Every module of the package imports on its own in a fresh interpreter (no import-order dependence, no
cycle that only shows when a module is imported first). Slow: one interpreter per module."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from package_modules import modules

pytestmark = pytest.mark.slow


def _import(name: str) -> tuple[str, int, str]:
    r = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True, text=True, timeout=300)
    return name, r.returncode, r.stderr.strip().splitlines()[-1] if r.returncode else ""


def test_each_module_imports_in_a_fresh_interpreter():
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(_import, sorted(modules())))
    failed = [f"{n}: {err}" for n, rc, err in results if rc]
    assert not failed, "\n".join(failed)
