"""Rehearsals, the executing side (`mechsteer.spec.rehearsal` is the spec side): build the twins, the stand-in
benchmark files and the stand-in vectors, adapters and training runs a rehearsed study asks for, validate the
rehearsed study and compile it into a plan marked as a rehearsal (its own folder `<run folder>-rehearsal`, a
`rehearsal` entry in plan.json and in every cell key). Running the plan is the ordinary executor's job.
"""

from __future__ import annotations

import json
from pathlib import Path

from mechsteer.errors import MechsteerError, Problem, SpecError
from mechsteer.spec.model_configs import model_config
from mechsteer.spec.rehearsal import SUFFIX, FileStandIn, Rehearsal, RehearsalCaps, RunStandIn, rehearsed_study

STAND_IN_SCALE = 0.1
"""A stand-in vector row's L2 norm against the median norm of the twin's residual stream after its block (channel
0, the twin's stop channel, left out and left at zero): large enough to change what the twin computes, small
enough that its samples still end."""

DATA_ROWS = {"test": 8, "train": 16}
"""Problems of the bundled `mini` task written into each stand-in benchmark file (test) and prompt set (train)."""


# ------------------------------------------------------------------------------------------- twins


def twin_of(model_id: str, base_dir: Path, where: str, field: str) -> Path:
    """The twin folder of a model (built on first use); a model whose config is not known offline is an
    error naming `where` (the study or training file), the field and the fixes."""
    from mechsteer.models.twin import MARKER, twin_dir

    local = Path(model_id).expanduser()
    if not local.is_absolute():
        local = base_dir / local
    if (local / MARKER).is_file():
        return local.resolve()
    mc = model_config(model_id, base_dir)
    if mc is None:
        raise SpecError(
            Problem(
                f"no config known for model {model_id!r}, so the rehearsal cannot build its twin",
                file=where,
                field=field,
                hint="add the model's config.json keys to mechsteer/data/model_configs.yaml, or download its "
                f"config.json (`hf download {model_id} config.json --local-dir DIR`) and set `id` to DIR",
            )
        )
    return twin_dir(mc)


# ------------------------------------------------------------------------------------------- stand-in data


def _row(task: str, i: int, problem: str, answer: str) -> dict:
    """A `mini` problem in the format of `task`'s files (what its loader in `mechsteer.eval.datasets` reads)."""
    if task == "minerva_math":
        return {"idx": i, "problem": problem, "solution": f"The answer is $\\boxed{{{answer}}}$."}
    if task == "olympiadbench":
        return {"id": i, "question": problem, "final_answer": [answer]}
    if task == "gsm8k":
        return {"idx": i, "question": problem, "answer": f"The answer is {answer}.\n#### {answer}"}
    if task == "deepscaler":
        return {"problem": problem, "answer": answer, "solution": f"\\boxed{{{answer}}}"}
    return {"id": i, "problem": problem, "answer": answer}


def write_stand_in_data(folder: Path) -> Path:
    """`<folder>/<task>/test.jsonl` for every benchmark and prompt set mechsteer knows, from the bundled `mini`
    task's problems (test problems for benchmarks, train problems for prompt sets), in each one's own format."""
    from mechsteer.atomic import atomic_write_text
    from mechsteer.eval.datasets import BENCHMARKS, PROMPT_SETS
    from mechsteer.eval.mini_task import generate_mini

    for names, split in ((BENCHMARKS, "test"), (PROMPT_SETS, "train")):
        rows = generate_mini(split, DATA_ROWS[split], seed=7)
        for task, bench in names.items():
            lines = [json.dumps(_row(task, i, r["problem"], r["answer"])) for i, r in enumerate(rows)]
            path = folder / bench.local_file
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.is_file() or path.read_text() != "\n".join(lines) + "\n":
                atomic_write_text(path, "\n".join(lines) + "\n")
    return folder


# ------------------------------------------------------------------------------------------- stand-in files


