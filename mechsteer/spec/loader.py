"""Load a study file: YAML with positions -> profile merge -> schema validation -> cross-reference checks.

Every problem is reported as `file:line:col: field.path: message (hint: ...)`, all problems at once.
PyYAML's composer gives node marks, which is why this walks the node tree instead of using safe_load alone.
Nothing here imports torch.
"""

from __future__ import annotations

import copy
import difflib
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from mechsteer.errors import Problem, ProblemList, SpecError
from mechsteer.spec.bounds import DEFAULT_MAX_CELLS
from mechsteer.spec.document import (
    LoadedSpecFile,
    LoadedStudy,
    canonical_json,
    doc_path,
    format_path,
    locate,
)
from mechsteer.spec.study import NAME_MAX_LENGTH, NAME_PATTERN, StudySpec

__all__ = [
    "LoadedSpecFile",
    "LoadedStudy",
    "apply_profile",
    "canonical_json",
    "deep_merge",
    "doc_path",
    "format_path",
    "load_study",
    "load_study_dict",
    "read_spec_file",
    "validate_document",
]


# ---------------------------------------------------------------- YAML with positions


MAX_YAML_NODES = 100_000
"""Most values a spec file may hold once aliases are expanded (the bundled studies hold a few hundred): an
alias bomb (`b: [*a, *a, ...]` nested) is refused at this count instead of expanding to gigabytes."""
MAX_YAML_DEPTH = 64
"""Deepest nesting of mappings and lists."""
MAX_SPEC_BYTES = 4 << 20
"""Largest spec file read (4 MiB; a study is a few kB)."""


class _Refused(Exception):
    """A located reason to stop reading a document (duplicate key, alias bomb, recursion, bad tag)."""

    def __init__(self, message: str, node: yaml.Node | None = None, hint: str | None = None, mark=None):
        self.message, self.hint = message, hint
        self.mark = mark if mark is not None else (node.start_mark if node is not None else None)


class _Walker:
    """Turns a composed YAML node graph into plain data and positions, counting every value it produces (an
    alias is counted each time it is used) and refusing recursive aliases, so the result is bounded."""

    def __init__(self, positions: dict):
        self.positions = positions
        self.constructor = yaml.constructor.SafeConstructor()  # per document: it caches what it built
        self.count = 0
        self.active: set[int] = set()

    def scalar(self, node: yaml.Node) -> Any:
        """Construct a scalar exactly as yaml.safe_load would (ints, floats, bools, nulls, strings)."""
        try:
            return self.constructor.construct_object(node, deep=True)
        except yaml.YAMLError as e:
            raise _Refused(f"cannot read this value: {getattr(e, 'problem', None) or e}", node) from None

    def walk(self, node: yaml.Node, path: tuple) -> Any:
        self.count += 1
        if self.count > MAX_YAML_NODES:
            raise _Refused(
                f"the document expands to more than {MAX_YAML_NODES:,} values (aliases counted each time used)",
                node,
                hint="a study needs far fewer; repeated `*alias` references multiply",
            )
        if len(path) > MAX_YAML_DEPTH:
            raise _Refused(f"values are nested more than {MAX_YAML_DEPTH} levels deep", node)
        self.positions[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node)
        if id(node) in self.active:
            raise _Refused("an alias refers to a value that contains it (a recursive alias)", node)
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                out = {}
                for k, v in node.value:
                    if not isinstance(k, yaml.ScalarNode):
                        raise _Refused("a key must be a plain value (text or a number), not a list or mapping", k)
                    key = self.scalar(k)
                    if key in out:
                        raise _Refused(
                            f"duplicate key {key!r}",
                            k,
                            hint="each key may appear once; the second would silently replace the first",
                        )
                    out[key] = self.walk(v, path + (key,))
                    # Report problems about a key at the key itself, not at its value.
                    self.positions[path + (key,)] = (k.start_mark.line + 1, k.start_mark.column + 1)
                return out
            return [self.walk(v, path + (i,)) for i, v in enumerate(node.value)]
        finally:
            self.active.discard(id(node))


def parse_yaml(text: str, file: str) -> tuple[Any, dict]:
    """Parse YAML into plain data and a map path -> (line, col). Raises SpecError on syntax errors, and on
    documents that would expand beyond MAX_YAML_NODES values or MAX_YAML_DEPTH levels."""
    positions: dict = {}
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        raise SpecError(
            Problem(
                f"YAML syntax error: {e.problem or e.context}",
                file=file,
                line=mark.line + 1 if mark else None,
                col=mark.column + 1 if mark else None,
                hint="check indentation, colons and quoting around this line",
            )
        ) from None
    except yaml.YAMLError as e:
        raise SpecError(Problem(f"YAML error: {e}", file=file)) from None
    except RecursionError:
        raise SpecError(Problem(f"values are nested more than {MAX_YAML_DEPTH} levels deep", file=file)) from None
    if node is None:
        return None, positions
    try:
        return _Walker(positions).walk(node, ()), positions
    except _Refused as r:
        raise SpecError(
            Problem(
                r.message,
                file=file,
                line=r.mark.line + 1 if r.mark else None,
                col=r.mark.column + 1 if r.mark else None,
                hint=r.hint,
            )
        ) from None


