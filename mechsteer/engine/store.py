"""The on-disk cell store: outputs/<study>/cells/<hash>/{cell.json, metrics.json, samples.jsonl, ...}.

A cell directory is assembled in a temporary sibling directory (`.tmp-<hash>-*`) and renamed into place in
one step, so a crash or Ctrl-C never leaves a half-written cell: a cell either exists completely or not at
all, and the next run resumes with every finished cell intact. A re-run (--force) swaps the new folder in
without a moment in which the cell is missing (`mechsteer.atomic.replace_dir`).

A cell counts as done only when both `cell.json` (a record of this very hash) and `metrics.json` parse; a
folder damaged by hand is reported (`damage`) and computed again. Temporary folders and the fallback's trash
folders belong to whoever holds the cell's claim (`mechsteer.engine.claims`): only that process removes them.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mechsteer.atomic import TRASH_MARK, atomic_dir, recover_dir
from mechsteer.engine.claims import Claim

REQUIRED = ("cell.json", "metrics.json")
"""The files whose presence (and parsing) makes a cell complete."""
TMP = ".tmp-"
"""Prefix of the temporary folders a cell is assembled in."""
CELL_NAME = re.compile(r"^(?:[0-9a-f]{64}|[0-9a-f]{12})$")
"""A cell hash (or its first 12 characters, as temporary folders were once named): the only owner names
`clean_temp` accepts from the names of leftover folders."""


def _temp_owner(name: str) -> str | None:
    """The cell a temporary folder (`.tmp-<hash>-<random>`) belongs to, or None for other names."""
    if not name.startswith(TMP) or "-" not in name[len(TMP) :]:
        return None
    owner = name[len(TMP) :].rsplit("-", 1)[0]
    return owner if CELL_NAME.match(owner) else None


def _trash_owner(name: str) -> str | None:
    """The cell a trash folder of `replace_dir`'s fallback (`.<hash>.old-<pid>-<random>`) belongs to."""
    if not name.startswith(".") or TRASH_MARK not in name:
        return None
    owner = name[1:].split(TRASH_MARK, 1)[0]
    return owner if CELL_NAME.match(owner) else None


class CellStore:
    """The cells of one output folder (`<output>/cells`), each in a folder named by its hash."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def dir(self, h: str) -> Path:
        """The folder of cell `h`."""
        return self.root / h

    def is_done(self, h: str) -> bool:
        """The cell folder exists and its record and metrics are readable (see `damage`)."""
        return self.dir(h).is_dir() and self.damage(h) is None

    def damage(self, h: str) -> str | None:
        """What is wrong with an existing cell folder (a file missing, not JSON, a record of another cell),
        or None when it is complete or does not exist at all."""
        d = self.dir(h)
        if not d.is_dir():
            return None
        for name in REQUIRED:
            try:
                data = json.loads((d / name).read_text(encoding="utf-8"))
            except FileNotFoundError:
                return f"{name} is missing"
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                return f"{name} is not valid JSON: {e}"
            if not isinstance(data, dict):
                return f"{name} is not a JSON object"
            if name == "cell.json" and data.get("hash") != h:
                return f"cell.json records cell {str(data.get('hash'))[:12]}, not this one"
        return None

    def write(
        self, h: str, record: dict, metrics: dict, samples: Iterable[dict], files: dict[str, bytes] | None = None
    ) -> Path:
        """Record cell `h` atomically (record, metrics, samples and extra files appear together or not at all);
        the caller holds the cell's claim."""
        target = self.dir(h)
        with atomic_dir(target, prefix=f"{TMP}{h}-") as tmp:
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
        """Cell `h`'s metrics.json."""
        return json.loads((self.dir(h) / "metrics.json").read_text())

    def read_record(self, h: str) -> dict:
        """Cell `h`'s cell.json (provenance, key, code fingerprint, timings)."""
        return json.loads((self.dir(h) / "cell.json").read_text())

    def read_samples(self, h: str) -> list[dict]:
        """Cell `h`'s per-sample records (samples.jsonl; empty when it wrote none)."""
        p = self.dir(h) / "samples.jsonl"
        if not p.is_file():
            return []
        return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]

    def recover(self, h: str) -> int:
        """Clean up after a crashed writer of cell `h`: remove its temporary folders and restore the old cell
        from a trash folder the --force fallback left (`mechsteer.atomic.recover_dir`). Only the holder of
        the cell's claim may call this. Returns the number of temporary folders removed."""
        n = 0
        if self.root.is_dir():
            # `.tmp-<hash>-*`, and `.tmp-<first 12>-*` as written before the full hash was used; names are
            # compared exactly (never used as glob patterns)
            for p in self.root.iterdir():
                if _temp_owner(p.name) in (h, h[:12]) and p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                    n += 1
        recover_dir(self.dir(h))
        return n

    def clean_temp(self) -> int:
        """Remove what killed runs left (SIGKILL skips `finally`): the temporary and trash folders of every cell
        whose claim is free. A folder whose cell another running process holds is its work in progress and
        stays. Returns the number of temporary folders removed."""
        if not self.root.is_dir():
            return 0
        names = [p.name for p in self.root.iterdir()]
        owners = {o for o in map(_temp_owner, names) if o} | {o for o in map(_trash_owner, names) if o}
        n = 0
        for h in sorted(owners):
            with Claim(self.root, h) as claim:
                if claim.acquire(blocking=False):
                    n += self.recover(h)
        return n


def _json_default(o: Any):
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, set):
        return sorted(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
