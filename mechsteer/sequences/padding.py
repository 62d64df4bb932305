"""One padder: token id lists into a padded batch, on the left (prompts about to be continued: every row's
last token is in the last column) or on the right (teacher-forced sequences), with one pad-id rule."""

from __future__ import annotations

from collections.abc import Sequence as Seq
from dataclasses import dataclass

import torch


def pad_id(tokenizer) -> int:
    """The id that fills padding: the tokenizer's pad token, else its eos token, else 0. Padding is always
    masked out, so the choice only has to be a valid id."""
    for i in (getattr(tokenizer, "pad_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        if i is not None:
            return int(i)
    return 0


@dataclass
class Prompts:
    """A left-padded batch of prompts."""

    ids: torch.Tensor
    """(P, Lp) int64."""
    mask: torch.Tensor
    """(P, Lp) int64, 0 = pad."""

    @property
    def lengths(self) -> torch.Tensor:
        """Real tokens per prompt (padding excluded)."""
        return self.mask.sum(dim=1)

    def positions(self) -> torch.Tensor:
        """Position ids that ignore left padding (0 at each row's first real token)."""
        return (self.mask.cumsum(dim=1) - 1).clamp(min=0)

    def token_lists(self) -> list[list[int]]:
        """Each row's tokens without padding."""
        return [row[m.bool()].tolist() for row, m in zip(self.ids, self.mask)]


def pad(
    token_lists: Seq[Seq[int]], pad_value: int, side: str, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask) int64 tensors [n, longest]: each list placed at the `side` ("left" or "right") and the
    rest filled with `pad_value` (mask 0)."""
    if side not in ("left", "right"):
        raise ValueError(f"side must be left or right, got {side!r}")
    if not token_lists:
        raise ValueError("nothing to pad")
    width = max(len(t) for t in token_lists)
    ids = torch.full((len(token_lists), width), int(pad_value), dtype=torch.long)
    mask = torch.zeros((len(token_lists), width), dtype=torch.long)
    for r, toks in enumerate(token_lists):
        if not len(toks):
            continue
        cols = slice(width - len(toks), width) if side == "left" else slice(0, len(toks))
        ids[r, cols] = torch.tensor(list(toks), dtype=torch.long)
        mask[r, cols] = 1
    return ids.to(device), mask.to(device)


def pad_prompts(token_lists: Seq[Seq[int]], pad_id: int, device: torch.device | str = "cpu") -> Prompts:
    """Left-pad token lists into a `Prompts` batch (every prompt needs at least one token)."""
    if not token_lists or any(len(t) == 0 for t in token_lists):
        raise ValueError("every prompt needs at least one token")
    return Prompts(*pad(token_lists, pad_id, "left", device))


def pad_right(token_lists: Seq[Seq[int]], pad_id: int, device: torch.device | str = "cpu"):
    """Right-pad token lists: (ids, mask), row r's tokens in columns 0..len-1."""
    return pad(token_lists, pad_id, "right", device)
