"""`SteeredHFLM`: lm-eval's HFLM on mechsteer's already loaded (and already hooked) model.

The engine opens a condition's steering scope (every hook attached) and then runs the measurement; this
class is how lm-eval talks to that model. It reuses the loaded model and tokenizer (no reload per condition)
and adds exactly what steering needs on top of HFLM, so everything else lm-eval offers (batch sizes incl.
`auto`, chat templates, `system_instruction`, `log_samples`, `limit`, loglikelihood tasks) keeps working:

* **position tracking**: `ctx.begin()` before every `generate` batch, and `ctx.begin(prompt_lengths)` before
  every teacher-forced forward, so position-selective interventions (`positions: generated`, ...) see the
  right prompt/generated split. For a loglikelihood request the context is the "prompt" and the scored
  continuation is the "generated" part, exactly as if the model had generated it.
* **forced opening**: `ctx.prompt_suffix` (the `prefix_token` intervention) is appended to every context
  (generation and loglikelihood requests) after lm-eval has rendered it (chat template included). Not lm-eval's `gen_prefix`: that one inserts a
  space delimiter in plain prompts and goes through `continue_final_message`, which some chat templates trim.
* **explicit sampling**: generation uses a fresh GenerationConfig with the task's settings and neutral values
  for everything else, never the checkpoint's `generation_config` defaults (Qwen's ships top_k/top_p/
  repetition penalty; transformers' global default is top_k 50), and stops at every stop token id of the model.
* **length budget**: the paper caps prompt + generation at the model's max length, per sequence. HFLM instead
  left-truncates every context to `max_length - max_gen_toks`; here contexts are only cut when they alone
  exceed the max length, and each row generates at most `min(max_gen_toks, max_length - its prompt length)`.

**quiet git probe**: lm-eval records the git commit of the current folder with `git describe`, whose stderr
goes to the terminal, so a study run outside a git checkout printed `fatal: not a git repository` once per
cell. Importing this module replaces that probe (in lm-eval's evaluator, where it is called) with a quiet one:
the same commit where there is one, `None` ("no git") otherwise, and nothing printed.

No request cache: this LM is never wrapped in lm-eval's `CachingLM` and the runner never passes `use_cache`
or `cache_requests`, because lm-eval keys its caches on the request text only; with a cache, a steered
condition would silently reuse the unsteered condition's outputs for identical prompts.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable

import lm_eval.evaluator
import torch
from lm_eval.loggers.utils import get_commit_from_path
from lm_eval.models.huggingface import HFLM
from lm_eval.models.utils_hf import stop_sequences_criteria

from mechsteer.generation import stop_token_ids


def quiet_git_commit_hash() -> str | None:
    """lm-eval's `get_git_commit_hash` without its terminal output: `git describe --always` in the current
    folder, with git's stderr captured; None outside a git checkout; lm-eval's own reading of `.git/HEAD`
    when git is not installed."""
    try:
        done = subprocess.run(["git", "describe", "--always"], capture_output=True, text=True, timeout=10, check=False)
    except FileNotFoundError:
        return get_commit_from_path(os.getcwd())
    except (OSError, subprocess.SubprocessError):
        return None
    return (done.stdout.strip() or None) if done.returncode == 0 else None


lm_eval.evaluator.get_git_commit_hash = quiet_git_commit_hash


class _RowBudget:
    """Stopping criterion: row i is done once it has generated `budget[i]` tokens (per-row length cap)."""

    def __init__(self, start: int, budget: torch.Tensor):
        self.start, self.budget = start, budget

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        return (input_ids.shape[1] - self.start) >= self.budget.to(input_ids.device)


class SteeredHFLM(HFLM):
    """An HFLM over a preloaded model whose forward passes run inside a mechsteer steering context.

    `ctx` is the condition's SteeringContext (None = plain model). `max_length` is the total length budget
    (prompt + generation). `on_batch(n)` is called after each generate batch with its number of sequences
    (drives the engine's progress bar; lm-eval's own tqdm bar is then switched off)."""

    def __init__(
        self,
        model,
        tokenizer,
        ctx=None,
        *,
        batch_size: int | str = 8,
        max_length: int | None = None,
        on_batch: Callable[[int], None] | None = None,
        stop: list[str] | tuple = (),
        **hflm_kwargs,
    ):
        super().__init__(
            pretrained=model, tokenizer=tokenizer, batch_size=batch_size, max_length=max_length, **hflm_kwargs
        )
        self.ctx = ctx
        self.on_batch = on_batch
        self.stop_ids = stop_token_ids(model, self.tokenizer, stop)  # `stop`: the model entry's `stop:`
        self._stop_texts = {self.tokenizer.decode([i], skip_special_tokens=False) for i in self.stop_ids}
        self._prompt_len_by_input: dict[tuple, int] = {}

    # -------------------------------------------------------------------------------------- prompt suffix

    @property
    def prompt_suffix(self) -> str:
        return getattr(self.ctx, "prompt_suffix", "") or ""

    def _with_suffix(self, requests) -> None:
        """Append the forced opening to each request's context, in place, so lm-eval logs the real prompt.
        lm-eval lists a request once per repeat (the same object), so each object is changed once."""
        suffix = self.prompt_suffix
        if not suffix:
            return
        for req in {id(r): r for r in requests}.values():
            args = tuple(req.arguments)
            req.arguments = (args[0] + suffix, *args[1:])

    # -------------------------------------------------------------------------------------- generation

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        self._with_suffix(requests)
        return super().generate_until(requests, disable_tqdm=disable_tqdm or self.on_batch is not None)

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        # The continuation is scored after the forced opening, as a generation would follow it.
        self._with_suffix(requests)
        return super().loglikelihood(requests, disable_tqdm=disable_tqdm)

    def tok_batch_encode(
        self, strings, padding_side: str = "left", left_truncate_len: int | None = None, truncation: bool = False
    ):
        # HFLM passes left_truncate_len = max_length - max_gen_toks (a fixed budget for every row). The budget
        # is per row here (see _model_generate), so a context is only cut when it alone would leave no room.
        keep = self.max_length - 1 if left_truncate_len is not None else None
        return super().tok_batch_encode(
            strings, padding_side=padding_side, left_truncate_len=keep, truncation=truncation
        )

    def _model_generate(self, context: torch.Tensor, max_length: int, stop: list[str], **generation_kwargs):
        # Replaces HFLM._model_generate (same inputs and output) to add the begin() call, the per-row length
        # budget and explicit sampling settings; HFLM's version offers no hook for any of the three.
        from transformers import GenerationConfig, StoppingCriteriaList

        mask = generation_kwargs.pop("attention_mask", None)
        width = context.shape[1]
        prompt_lens = mask.sum(dim=1) if mask is not None else torch.full((context.shape[0],), width)
        requested = max(1, int(max_length) - width)
        budget = torch.clamp(torch.clamp(self.max_length - prompt_lens, max=requested), min=1).cpu()
        do_sample = bool(generation_kwargs.pop("do_sample", False))
        temperature = float(generation_kwargs.pop("temperature", 0.0) or 0.0)
        do_sample = do_sample and temperature > 0
        top_p = generation_kwargs.pop("top_p", None)
        top_k = generation_kwargs.pop("top_k", None)
        # Sampling: every filter neutral unless the task sets it (top_k 0 = off). Greedy: the sampling fields
        # are unused, so they are left unset (setting them would only make transformers warn).
        sampling = (
            dict(
                temperature=temperature,
                top_p=1.0 if top_p is None else float(top_p),
                top_k=0 if top_k is None else int(top_k),
                min_p=0.0,
                typical_p=1.0,
                epsilon_cutoff=0.0,
                eta_cutoff=0.0,
            )
            if do_sample
            else {}
        )
        config = GenerationConfig(
            max_new_tokens=int(budget.max()),
            do_sample=do_sample,
            num_beams=1,
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.stop_ids,
            **sampling,
        )
        # Stop strings that are a stop token's text are already handled by eos_token_id (cheaper than
        # decoding every row at every step); other stop strings keep lm-eval's criterion.
        criteria = StoppingCriteriaList()
        texts = [s for s in stop if s not in self._stop_texts]
        if texts:
            criteria.extend(stop_sequences_criteria(self.tokenizer, texts, width, context.shape[0]))
        if bool((budget < budget.max()).any()):
            criteria.append(_RowBudget(width, budget))
        if self.ctx is not None:
            self.ctx.begin()
        with (
            torch.no_grad(),
            torch.autocast(
                device_type=self.device.type,
                dtype=self.mixed_precision_dtype,
                enabled=self.mixed_precision_dtype is not None,
            ),
        ):
            out = self.model.generate(
                input_ids=context,
                attention_mask=mask,
                generation_config=config,
                stopping_criteria=criteria,
                **generation_kwargs,
            )
        if self.on_batch is not None:
            self.on_batch(int(context.shape[0]))
        return out

    # -------------------------------------------------------------------------------------- teacher forcing

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs: int | None = None):
        # Remember each model input's prompt length (context tokens that stay in the window) so that
        # _model_call can tell the position tracker; HFLM builds the batches internally and passes only the
        # right-padded token ids down. The input of a request is (context + continuation)[-(L+1):][:-1].
        self._prompt_len_by_input = {}
        for _, context_enc, continuation_enc in requests:
            inp = (list(context_enc) + list(continuation_enc))[-(self.max_length + 1) :][:-1]
            plen = max(1, len(inp) - len(continuation_enc) + 1)
            key = tuple(inp)
            # Two requests with the same input but different splits (rare) keep the shorter prompt.
            self._prompt_len_by_input[key] = min(plen, self._prompt_len_by_input.get(key, plen))
        try:
            return super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)
        finally:
            self._prompt_len_by_input = {}

    def _row_prompt_length(self, row: list[int]) -> int:
        """Prompt length of one right-padded row (pads are 0s after the real tokens)."""
        end = len(row)
        while end > 0 and row[end - 1] == 0:
            end -= 1
        # Usually the real input ends with a non-zero token; if it ends with 0s, longer prefixes are tried.
        for stop in range(end, len(row) + 1):
            plen = self._prompt_len_by_input.get(tuple(row[:stop]))
            if plen is not None:
                return plen
        return len(row)  # not a loglikelihood input (e.g. batch-size detection): all prompt

    def _model_call(self, inps: torch.Tensor, attn_mask=None, labels=None) -> torch.Tensor:
        if self.ctx is not None:
            rows = inps.tolist()
            self.ctx.begin([self._row_prompt_length(r) for r in rows])
        return super()._model_call(inps, attn_mask=attn_mask, labels=labels)