# ---------------------------------------------------------------- profiles


def deep_merge(base: Any, patch: Any) -> Any:
    """Merge `patch` into `base` key by key. A dict whose `kind` differs replaces the base dict; lists and
    scalars replace."""
    if isinstance(base, dict) and isinstance(patch, dict):
        if "kind" in patch and base.get("kind") != patch["kind"]:
            return copy.deepcopy(patch)
        out = dict(base)
        for k, v in patch.items():
            out[k] = deep_merge(base[k], v) if k in base else copy.deepcopy(v)
        return out
    return copy.deepcopy(patch)


_NAME_HINT = (
    f"use at most {NAME_MAX_LENGTH} letters, digits, `_`, `.` and `-`, starting with a letter or digit (it becomes "
    "part of the output folder's name)"
)


def profile_name_problems(raw: dict, file: str, positions: dict) -> list[Problem]:
    """Profile names join the output path (`outputs/<name>-<profile>`), so they follow the study-name rule:
    `../../x` or `a/b` would write outside the output folder."""
    profiles = raw.get("profiles")
    if not isinstance(profiles, dict):
        return []
    out = []
    for name in profiles:
        if not (isinstance(name, str) and re.fullmatch(NAME_PATTERN, name) and len(name) <= NAME_MAX_LENGTH):
            line, col = positions.get(("profiles", name), (None, None))
            out.append(
                Problem(
                    f"invalid profile name {name!r}",
                    file=file,
                    field=f"profiles.{name}",
                    line=line,
                    col=col,
                    hint=_NAME_HINT,
                )
            )
    return out


def apply_profile(
    raw: dict, profile: str, file: str, positions: dict, *, what: str = "study", replace: tuple[str, ...] = ()
) -> dict:
    """Merge the named profile onto the raw document; keys in `replace` are replaced instead of merged."""
    if not re.fullmatch(NAME_PATTERN, profile) or len(profile) > NAME_MAX_LENGTH:
        raise SpecError(Problem(f"invalid profile name {profile!r} (--profile)", file=file, hint=_NAME_HINT))
    profiles = raw.get("profiles") or {}
    if not isinstance(profiles, dict) or profile not in profiles:
        known = ", ".join(sorted(profiles)) if isinstance(profiles, dict) and profiles else "none"
        raise SpecError(
            Problem(
                f"profile {profile!r} is not defined in this {what}",
                file=file,
                field="profiles",
                line=positions.get(("profiles",), (None, None))[0],
                hint=f"defined profiles: {known}",
            )
        )
    patch = {k: v for k, v in (profiles[profile] or {}).items() if k != "description"}
    merged = deep_merge(raw, {k: v for k, v in patch.items() if k not in replace})
    merged.update({k: patch[k] for k in replace if k in patch})
    return merged


# ---------------------------------------------------------------- validation


_HINTS = {
    "extra_forbidden": "remove this key or fix its spelling; `mechsteer schema` writes the list of allowed fields",
    "missing": "add this required field",
    "union_tag_invalid": "use one of the kinds listed",
    "union_tag_not_found": "every entry here needs a `kind:`",
}


def _validation_problems(err: ValidationError, raw: Any, file: str, positions: dict, profile: str | None):
    grouped: dict[tuple, list[dict]] = {}
    for e in err.errors(include_url=False):
        grouped.setdefault(doc_path(tuple(e["loc"]), raw), []).append(e)
    problems = []
    for path, errs in grouped.items():
        msgs = []
        for e in errs:
            m = e["msg"].removeprefix("Value error, ")
            if m not in msgs:
                msgs.append(m)
        msg = msgs[0] if len(msgs) == 1 else f"invalid value {errs[0].get('input')!r}: " + "; or ".join(msgs[:4])
        bad = errs[0].get("input")
        if isinstance(bad, (str, int, float)) and not isinstance(bad, bool) and repr(bad) not in msg:
            msg += f" (got {bad!r})"
        hint = _HINTS.get(errs[0]["type"])
        expected = (errs[0].get("ctx") or {}).get("expected")
        if isinstance(bad, str) and isinstance(expected, str):
            options = [o.strip().strip("'") for o in expected.replace(" or ", ",").split(",") if o.strip()]
            close = difflib.get_close_matches(bad, options, n=1)
            if close:
                hint = f"did you mean {close[0]!r}?"
        line, col = locate(positions, path, profile)
        fld = format_path(path) + (f" (profile {profile})" if profile else "")
        problems.append(Problem(msg, file=file, field=fld, line=line, col=col, hint=hint))
    return problems


