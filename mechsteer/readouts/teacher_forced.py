"""What the mechanistic readout kinds share: the unembedding and token strings of a loaded model, teacher-forced
sequences sampled under a condition (cached per (model, source condition, sampling settings, seed) in the
output folder's `work/sequences/`, so every readout and cell that compares on them reuses them), right-padded
chunks of them, residual-stream shifts dF of a condition (replayed from the first block it touches), tables
recorded as cell files, and the report side's reading of them back.

Layer 5: imports the interventions, replay and generation; never the engine.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pandas as pd
import torch

from mechsteer.atomic import atomic_path
from mechsteer.errors import MechsteerError
from mechsteer.generation import generate, render_prompts, uses_chat_template
from mechsteer.hooks import HookScope
from mechsteer.interventions import steering
from mechsteer.models.adapters import decoder_output_tensor
from mechsteer.readouts.prompts import load_problems
from mechsteer.replay import NotReplayable, earliest_block, record, replay

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


@dataclass
class Sequence:
    sample: int
    """Sample id: prompt index * samples + k."""
    ids: list[int]
    prompt_length: int
    finished: bool = True
    """The completion ended with a stop token (False: truncated at max_new_tokens)."""


def _cache_key(task, interventions: list, prompts: list[str]) -> dict:
    s = task.spec
    w = task.lm.adapter.module_at(task.lm.model, "unembed")[0].weight
    weights = hashlib.sha256(w[:256].detach().float().cpu().numpy().tobytes()).hexdigest()[:16]
    key = {
        "model": task.lm.provenance(),
        "weights": weights,
        "interventions": [iv.model_dump(mode="json") for iv in interventions],
        "vectors": {n: task.vectors[n].sha256() for iv in interventions for n in iv.vector_refs() if n in task.vectors},
        "prompts": prompts,
        "temperature": s.temperature,
        "max_new_tokens": s.max_new_tokens,
        "samples": s.samples,
        "seed": task.seed,
        "format": 2,  # sequences record `finished` (format 1 did not)
    }
    return json.loads(json.dumps(key, default=str))


def _cache_file(task, key: dict) -> Path | None:
    if task.work_dir is None:
        return None
    h = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return Path(task.work_dir).parent / "sequences" / f"{h}.json"


def sample_sequences(task, interventions: list) -> list[Sequence]:
    """Sequences (prompt + sampled completion) under a condition, at the readout's temperature and seed.
    Cached in `work/sequences/<hash>.json` ({"key", "sequences"}) keyed by model, condition content,
    prompts, sampling settings and seed. With the readout's `only_finished`, the truncated ones are left out
    (`kept_sequences` also says how many)."""
    return kept_sequences(task, interventions)[0]


def kept_sequences(task, interventions: list) -> tuple[list[Sequence], int]:
    """(the sequences `sample_sequences` returns, how many truncated ones `only_finished` dropped)."""
    seqs = _sample_sequences(task, interventions)
    if not getattr(task.spec, "only_finished", False):
        return seqs, 0
    kept = [q for q in seqs if q.finished]
    return kept, len(seqs) - len(kept)


def _sample_sequences(task, interventions: list) -> list[Sequence]:
    lm, s = task.lm, task.spec
    problems = load_problems(s)
    with steering(lm.model, lm.adapter, list(interventions), task.vectors, tokenizer=lm.tokenizer) as ctx:
        prompts = render_prompts(lm, [p["problem"] for p in problems], s.template, ctx.prompt_suffix)
        key = _cache_key(task, interventions, prompts)
        cache = _cache_file(task, key)
        if cache is not None and cache.is_file():
            return [Sequence(**d) for d in json.loads(cache.read_text())["sequences"]]
        comps = generate(
            lm,
            ctx,
            prompts,
            max_new_tokens=s.max_new_tokens,
            temperature=s.temperature,
            samples=s.samples,
            seed=task.seed,
            batch_size=s.batch_size,
        )
    special = not uses_chat_template(lm)
    out = []
    for i, (prompt, cs) in enumerate(zip(prompts, comps, strict=True)):
        p_ids = lm.tokenizer(prompt, add_special_tokens=special)["input_ids"]
        for k, c in enumerate(cs):
            # TODO(sequence toolkit): keep the generated token ids instead of re-tokenising the decoded text
            # (a round trip that can merge or split tokens at the prompt boundary); the samplers return text.
            g_ids = lm.tokenizer(c.text, add_special_tokens=False)["input_ids"] if c.text else []
            out.append(Sequence(i * s.samples + k, list(p_ids) + list(g_ids), len(p_ids), bool(c.finished)))
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache, suffix=".json") as tmp:
            Path(tmp).write_text(json.dumps({"key": key, "sequences": [d.__dict__ for d in out]}))
    return out


def chunks(seqs: list[Sequence], batch_size: int, pad_id: int, device) -> Iterator[tuple]:
    """(input_ids, attention_mask, prompt_lengths, sample_ids, seqs) per chunk, right-padded."""
    for start in range(0, len(seqs), batch_size):
        part = seqs[start : start + batch_size]
        T = max(len(q.ids) for q in part)
        ids = torch.full((len(part), T), pad_id, dtype=torch.long)
        mask = torch.zeros((len(part), T), dtype=torch.long)
        for r, q in enumerate(part):
            ids[r, : len(q.ids)] = torch.tensor(q.ids)
            mask[r, : len(q.ids)] = 1
        yield (ids.to(device), mask.to(device), [q.prompt_length for q in part], [q.sample for q in part], part)


def pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)


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
    seen: dict = {}

    def keep(module, args, output):
        seen["h"] = decoder_output_tensor(output).detach()

    with HookScope("final_resid") as scope:
        scope.forward_hook(lm.adapter.layer(lm.model, lm.shape.n_layers - 1), keep)
        ctx.begin(torch.as_tensor(prompt_lengths))
        lm.model(input_ids=ids, attention_mask=mask, use_cache=False)
    return seen["h"]


# ------------------------------------------------------------------------------------------ records


def csv_bytes(df: pd.DataFrame, index: bool = False) -> bytes:
    return df.to_csv(index=index).encode()


TEXT_COLUMNS = {"token", "boosted", "suppressed", "ref_top", "other_top", "segment", "vectors", "condition"}
"""Columns that hold token or label text: never parsed as numbers or NaN (a token may be "nan", "1" or "")."""


def read_csv(path: Path, **kw) -> pd.DataFrame:
    """A recorded table back, with token text kept verbatim and empty numeric cells as NaN."""
    df = pd.read_csv(io.StringIO(path.read_text()), keep_default_na=False, **kw)
    for c in df.columns:
        if c in TEXT_COLUMNS or not (pd.api.types.is_object_dtype(df[c]) or pd.api.types.is_string_dtype(df[c])):
            continue
        filled = df[c] != ""
        num = pd.to_numeric(df[c].where(filled), errors="coerce")
        if bool((num.notna() == filled).all()):
            df[c] = num
    return df


def recorded_cells(results, kind: str) -> list[dict]:
    """One row per recorded cell of `kind` (conditions sharing the cell joined by '/')."""
    by_hash: dict[str, dict] = {}
    for c in results.recorded():
        if c["kind"] != kind:
            continue
        row = by_hash.setdefault(c["hash"], dict(c))
        if c["condition"] not in row["condition"].split("/"):
            row["condition"] += "/" + c["condition"]
    return list(by_hash.values())


def gather(results, kind: str, name: str) -> pd.DataFrame:
    """The CSV `<kind>/<name>` of every recorded cell of `kind`, with model, condition, measurement, seed and
    cell columns in front (empty when none)."""
    parts = []
    for c in recorded_cells(results, kind):
        f = results.store.dir(c["hash"]) / kind / name
        if f.is_file() and f.stat().st_size > 1:
            df = read_csv(f)
            for i, col in enumerate(("model", "condition", "measurement", "seed", "cell")):
                df.insert(
                    i,
                    col,
                    c[col if col != "cell" else "hash"] if col != "measurement" else c["measurement"].split(":", 1)[1],
                )
            parts.append(df)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def slug(*parts) -> str:
    """A file-name-safe join of labels."""
    return "_".join("".join(ch if ch.isalnum() or ch in "-." else "-" for ch in str(p)) for p in parts)


def md(df: pd.DataFrame, floatfmt: str = ".3g") -> str:
    return df.to_markdown(index=False, floatfmt=floatfmt)
