"""Float tolerances from the dtype and the magnitude of what is compared, never from one CPU.

Two computations of one quantity that differ only in rounding (another CPU's kernels: AVX-512, AVX2 and the
plain C kernels sum in different orders and block matrix products differently; another batch shape; a KV
cache; replay from a captured state instead of a full forward) differ by about eps(dtype) x magnitude per
rounding, and independent roundings add up like a random walk. So a comparison allows

    tolerance(dtype, magnitude, n_ops) = SAFETY x eps(dtype) x magnitude x sqrt(n_ops)

- `magnitude`: the size of the terms the value is computed from, not of the value itself (a sum that cancels
  to a small number keeps the rounding error of its large terms); for logits, the largest |logit|;
- `n_ops`: how many roundings accumulate on the way: the length of an inner product, or for a forward pass
  `forward_ops(model)`.

SAFETY = 4: on the tiny test models (tests/conftest.py) float32 logits differ from the float64 logits of the
same weights by 1.0-1.7 x eps x max|logit| x sqrt(forward_ops) (measured with the AVX-512, AVX2 and default
kernels, `ATEN_CPU_CAPABILITY`), and two float32 computations can err in opposite directions: 2 x 1.7 < 4.
A wrong implementation (a missed position, a wrong layer, a wrong sign, another formula) moves these numbers
by orders of magnitude more; the tests check that their steering changes the compared values by far more
than the tolerance.
"""

from __future__ import annotations

import math

import torch

SAFETY = 4.0


def tolerance(dtype: torch.dtype, magnitude: float = 1.0, n_ops: int = 1) -> float:
    """Absolute tolerance for two roundings-apart computations in `dtype` of a value built from terms of size
    `magnitude` through `n_ops` accumulated roundings."""
    return SAFETY * torch.finfo(dtype).eps * float(magnitude) * math.sqrt(max(int(n_ops), 1))


def forward_ops(model) -> int:
    """Roundings accumulated along one forward pass of a decoder, for `tolerance`: per block the attention
    and MLP inner products (hidden + intermediate size terms)."""
    c = model.config
    c = c.get_text_config() if hasattr(c, "get_text_config") else c
    return c.num_hidden_layers * (c.hidden_size + c.intermediate_size)


def logits_tolerance(model, *logits: torch.Tensor, dtype: torch.dtype | None = None) -> float:
    """`tolerance` for logits of `model` (computed in `dtype`, default: the model's parameters' dtype), with
    the largest |logit| among `logits` as the magnitude."""
    dtype = dtype or next(model.parameters()).dtype
    # -inf entries (tokens a sampler never picks) carry no rounding error
    magnitude = max(float(t.detach()[t.detach().isfinite()].abs().max()) for t in logits)
    return tolerance(dtype, magnitude, forward_ops(model))


def assert_close(got: torch.Tensor, want: torch.Tensor, atol: float, msg: str = "") -> None:
    """torch.testing.assert_close with an absolute tolerance only (the tolerance already carries the
    magnitude), comparing in float64."""
    torch.testing.assert_close(
        got.double(), want.double(), rtol=0, atol=atol, msg=(lambda m: f"{msg}: {m}") if msg else None
    )


def assert_greedy_is_robust(scores: torch.Tensor, tol: float) -> None:
    """Two computations pick the same greedy tokens on any CPU only if no step is a near tie: assert that at
    every step of `scores` [..., steps, vocab] the best logit leads the second by more than twice `tol`, so an
    equality of generated tokens rests on the numbers and not on one machine's rounding (a failure here means
    the test's seed or prompt needs changing, not the code)."""
    top2 = scores.detach().double().topk(2, dim=-1).values
    gap = float((top2[..., 0] - top2[..., 1]).min())
    assert gap > 2 * tol, f"a greedy step is a near tie (top-2 gap {gap:.3g} <= 2 x {tol:.3g}): pick another seed"
