"""The two values every sampler caller shares: `SamplingSettings` (what to sample) and `Sequence` (what was
sampled, as token ids)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class SamplingSettings:
    """How completions are sampled. Explicit values only: a checkpoint's `generation_config` defaults
    (temperature, top_p, repetition penalty, ...) never apply.

    Row `p * samples + k` of a batch is sample k of prompt p. Sampling draws from one `torch.Generator`
    seeded with `seed` per call of `mechsteer.sequences.sample` (or per batch of `sample_rollouts`), so the
    same settings on the same prompts, batch size and machine give the same ids."""

    max_new_tokens: int
    """Cap on generated tokens per row, the stop token included (a per-prompt budget may lower it)."""
    temperature: float = 0.0
    """0 = greedy (argmax); otherwise softmax(logits / temperature)."""
    top_p: float = 1.0
    """Nucleus sampling mass (1 = off, as the paper samples)."""
    top_k: int = 0
    """Keep the k most likely tokens (0 = off, as the paper samples)."""
    samples: int = 1
    """Completions per prompt (the RLOO group size G)."""
    seed: int = 0
    stop_ids: tuple[int, ...] = ()
    """Token ids that end a row (kept as its last generated id)."""
    batch_size: int = 8
    """Prompts per forward batch (rows = batch_size x samples)."""

    def __post_init__(self) -> None:
        if self.max_new_tokens <= 0:
            raise ValueError(f"max_new_tokens must be positive, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0 or self.samples < 1 or self.batch_size < 1:
            raise ValueError(f"top_k >= 0, samples >= 1 and batch_size >= 1 needed, got {self}")
        object.__setattr__(self, "stop_ids", tuple(int(i) for i in self.stop_ids))

    @property
    def greedy(self) -> bool:
        """True at temperature 0: decode by argmax, no sampling."""
        return self.temperature == 0.0

    def replace(self, **changes) -> SamplingSettings:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def key(self) -> dict:
        """Every field, JSON-ready (cache keys and records)."""
        d = dataclasses.asdict(self)
        d["stop_ids"] = list(self.stop_ids)
        return d


@dataclass(frozen=True)
class Sequence:
    """One prompt and the completion sampled for it, as the token ids the model saw and produced (never text
    re-tokenised: decoding and encoding again is not always the identity)."""

    prompt_ids: tuple[int, ...]
    """The prompt's tokens (no padding)."""
    generated_ids: tuple[int, ...]
    """The sampled tokens; when `finished`, the stop token that ended the row is the last one."""
    finished: bool
    """True when a stop token ended the completion, False when it ran out of its token budget."""
    prompt: int = 0
    """Index of its prompt in the list the sampler was given."""
    sample: int = 0
    """Which of that prompt's samples this is (0..samples-1)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "prompt_ids", tuple(int(i) for i in self.prompt_ids))
        object.__setattr__(self, "generated_ids", tuple(int(i) for i in self.generated_ids))

    @property
    def ids(self) -> list[int]:
        """Prompt and completion, the sequence a teacher-forced pass runs."""
        return [*self.prompt_ids, *self.generated_ids]

    @property
    def prompt_length(self) -> int:
        """Tokens in the prompt (where the completion starts in the full sequence)."""
        return len(self.prompt_ids)

    @property
    def n_generated(self) -> int:
        """Generated tokens, the stop token included (what the paper's length statistics count)."""
        return len(self.generated_ids)

    @property
    def completion_ids(self) -> tuple[int, ...]:
        """The generated tokens without the stop token that ended them."""
        return self.generated_ids[:-1] if self.finished and self.generated_ids else self.generated_ids

    def text(self, tokenizer) -> str:
        """The completion as text (stop token and other special tokens left out)."""
        return tokenizer.decode(list(self.completion_ids), skip_special_tokens=True)

    def first_token(self, tokenizer) -> str:
        """The first completion token as text ("" when the first token was a stop token)."""
        return tokenizer.decode(list(self.completion_ids[:1])) if self.completion_ids else ""

    def to_json(self) -> dict:
        """The sequence as a JSON object (ids as lists), for the shared `work/sequences/` files."""
        return {
            "prompt_ids": list(self.prompt_ids),
            "generated_ids": list(self.generated_ids),
            "finished": self.finished,
            "prompt": self.prompt,
            "sample": self.sample,
        }

    @classmethod
    def from_json(cls, d: dict) -> Sequence:
        """The sequence `to_json` wrote."""
        return cls(d["prompt_ids"], d["generated_ids"], bool(d["finished"]), int(d["prompt"]), int(d["sample"]))


def only_finished(sequences: Iterable[Sequence]) -> list[Sequence]:
    """The sequences that ended with a stop token (the paper's token-shift analysis drops truncated ones)."""
    return [s for s in sequences if s.finished]
