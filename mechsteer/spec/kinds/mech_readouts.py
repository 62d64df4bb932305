"""Mechanistic readout kinds (issue 8; paper sections 4.3-4.8 and 4.12): `logit_lens`, `vector_stats`,
`non_english` (about the condition's vectors; `logit_lens` can also measure the effective unembedding bias),
`persistence`, `token_shift` and `tokenwise` (teacher-forced passes that the readout runs itself: the model is
unsteered while they run, `steers_itself`). Implementations: `mechsteer.readouts.<kind>_kind`.

Each spec can list problems that need the whole study (`study_problems`, called by `spec.checks` before any
model loads): layer references against known model shapes, unknown reference conditions, conditions that
lack the intervention the readout reads.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from mechsteer.spec.kinds import readout_kind
from mechsteer.spec.kinds.measurements import MeasurementBase
from mechsteer.spec.kinds.readouts import PromptSource
from mechsteer.spec.layers import LayerSelection, selection_problems

Problem3 = tuple[tuple, str, str | None]
"""(sub-path under the readout, message, hint)."""


def applied_conditions(spec, conditions: dict[str, Any]) -> dict[str, Any]:
    """The study's conditions (name -> intervention list or sweep) a readout runs under."""
    return {n: c for n, c in conditions.items() if spec.applies_to(n)}


def _layer_problems(spec, fields: tuple[str, ...], shapes: dict) -> list[Problem3]:
    out = []
    for f in fields:
        sel = getattr(spec, f, None)
        if sel is None:
            continue
        for mname, n_layers, msg in selection_problems(sel, shapes):
            out.append(((f,), f"{msg} (model {mname!r})", f"the model has blocks 0..{n_layers - 1}"))
    return out


def _missing_kind(spec, conditions: dict, kinds: tuple[str, ...], why: str) -> list[Problem3]:
    """Conditions the readout runs under whose intervention list has none of `kinds` (sweeps are skipped:
    their interventions are known per model)."""
    out = []
    for name, cond in applied_conditions(spec, conditions).items():
        if hasattr(cond, "sweep"):
            continue
        if not any(getattr(iv, "kind", None) in kinds for iv in getattr(cond, "interventions", cond)):
            field = ("conditions",) if spec.condition_patterns() is not None else ("kind",)
            out.append(
                (
                    field,
                    f"{spec.kind} runs under condition {name!r}, which has no {' or '.join(kinds)} "
                    f"intervention ({why})",
                    "restrict the readout with `conditions: [...]` to conditions that have one",
                )
            )
    return out


class _Sampled(PromptSource):
    """Prompts, and how the teacher-forced sequences are sampled from them."""

    temperature: float = Field(default=1.0, ge=0.0)
    """Sampling temperature of the sequences (0 = greedy; the paper samples at 1)."""
    max_new_tokens: int = Field(default=32, gt=0)
    """New tokens per sampled sequence."""
    samples: int = Field(default=1, gt=0)
    """Sequences per prompt."""
    batch_size: int = Field(default=4, gt=0)
    """Sequences per generate / teacher-forced forward call (memory: batch x length x vocab logits)."""
    only_finished: bool = False
    """Analyse only sequences that ended with a stop token (truncated ones are dropped and counted); the
    authors' token-shift scripts keep only finished samples."""

    @model_validator(mode="after")
    def _greedy_one_sample(self):
        if self.temperature == 0.0 and self.samples != 1:
            raise ValueError("greedy sequences (temperature 0) are identical: set samples: 1")
        return self

    def seeds_to_run(self, seeds: list[int]) -> list[int]:
        """Every seed when the sequences are sampled; greedy ones are the same under every seed."""
        return list(seeds) if self.temperature > 0 else list(seeds[:1])

    teacher_passes: ClassVar[int] = 2
    """Teacher-forced passes over each sampled sequence (with and without the condition, by default)."""

    def rehearsed(self, r):
        """The prompt source's caps; a readout that keeps only finished samples gets four times the token cap and
        twice the prompts, so that twins' samples end (each token ends one with probability
        `mechsteer.models.twin.STOP_PROBABILITY`) and the readout has sequences to analyse."""
        out = super().rehearsed(r)
        if self.only_finished:
            more = {"max_new_tokens": min(self.max_new_tokens, 4 * r.caps.new_tokens)}
            if self.task is not None:
                more["limit"] = r.caps.cap(self.limit, 2 * r.caps.problems)
            out = out.model_copy(update=more)
        return out

    def work(self, ctx):
        """The sequences sampled under the condition, then `teacher_passes` teacher-forced passes over them."""
        return self.sampled_work(ctx, self.samples, self.max_new_tokens, self.batch_size, self.teacher_passes)


