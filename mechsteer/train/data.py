"""Training prompts: load problems (bundled mini task, jsonl, hub dataset), render and tokenize them once, and
serve P per step in a seeded order.

The order is a pure function of (seed, step): epoch e is a permutation drawn from a generator seeded with
(seed, e), and step s takes items s*P .. s*P+P-1 of the concatenated epochs. Nothing about the order lives
in mutable state, so a resumed run sees exactly the prompts the uninterrupted run would have seen.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from mechsteer.errors import MechsteerError
from mechsteer.eval.datasets import is_unicode


@dataclass(frozen=True)
class TrainItem:
    """One training problem with its gold answer and its encoded prompt."""

    id: str
    problem: str
    answer: str
    prompt_ids: tuple[int, ...]


def load_problems(data, resolve_path, seed: int) -> list[dict]:
    """[{id, problem, answer}] for a `spec.training` data entry (rows without an answer are dropped)."""
    if data.kind == "mini":
        from mechsteer.eval.mini_task import generate_mini, mini_pool

        kw = {"variant": data.variant} if data.variant else {}
        # The data set is fixed (seed 0); the training seed only orders it (PromptPool).
        rows = generate_mini(split="train", n=data.n or len(mini_pool("train", **kw)), **kw)
    elif data.kind == "jsonl":
        rows = _read_jsonl(resolve_path(data.path), data.problem_field, data.answer_field)
    elif data.kind == "hub":
        rows = _read_hub(data)
    else:  # pragma: no cover - the schema rejects it
        raise MechsteerError(f"unknown data kind {data.kind!r}")
    rows = [r for r in rows if str(r.get("answer", "")).strip()]
    if not rows:
        raise MechsteerError("the training data has no problem with a non-empty answer")
    return rows


def _read_jsonl(path: Path, pf: str, af: str) -> list[dict]:
    if not path.is_file():
        raise MechsteerError(f"training data file not found: {path}")
    rows = []
    with path.open("rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise MechsteerError(
                    f"{path}:{n}: not UTF-8 text ({e.reason} at byte {e.start})", hint="save the file as UTF-8"
                ) from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise MechsteerError(f"{path}:{n}: not valid JSON ({e.msg})") from None
            except RecursionError:
                raise MechsteerError(f"{path}:{n}: JSON nested too deeply") from None
            if not isinstance(row, dict):
                raise MechsteerError(
                    f"{path}:{n}: a row must be a JSON object with fields {pf!r} and {af!r}, got {type(row).__name__}",
                    hint="write one object per line, e.g. " + json.dumps({pf: "...", af: "..."}),
                )
            if not is_unicode(line, row):
                raise MechsteerError(f"{path}:{n}: not valid Unicode text (an escaped lone surrogate such as \\ud800)")
            if pf not in row or af not in row:
                raise MechsteerError(
                    f"{path}:{n}: a row needs fields {pf!r} and {af!r}; found {sorted(row)}",
                    hint="set data.problem_field / data.answer_field",
                )
            rows.append({"id": str(row.get("id", n - 1)), "problem": str(row[pf]), "answer": str(row[af]).strip()})
    return rows


def _read_hub(data) -> list[dict]:
    from mechsteer.hub import hub_unreachable, offline_setting

    # An offline setting lets `datasets` use its local cache (no retries then); without one, no connection
    # (probed once per process) fails at once instead of after the download retries.
    offline = offline_setting(("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    reason = None if offline else hub_unreachable(())
    if reason:
        raise MechsteerError(
            f"cannot load hub dataset {data.id!r} (split {data.split!r}): the Hugging Face hub is unreachable "
            f"({reason})",
            hint="download it where the hub is reachable and use `data: {kind: jsonl, path: ...}`",
        )
    try:
        import datasets

        ds = datasets.load_dataset(data.id, split=data.split, revision=data.revision)
    except Exception as e:  # noqa: BLE001 - datasets raises many types for offline / missing / gated
        raise MechsteerError(
            f"cannot load hub dataset {data.id!r} (split {data.split!r}): {str(e).splitlines()[0] if str(e) else e}",
            hint="download it where the hub is reachable and use `data: {kind: jsonl, path: ...}`, or unset "
            "HF_DATASETS_OFFLINE when the hub is reachable",
        ) from None
    missing = [f for f in (data.problem_field, data.answer_field) if f not in ds.column_names]
    if missing:
        raise MechsteerError(f"hub dataset {data.id!r} has no columns {missing}; columns: {ds.column_names}")
    return [
        {"id": str(i), "problem": str(r[data.problem_field]), "answer": str(r[data.answer_field] or "").strip()}
        for i, r in enumerate(ds)
    ]


def encode_prompts(lm, problems: list[str], template: str, prefix: str | None) -> list[list[int]]:
    """Render with the paper's template (and forced prefix) and tokenize each prompt without padding."""
    from mechsteer.generation import render_prompts, uses_chat_template

    texts = render_prompts(lm, problems, template, prefix or "")
    add_special = not uses_chat_template(lm)
    return [lm.tokenizer(t, add_special_tokens=add_special)["input_ids"] for t in texts]


