"""Steering-induced activation differences dF = h(steered) - h(base), per token, streamed to disk.

For one model, one steering condition (intervention specs + the vector sets they name) and chosen layers:
the same token sequences (prompt + a generated completion) are run teacher-forced through the base model and
through the steered model; the residual stream after each chosen block (the output of block l, where `add`
puts row l, so the steered capture includes the steering vector of that block) is captured by forward
hooks inside a HookScope, and dF per token is appended to a shard buffer. Whenever the buffer holds a shard's
worth of tokens it is written out, so memory stays bounded by one shard plus one batch.

Output folder (assembled aside and renamed into place when complete):
* `shard-00000.safetensors`: one float tensor `layer_<l>` [tokens, d_model] per layer; each file is at most
  `max_shard_bytes` bytes;
* `shard-00000.parquet`: one row per token of that shard, in the same order: `seq` (sequence index),
  `problem`, `sample`, `position` (token index in the full sequence), `gen_pos` (index in the completion,
  -1 for prompt tokens), `is_generated`, `correct`, `token_id`;
* `sequences.jsonl`: one line per sequence (problem, sample, correct, prompt and completion ids and text);
* `manifest.json`: layers, d_model, dtype, shard names and token counts, the condition and the model.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from mechsteer.atomic import atomic_dir
from mechsteer.errors import MechsteerError
from mechsteer.hooks import HookScope
from mechsteer.interventions import steering
from mechsteer.models.adapters import decoder_output_tensor
from mechsteer.models.loading import LoadedModel

HEADER_RESERVE = 4096
"""Bytes kept free in each shard for the safetensors JSON header (a few hundred bytes in practice)."""
INDEX_COLUMNS = ("seq", "problem", "sample", "position", "gen_pos", "is_generated", "correct", "token_id")


@dataclass
class Sequence:
    """One teacher-forced sequence: a prompt and a completion (token ids), with its grade."""

    problem: str
    prompt_ids: list[int]
    generated_ids: list[int]
    correct: bool | None = None
    sample: int = 0
    completion: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def ids(self) -> list[int]:
        return list(self.prompt_ids) + list(self.generated_ids)


# -------------------------------------------------------------------------------------------- generation
@torch.no_grad()
def generate_and_grade(
    lm: LoadedModel,
    interventions: list,
    vectors: dict,
    problems: list[dict],
    *,
    template: str = "qwen_math",
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    samples: int = 1,
    seed: int = 0,
    batch_size: int = 8,
    grader: str = "lenient",
    progress: Callable[[int], None] | None = None,
) -> list[Sequence]:
    """Sample completions to task problems (`{"id", "problem", "answer"}`) under the condition and grade them.

    Same sampling settings as `mechsteer.generation.generate` (top_k off, top_p 1, the model's stop tokens),
    but the sampled token ids are kept (decoding and re-tokenizing text is not always the identity), and the
    stop token, when emitted, stays in the completion: its activation difference is part of the generation.
    `grader`: `lenient` (boxed or last number) or `boxed` (the paper's strict grader)."""
    from transformers import GenerationConfig

    from mechsteer.eval.grading import grade
    from mechsteer.generation import lm_stop_token_ids, render_prompts, tokenize

    if grader not in ("lenient", "boxed"):
        raise MechsteerError(f"diffsae grader {grader!r} is unknown", hint="use lenient or boxed")
    stops = lm_stop_token_ids(lm)
    cfg = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=temperature > 0,
        temperature=temperature if temperature > 0 else None,
        top_p=1.0 if temperature > 0 else None,
        top_k=0 if temperature > 0 else None,
        num_return_sequences=samples,
        pad_token_id=lm.tokenizer.pad_token_id,
        eos_token_id=stops,
    )
    out: list[Sequence] = []
    with steering(lm.model, lm.adapter, interventions, vectors, tokenizer=lm.tokenizer) as ctx:
        prompts = render_prompts(lm, [p["problem"] for p in problems], template, ctx.prompt_suffix)
        torch.manual_seed(seed)
        for start in range(0, len(prompts), batch_size):
            chunk = list(range(start, min(start + batch_size, len(prompts))))
            enc = tokenize(lm, [prompts[i] for i in chunk])
            ctx.begin()
            gen = lm.model.generate(**enc, generation_config=cfg)
            width = enc["input_ids"].shape[1]
            for row in range(gen.shape[0]):
                i = chunk[row // samples]
                m = enc["attention_mask"][row // samples].bool()
                prompt_ids = enc["input_ids"][row // samples][m].tolist()
                ids = gen[row, width:].tolist()
                for j, t in enumerate(ids):
                    if t in stops:
                        ids = ids[: j + 1]
                        break
                text = lm.tokenizer.decode([t for t in ids if t not in stops], skip_special_tokens=True)
                g = grade(text, str(problems[i]["answer"]), template=template)
                ok = g.boxed_correct if grader == "boxed" else g.lenient_correct
                out.append(
                    Sequence(
                        problem=str(problems[i]["id"]),
                        prompt_ids=prompt_ids,
                        generated_ids=ids,
                        correct=bool(ok),
                        sample=row % samples,
                        completion=text,
                    )
                )
            if progress:
                progress(len(chunk))
    return out


# -------------------------------------------------------------------------------------------- capture
def _capture(
    lm: LoadedModel,
    ids: torch.Tensor,
    mask: torch.Tensor,
    layers: list[int],
    ctx=None,
    prompt_lengths: list[int] | None = None,
) -> dict[int, torch.Tensor]:
    """Outputs of the chosen blocks (float32, [batch, tokens, d]) for one left-padded batch."""
    acts: dict[int, torch.Tensor] = {}

    def grab(i):
        def hook(module, args, output):
            acts[i] = decoder_output_tensor(output).detach().float()

        return hook

    with HookScope("diffsae-capture") as scope:
        # registered after the condition's hooks: the capture of block l sees block l's steering added
        for i in layers:
            scope.forward_hook(lm.adapter.layer(lm.model, i), grab(i))
        if ctx is not None:
            ctx.begin(prompt_lengths)
        pos = (mask.cumsum(dim=1) - 1).clamp(min=0)
        lm.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False)
    return acts


def _pad_left(seqs: list[Sequence], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s.ids) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, s in enumerate(seqs):
        t = s.ids
        ids[r, width - len(t) :] = torch.tensor(t, dtype=torch.long)
        mask[r, width - len(t) :] = 1
    return ids.to(device), mask.to(device)


class ShardWriter:
    """Buffers per-token rows and writes fixed-size shards (safetensors + parquet index)."""

    def __init__(self, folder: Path, layers: list[int], d_model: int, max_shard_bytes: int, dtype: torch.dtype):
        self.folder, self.layers, self.d_model, self.dtype = folder, layers, d_model, dtype
        row_bytes = len(layers) * d_model * torch.empty((), dtype=dtype).element_size()
        self.tokens_per_shard = (max_shard_bytes - HEADER_RESERVE) // row_bytes
        if self.tokens_per_shard < 1:
            raise MechsteerError(
                f"diffsae max_shard_bytes={max_shard_bytes} cannot hold one token "
                f"({row_bytes} bytes for {len(layers)} layers x d_model {d_model})",
                hint=f"use at least {row_bytes + HEADER_RESERVE} bytes",
            )
        self._buf: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
        self._rows: list[dict] = []
        self.shards: list[dict] = []

    def add(self, diffs: dict[int, torch.Tensor], rows: list[dict]) -> None:
        for layer in self.layers:
            self._buf[layer].append(diffs[layer].to(self.dtype))
        self._rows.extend(rows)
        while len(self._rows) >= self.tokens_per_shard:
            self._flush(self.tokens_per_shard)

    def _flush(self, n: int) -> None:
        import pandas as pd
        from safetensors.torch import save_file

        name = f"shard-{len(self.shards):05d}"
        tensors = {}
        for layer in self.layers:
            full = torch.cat(self._buf[layer]) if len(self._buf[layer]) > 1 else self._buf[layer][0]
            tensors[f"layer_{layer}"] = full[:n].contiguous()
            self._buf[layer] = [full[n:]] if full.shape[0] > n else []
        rows, self._rows = self._rows[:n], self._rows[n:]
        save_file(
            tensors,
            str(self.folder / f"{name}.safetensors"),
            metadata={"layers": json.dumps(self.layers), "d_model": str(self.d_model)},
        )
        pd.DataFrame(rows, columns=list(INDEX_COLUMNS)).to_parquet(self.folder / f"{name}.parquet", index=False)
        self.shards.append({"name": name, "n_tokens": n})

    def close(self) -> None:
        if self._rows:
            self._flush(len(self._rows))


@torch.no_grad()
def collect_diffs(
    lm: LoadedModel,
    interventions: list,
    vectors: dict,
    sequences: list[Sequence],
    layers: list[int],
    out_dir: str | Path,
    *,
    positions: str = "all",
    max_shard_bytes: int = 256 * 2**20,
    batch_size: int = 8,
    dtype: torch.dtype = torch.float32,
    progress: Callable[[int], None] | None = None,
    info: dict | None = None,
) -> dict:
    """Run `sequences` teacher-forced through the base and the steered model and write dF per token for each
    layer in `layers` into `out_dir` (see the module docstring). `positions`: `all` tokens or `generated`
    only. Returns the manifest."""
    if positions not in ("all", "generated"):
        raise MechsteerError(f"diffsae positions {positions!r} is unknown", hint="use all or generated")
    n_layers = lm.shape.n_layers
    bad = [i for i in layers if not 0 <= i < n_layers]
    if bad or not layers:
        raise MechsteerError(f"diffsae layers {layers} are not blocks of this model (0..{n_layers - 1})")
    layers = sorted(set(layers))
    out_dir = Path(out_dir)
    with atomic_dir(out_dir, prefix=f".{out_dir.name}.") as tmp:
        writer = ShardWriter(tmp, layers, lm.shape.d_model, max_shard_bytes, dtype)
        with open(tmp / "sequences.jsonl", "w") as seq_file:
            for start in range(0, len(sequences), batch_size):
                batch = sequences[start : start + batch_size]
                ids, mask = _pad_left(batch, lm.tokenizer.pad_token_id or 0, lm.device)
                base = _capture(lm, ids, mask, layers)
                with steering(lm.model, lm.adapter, interventions, vectors, tokenizer=lm.tokenizer) as ctx:
                    steered = _capture(lm, ids, mask, layers, ctx, [len(s.prompt_ids) for s in batch])
                width = ids.shape[1]
                diffs: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
                rows: list[dict] = []
                for r, s in enumerate(batch):
                    n_p, n = len(s.prompt_ids), len(s.ids)
                    first = 0 if positions == "all" else n_p
                    cols = slice(width - n + first, width)
                    for layer in layers:
                        diffs[layer].append((steered[layer][r, cols] - base[layer][r, cols]).cpu())
                    for p in range(first, n):
                        rows.append(
                            {
                                "seq": start + r,
                                "problem": s.problem,
                                "sample": s.sample,
                                "position": p,
                                "gen_pos": p - n_p if p >= n_p else -1,
                                "is_generated": p >= n_p,
                                "correct": s.correct,
                                "token_id": s.ids[p],
                            }
                        )
                    seq_file.write(json.dumps({"seq": start + r, **{k: v for k, v in asdict(s).items()}}) + "\n")
                writer.add({layer: torch.cat(v) for layer, v in diffs.items()}, rows)
                if progress:
                    progress(len(batch))
        writer.close()
        manifest = {
            "layers": layers,
            "d_model": lm.shape.d_model,
            "dtype": str(dtype).removeprefix("torch."),
            "positions": positions,
            "n_sequences": len(sequences),
            "n_tokens": sum(s["n_tokens"] for s in writer.shards),
            "shards": writer.shards,
            "max_shard_bytes": max_shard_bytes,
            "model": lm.provenance() if hasattr(lm, "provenance") else {},
            "interventions": [i.model_dump() if hasattr(i, "model_dump") else dict(i) for i in interventions],
            **(info or {}),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, default=str))
    return manifest


# -------------------------------------------------------------------------------------------- reading
def read_manifest(folder: str | Path) -> dict:
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        raise MechsteerError(
            f"{folder} holds no diffsae collection (no manifest.json)", hint="run collect_diffs into it first"
        )
    return json.loads(path.read_text())


def load_shard(folder: str | Path, name: str, layer: int) -> torch.Tensor:
    from safetensors import safe_open

    with safe_open(str(Path(folder) / f"{name}.safetensors"), framework="pt") as f:
        return f.get_tensor(f"layer_{layer}").float()


def load_layer(folder: str | Path, layer: int) -> torch.Tensor:
    """All tokens' dF at one layer, [n_tokens, d_model] float32 (in shard order = index order)."""
    m = read_manifest(folder)
    if layer not in m["layers"]:
        raise MechsteerError(f"{folder} has no layer {layer}; collected layers: {m['layers']}")
    return torch.cat([load_shard(folder, s["name"], layer) for s in m["shards"]])


def load_index(folder: str | Path):
    """The per-token index of all shards (pandas DataFrame, shard order)."""
    import pandas as pd

    m = read_manifest(folder)
    return pd.concat([pd.read_parquet(Path(folder) / f"{s['name']}.parquet") for s in m["shards"]], ignore_index=True)


def load_sequences(folder: str | Path) -> list[dict]:
    with open(Path(folder) / "sequences.jsonl") as f:
        return [json.loads(line) for line in f]
