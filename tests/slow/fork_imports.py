"""Import each named module first in its own process: `python fork_imports.py MODULE...` prints a JSON object
{module: last line of the error} for the modules whose import failed (an empty object when none did).

One interpreter imports the heavy third-party libraries every mechsteer module sits on (PRELOAD: torch,
transformers, pandas; nothing of mechsteer), then forks one child per module, two at a time; each child imports
its module and exits. So every mechsteer module is still imported first, in a process where no other mechsteer
module was ever imported (what the isolation test checks: import cycles, registrations and submodule attributes
that only work after another mechsteer module was imported), while torch's ~2 s import is paid once instead of
once per module. Where fork is not available each module gets a fresh interpreter instead."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

PRELOAD = ("torch", "transformers", "pandas")
PARALLEL = 2
TIMEOUT_S = 300.0


def _child(name: str, w: int) -> None:
    """In the forked child: import `name`, report the error's last line on `w`, never return."""
    code = 0
    try:
        __import__(name)
    except BaseException as e:  # noqa: BLE001 - every failure is the report
        os.write(w, f"{type(e).__name__}: {e}".splitlines()[0].encode())
        code = 1
    os._exit(code)  # no atexit handlers, no flushing of the parent's buffers


def forked(names: list[str]) -> dict[str, str]:
    for lib in PRELOAD:
        __import__(lib)
    failed: dict[str, str] = {}
    running: dict[int, tuple[str, int, float]] = {}
    todo = list(names)
    while todo or running:
        while todo and len(running) < PARALLEL:
            name = todo.pop(0)
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(r)
                _child(name, w)
            os.close(w)
            running[pid] = (name, r, time.monotonic())
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            for p, (name, _r, start) in list(running.items()):
                if time.monotonic() - start > TIMEOUT_S:
                    os.kill(p, 9)
                    failed[name] = f"timed out after {TIMEOUT_S:.0f} s"
            time.sleep(0.01)
            continue
        name, r, _ = running.pop(pid)
        err = os.read(r, 1 << 16).decode(errors="replace")
        os.close(r)
        code = os.waitstatus_to_exitcode(status)
        if code and name not in failed:
            failed[name] = err or f"exit code {code}"
    return failed


def fresh(names: list[str]) -> dict[str, str]:
    failed = {}
    for name in names:
        r = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True, text=True, timeout=TIMEOUT_S)
        if r.returncode:
            failed[name] = (r.stderr.strip().splitlines() or [f"exit code {r.returncode}"])[-1]
    return failed


if __name__ == "__main__":
    sys.path[0] = str(Path(__file__).resolve().parents[2])  # the checkout's mechsteer, not this folder
    mods = sys.argv[1:]
    print(json.dumps(forked(mods) if hasattr(os, "fork") else fresh(mods)))