class PromptPool:
    """Tokenized training items served P per step in a seeded, resumable order."""

    def __init__(self, items: list[TrainItem], prompts_per_step: int, seed: int):
        if not items:
            raise MechsteerError("no training prompts left (check data.limit and data.max_prompt_tokens)")
        self.items, self.P, self.seed = items, prompts_per_step, seed
        self._perms: dict[int, list[int]] = {}

    def __len__(self) -> int:
        return len(self.items)

    def _perm(self, epoch: int) -> list[int]:
        if epoch not in self._perms:
            gen = torch.Generator(device="cpu").manual_seed(self.seed * 1_000_003 + epoch)
            self._perms[epoch] = torch.randperm(len(self.items), generator=gen).tolist()
        return self._perms[epoch]

    def batch(self, step: int) -> list[TrainItem]:
        """The P items of optimizer step `step` (0-based)."""
        out = []
        for k in range(step * self.P, (step + 1) * self.P):
            epoch, i = divmod(k, len(self.items))
            out.append(self.items[self._perm(epoch)[i]])
        return out


def build_pool(
    lm,
    data,
    resolve_path,
    *,
    prompts_per_step: int,
    seed: int,
    max_prompt_tokens: int | None,
    rows: list[dict] | None = None,
    max_length: int | None = None,
) -> PromptPool:
    """Load, shuffle (seed), limit, render, tokenize and length-filter the training problems.

    A prompt longer than `max_prompt_tokens` is dropped (the authors drop prompts over max_seq_length); one
    that leaves no room for a single new token under `max_length` is dropped too, with a warning (it would
    otherwise pass the length filter and abort the run at its first step)."""
    rows = load_problems(data, resolve_path, seed) if rows is None else rows
    gen = torch.Generator(device="cpu").manual_seed(seed)
    order = torch.randperm(len(rows), generator=gen).tolist()
    rows = [rows[i] for i in order]
    if data.limit:
        rows = rows[: data.limit]
    ids = encode_prompts(lm, [r["problem"] for r in rows], data.template, data.prefix_token)
    items, no_room = [], []
    for r, t in zip(rows, ids):
        if max_prompt_tokens is not None and len(t) > max_prompt_tokens:
            continue
        if max_length is not None and len(t) >= max_length:
            no_room.append(str(r["id"]))
            continue
        items.append(TrainItem(str(r["id"]), r["problem"], str(r["answer"]), tuple(t)))
    if no_room:
        warnings.warn(
            f"{len(no_room)} training prompt(s) fill model.max_length ({max_length} tokens) and leave no "
            f"room to generate; dropped: {', '.join(no_room[:5])}{' ...' if len(no_room) > 5 else ''}",
            stacklevel=2,
        )
    return PromptPool(items, prompts_per_step, seed)
