"""Cross-reference checks that the schema alone cannot express: names that must exist, layer references
that must fit the named models (when their shape is known without loading them), files that must exist.

What a particular kind needs checked is asked of the kind (`study_problems`, `file_problems`,
`shape_problems`, `shape_file`, `depends_on`, `layer_refs` of its spec class): nothing here names a kind."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

from mechsteer import machine
from mechsteer.errors import Problem
from mechsteer.spec.bounds import DEFAULT_MAX_CELLS, cell_problems, length_problems
from mechsteer.spec.document import LoadedStudy, doc_path
from mechsteer.spec.kinds import INTERVENTION_KINDS
from mechsteer.spec.layers import selection_problems
from mechsteer.spec.models import known_shape
from mechsteer.spec.sweeps import SweepSpec, check_name, placeholders, sample_env, substitute, template_problem
from mechsteer.spec.vector_origin import single_source_problems


def check_study(ls: LoadedStudy, max_cells: int = DEFAULT_MAX_CELLS) -> list[Problem]:
    """Every cross-reference problem of a validated study, located in its file (empty when there is none)."""
    spec = ls.spec
    out: list[Problem] = []
    vec_names = set(spec.vectors)
    shapes = {m: known_shape(ms.id, ls.base_dir) for m, ms in spec.models.items()}
    too_big = cell_problems(ls, shapes, max_cells)  # sized first: nothing below expands an oversized sweep
    out.extend(too_big)
    out.extend(length_problems(ls))

    if spec.evaluation is None and not spec.readouts:
        out.append(ls.problem((), "the study measures nothing", hint="add an `evaluation:` block or `readouts:`"))

    # vector sources
    for name, v in spec.vectors.items():
        for ref_field, ref in v.depends_on().items():
            if ref not in vec_names:
                out.append(
                    ls.problem(
                        ("vectors", name, ref_field),
                        f"unknown vector set {ref!r}",
                        hint=f"defined vector sets: {', '.join(sorted(vec_names)) or 'none'}",
                    )
                )
            if ref == name:
                out.append(ls.problem(("vectors", name, ref_field), "a vector set cannot refer to itself"))
        for sub, msg, hint in v.study_problems(ls.resolve_path):
            out.append(ls.problem(("vectors", name, *sub), msg, hint=hint))
    out.extend(_model_set_problems(ls))
    out.extend(_cycles(ls))

    out.extend(backend_problems(ls))

    # conditions: references and shapes (a sweep is checked on a sample expansion, then per known model)
    from mechsteer.spec.study import interventions_of

    for cname, cond in spec.conditions.items():
        if isinstance(cond, SweepSpec):
            out.extend(_check_sweep(ls, cname, cond, shapes, vec_names, expand=not too_big))
            continue
        base = ("conditions", cname) + (() if isinstance(cond, list) else ("interventions",))
        for i, iv in enumerate(interventions_of(cond)):
            out.extend(_check_intervention(ls, base + (i,), iv, shapes, vec_names))

    out.extend(_file_shape_problems(ls, shapes))

    readers = _models_reading(ls.spec)
    for name, v in spec.vectors.items():
        # a set is checked against the models that read it (another model's own set in a `per_model` set is
        # never built for this one), or against every model when none reads it
        mine = {m: sh for m, sh in shapes.items() if m in readers.get(name, shapes)}
        for fname, sel in v.layer_refs():
            for mname, _, msg in selection_problems(sel, mine):
                out.append(ls.problem(("vectors", name, fname), f"{msg} (model {mname!r})"))

    names = [re.sub(r"\{\w+\}", "*", c) if isinstance(cond, SweepSpec) else c for c, cond in spec.conditions.items()]
    for rname, r in spec.readouts.items():
        for i, w in enumerate(r.condition_patterns() or []):
            if not any(fnmatch.fnmatchcase(n, w) or fnmatch.fnmatchcase(w, n) for n in names):
                out.append(
                    ls.problem(
                        ("readouts", rname, "conditions", i),
                        f"no condition matches {w!r}",
                        hint=f"conditions: {', '.join(spec.conditions)}",
                    )
                )
        # the readout's own cross-references (its task, layers, reference conditions, kinds it needs)
        for sub, msg, hint in r.study_problems(spec.conditions, shapes):
            out.append(ls.problem(("readouts", rname) + tuple(sub), msg, hint=hint))
    for field in ("reference", "control"):
        ref = getattr(spec.evaluation, field) if spec.evaluation is not None else None
        if ref is not None and not any(fnmatch.fnmatchcase(ref, n) for n in names):
            out.append(
                ls.problem(
                    ("evaluation", field),
                    f"no condition named {ref!r}",
                    hint=f"the {field} is one of the conditions: {', '.join(spec.conditions)}",
                )
            )
    out.extend(single_source_problems(ls))  # u_l and persistence read one run per block, not joint rows
    out.extend(_control_problems(ls, names, shapes, expand=not too_big))
    return out


def _control_problems(ls: LoadedStudy, names: list[str], shapes: dict, *, expand: bool) -> list[Problem]:
    """Each condition's `control:` names another condition: a plain name must exist (as written or as an
    expansion of a sweep), a sweep's control template may use only the sweep's variables, and for every model
    whose shape is known each expansion's control must be one of that model's conditions."""
    from mechsteer.spec.study import condition_controls, expanded_conditions

    spec, out = ls.spec, []
    hint = f"the control is one of the conditions: {', '.join(spec.conditions)}"
    for cname, cond in spec.conditions.items():
        control = getattr(cond, "control", None)
        if control is None:
            continue
        where = ("conditions", cname, "control")
        if control == cname:
            out.append(ls.problem(where, "a condition cannot be its own control", hint=hint))
            continue
        if isinstance(cond, SweepSpec):
            extra = sorted(placeholders(control) - set(cond.sweep))
            if extra or template_problem(control):
                what = (
                    f"uses {', '.join(extra)}, which the sweep does not define" if extra else "is not a plain template"
                )
                out.append(ls.problem(where, f"the control {control!r} {what}", hint="e.g. control: random_{layer}"))
                continue
        pattern = re.sub(r"\{\w+\}", "*", control)
        if not any(fnmatch.fnmatchcase(pattern, n) or fnmatch.fnmatchcase(n, pattern) for n in names):
            out.append(ls.problem(where, f"no condition named {control!r}", hint=hint))
    default = spec.evaluation.control if spec.evaluation is not None else None
    if out or not expand or (default is not None and not any(fnmatch.fnmatchcase(default, n) for n in names)):
        return out  # a missing name is reported once, by name (above, or as `evaluation.control`)
    seen: set[tuple] = set()
    for mname, shape in shapes.items():
        try:
            existing = set(expanded_conditions(spec, shape))
        except ValueError:
            continue  # a named range of a model whose shape is not known yet, or a sweep problem reported above
        for cname, cond in spec.conditions.items():
            field = ("conditions", cname, "control") if getattr(cond, "control", None) else ("evaluation", "control")
            single = spec.model_copy(update={"conditions": {cname: cond}})
            missing = [(c, ctl) for c, ctl in condition_controls(single, shape).items() if ctl not in existing]
            if missing and field not in seen:
                seen.add(field)
                c, ctl = missing[0]
                out.append(
                    ls.problem(
                        field,
                        f"condition {c!r} is compared against {ctl!r}, which is not a condition of model {mname!r}",
                        hint=hint,
                    )
                )
    return out


def file_vector_shape(path: Path) -> tuple[int, int] | None:
    """[n_layers, d_model] of a mechsteer vector file from its header alone (None if unreadable: the run
    reports why)."""
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as f:
            shape = f.get_slice("vectors").get_shape()
    except Exception:  # noqa: BLE001 - any unreadable file is reported with its cause when the set is built
        return None
    return (int(shape[0]), int(shape[1])) if len(shape) == 2 else None


def _foreign_shape(kind) -> bool:
    """Whether an intervention kind reads vector sets of another model's shape (`checks_vector_shape` False:
    the intervention checks them itself)."""
    return kind in INTERVENTION_KINDS and not INTERVENTION_KINDS.spec(kind).checks_vector_shape


def _vector_refs(spec, vectors=None) -> tuple[set[str], set[str]]:
    """(vector sets the conditions read, those read by a kind that takes another model's vectors: their shape
    is the donor's, checked by that kind). Sweep templates match by pattern (`p_{place}` reads every `p_*`).
    `vectors`: the sets as one model reads them (`vectors_for_model`; default: the study's own)."""
    vectors = spec.vectors if vectors is None else vectors

    def walk(node, kind, found, donors):
        if isinstance(node, dict):
            kind = node.get("kind", kind)
            vec = node.get("vector")
            if isinstance(vec, str):
                (donors if _foreign_shape(kind) else found).add(vec)
            for value in node.values():
                walk(value, kind, found, donors)
        elif isinstance(node, list):
            for item in node:
                walk(item, kind, found, donors)

    from mechsteer.spec.study import interventions_of

    found: set[str] = set()
    donors: set[str] = set()
    for cond in spec.conditions.values():
        ivs = cond.interventions if isinstance(cond, SweepSpec) else [iv.model_dump() for iv in interventions_of(cond)]
        walk(ivs, None, found, donors)

    def expand(patterns):
        return {n for n in vectors for p in patterns if fnmatch.fnmatchcase(n, re.sub(r"\{\w+\}", "*", p))}

    used, donors = expand(found), expand(donors)
    frontier = set(used)
    while frontier:  # a random control `norm_like` a used set makes that set's shape matter too
        nxt = set()
        for name in frontier:
            for ref in vectors[name].depends_on().values():
                if ref in vectors and ref not in used:
                    nxt.add(ref)
        used |= nxt
        frontier = nxt
    return used, donors


def _models_reading(spec) -> dict[str, set[str]]:
    """Vector set -> the models whose conditions read it (directly, through a set built from it, or as the
    model's own set of a `per_model` set); sets no model reads are left out."""
    from mechsteer.spec.model_sets import model_set, vectors_for_model

    out: dict[str, set[str]] = {}
    for mname in spec.models:
        used, _ = _vector_refs(spec, vectors_for_model(spec.vectors, mname))
        for name in used:
            for n in {name, model_set(spec.vectors, name, mname)} - {None}:
                out.setdefault(n, set()).add(mname)
    return out


def _file_shape_problems(ls: LoadedStudy, shapes: dict) -> list[Problem]:
    """A vector set whose file tells its shape (`shape_file`: a bundled or file set) must have the shape of
    each known model that reads it (a transfer donor excepted; an unused set is never built; a `per_model`
    set's entry is read by its own model only)."""
    from mechsteer.spec.model_sets import model_set, vectors_for_model

    out, seen = [], set()
    for mname, sh in shapes.items():
        if sh is None:
            continue
        used, donors = _vector_refs(ls.spec, vectors_for_model(ls.spec.vectors, mname))
        for used_name in sorted(used - donors):
            name = model_set(ls.spec.vectors, used_name, mname)
            if name is None or (name, mname) in seen:
                continue
            seen.add((name, mname))
            located = ls.spec.vectors[name].shape_file(ls.resolve_path)
            if located is None or not located[1].is_file():
                continue
            field, path = located
            vs_shape = file_vector_shape(path)
            if vs_shape is None or vs_shape == (sh.n_layers, sh.d_model):
                continue
            out.append(
                ls.problem(
                    ("vectors", name, field),
                    f"vector set is [{vs_shape[0]} layers x d_model {vs_shape[1]}] but model {mname!r} "
                    f"({ls.spec.models[mname].id}) is [{sh.n_layers} layers x d_model {sh.d_model}]",
                    hint="use vectors made for this model (in a profile, override the vector set with the "
                    "model; in a study of several models, a `per_model` set names each model's own), or "
                    "`kind: transfer` to apply another model's vectors",
                )
            )
    return out


def _model_set_problems(ls: LoadedStudy) -> list[Problem]:
    """A `per_model` set names only models of the study, and a set for every one of them."""
    out = []
    models = ls.spec.models
    for name, v in ls.spec.vectors.items():
        sets = v.model_sets()
        if sets is None:
            continue
        for m in sets:
            if m not in models:
                out.append(
                    ls.problem(
                        ("vectors", name, "models", m),
                        f"no model named {m!r} in this study",
                        hint=f"models: {', '.join(models)}",
                    )
                )
        for m in [m for m in models if m not in sets]:
            out.append(
                ls.problem(
                    ("vectors", name, "models"),
                    f"per-model vector set {name!r} names no set for model {m!r} ({models[m].id})",
                    hint=f"add `{m}: <vector set>` (the set this one is on that model)",
                )
            )
    return out


def _check_intervention(
    ls: LoadedStudy, base: tuple, iv, shapes: dict, vec_names: set, expanded: str = ""
) -> list[Problem]:
    spec, out = ls.spec, []
    for sub, msg, hint in iv.file_problems(ls.resolve_path):
        out.append(ls.problem(base + sub, msg, hint=hint))
    for ref in iv.vector_refs():
        if ref not in vec_names:
            out.append(
                ls.problem(
                    base + ("vector",),
                    f"unknown vector set {ref!r}",
                    hint=f"define it under `vectors:`; defined: {', '.join(sorted(vec_names)) or 'none'}",
                )
            )
    for mname, shape in shapes.items():
        if shape is None:
            continue
        for sub, msg in iv.shape_problems(shape):
            out.append(ls.problem(base + sub, f"{expanded}{msg} (model {mname!r}: {spec.models[mname].id})"))
    return out


def _check_sweep(
    ls: LoadedStudy, cname: str, sweep: SweepSpec, shapes: dict, vec_names: set, *, expand: bool = True
) -> list[Problem]:
    """A sweep's name template, a sample expansion validated as interventions (located in the file), and its
    full expansion against every model whose shape is known (`expand=False`: the name only, for a study
    already refused as too large)."""
    from pydantic import ValidationError

    from mechsteer.spec.study import expanded_conditions, intervention_list

    base = ("conditions", cname)
    msg = check_name(cname, sweep)
    if msg:
        return [ls.problem(base, msg)]
    if not expand:
        return []
    try:
        raw = substitute(sweep.interventions, sample_env(sweep))
    except ValueError as e:
        return [ls.problem(base, str(e))]
    try:
        sample = intervention_list(raw)
    except ValidationError as e:
        return [
            ls.problem(
                base + ("interventions",) + doc_path(tuple(err["loc"]), raw),
                err["msg"].removeprefix("Value error, ") + " (in the sweep's template)",
                hint='placeholders like "{layer}" are filled per model; check the fields around them',
            )
            for err in e.errors(include_url=False)[:5]
        ]
    out = []
    for i, iv in enumerate(sample):
        out.extend(p for p in _check_intervention(ls, base + ("interventions", i), iv, {}, vec_names))
    single = ls.spec.model_copy(update={"conditions": {cname: sweep}})
    for mname, shape in shapes.items():
        if shape is None:
            if any(isinstance(r, str) for r in sweep.sweep.values()):
                continue  # named ranges resolve when the model is loaded; checked at compile time
        try:
            expanded = expanded_conditions(single, shape)
        except ValueError as e:
            out.append(ls.problem(base, f"{e} (model {mname!r})"))
            continue
        if shape is None:
            continue
        for ename, ivs in list(expanded.items()):
            problems = [
                p
                for i, iv in enumerate(ivs)
                for p in _check_intervention(
                    ls, base + ("interventions", i), iv, {mname: shape}, vec_names, expanded=f"{ename}: "
                )
            ]
            if problems:
                out.extend(problems)
                break  # the first failing expansion says it; the others repeat it
    return out


def backend_problems(ls: LoadedStudy) -> list[Problem]:
    """`backend: vllm` (on a model entry, or the study's default) on a machine that cannot run vLLM: one line
    at the model entry, before anything is loaded."""
    default = getattr(ls.spec, "backend", None)
    wanting = [m for m, ms in ls.spec.models.items() if (ms.backend or default) == "vllm"]
    problem = machine.vllm_problem() if wanting else None
    if problem is None:
        return []
    return [
        ls.problem(
            ("models", m, "backend") if ls.spec.models[m].backend else ("backend",), problem, hint=machine.VLLM_HINT
        )
        for m in wanting
    ]


def _cycles(ls: LoadedStudy) -> list[Problem]:
    """Vector sets built from each other in a cycle (`depends_on`), reported at every set on one."""
    deps = {name: [r for r in v.depends_on().values() if r in ls.spec.vectors] for name, v in ls.spec.vectors.items()}

    def path_back(start: str) -> list[str] | None:
        """A dependency path from `start` back to itself (depth first), or None."""
        todo, seen = [[start]], set()
        while todo:
            path = todo.pop()
            for nxt in deps[path[-1]]:
                if nxt == start:
                    return path + [nxt]
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(path + [nxt])
        return None

    out = []
    for start in deps:
        cycle = path_back(start)
        if cycle:
            out.append(
                ls.problem(("vectors", start), f"vector sets refer to each other in a cycle: {' -> '.join(cycle)}")
            )
    return out