_PARSED: dict[tuple, tuple[Any, dict]] = {}
"""Parsed spec files by (path, size, mtime, ctime): a study that names one training file in thirty vector sets
reads and parses it once (callers get copies: they merge profiles into what they get)."""


def read_spec_file(path: str | Path, what: str, keys: str, example: str) -> tuple[dict, dict]:
    """Read a YAML spec file into (data, positions), with clear errors for a missing, unreadable, malformed
    or non-mapping file. `what` names the kind of file, `keys` its main keys, `example` a file to look at."""
    file, fname = Path(path), str(path)
    if not file.is_file():
        raise SpecError(Problem(f"{what} not found", file=fname, hint=f"check the path; see {example}"))
    try:
        st = file.stat()
        if st.st_size > MAX_SPEC_BYTES:
            raise SpecError(
                Problem(f"the {what} is larger than {MAX_SPEC_BYTES >> 20} MiB", file=fname, hint=f"see {example}")
            )
        key = (str(file.resolve()), fname, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if key in _PARSED:
            raw, positions = _PARSED[key]
            return copy.deepcopy(raw), dict(positions)
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(Problem(f"cannot read {what}: {e}", file=fname)) from None
    raw, positions = parse_yaml(text, fname)
    if not isinstance(raw, dict):
        raise SpecError(Problem(f"a {what} must be a YAML mapping ({keys})", file=fname, line=1, hint=f"see {example}"))
    ProblemList(profile_name_problems(raw, fname, positions)).raise_if_any(SpecError)
    if len(_PARSED) > 256:
        _PARSED.clear()
    _PARSED[key] = (copy.deepcopy(raw), dict(positions))
    return raw, positions


def validate_document(model: type, merged: dict, fname: str, positions: dict, profile: str | None):
    """`model.model_validate(merged)`, with every schema problem located in the file."""
    try:
        return model.model_validate(merged)
    except ValidationError as e:
        raise SpecError(_validation_problems(e, merged, fname, positions, profile)) from None


def with_data_dir(doc: dict, data_dir: str | Path) -> dict:
    """Point the evaluation and every task-based readout (except the generated `mini`) at a local data folder
    (the CLI's --data-dir); the path is made absolute so it does not depend on the study file's folder."""
    d = str(Path(data_dir).expanduser().resolve())
    out = dict(doc)
    if isinstance(out.get("evaluation"), dict):
        out["evaluation"] = {**out["evaluation"], "data_dir": d}
    if isinstance(out.get("readouts"), dict):
        out["readouts"] = {
            k: ({**r, "data_dir": d} if isinstance(r, dict) and r.get("task") not in (None, "mini") else r)
            for k, r in out["readouts"].items()
        }
    return out


DATA_DIR_ENV = "MECHSTEER_DATA_DIR"
DATA_DIR_PLACEHOLDERS = ("$MECHSTEER_DATA_DIR", "${MECHSTEER_DATA_DIR}")
"""A study (or profile) whose benchmark data is local writes `data_dir: $MECHSTEER_DATA_DIR`: the folder
then comes from `--data-dir` or the MECHSTEER_DATA_DIR environment variable, never from a path in the file."""


def _placeholder_fields(doc: dict) -> list[str]:
    """Dotted names of every `data_dir` field that holds the placeholder."""
    out = []
    ev = doc.get("evaluation")
    if isinstance(ev, dict) and ev.get("data_dir") in DATA_DIR_PLACEHOLDERS:
        out.append("evaluation.data_dir")
    for k, r in (doc.get("readouts") or {}).items() if isinstance(doc.get("readouts"), dict) else ():
        if isinstance(r, dict) and r.get("data_dir") in DATA_DIR_PLACEHOLDERS:
            out.append(f"readouts.{k}.data_dir")
    return out


def _fill_placeholders(doc: dict, folder: str) -> dict:
    out = dict(doc)
    if isinstance(out.get("evaluation"), dict) and out["evaluation"].get("data_dir") in DATA_DIR_PLACEHOLDERS:
        out["evaluation"] = {**out["evaluation"], "data_dir": folder}
    if isinstance(out.get("readouts"), dict):
        out["readouts"] = {
            k: ({**r, "data_dir": folder} if isinstance(r, dict) and r.get("data_dir") in DATA_DIR_PLACEHOLDERS else r)
            for k, r in out["readouts"].items()
        }
    return out


def resolve_data_dir_placeholders(doc: dict, fname: str, profile: str | None, *, required: bool = True) -> dict:
    """Fill `data_dir: $MECHSTEER_DATA_DIR` from the environment variable, or (when `required`) fail naming the
    field and the two ways to give the folder. (`--data-dir` is applied before this and replaces every
    data_dir.) Not required = validation only: the placeholder is kept as written."""
    fields = _placeholder_fields(doc)
    if not fields:
        return doc
    env = os.environ.get(DATA_DIR_ENV)
    where = f"{fname}" + (f" (profile {profile!r})" if profile else "")
    if not env and not required:
        return doc
    if not env:
        raise SpecError(
            Problem(
                f"{where}: {', '.join(fields)} asks for a local data folder, and none was given",
                hint=f"pass --data-dir FOLDER or set {DATA_DIR_ENV}=FOLDER (a folder with <task>/test.jsonl files)",
            )
        )
    folder = Path(env).expanduser()
    if not folder.is_dir():
        raise SpecError(
            Problem(
                f"{DATA_DIR_ENV}={env} is not a folder (needed by {where}: {', '.join(fields)})",
                hint="point it at the folder holding <task>/test.jsonl files",
            )
        )
    return _fill_placeholders(doc, str(folder.resolve()))


_NOT_GIVEN: Any = object()


def load_study(
    path: str | Path,
    profile: str | None = None,
    *,
    check_refs: bool = True,
    data_dir: str | Path | None = _NOT_GIVEN,
    max_cells: int = DEFAULT_MAX_CELLS,
) -> LoadedStudy:
    """Read, merge the profile, validate and cross-check a study file. Raises SpecError listing every problem.
    `data_dir` overrides where benchmark data is read from (see `with_data_dir`); `data_dir:
    $MECHSTEER_DATA_DIR` in the file is filled from that environment variable when `data_dir` is None. The
    commands that run or plan cells pass `data_dir` (their --data-dir, possibly None): a placeholder left
    unfilled is then an error. Called without it (validation), an unfilled placeholder is kept as written.
    A study that compiles to more than `max_cells` cells is refused (`spec.bounds`)."""
    required = data_dir is not _NOT_GIVEN
    data_dir = None if data_dir is _NOT_GIVEN else data_dir
    raw, positions = read_spec_file(
        path, "study file", "name:, models:, conditions:, ...", "studies/quickstart.yaml for a minimal study"
    )
    return _load_document(
        raw,
        positions,
        Path(path),
        profile,
        check_refs=check_refs,
        data_dir=data_dir,
        required=required,
        max_cells=max_cells,
    )


def load_study_dict(
    doc: dict,
    profile: str | None = None,
    *,
    base_dir: str | Path | None = None,
    data_dir: str | Path | None = None,
    check_refs: bool = True,
    max_cells: int = DEFAULT_MAX_CELLS,
) -> LoadedStudy:
    """A study built in memory (the same document a YAML file holds); relative paths in it are resolved
    against `base_dir` (default: the working directory). Problems name the study `<in-memory study>`."""
    if not isinstance(doc, dict):
        raise SpecError(Problem(f"a study must be a mapping (name, models, conditions, ...), got {type(doc).__name__}"))
    file = Path(base_dir or ".").resolve() / IN_MEMORY
    return _load_document(
        copy.deepcopy(doc), {}, file, profile, check_refs=check_refs, data_dir=data_dir, max_cells=max_cells
    )


IN_MEMORY = "<in-memory study>"


def _load_document(
    raw: dict,
    positions: dict,
    file: Path,
    profile: str | None,
    *,
    check_refs: bool,
    data_dir: str | Path | None,
    required: bool = True,
    max_cells: int = DEFAULT_MAX_CELLS,
) -> LoadedStudy:
    fname = str(file) if file.name != IN_MEMORY else IN_MEMORY
    merged = apply_profile(raw, profile, fname, positions) if profile else raw
    if data_dir is not None:
        if not Path(data_dir).expanduser().is_dir():
            raise SpecError(
                Problem(
                    f"--data-dir {data_dir} is not a folder", hint="give the folder holding <task>/test.jsonl files"
                )
            )
        merged = with_data_dir(merged, data_dir)
    merged = resolve_data_dir_placeholders(merged, fname, profile, required=required)
    spec = validate_document(StudySpec, merged, fname, positions, profile)
    loaded = LoadedStudy(spec=spec, file=file, profile=profile, positions=positions)
    if check_refs:
        from mechsteer.spec.checks import check_study

        problems = ProblemList(check_study(loaded, max_cells=max_cells))
        problems.raise_if_any(SpecError)
    return loaded
