"""The `diffsae` readout (paper section 8): a TopK sparse autoencoder trained on the activation differences
dF = h(steered) - h(base) a condition causes, and its features ranked by how differently often they fire on
correct and incorrect generations. Implementation: `mechsteer.readouts.diffsae` over `mechsteer.diffsae`."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from mechsteer.spec.base import StrictModel
from mechsteer.spec.kinds import readout_kind
from mechsteer.spec.kinds.readouts import PromptSource
from mechsteer.spec.layers import LayerSelection


class SAESpec(StrictModel):
    """The TopK SAE's size and training budget."""

    width: int = Field(default=1024, gt=0)
    """Number of latents (d_sae)."""
    k: int = Field(default=16, gt=0)
    """Active latents per token."""
    lr: float = Field(default=5e-4, gt=0)
    """Adam learning rate."""
    tokens: int = Field(default=200_000, gt=0)
    """Training tokens (steps = tokens / batch_size; the data repeats in epochs when smaller)."""
    batch_size: int = Field(default=256, gt=0)
    """Tokens per step."""
    seed: int = 0
    """Initialisation and data-order seed."""
    aux_k: int | None = Field(default=None, gt=0)
    """Latents of the auxiliary loss that revives dead latents (null: min(d_model / 2, width))."""
    dead_tokens: int = Field(default=20_000, gt=0)
    """A latent silent for this many training tokens counts as dead."""
    checkpoint_every: int = Field(default=0, ge=0)
    """Steps between resumable checkpoints (0: only at the end)."""


@readout_kind(
    "diffsae", impl="mechsteer.readouts.diffsae:run_diffsae_readout", report="mechsteer.readouts.diffsae:report_section"
)
class DiffSAEReadout(PromptSource):
    """Generate completions to task problems under the condition (graded), run the base and the steered model
    teacher-forced on them, train a TopK SAE on dF at `layers`, and rank its features by firing frequency on
    correct vs incorrect generations (Fisher exact test, Benjamini-Hochberg q-values), with example contexts
    and each feature decoder's logit lens. The SAE is saved in SAELens' format. Runs on steered conditions
    only (use `conditions:` to pick them)."""

    steers_itself: ClassVar[bool] = True
    kind: Literal["diffsae"] = "diffsae"
    layers: LayerSelection = Field(default_factory=lambda: {"depth": 0.4})
    """Blocks whose output difference is analysed (one SAE per block)."""
    samples: int = Field(default=1, gt=0)
    """Completions per problem."""
    temperature: float = Field(default=1.0, gt=0)
    """Sampling temperature of the completions (the paper analyses sampled generations)."""
    max_new_tokens: int = Field(default=64, gt=0)
    """New tokens per completion."""
    batch_size: int = Field(default=16, gt=0)
    """Sequences per generate / forward call."""
    grader: Literal["lenient", "boxed"] = "lenient"
    """What counts as correct: `lenient` (boxed or last number) or `boxed` (the paper's grader)."""
    positions: Literal["all", "generated"] = "all"
    """Tokens whose dF trains the SAE (features are always ranked on generated tokens)."""
    max_shard_bytes: int = Field(default=64 * 2**20, gt=0)
    """Size bound of each dF shard on disk (RAM stays bounded)."""
    sae: SAESpec = SAESpec()
    """The SAE."""
    top_n: int = Field(default=10, gt=0)
    """Features reported each way (towards correct, towards incorrect)."""
    n_contexts: int = Field(default=5, gt=0)
    """Example contexts per reported feature."""
    window: int = Field(default=8, gt=0)
    """Tokens of context on each side."""
    lens_k: int = Field(default=10, gt=0)
    """Tokens in each decoder row's logit lens."""
    lens_through_norm: bool = True
    """Apply the final norm before the unembedding in the logit lens."""
    alpha: float = Field(default=0.05, gt=0, lt=1)
    """False-discovery rate of the Benjamini-Hochberg correction."""
    min_act_frac: float = Field(default=0.1, ge=0, lt=1)
    """A feature fires on a token when its activation exceeds this fraction of its largest activation (a TopK
    SAE fills k latents on every token, so "non-zero" would count weak fills as firing)."""

    def seeds_to_run(self, seeds: list[int]) -> list[int]:
        """Every seed: the completions are sampled (temperature > 0)."""
        return list(seeds)

    def work(self, ctx):
        """Completions sampled under the condition, teacher-forced steered and unsteered (the SAE's own training
        is small next to them)."""
        return self.sampled_work(ctx, self.samples, self.max_new_tokens, self.batch_size, passes=2)

    def rehearsed(self, r):
        """The prompt source's caps, and a small SAE (`r.caps.sae`) trained on the few tokens there are."""
        out = super().rehearsed(r)
        sae = out.sae.model_copy(update={**r.caps.sae, "aux_k": None, "checkpoint_every": 0})
        r.note(f"diffsae: SAE width {out.sae.width} -> {sae.width}, k {out.sae.k} -> {sae.k}, {sae.tokens} tokens")
        return out.model_copy(update={"sae": sae})
