"""Cross-reference checks that the schema alone cannot express: names that must exist, layer references
that must fit the named models (when their shape is known without loading them), files that must exist."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

from mechsteer import machine
from mechsteer.errors import Problem
from mechsteer.spec.evaluation import KNOWN_TASKS, PROMPT_TASKS
from mechsteer.spec.layers import selection_problems
from mechsteer.spec.loader import LoadedStudy, doc_path
from mechsteer.spec.models import known_shape
from mechsteer.spec.sweeps import SweepSpec, check_name, sample_env, substitute
from mechsteer.spec.vector_origin import single_source_problems

BUNDLED_VECTOR_DIR = Path(__file__).resolve().parent.parent / "data" / "vectors"


def bundled_vector_names() -> list[str]:
    """Names of vector sets shipped in the package (`<model>/<name>`)."""
    if not BUNDLED_VECTOR_DIR.is_dir():
        return []
    return sorted(
        str(p.relative_to(BUNDLED_VECTOR_DIR).with_suffix("")) for p in BUNDLED_VECTOR_DIR.rglob("*.safetensors")
    )


def check_study(ls: LoadedStudy) -> list[Problem]:
    spec = ls.spec
    out: list[Problem] = []
    vec_names = set(spec.vectors)

    if spec.evaluation is None and not spec.readouts:
        out.append(ls.problem((), "the study measures nothing", hint="add an `evaluation:` block or `readouts:`"))

    # vector sources
    for name, v in spec.vectors.items():
        for ref_field in ("norm_like", "of"):
            ref = getattr(v, ref_field, None)
            if ref is not None and ref not in vec_names:
                out.append(
                    ls.problem(
                        ("vectors", name, ref_field),
                        f"unknown vector set {ref!r}",
                        hint=f"defined vector sets: {', '.join(sorted(vec_names)) or 'none'}",
                    )
                )
            if ref == name:
                out.append(ls.problem(("vectors", name, ref_field), "a vector set cannot refer to itself"))
        if v.kind == "file":
            if not ls.resolve_path(v.path).is_file():
                out.append(
                    ls.problem(
                        ("vectors", name, "path"),
                        f"vector file not found: {ls.resolve_path(v.path)}",
                        hint="paths are relative to the study file; `mechsteer train` writes vector sets",
                    )
                )
        if v.kind == "trained":
            out.extend(_check_trained(ls, name, v))
        if v.kind == "bundled" and v.name not in bundled_vector_names():
            out.append(
                ls.problem(
                    ("vectors", name, "name"),
                    f"no bundled vector set {v.name!r}",
                    hint=f"bundled sets: {', '.join(bundled_vector_names()) or 'none'}",
                )
            )
    out.extend(_cycles(ls))

    out.extend(backend_problems(ls))

    # conditions: references and shapes (a sweep is checked on a sample expansion, then per known model)
    shapes = {m: known_shape(ms.id, ls.base_dir) for m, ms in spec.models.items()}
    for cname, cond in spec.conditions.items():
        if isinstance(cond, SweepSpec):
            out.extend(_check_sweep(ls, cname, cond, shapes, vec_names))
            continue
        for i, iv in enumerate(cond):
            out.extend(_check_intervention(ls, ("conditions", cname, i), iv, shapes, vec_names))

    out.extend(_file_shape_problems(ls, shapes))

    for name, v in spec.vectors.items():
        sel = getattr(v, "layers", None)
        if sel is None:
            continue
        for mname, _, msg in selection_problems(sel, shapes):
            out.append(ls.problem(("vectors", name, "layers"), f"{msg} (model {mname!r})"))

    names = [re.sub(r"\{\w+\}", "*", c) if isinstance(cond, SweepSpec) else c for c, cond in spec.conditions.items()]
    for rname, r in spec.readouts.items():
        for i, w in enumerate(getattr(r, "conditions", None) or []):
            if not any(fnmatch.fnmatchcase(n, w) or fnmatch.fnmatchcase(w, n) for n in names):
                out.append(
                    ls.problem(
                        ("readouts", rname, "conditions", i),
                        f"no condition matches {w!r}",
                        hint=f"conditions: {', '.join(spec.conditions)}",
                    )
                )
        hook = getattr(r, "study_problems", None)
        if hook is not None:  # readout-specific cross-references (layers, reference conditions, kinds needed)
            for sub, msg, hint in hook(spec.conditions, shapes):
                out.append(ls.problem(("readouts", rname) + tuple(sub), msg, hint=hint))
        task = getattr(r, "task", None)
        if task is not None and task not in KNOWN_TASKS + PROMPT_TASKS:
            out.append(
                ls.problem(
                    ("readouts", rname, "task"),
                    f"unknown task {task!r}",
                    hint=f"known tasks: {', '.join(KNOWN_TASKS + PROMPT_TASKS)}",
                )
            )
        elif task in PROMPT_TASKS and getattr(r, "split", "test") != "train":
            out.append(
                ls.problem(
                    ("readouts", rname, "split"),
                    f"{task} is a training set: its prompts are the train split",
                    hint="set split: train",
                )
            )
        elif task is not None and task not in ("mini", *PROMPT_TASKS) and getattr(r, "split", "test") != "test":
            out.append(
                ls.problem(
                    ("readouts", rname, "split"),
                    "benchmarks only have a test split",
                    hint="use split: test (only the bundled `mini` task has a train split)",
                )
            )
    out.extend(single_source_problems(ls))  # u_l and persistence read one run per block, not joint rows
    ref = spec.evaluation.reference if spec.evaluation is not None else None
    if ref is not None and not any(fnmatch.fnmatchcase(ref, n) for n in names):
        out.append(
            ls.problem(
                ("evaluation", "reference"),
                f"no condition named {ref!r}",
                hint=f"the reference is one of the conditions: {', '.join(spec.conditions)}",
            )
        )
    return out


def _vector_file(ls: LoadedStudy, v) -> Path | None:
    """The file a bundled or file vector set reads (None for other kinds)."""
    if v.kind == "bundled":
        return BUNDLED_VECTOR_DIR / f"{v.name}.safetensors"
    if v.kind == "file":
        return ls.resolve_path(v.path)
    return None


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


def _vector_refs(spec) -> tuple[set[str], set[str]]:
    """(vector sets the conditions read, those some `transfer` reads: their shape is the donor's, checked by
    transfer). Sweep templates match by pattern (`p_{place}` reads every `p_*`)."""

    def walk(node, kind, found, donors):
        if isinstance(node, dict):
            kind = node.get("kind", kind)
            vec = node.get("vector")
            if isinstance(vec, str):
                (donors if kind == "transfer" else found).add(vec)
            for value in node.values():
                walk(value, kind, found, donors)
        elif isinstance(node, list):
            for item in node:
                walk(item, kind, found, donors)

    found: set[str] = set()
    donors: set[str] = set()
    for cond in spec.conditions.values():
        ivs = cond.interventions if isinstance(cond, SweepSpec) else [iv.model_dump() for iv in cond]
        walk(ivs, None, found, donors)

    def expand(patterns):
        return {n for n in spec.vectors for p in patterns if fnmatch.fnmatchcase(n, re.sub(r"\{\w+\}", "*", p))}

    used, donors = expand(found), expand(donors)
    frontier = set(used)
    while frontier:  # a random control `norm_like` a used set makes that set's shape matter too
        nxt = set()
        for name in frontier:
            v = spec.vectors[name]
            for ref in (getattr(v, "norm_like", None), getattr(v, "of", None)):
                if ref in spec.vectors and ref not in used:
                    nxt.add(ref)
        used |= nxt
        frontier = nxt
    return used, donors


def _file_shape_problems(ls: LoadedStudy, shapes: dict) -> list[Problem]:
    """A bundled or file vector set the conditions read must have each known model's shape (a transfer donor
    excepted; an unused set is never built)."""
    out = []
    used, donors = _vector_refs(ls.spec)
    for name, v in ls.spec.vectors.items():
        path = _vector_file(ls, v)
        if name not in used or name in donors or path is None or not path.is_file():
            continue
        vs_shape = file_vector_shape(path)
        if vs_shape is None:
            continue
        for mname, sh in shapes.items():
            if sh is not None and vs_shape != (sh.n_layers, sh.d_model):
                field = "name" if v.kind == "bundled" else "path"
                out.append(
                    ls.problem(
                        ("vectors", name, field),
                        f"vector set is [{vs_shape[0]} layers x d_model {vs_shape[1]}] but model {mname!r} "
                        f"({ls.spec.models[mname].id}) is [{sh.n_layers} layers x d_model {sh.d_model}]",
                        hint="use vectors made for this model (in a profile, override the vector set with the "
                        "model), or `kind: transfer` to apply another model's vectors",
                    )
                )
    return out


def _check_intervention(
    ls: LoadedStudy, base: tuple, iv, shapes: dict, vec_names: set, expanded: str = ""
) -> list[Problem]:
    spec, out = ls.spec, []
    ipath = getattr(iv, "path", None)
    itrain = getattr(iv, "train", None)
    if isinstance(itrain, str):  # the adapter comes from a training run: its file must validate (output may wait)
        out.extend(_training_file_problems(ls, base + ("train",), itrain, getattr(iv, "profile", None)))
    elif isinstance(ipath, str) and not ls.resolve_path(ipath).is_file():
        out.append(
            ls.problem(
                base + ("path",),
                f"file not found: {ls.resolve_path(ipath)}",
                hint="paths are relative to the study file",
            )
        )
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


def _check_sweep(ls: LoadedStudy, cname: str, sweep: SweepSpec, shapes: dict, vec_names: set) -> list[Problem]:
    """A sweep's name template, a sample expansion validated as interventions (located in the file), and its
    full expansion against every model whose shape is known."""
    from pydantic import ValidationError

    from mechsteer.spec.study import expanded_conditions, intervention_list

    base = ("conditions", cname)
    msg = check_name(cname, sweep)
    if msg:
        return [ls.problem(base, msg)]
    raw = substitute(sweep.interventions, sample_env(sweep))
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


def _check_trained(ls: LoadedStudy, name: str, v) -> list[Problem]:
    """The training file a `trained` set names must exist and validate (its output may not exist yet)."""
    return _training_file_problems(ls, ("vectors", name, "train"), v.train, v.profile)


def _training_file_problems(ls: LoadedStudy, where: tuple, train: str, profile: str | None) -> list[Problem]:
    """A training file a study reads must exist and validate with its profile."""
    from mechsteer.errors import MechsteerError
    from mechsteer.spec.training import load_train_spec

    path = ls.resolve_path(train)
    if not path.is_file():
        return [ls.problem(where, f"training file not found: {path}", hint="paths are relative to the study file")]
    try:
        load_train_spec(path, profile)
    except MechsteerError as e:
        return [ls.problem(where, f"the training file does not validate: {e.problems[0].format()}")]
    return []


def _cycles(ls: LoadedStudy) -> list[Problem]:
    deps = {}
    for name, v in ls.spec.vectors.items():
        ref = getattr(v, "norm_like", None) or getattr(v, "of", None)
        if ref:
            deps[name] = ref
    out = []
    for start in deps:
        seen, cur = [start], deps[start]
        while cur in deps:
            if cur in seen:
                if cur == start:
                    out.append(
                        ls.problem(
                            ("vectors", start),
                            f"vector sets refer to each other in a cycle: {' -> '.join(seen + [cur])}",
                        )
                    )
                break
            seen.append(cur)
            cur = deps[cur]
    return out
