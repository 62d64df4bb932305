"""User-facing errors.

Every problem a user can fix (bad YAML, unknown kind, out-of-range layer, wrong vector shape, missing file,
unreachable hub) is raised as a `MechsteerError` that names where it happened (file, field), what is wrong
and how to fix it. The CLI prints these as one line each and exits non-zero without a traceback; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Problem:
    """One located problem: `file:line:col: field.path: message (hint: ...)`."""

    message: str
    file: str | None = None
    field: str | None = None
    line: int | None = None
    col: int | None = None
    hint: str | None = None

    def format(self) -> str:
        """The one line a user sees: `file:line:col: field: message (hint: ...)`."""
        where = ""
        if self.file:
            where = self.file
            if self.line is not None:
                where += f":{self.line}"
                if self.col is not None:
                    where += f":{self.col}"
            where += ": "
        fld = f"{self.field}: " if self.field else ""
        hint = f" (hint: {self.hint})" if self.hint else ""
        return f"{where}{fld}{self.message}{hint}"


class MechsteerError(Exception):
    """An error the user can fix; carries one or more located problems."""

    def __init__(self, problems: Problem | list[Problem] | str, *, hint: str | None = None):
        if isinstance(problems, str):
            problems = [Problem(problems, hint=hint)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems: list[Problem] = list(problems)
        super().__init__("\n".join(p.format() for p in self.problems))


class SpecError(MechsteerError):
    """The study file is malformed, fails the schema, or references something that does not exist."""


class CompileError(MechsteerError):
    """The spec is valid on its own but does not fit the model (layers, shapes, heads, sites)."""


class ModelLoadError(MechsteerError):
    """A model could not be loaded (missing path, hub unreachable, unsupported architecture)."""


class VectorError(MechsteerError):
    """A steering-vector file is missing, malformed or has the wrong shape/dtype."""


class OutputError(MechsteerError):
    """An output could not be written (disk full, quota); what was complete before is kept."""


class NotReplayable(MechsteerError):
    """A condition that teacher-forced replay (`mechsteer.replay`) cannot reproduce; the caller falls back to a
    full forward. Raised by an intervention kind's `first_block` (defined here, below the spec layer, so that
    a torch-free spec class can say why it does not replay)."""


@dataclass
class ProblemList:
    """Collects problems and raises them together (validation reports all errors, not the first)."""

    problems: list[Problem] = field(default_factory=list)

    def add(self, *args, **kwargs) -> None:
        """Collect a problem (the arguments of `Problem`)."""
        self.problems.append(Problem(*args, **kwargs))

    def raise_if_any(self, cls: type[MechsteerError] = SpecError) -> None:
        """Raise every collected problem at once as a `cls`, if there is any."""
        if self.problems:
            raise cls(self.problems)
