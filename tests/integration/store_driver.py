"""`mechsteer run` in a subprocess, instrumented for the store fault tests (test_store_faults.py).

usage: python store_driver.py STUDY OUT LOG [--barrier DIR N] [--hold S] [--stall-at K MARKER]

Every cell this process writes is appended to LOG as "<pid> <hash>" just before it is written (O_APPEND, so
two processes can share LOG). --barrier: wait until N processes have arrived in DIR, so that they really run
at the same time. --hold: keep each cell's claim S seconds longer (the write waits), so that runs overlap.
--stall-at: while writing the K-th cell (1-based), after part of it is on disk, create MARKER and hang, for
the parent to SIGKILL this process in the middle of a cell.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("study")
    ap.add_argument("out")
    ap.add_argument("log")
    ap.add_argument("--barrier", nargs=2)
    ap.add_argument("--hold", type=float, default=0.0)
    ap.add_argument("--stall-at", nargs=2)
    a = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from mechsteer.cli.app import app
    from mechsteer.engine.store import CellStore

    real_write = CellStore.write
    written = {"n": 0}

    def write(self, h, record, metrics, samples, files=None):
        written["n"] += 1
        fd = os.open(a.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(fd, f"{os.getpid()} {h}\n".encode())
        os.close(fd)
        time.sleep(a.hold)
        if a.stall_at and written["n"] == int(a.stall_at[0]):
            samples = _stall_after(list(samples), Path(a.stall_at[1]))
        return real_write(self, h, record, metrics, samples, files)

    CellStore.write = write
    if a.barrier:
        folder, n = Path(a.barrier[0]), int(a.barrier[1])
        folder.mkdir(parents=True, exist_ok=True)
        (folder / str(os.getpid())).touch()
        deadline = time.monotonic() + 300
        while len(list(folder.iterdir())) < n and time.monotonic() < deadline:
            time.sleep(0.02)
    sys.argv = ["mechsteer", "run", a.study, "-o", a.out, "--quiet"]
    app()


def _stall_after(samples: list, marker: Path):
    """Yield the samples (written into the cell's temporary folder), then flush, signal and hang."""
    yield from samples
    sys.stdout.flush()
    marker.touch()
    time.sleep(600)


if __name__ == "__main__":
    main()