class _VectorRows(MeasurementBase):
    """Which vector sets of the condition, and which of their rows, a vector readout analyses."""

    vectors: list[str] | None = None
    """Vector sets to analyse (null: every set the condition's interventions read)."""
    layers: LayerSelection = "all"
    """Rows (layers) of each set to analyse (`all`: every row the set has)."""

    def seeds_to_run(self, seeds: list[int]) -> list[int]:
        """The first seed: the vectors' statistics involve no sampling."""
        return list(seeds[:1])

    def work(self, ctx):
        """None on the GPU: a vector readout reads the vectors and the unembedding, not tokens."""
        from mechsteer.spec.work import Work

        return Work()


@readout_kind(
    "logit_lens",
    impl="mechsteer.readouts.logit_lens_kind:run",
    report="mechsteer.readouts.logit_lens_kind:report_section",
)
class LogitLensReadout(_Sampled, _VectorRows):
    """Top/bottom-k tokens of each vector row through the unembedding (dot, cosine, softmax prob), without and
    with the final norm. With `unembedding_bias`, also the effective unembedding bias u_l: the mean shift of
    the last block's residual stream caused by s_l alone (sequences sampled under `add s_l` at layer l,
    teacher-forced with and without it), its tokens and the cosine matrix of u_l across layers (Figure 4).
    Prompts (`prompts` / `task`) are needed only for the bias."""

    steers_itself: ClassVar[bool] = True
    kind: Literal["logit_lens"] = "logit_lens"
    k: int = Field(default=20, gt=0)
    """Tokens at each end."""
    metrics: list[Literal["dot", "cos", "prob"]] = Field(default_factory=lambda: ["dot", "cos", "prob"])
    """Scores to rank tokens by."""
    unembedding_bias: bool = False
    """Also measure u_l (needs prompts and an `add` intervention in the condition)."""
    sources: LayerSelection = "all"
    """Source layers l of u_l (`all`: every row of the added vector set)."""
    joint_rows: bool = False
    """Allow u_l from rows of a jointly trained (all-layer) set. Off by default: the paper's u_l comes from
    independently trained single-layer vectors (one run per block), and `validate` says so."""

    @model_validator(mode="after")
    def _one_source(self):
        if self.prompts is not None and self.task is not None:
            raise ValueError("give at most one of `prompts` or `task`")
        if self.unembedding_bias and self.prompts is None and self.task is None:
            raise ValueError("unembedding_bias needs prompts: give `prompts` or `task`")
        return self

    def work(self, ctx):
        """The lens reads vector rows only (no tokens); u_l samples and teacher-forces twice per source layer."""
        from mechsteer.spec.work import Work

        return super().work(ctx).times(ctx.layers(self.sources)) if self.unembedding_bias else Work()

    def single_source_analysis(self):
        """u_l is about s_l trained alone (Figure 4), unless `joint_rows` asks about joint rows on purpose."""
        if self.unembedding_bias and not self.joint_rows:
            return "the effective unembedding bias u_l", ("add",)
        return None

    def study_problems(self, conditions: dict, shapes: dict) -> list[Problem3]:
        """Layers and sources against the model's depth, and with `unembedding_bias` a condition that adds a vector (u_l
        is the shift it causes)."""
        out = super().study_problems(conditions, shapes) + _layer_problems(self, ("layers", "sources"), shapes)
        if self.unembedding_bias:
            out += _missing_kind(self, conditions, ("add",), "u_l is the shift caused by its added vector")
        return out