class TwinModels:
    """Twins loaded once each, by twin folder (stand-ins need their shapes, modules and residual norms)."""

    def __init__(self):
        self._loaded: dict[str, object] = {}
        self._norms: dict[str, list[float]] = {}

    def get(self, folder: Path):
        """The loaded twin (a `LoadedModel`)."""
        from mechsteer.models.loading import load_model
        from mechsteer.spec.models import ModelSpec

        key = str(folder)
        if key not in self._loaded:
            self._loaded[key] = load_model("twin", ModelSpec(id=key, dtype="float32", device="cpu"))
        return self._loaded[key]

    def norms(self, folder: Path) -> list[float]:
        """Per block, the median norm of the twin's residual stream after it (channels 1..) on a few prompts."""
        import torch

        from mechsteer.models.adapters import decoder_output_tensor
        from mechsteer.models.twin import calibration_prompts

        key = str(folder)
        if key not in self._norms:
            lm = self.get(folder)
            rows = [[] for _ in range(lm.shape.n_layers)]

            def record(layer):  # the block's output itself (the last one's is before the final norm)
                return lambda _m, _a, out: rows[layer].extend(
                    decoder_output_tensor(out)[0, :, 1:].norm(dim=-1).tolist()
                )

            blocks = lm.adapter.layers(lm.model)
            hooks = [blocks[k].register_forward_hook(record(k)) for k in range(lm.shape.n_layers)]
            try:
                with torch.no_grad():
                    for text in calibration_prompts(lm.tokenizer):
                        chat = bool(lm.tokenizer.chat_template)
                        lm.model(**lm.tokenizer(text, return_tensors="pt", add_special_tokens=not chat))
            finally:
                for h in hooks:
                    h.remove()
            self._norms[key] = [float(torch.tensor(r).median()) for r in rows]
        return self._norms[key]


def _seed(*parts) -> int:
    import hashlib

    return int(hashlib.sha256(repr(parts).encode()).hexdigest()[:8], 16)


def _random_rows(n: int, d: int, seed: int, norms=None):
    """`n` random rows (float32 [n, d]) with channel 0 at zero, of the given norms (default 1)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    v = torch.randn(n, d, generator=g)
    v[:, 0] = 0
    scale = torch.ones(n, 1) if norms is None else torch.tensor(norms, dtype=torch.float32)[:, None]
    return v / v.norm(dim=1, keepdim=True).clamp_min(1e-12) * scale


def _fill(params, seed: int, norms: list[float]) -> None:
    """Random values for a parameterisation's trainable tensors: a vector of block k gets STAND_IN_SCALE x the
    twin's residual norm after block k (channel 0 at zero); an adapter's A rows unit norm, its B rows as vectors."""
    import torch

    with torch.no_grad():
        for i, (name, p) in enumerate(sorted(params.named_trainable().items())):
            block = params.block_of(name)
            size = STAND_IN_SCALE * norms[block] if block is not None else 1.0
            if "lora_A" in name:
                size = 1.0
            flat = p.reshape(1, -1) if p.dim() == 1 or "lora_B" in name else p.reshape(p.shape[0], -1)
            p.copy_(_random_rows(flat.shape[0], flat.shape[1], seed + i, [size] * flat.shape[0]).reshape(p.shape))


def write_params(params, folder: Path, file: str, meta: dict) -> Path:
    """Write a parameterisation's values as the trainer does: a vector set, or a `lora1` adapter file."""
    from safetensors.torch import save_file

    from mechsteer.vectors.vector_set import save_vector_set

    folder.mkdir(parents=True, exist_ok=True)
    meta = {"setup": params.describe(), **{k: str(v) for k, v in meta.items()}}
    if file == "lora1.safetensors":
        save_file(params.tensors(), str(folder / file), metadata={**meta, "format": "mechsteer.lora1/1"})
        return folder / file
    return save_vector_set(params.to_vector_set(), folder / file, **meta)


