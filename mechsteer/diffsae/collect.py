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
* `sequences.jsonl`: one line per sequence: `seq`, `problem`, `correct`, `completion` (text) and the
  sampled `Sequence` (`prompt_ids`, `generated_ids`, `finished`, `prompt`, `sample`);
* `manifest.json`: layers, d_model, dtype, shard names and token counts, the condition and the model.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from mechsteer.atomic import atomic_dir
from mechsteer.capture import block_outputs
from mechsteer.errors import MechsteerError
from mechsteer.interventions import steering
from mechsteer.models.loading import LoadedModel
from mechsteer.sequences import SamplingSettings, Sequence, pad, pad_id

HEADER_RESERVE = 4096
"""Bytes kept free in each shard for the safetensors JSON header (a few hundred bytes in practice)."""
INDEX_COLUMNS = ("seq", "problem", "sample", "position", "gen_pos", "is_generated", "correct", "token_id")


@dataclass(frozen=True)
class Graded:
    """A sampled sequence with the problem it answers and its grade (None: ungraded)."""

    sequence: Sequence
    problem: str
    correct: bool | None = None
    completion: str = ""
    """The completion as text (for readers of `sequences.jsonl`)."""

    def record(self) -> dict:
        """Its line in `sequences.jsonl` (without the `seq` index)."""
        return {
            "problem": self.problem,
            "correct": self.correct,
            "completion": self.completion,
            **self.sequence.to_json(),
        }


# -------------------------------------------------------------------------------------------- generation
def generate_and_grade(
    lm: LoadedModel,
    interventions: list,
    vectors: dict,
    problems: list[dict],
    settings: SamplingSettings,
    *,
    template: str = "qwen_math",
    grader: str = "lenient",
    progress: Callable[[int], None] | None = None,
) -> list[Graded]:
    """Sample completions to task problems (`{"id", "problem", "answer"}`) under the condition and grade them.

    The one sampler (`mechsteer.sequences.sample` through `generation.sample_texts`): the sampled token ids
    are kept (decoding and re-tokenizing text is not always the identity), and the stop token, when emitted,
    stays in the completion: its activation difference is part of the generation. `grader`: `lenient`
    (boxed or last number) or `boxed` (the paper's strict grader)."""
    from mechsteer.eval.grading import grade
    from mechsteer.generation import render_prompts, sample_texts

    if grader not in ("lenient", "boxed"):
        raise MechsteerError(f"diffsae grader {grader!r} is unknown", hint="use lenient or boxed")
    with steering(lm.model, lm.adapter, interventions, vectors, tokenizer=lm.tokenizer) as ctx:
        prompts = render_prompts(lm, [p["problem"] for p in problems], template, ctx.prompt_suffix)
        seqs = sample_texts(lm, ctx, prompts, settings, on_batch=progress)
    out = []
    for q in seqs:
        text = q.text(lm.tokenizer)
        g = grade(text, str(problems[q.prompt]["answer"]), template=template)
        ok = g.boxed_correct if grader == "boxed" else g.lenient_correct
        out.append(Graded(q, str(problems[q.prompt]["id"]), bool(ok), text))
    return out


# -------------------------------------------------------------------------------------------- capture
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
        """Buffer the dF rows of some tokens (per layer, with their index rows) and write every full shard."""
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
        """Write the last, partly filled shard."""
        if self._rows:
            self._flush(len(self._rows))


@torch.no_grad()
def collect_diffs(
    lm: LoadedModel,
    interventions: list,
    vectors: dict,
    sequences: list[Graded],
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
                ids, mask = pad([g.sequence.ids for g in batch], pad_id(lm.tokenizer), "left", lm.device)
                pos = (mask.cumsum(dim=1) - 1).clamp(min=0)
                inputs = {"input_ids": ids, "attention_mask": mask, "position_ids": pos}
                base = block_outputs(lm.model, lm.adapter, layers, **inputs)
                with steering(lm.model, lm.adapter, interventions, vectors, tokenizer=lm.tokenizer) as ctx:
                    # captured after the condition's hooks: block l's output includes block l's steering
                    ctx.begin([g.sequence.prompt_length for g in batch])
                    steered = block_outputs(lm.model, lm.adapter, layers, **inputs)
                width = ids.shape[1]
                diffs: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
                rows: list[dict] = []
                for r, g in enumerate(batch):
                    q = g.sequence
                    n_p, n, ids_r = q.prompt_length, len(q.ids), q.ids
                    first = 0 if positions == "all" else n_p
                    cols = slice(width - n + first, width)
                    for layer in layers:
                        diffs[layer].append((steered[layer][r, cols] - base[layer][r, cols]).cpu())
                    for p in range(first, n):
                        rows.append(
                            {
                                "seq": start + r,
                                "problem": g.problem,
                                "sample": q.sample,
                                "position": p,
                                "gen_pos": p - n_p if p >= n_p else -1,
                                "is_generated": p >= n_p,
                                "correct": g.correct,
                                "token_id": ids_r[p],
                            }
                        )
                    seq_file.write(json.dumps({"seq": start + r, **g.record()}) + "\n")
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
    """A collection's `manifest.json` (layers, d_model, shards); a folder without one is an error naming the fix."""
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        raise MechsteerError(
            f"{folder} holds no diffsae collection (no manifest.json)", hint="run collect_diffs into it first"
        )
    return json.loads(path.read_text())


def load_shard(folder: str | Path, name: str, layer: int) -> torch.Tensor:
    """Layer `layer`'s dF rows of shard `name` as float32 [n_tokens, d_model]."""
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
    """Every line of the collection's `sequences.jsonl` (one per sequence: problem, correctness, tokens)."""
    with open(Path(folder) / "sequences.jsonl") as f:
        return [json.loads(line) for line in f]