@readout_kind(
    "vector_stats",
    impl="mechsteer.readouts.vector_stats_kind:run",
    report="mechsteer.readouts.vector_stats_kind:report_section",
)
class VectorStatsReadout(_VectorRows):
    """Norms per layer, the pairwise cosine matrix, singular values and stable rank of each vector set the
    condition reads; with `align`, the report adds the per-layer alignment (cosine, norm ratio) of every two
    analysed sets of one shape on one model (two seeds, two recipes)."""

    steers_itself: ClassVar[bool] = True
    kind: Literal["vector_stats"] = "vector_stats"
    conditions: list[str] | None = None
    """Run this readout only under these conditions (names or shell patterns); null = all."""
    align: bool = True
    """Report the alignment of every two analysed vector sets of the same shape."""

    def condition_patterns(self) -> list[str] | None:
        """The conditions whose vector sets it analyses (`conditions`; None: all)."""
        return self.conditions

    def study_problems(self, conditions: dict, shapes: dict) -> list[Problem3]:
        """`layers` against the model's depth."""
        return _layer_problems(self, ("layers",), shapes)


@readout_kind(
    "non_english",
    impl="mechsteer.readouts.non_english_kind:run",
    report="mechsteer.readouts.non_english_kind:report_section",
)
class NonEnglishReadout(_VectorRows):
    """Per layer, the fraction of tokens in non-Latin scripts (by Unicode script, offline) among the bottom-k
    vs the top-k tokens of each vector row's logit lens, next to the whole vocabulary's fraction (Figures
    15-17)."""

    steers_itself: ClassVar[bool] = True
    kind: Literal["non_english"] = "non_english"
    conditions: list[str] | None = None
    """Run this readout only under these conditions (names or shell patterns); null = all."""
    ks: list[int] = Field(default_factory=lambda: [50, 1000])
    """k values (each 1..1000)."""
    metric: Literal["cos", "dot"] = "cos"
    """Logit-lens score that ranks the tokens."""
    normed: bool = False
    """Apply the final norm to each row first."""

    def condition_patterns(self) -> list[str] | None:
        """The conditions whose vector sets it analyses (`conditions`; None: all)."""
        return self.conditions

    @model_validator(mode="after")
    def _k_range(self):
        if not self.ks or any(not 1 <= k <= 1000 for k in self.ks):
            raise ValueError("ks must be a non-empty list of integers in 1..1000")
        return self

    def study_problems(self, conditions: dict, shapes: dict) -> list[Problem3]:
        """`layers` against the model's depth."""
        return _layer_problems(self, ("layers",), shapes)


@readout_kind(
    "persistence",
    impl="mechsteer.readouts.persistence_kind:run",
    report="mechsteer.readouts.persistence_kind:report_section",
)
class PersistenceReadout(_Sampled):
    """How a single-layer steering vector propagates (Figure 2): for each source layer l, sequences are
    sampled under `add s_l` at l alone, then teacher-forced with and without it; dF_j = h_j(s_l) - h_j(0) at
    every block j >= l gives Diff-Vector, Diff-Diff, layer-mean and self-alignment cosines over
    (source x target), averaged over tokens then samples, with heat-maps. The condition must `add` a vector
    set with one row per source layer."""

    steers_itself: ClassVar[bool] = True
    kind: Literal["persistence"] = "persistence"
    vector: str | None = None
    """The added vector set whose rows are the sources (null: the condition's only `add`)."""
    sources: LayerSelection = "all"
    """Source layers (`all`: every row of the set)."""
    targets: LayerSelection = "all"
    """Target blocks j measured (blocks before a source are NaN by causality)."""
    joint_rows: bool = False
    """Allow rows of a jointly trained (all-layer) set as sources. Off by default: the paper's persistence is
    about independently trained single-layer vectors (one run per block), and `validate` says so."""
    diff_diff_mean: Literal["sample", "dataset"] = "sample"
    """The mean each token's shift is compared with in Diff-Diff (`dd`): `sample` = its own sample's mean
    shift (the authors' code), `dataset` = E_x[dF] over every token of every sample (the paper's Figure 2
    caption). Both are recorded (`dd_sample`, `dd_dataset`); this picks the one shown as Diff-Diff."""

    def work(self, ctx):
        """For each source layer: sequences sampled under s_l, teacher-forced with and without it."""
        return super().work(ctx).times(ctx.layers(self.sources))

    def single_source_analysis(self):
        """Persistence is about s_l trained alone (Figure 2), unless `joint_rows` asks about joint rows."""
        return None if self.joint_rows else ("persistence", ("add",))

    def study_problems(self, conditions: dict, shapes: dict) -> list[Problem3]:
        """Sources and targets against the model's depth, and a condition that adds a vector (its rows are the
        sources)."""
        return (
            super().study_problems(conditions, shapes)
            + _layer_problems(self, ("sources", "targets"), shapes)
            + _missing_kind(self, conditions, ("add",), "its rows are the single-layer sources")
        )