def _run_setups(stand_in: RunStandIn, n_layers: int):
    """(sub-folder, resolved setup) of every run a stand-in writes: the run itself and its per-block runs."""
    from mechsteer.spec.training import ResolvedSetup, load_train_spec, resolve_setup
    from mechsteer.train.layout import per_block_dir

    spec = load_train_spec(stand_in.train, stand_in.profile).spec
    out = Path(stand_in.folder)
    kind = "lora1" if stand_in.file.startswith("lora1") else "vectors"
    runs = []
    if stand_in.single:
        runs.append((out, resolve_setup(spec.setup, n_layers)))
    if stand_in.blocks is not None:
        blocks = range(n_layers) if stand_in.blocks == "all" else stand_in.blocks
        runs += [(per_block_dir(out, k), ResolvedSetup(kind, (k,))) for k in blocks]
    return spec, runs


def write_run(stand_in: RunStandIn, twins: TwinModels, twin_folder: Path) -> None:
    """A stand-in training run in the trainer's layout: the final file, every checkpoint the study reads (and
    the step `best.json` names), for the run itself and each per-block run."""
    from mechsteer.atomic import atomic_write_text
    from mechsteer.train.layout import BEST_FILE, checkpoint_dir
    from mechsteer.train.params import build_parameterisation

    lm = twins.get(twin_folder)
    norms = twins.norms(twin_folder)
    spec, runs = _run_setups(stand_in, lm.shape.n_layers)
    steps = sorted(c for c in stand_in.checkpoints if isinstance(c, int))
    best = max(steps) if steps else 1
    if "best" in stand_in.checkpoints and best not in steps:
        steps.append(best)
    final = max(steps) if steps else 1
    for folder, resolved in runs:
        params = build_parameterisation(resolved, lm.model, lm.adapter, seed=spec.seed)
        meta = {"source": f"rehearsal stand-in of {Path(stand_in.train).name}", "model": str(twin_folder)}
        for step in steps:
            _fill(params, _seed(stand_in.folder, str(folder), step), norms)
            write_params(params, checkpoint_dir(folder / "checkpoints", step), stand_in.file, {**meta, "step": step})
        _fill(params, _seed(stand_in.folder, str(folder), "final"), norms)
        write_params(params, folder, stand_in.file, {**meta, "step": final})
        if "best" in stand_in.checkpoints:
            body = {
                "step": best,
                "metric": "rehearsal stand-in (no selection ran)",
                "value": 0.0,
                "candidates": [{"step": s, "value": 0.0} for s in steps],
            }
            atomic_write_text(folder / BEST_FILE, json.dumps(body, indent=1, sort_keys=True) + "\n")


