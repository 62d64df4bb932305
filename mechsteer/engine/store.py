"""The on-disk cell store: outputs/<study>/cells/<hash>/{cell.json, metrics.json, samples.jsonl, ...}.

A cell directory is assembled in a temporary sibling directory and renamed into place in one step, so a
crash or Ctrl-C never leaves a half-written cell: a cell either exists completely or not at all, and the
next run resumes with every finished cell intact.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Iterable

from mechsteer.atomic import atomic_dir

REQUIRED = ("cell.json", "metrics.json")


class CellStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    def dir(self, h: str) -> Path:
        return self.root / h

    def is_done(self, h: str) -> bool:
        d = self.dir(h)
        return all((d / f).is_file() for f in REQUIRED)

    def write(self, h: str, record: dict, metrics: dict, samples: Iterable[dict],
              files: dict[str, bytes] | None = None) -> Path:
        target = self.dir(h)
        with atomic_dir(target, prefix=f".tmp-{h[:12]}-") as tmp:
            with open(tmp / "samples.jsonl", "w", encoding="utf-8") as f:
                for s in samples:
                    f.write(json.dumps(s, ensure_ascii=False, default=_json_default) + "\n")
            for name, data in (files or {}).items():
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                (tmp / name).write_bytes(data)
            (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, default=_json_default))
            # cell.json last: its presence (with metrics.json) marks a complete cell.
            (tmp / "cell.json").write_text(json.dumps(record, indent=2, ensure_ascii=False, default=_json_default))
        return target

    def read_metrics(self, h: str) -> dict:
        return json.loads((self.dir(h) / "metrics.json").read_text())

    def read_record(self, h: str) -> dict:
        return json.loads((self.dir(h) / "cell.json").read_text())

    def read_samples(self, h: str) -> list[dict]:
        p = self.dir(h) / "samples.jsonl"
        if not p.is_file():
            return []
        return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]

    def clean_temp(self) -> int:
        """Remove temporary directories left by a killed run (SIGKILL skips `finally`)."""
        n = 0
        if self.root.is_dir():
            for p in self.root.glob(".tmp-*"):
                shutil.rmtree(p, ignore_errors=True)
                n += 1
        return n


def _json_default(o: Any):
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, set):
        return sorted(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
