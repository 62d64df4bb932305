"""A validated spec file as a value, and how problems in it are located: the file, its positions (line and
column of every key), path resolution relative to the file, and the mapping of a pydantic error location onto
the document. The loader makes these values and the cross-reference checks (`spec.checks`) read them, so
the checks need not import the loader that calls them (torch-free).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mechsteer.errors import Problem
from mechsteer.spec.paths import resolve_path
from mechsteer.spec.study import StudySpec


@dataclass
class LoadedSpecFile:
    """A validated spec file (study or training file) plus what is needed to report problems at their
    line and column and to resolve paths relative to the file."""

    spec: Any
    file: Path
    profile: str | None
    positions: dict[tuple, tuple[int, int]] = field(repr=False, default_factory=dict)

    @property
    def base_dir(self) -> Path:
        """The folder relative paths in the file are resolved against."""
        return self.file.parent

    def resolve_path(self, p: str) -> Path:
        """A path from the spec, relative to the study file."""
        return resolve_path(p, self.base_dir)

    def locate(self, path: tuple) -> tuple[int | None, int | None]:
        """(line, column) of a document path (or of its nearest located ancestor)."""
        return locate(self.positions, path, self.profile)

    def problem(self, path: tuple, message: str, hint: str | None = None) -> Problem:
        """A problem located at a document path of this file."""
        line, col = self.locate(path)
        return Problem(message, file=self.display_name, field=format_path(path), line=line, col=col, hint=hint)

    @property
    def display_name(self) -> str:
        """How problems name this file (`<in-memory study>` for a study built with `load_study_dict`)."""
        return self.file.name if self.file.name.startswith("<") else str(self.file)


@dataclass
class LoadedStudy(LoadedSpecFile):
    """A validated study file."""

    spec: StudySpec

    def spec_hash(self) -> str:
        """sha256 of the validated, profile-merged study (recorded in every cell)."""
        return hashlib.sha256(canonical_json(self.spec.model_dump(mode="json")).encode()).hexdigest()


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no spaces: the one serialisation every hash of a spec value uses."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def format_path(path: tuple) -> str:
    """A document path as problems show it: `conditions.steer[0].layer`."""
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def locate(positions: dict, path: tuple, profile: str | None) -> tuple[int | None, int | None]:
    """Position of `path`, or of its longest existing ancestor. With a profile, a value that came from the
    profile's overrides is located there (ties go to the profile, whose value won the merge)."""
    best: tuple[int, tuple[int | None, int | None]] = (-1, (None, None))
    prefixes = [(), ("profiles", profile)] if profile else [()]
    for prefix in reversed(prefixes):  # profile first, so it wins ties
        for n in range(len(path), -1, -1):
            key = prefix + tuple(path[:n])
            if key in positions and (n > 0 or not prefix):
                if n > best[0]:
                    best = (n, positions[key])
                break
    return best[1]


def doc_path(loc: tuple, raw: Any) -> tuple:
    """Map a pydantic error loc onto a path in the document, dropping union-member tags pydantic inserts."""
    out: list = []
    cur = raw
    for part in loc:
        if isinstance(cur, dict):
            if part in cur:
                out.append(part)
                cur = cur[part]
                continue
            if isinstance(part, str) and (
                cur.get("kind") == part
                or part[:1].isupper()
                or "[" in part
                or part.startswith(("function-", "literal", "int", "str", "list"))
            ):
                continue  # a union-member tag, not a key
            out.append(part)  # a missing/extra key: report at that key
            cur = None
        elif isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur):
            out.append(part)
            cur = cur[part]
        elif cur is None:
            out.append(part)
        else:
            if isinstance(part, str) and (part[:1].isupper() or "[" in part or part.startswith(("literal", "int"))):
                continue
            out.append(part)
    return tuple(out)
