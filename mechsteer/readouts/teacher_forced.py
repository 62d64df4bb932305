"""What the mechanistic readout kinds share: the unembedding and token strings of a loaded model, teacher-forced
sequences sampled under a condition (`mechsteer.sequences.Sequence`: the sampled token ids, never text
re-tokenised; cached per (model, source condition, sampling settings with the seed, and the fingerprint of
the code that samples them) in the output folder's `work/sequences/`, so every readout and cell that
compares on them reuses them, while a change of that code or `--force` samples them again), right-padded
chunks of them, and residual-stream shifts dF of a condition (replayed from the first block it touches). The
tables readouts record as cell files are `mechsteer.cell_tables`.

Layer 5: imports the interventions, replay and generation; never the engine.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import torch

from mechsteer.atomic import atomic_path
from mechsteer.capture import block_outputs
from mechsteer.errors import MechsteerError
from mechsteer.generation import render_prompts, sample_texts, spec_sampling
from mechsteer.interventions import steering
from mechsteer.readouts.prompts import load_problems
from mechsteer.replay import NotReplayable, earliest_block, record, replay
from mechsteer.sequences import SamplingSettings, Sequence, pad_right
from mechsteer.sequences import only_finished as keep_finished

# ------------------------------------------------------------------------------------------ model facts


def unembedding(lm) -> tuple[torch.Tensor, object]:
    """(W_U [vocab, d] float32, the final norm module as a callable on [n, d])."""
    w_u = lm.adapter.module_at(lm.model, "unembed")[0].weight.detach().float().cpu()
    norm_mod = lm.adapter.module_at(lm.model, "final_norm")[0]

    def norm(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            p = next(norm_mod.parameters())
            return norm_mod(x.to(p.device, p.dtype)).double().cpu()

    return w_u, norm


@lru_cache(maxsize=4)
def _strings(tokenizer, n: int) -> tuple[str, ...]:
    return tuple(tokenizer.decode([i]) for i in range(n))


def token_strings(lm, n: int | None = None) -> list[str]:
    """Decoded text of token ids 0..n-1 (n: the unembedding's rows; ids past the tokenizer decode to "")."""
    n = n or lm.adapter.module_at(lm.model, "unembed")[0].weight.shape[0]
    return list(_strings(lm.tokenizer, n))


def rows_of(vs, layers, what: str) -> list[int]:
    """Rows of a vector set selected by a layer selection (`all`: the rows it has)."""
    from mechsteer.spec.layers import resolve_layers_or_raise

    if layers == "all":
        return list(vs.layers)
    wanted = resolve_layers_or_raise(layers, vs.n_layers, what, MechsteerError)
    missing = [i for i in wanted if i not in vs.layers]
    if missing:
        raise MechsteerError(
            f"{what}: the vector set has no rows {missing} (it has {vs.layers})",
            hint="choose layers the vector set has, or `all`",
        )
    return wanted


def analysed_sets(task) -> dict:
    """The vector sets a vector readout analyses: `spec.vectors` (or every set the condition reads)."""
    wanted = task.spec.vectors
    have = dict(task.vectors)
    if wanted is None:
        return have
    missing = [n for n in wanted if n not in have]
    if missing:
        raise MechsteerError(
            f"{task.spec.kind}.vectors: {missing} are not read by this cell's condition "
            f"(it reads {sorted(have) or 'none'})",
            hint="vector sets are built for the conditions that use them; restrict the readout "
            "with `conditions:` to conditions that add them",
        )
    return {n: have[n] for n in wanted}


def added_vector(task, name: str | None) -> tuple[object, str]:
    """The condition's `add` intervention (of vector set `name` when given) and its set's name."""
    adds = [
        iv for iv in task.interventions if getattr(iv, "kind", None) == "add" and (name is None or iv.vector == name)
    ]
    if len(adds) != 1:
        raise MechsteerError(
            f"{task.spec.kind} needs exactly one `add` intervention"
            f"{f' of vector set {name!r}' if name else ''} in the condition, found {len(adds)}",
            hint="restrict the readout with `conditions:` (or name the set with `vector:`)",
        )
    return adds[0], adds[0].vector


def single_layer(add_spec, layer: int) -> list:
    """The source condition `add s_l at l` alone (the condition's add with its scale, one layer)."""
    return [add_spec.model_copy(update={"layer": int(layer), "positions": "all"})]


# ------------------------------------------------------------------------------------------ sequences


def sequence_modules(interventions) -> list[str]:
    """The modules that sample sequences under `interventions`: this one (with generation, the steering
    scope and the models layer it imports) and each intervention kind's implementation and spec."""
    from mechsteer.spec.kinds import INTERVENTION_KINDS

    mods = {__name__}
    for iv in interventions:
        kind = INTERVENTION_KINDS.kind(iv.kind)
        mods |= {kind.impl.partition(":")[0], kind.spec.__module__}
    return sorted(mods)


def _cache_key(task, interventions: list, prompts: list[str], settings: SamplingSettings) -> dict:
    w = task.lm.adapter.module_at(task.lm.model, "unembed")[0].weight
    weights = hashlib.sha256(w[:256].detach().float().cpu().numpy().tobytes()).hexdigest()[:16]
    key = {
        "model": task.lm.provenance(),
        "weights": weights,
        "interventions": [iv.model_dump(mode="json") for iv in interventions],
        "vectors": {n: task.vectors[n].sha256() for iv in interventions for n in iv.vector_refs() if n in task.vectors},
        "prompts": prompts,
        "sampling": settings.key(),
        "code": task.code_of(sequence_modules(interventions)) if task.code_of else None,
    }
    return json.loads(json.dumps(key, default=str))


def _cache_file(task, key: dict) -> Path | None:
    if task.shared_work_dir is None:
        return None
    h = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return Path(task.shared_work_dir) / "sequences" / f"{h}.json"


def _cached(cache: Path | None, key: dict, run_id: str | None) -> list[dict] | None:
    """The cached sequences when the file holds this key (and, in a forced run, was written by that run)."""
    if cache is None or not cache.is_file():
        return None
    try:
        data = json.loads(cache.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("key") != key or (run_id is not None and data.get("run") != run_id):
        return None
    return data.get("sequences")


def sample_sequences(task, interventions: list, *, only_finished: bool = False) -> list[Sequence]:
    """Sequences (prompt + sampled completion, as the sampled token ids, a stop token that ended one kept as
    its last id) under a condition, with the readout's sampling settings and the cell's seed. Cached in
    `work/sequences/<hash>.json` ({"key", "run", "sequences"}) keyed by model, condition content, prompts,
    sampling settings (seed included) and the fingerprint of the sampling code (`sequence_modules`); a forced
    run (`task.run_id`) reuses only the files it wrote itself. `only_finished`: drop the sequences that ran
    out of tokens before a stop token (the cache keeps them all)."""
    lm, s = task.lm, task.spec
    problems = load_problems(s)
    settings = spec_sampling(lm, s, task.seed)
    with steering(lm.model, lm.adapter, list(interventions), task.vectors, tokenizer=lm.tokenizer) as ctx:
        prompts = render_prompts(lm, [p["problem"] for p in problems], s.template, ctx.prompt_suffix)
        key = _cache_key(task, interventions, prompts, settings)
        cache = _cache_file(task, key)
        cached = _cached(cache, key, task.run_id)
        if cached is not None:
            out = [Sequence.from_json(d) for d in cached]
            return keep_finished(out) if only_finished else out
        out = sample_texts(lm, ctx, prompts, settings)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache, suffix=".json") as tmp:
            Path(tmp).write_text(json.dumps({"key": key, "run": task.run_id, "sequences": [q.to_json() for q in out]}))
    return keep_finished(out) if only_finished else out


def kept_sequences(task, interventions: list) -> tuple[list[Sequence], int]:
    """(the sequences `sample_sequences` returns under the readout's `only_finished`, how many truncated ones
    it dropped), so a readout can say how many samples it left out."""
    seqs = sample_sequences(task, interventions)
    if not getattr(task.spec, "only_finished", False):
        return seqs, 0
    kept = keep_finished(seqs)
    return kept, len(seqs) - len(kept)


def chunks(seqs: list[Sequence], batch_size: int, pad_value: int, device) -> Iterator[tuple]:
    """(input_ids, attention_mask, prompt_lengths, sample_ids, seqs) per chunk, right-padded; a sequence's
    sample id is its index in `seqs`."""
    for start in range(0, len(seqs), batch_size):
        part = seqs[start : start + batch_size]
        ids, mask = pad_right([q.ids for q in part], pad_value, device)
        yield (ids, mask, [q.prompt_length for q in part], list(range(start, start + len(part))), part)


def counted_mask(mask: torch.Tensor) -> torch.Tensor:
    """Real tokens except each row's last (whose next token is not in the sequence), as the paper counts."""
    m = mask.bool()
    idx = m.long().cumsum(1) - 1
    return m & (idx < m.sum(1, keepdim=True) - 1)


@torch.no_grad()
def shifts(lm, steer: list, vectors: dict, ids, mask, targets: list[int]) -> dict[int, torch.Tensor]:
    """dF_j = resid_post_j(steer) - resid_post_j(base) for j in `targets`, float32 on CPU, from one base
    pass and one replay of blocks >= the first block `steer` touches (a full pass when not replayable)."""
    n = lm.shape.n_layers
    try:
        first = min(earliest_block(steer, n, vectors), n - 1)
    except NotReplayable:
        first = 0
    _, states = record(lm.model, lm.adapter, [first], input_ids=ids, attention_mask=mask)
    _, base = replay(lm.model, lm.adapter, states[first], resid=True, logits=False)
    base = {j: base[j] for j in targets if j in base}
    with steering(lm.model, lm.adapter, steer, vectors, tokenizer=lm.tokenizer):
        _, st = replay(lm.model, lm.adapter, states[first], resid=True, logits=False)
    out = {}
    for j in targets:
        out[j] = (st[j] - base[j]).float().cpu() if j in base else torch.zeros(0)
    return out


@torch.no_grad()
def final_resid(lm, conditions: list[list], vectors: dict, ids, mask, prompt_lengths) -> list[torch.Tensor]:
    """The last block's output [b, T, d] (before the final norm) under each condition on one chunk: one base
    pass recording the input of the first block any condition touches, then a replay per condition; a full
    forward for a condition replay cannot reproduce (position selectors see `prompt_lengths`). Unembed slices
    of it with `replay.unembed` so that the [b, T, vocab] logits never exist at once."""
    n = lm.shape.n_layers
    firsts = []
    for c in conditions:
        try:
            firsts.append(min(earliest_block(c, n, vectors), n - 1))
        except NotReplayable:
            firsts.append(None)
    ok = [f for f in firsts if f is not None]
    start = min(ok) if ok else n - 1
    _, states = record(lm.model, lm.adapter, [start], input_ids=ids, attention_mask=mask)
    out = []
    for c, f in zip(conditions, firsts, strict=True):
        with steering(lm.model, lm.adapter, c, vectors, tokenizer=lm.tokenizer) as ctx:
            if f is None:
                out.append(_full_final_resid(lm, ctx, ids, mask, prompt_lengths))
            else:
                out.append(replay(lm.model, lm.adapter, states[start], resid=True, logits=False)[1][n - 1])
    return out


def _full_final_resid(lm, ctx, ids, mask, prompt_lengths) -> torch.Tensor:
    last = lm.shape.n_layers - 1
    ctx.begin(torch.as_tensor(prompt_lengths))
    return block_outputs(lm.model, lm.adapter, [last], keep_dtype=True, input_ids=ids, attention_mask=mask)[last]