@readout_kind(
    "token_shift",
    impl="mechsteer.readouts.token_shift_kind:run",
    report="mechsteer.readouts.token_shift_kind:report_section",
)
class TokenShiftReadout(_Sampled):
    """Two conditions on the same teacher-forced sequences (Figures 3 and 6): the cell's condition against
    `reference` (default: no intervention). Per generated position dp = p(condition) - p(reference), the most
    boosted and suppressed tokens, both argmaxes and entropies, KL(reference || condition) in float64, the
    first-token vs later split and tracked tokens; the top samples by KL as coloured-token HTML."""

    steers_itself: ClassVar[bool] = True
    kind: Literal["token_shift"] = "token_shift"
    reference: str | None = None
    """The reference condition's name (null: the unsteered model). Its vector sets must be ones the cell's
    condition also reads (they are built per cell)."""
    sample_from: Literal["condition", "reference"] = "condition"
    """Which of the two samples the sequences."""
    track: list[str] = Field(default_factory=lambda: ["To", "Step"])
    """Tokens whose dp is tracked (each must be one token of the model's tokenizer)."""
    top: int = Field(default=10, gt=0)
    """Rows of the by-token summary; samples drawn as HTML = min(top, 5)."""
    categories: dict[str, str] = Field(default_factory=dict)
    """Token categories: name -> a regular expression matched in full against each vocabulary token's text
    (e.g. `process_words: '\\s*(To|Step|First|Let|So)'`). Per position: the dp mass on the category (the sum of
    dp over its tokens) and whether the most boosted token and the reference's top token belong to it,
    summarised per first/other group (Figure 6: s_26 up-weights "process words and structure symbols"; the
    paper names examples, not lists, so the lists are the study's)."""

    @model_validator(mode="after")
    def _regexes(self):
        import re

        for name, pattern in self.categories.items():
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(f"categories.{name}: not a regular expression ({e})") from None
        return self

    def reference_condition(self) -> str | None:
        """The condition it compares with (`reference`; None: the unsteered model)."""
        return self.reference

    def study_problems(self, conditions: dict, shapes: dict) -> list[Problem3]:
        """A `reference` that names no condition of the study."""
        out = super().study_problems(conditions, shapes)
        if self.reference is not None and self.reference not in conditions:
            out.append(
                (
                    ("reference",),
                    f"unknown condition {self.reference!r}",
                    f"conditions: {', '.join(conditions) or 'none'}",
                )
            )
        return out


@readout_kind(
    "tokenwise", impl="mechsteer.readouts.tokenwise_kind:run", report="mechsteer.readouts.tokenwise_kind:report_section"
)
class TokenwiseReadout(_Sampled):
    """The token-wise magnitude alpha_t of a `lora1` condition (Appendix S): sequences sampled under the
    condition, teacher-forced once; per layer and position alpha_t, ||m_t|| and cos(m_t, B^), labelled by prompt
    segment (system / user header / problem / assistant header / generation); normalised by the layer's mean
    MLP-output norm; per-layer and per-segment summaries and Pearson r of alpha_t vs cos(m_t, B^)."""

    steers_itself: ClassVar[bool] = True
    teacher_passes: ClassVar[int] = 1
    kind: Literal["tokenwise"] = "tokenwise"
    heatmap_samples: int = Field(default=2, ge=0)
    """Samples drawn as layer x position heat-maps."""

    def study_problems(self, conditions: dict, shapes: dict) -> list[Problem3]:
        """A condition with a `lora1` intervention: alpha_t is its token-wise magnitude."""
        return super().study_problems(conditions, shapes) + _missing_kind(
            self, conditions, ("lora1",), "alpha_t is lora1's token-wise magnitude"
        )