def write_file(stand_in: FileStandIn, twins: TwinModels, twin_folder: Path) -> None:
    """A stand-in vector set or rank-1 adapter of the twin's shape at the rows the real file has."""
    import torch
    from safetensors.torch import save_file

    from mechsteer.vectors.vector_set import VectorSet, save_vector_set

    lm = twins.get(twin_folder)
    n, d = lm.shape.n_layers, lm.shape.d_model
    rows = list(range(n)) if stand_in.rows == "all" else [k for k in stand_in.rows if 0 <= k < n]
    seed = _seed(stand_in.path)
    meta = {"source": "rehearsal stand-in", "model": str(twin_folder)} | (
        {"setup": stand_in.setup} if stand_in.setup else {}
    )
    path = Path(stand_in.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    norms = [STAND_IN_SCALE * twins.norms(twin_folder)[k] for k in rows]
    if stand_in.file == "vectors":
        v = torch.zeros(n, d)
        if rows:
            v[rows] = _random_rows(len(rows), d, seed, norms)
        save_vector_set(VectorSet(v, rows, {}), path, **meta)
        return
    d_ff = lm.adapter.down_proj(lm.model, 0, "a rank-1 adapter").in_features
    a, b = torch.zeros(n, d_ff), torch.zeros(n, d)
    if rows:
        a[rows] = _random_rows(len(rows), d_ff, seed)
        b[rows] = _random_rows(len(rows), d, seed + 1, norms)
    tensors = {"A": a, "B": b, "layers": torch.tensor(rows, dtype=torch.int64)}
    save_file(tensors, str(path), metadata={**meta, "format": "mechsteer.lora1/1"})


def write_stand_ins(r: Rehearsal, study_twins: dict[str, Path], real_shapes: dict[str, tuple[int, int]]) -> None:
    """Every file and run the kinds asked for. A run's shape is its training file's model's twin; a file's is the
    twin of the study's model whose real [n_layers, d_model] the file has (else the study's first model)."""
    from mechsteer.spec.training import load_train_spec

    twins = TwinModels()
    for stand_in in r.runs.values():
        lt = load_train_spec(stand_in.train, stand_in.profile)
        twin = twin_of(lt.spec.model.id, lt.base_dir, stand_in.train, "model.id")
        write_run(stand_in, twins, twin)
    first = next(iter(study_twins.values()))
    for stand_in in r.files.values():
        match = [k for k, s in real_shapes.items() if stand_in.shape is not None and s == stand_in.shape]
        write_file(stand_in, twins, study_twins[match[0]] if match else first)


# ------------------------------------------------------------------------------------------- a study


def rehearsal_folder(output_root: str | Path, name: str, profile: str | None) -> Path:
    """The rehearsal's folder: the run's folder name with `-rehearsal` (absolute)."""
    return Path(output_root).resolve() / (name + (f"-{profile}" if profile else "") + SUFFIX)


def rehearse_study(ls, *, output_root: str | Path = "outputs", caps: RehearsalCaps | None = None, max_cells: int):
    """(the rehearsed study as a `LoadedStudy`, the `Rehearsal` with what it stood in): twins built, stand-in
    data and files written under `<rehearsal folder>/stand-ins/`, the rehearsed study validated (a problem
    there names the original file and says it is the rehearsal's)."""
    from mechsteer.spec.document import LoadedStudy
    from mechsteer.spec.loader import load_study_dict
    from mechsteer.spec.models import known_shape

    caps = caps or RehearsalCaps()
    folder = rehearsal_folder(output_root, ls.spec.name, ls.profile)
    stand_ins = folder / "stand-ins"
    data = write_stand_in_data(stand_ins / "data")
    r = Rehearsal(stand_ins, caps, data, lambda p: ls.resolve_path(p))
    where = ls.display_name
    twins = {
        key: twin_of(ms.id, ls.base_dir, where + (f" (profile {ls.profile})" if ls.profile else ""), f"models.{key}.id")
        for key, ms in ls.spec.models.items()
    }
    doc = rehearsed_study(ls, r, {k: str(v) for k, v in twins.items()})
    shapes = {k: known_shape(ms.id, ls.base_dir) for k, ms in ls.spec.models.items()}
    write_stand_ins(r, twins, {k: (s.n_layers, s.d_model) for k, s in shapes.items() if s is not None})
    try:
        rehearsed = load_study_dict(doc, base_dir=ls.base_dir, max_cells=max_cells)
    except MechsteerError as e:
        raise MechsteerError(
            [
                Problem(
                    f"the rehearsal of this study does not validate: {p.format()}",
                    file=where,
                    hint="a rehearsal keeps the study's structure; this is a mechsteer bug, please report it",
                )
                for p in e.problems
            ]
        ) from None
    folder.mkdir(parents=True, exist_ok=True)
    import yaml

    from mechsteer.atomic import atomic_write_text

    atomic_write_text(folder / "rehearsed_study.yaml", yaml.safe_dump(doc, sort_keys=False, width=120))
    out = LoadedStudy(spec=rehearsed.spec, file=ls.file, profile=ls.profile, positions={})
    return out, r


def rehearsal_plan(ls, *, limit: int | None = None, output_root: str | Path = "outputs", caps=None, max_cells: int):
    """The compiled plan of a study's rehearsal (see `rehearse_study`): its own folder, marked in plan.json and
    in every cell key."""
    from mechsteer.engine.plan import compile_study

    rehearsed, r = rehearse_study(ls, output_root=output_root, caps=caps, max_cells=max_cells)
    return compile_study(rehearsed, limit=limit, output_root=output_root, rehearsal=r.summary())
