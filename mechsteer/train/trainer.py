"""The RLOO training loop (paper digest section 3): rollouts -> rewards -> leave-one-out advantages -> one
AdamW step per rollout batch, with checkpoints, resume, metrics, evaluation and a progress bar.

One step:
1. take the step's P prompts (seeded order), sample G completions each at temperature T with the current
   parameters active (on-policy; the prompt is prefilled once and its cache repeated G times);
2. score every completion (+1 correct, -1 otherwise), compute A_i = r_i - mean_{j != i} r_j per prompt;
3. loss = -(1/N_tok) sum_i A_i sum_t log pi(y_t); backward (skipped, and logged, when every advantage is
   zero: the gradient is then exactly zero and AdamW steps with a zero gradient, as the authors' code would);
4. clip the gradient norm to `max_grad_norm`, set the LR (linear warm-up over ceil(0.03 * steps) steps, then
   constant), AdamW step.

All randomness of step s derives from (seed, s), and checkpoints hold the exact float32 parameters and the
AdamW state, so `resume=True` continues bit-for-bit on CPU (tested).

The trainer is handed a loaded model (`Trainer.from_spec` loads the one the spec names) and prints nothing:
steps, evaluations and messages go to a `train.progress.TrainProgress`, which the CLI renders with rich.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mechsteer.atomic import atomic_write_text, default_mode
from mechsteer.errors import CompileError, MechsteerError
from mechsteer.hooks import HookScope
from mechsteer.sequences import SamplingSettings, sample_rollouts
from mechsteer.spec.layers import LayerResolutionError, resolve_layer
from mechsteer.spec.paths import resolve_path
from mechsteer.spec.training import LoadedTrainSpec, TrainSpec, resolve_setup
from mechsteer.train.checkpoint import (
    checkpoint_steps,
    clear_previous_run,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    select_best,
)
from mechsteer.train.data import PromptPool, build_pool, encode_prompts
from mechsteer.train.layout import BEST_FILE
from mechsteer.train.metrics import MetricsLog, plot_metrics
from mechsteer.train.params import BlockVectors, FullModel, Lora1, Parameterisation, PlaceVector, build_parameterisation
from mechsteer.train.progress import TrainProgress
from mechsteer.train.rewards import Completion, custom_reward, named_reward
from mechsteer.train.rloo import rloo_advantages, rloo_loss_backward
from mechsteer.train.rollout import pad_prompts, row_budgets

DEFAULT_CHUNK_PROMPTS = 4


def lr_factor(step: int, warmup_steps: int) -> float:
    """HF `constant_with_warmup` at 0-based optimizer step `step`: step / warmup during warm-up, then 1."""
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    return 1.0


def step_seed(seed: int, step: int) -> int:
    """Seed of step `step`'s rollout sampling (distinct from data-order and evaluation seeds)."""
    return (seed * 1_000_003 + 7919 * (step + 1)) % (2**63 - 1)


def spec_fingerprint(spec: TrainSpec) -> str:
    """Hash of everything that changes the training trajectory (not steps, eval, checkpoints or output)."""
    d = spec.model_dump(mode="json")
    for k in ("eval", "checkpoint_every", "output", "profiles", "description", "per_block"):
        d.pop(k, None)
    d["rloo"].pop("steps", None)
    if d.get("rollouts") == "hf":
        d.pop("rollouts")  # the default: fingerprints of runs from before the field existed stay valid
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


@dataclass
class TrainResult:
    """What `Trainer.run` did: where the run is, how far it got, its final file and evaluations, and the
    metrics records (every record of the run, resumed parts included)."""

    output_dir: Path
    steps: int
    final_path: Path | None
    train_seconds: float
    eval_before: dict | None = None
    eval_after: dict | None = None
    records: list[dict] = field(default_factory=list)


def check_rollouts(spec: TrainSpec, rollout_engine=None) -> None:
    """Refuse `rollouts: vllm` where vLLM cannot run (before a model is loaded), unless an engine is given."""
    if spec.rollouts == "vllm" and rollout_engine is None:
        from mechsteer import machine

        problem = machine.vllm_problem()
        if problem is not None:
            raise MechsteerError(f"rollouts: vllm: {problem}", hint=machine.VLLM_HINT.replace("backend", "rollouts"))


class Trainer:
    """Train the parameterisation a TrainSpec describes on the loaded model `lm` (a `LoadedModel` of the spec's
    model; `Trainer.from_spec` loads it). Constructing one loads no model and starts nothing: it lays the
    trainable parameters out on `lm`, encodes the prompts and builds the optimizer; `run` trains.

    `rows` (training problems), `eval_rows` and `reward_fn` (a callable on `Completion`) replace the spec's
    data and reward; tests use them with tiny models. `progress` receives steps, evaluations and messages
    (default: none shown). With `rollouts: vllm`, `rollout_engine` (a train.vllm_rollouts.RolloutEngine) may
    be given; it is then the caller's to close, otherwise the trainer starts one at the first step and closes
    it at the end of `run`."""

    def __init__(
        self,
        spec: TrainSpec | LoadedTrainSpec,
        *,
        lm,
        output_dir: Path | None = None,
        base_dir: Path | None = None,
        steps: int | None = None,
        reward_fn=None,
        rows: list[dict] | None = None,
        eval_rows: list[dict] | None = None,
        progress: TrainProgress | None = None,
        run_eval: bool = True,
        rollout_engine=None,
    ):
        if isinstance(spec, LoadedTrainSpec):
            self.loaded = spec
            spec, base_dir = spec.spec, spec.base_dir
            output_dir = output_dir or self.loaded.output_dir()
        else:
            self.loaded = None
        self.spec = spec
        self.eval_spec = spec.eval if run_eval else None
        """The held-out evaluation in force (None: `run_eval=False` or no `eval:` block)."""
        self.base_dir = Path(base_dir) if base_dir is not None else Path(".")
        self.output_dir = Path(output_dir) if output_dir is not None else Path("outputs") / "train" / spec.name
        self.steps_override = steps
        self.progress = progress or TrainProgress()
        check_rollouts(spec, rollout_engine)
        self.rollout_engine = rollout_engine
        self._owns_rollout_engine = rollout_engine is None
        self.lm = lm
        self.device = next(lm.model.parameters()).device
        try:
            self.resolved = resolve_setup(spec.setup, lm.shape.n_layers)
        except LayerResolutionError as e:
            raise CompileError(f"setup: {e} (model {spec.model.id})") from None
        self.params: Parameterisation = build_parameterisation(self.resolved, lm.model, lm.adapter, seed=spec.seed)
        self.trainable = self.params.named_trainable()
        self.optimizer = self._optimizer()
        if reward_fn is not None:
            self.grader = custom_reward(reward_fn)
        else:
            self.grader = named_reward(spec.reward, spec.rloo.negative_reward, spec.data.template)
        max_prompt = spec.data.max_prompt_tokens or spec.model.max_length
        self.pool: PromptPool = build_pool(
            lm,
            spec.data,
            self._resolve,
            prompts_per_step=spec.rloo.prompts_per_step,
            seed=spec.seed,
            max_prompt_tokens=max_prompt,
            rows=rows,
            max_length=spec.model.max_length,
        )
        self.total_steps = steps or spec.rloo.steps or max(1, math.ceil(len(self.pool) / spec.rloo.prompts_per_step))
        self.warmup_steps = math.ceil(spec.rloo.warmup_ratio * self.total_steps)
        self.checkpoint_every = spec.checkpoint_every or max(1, math.ceil(self.total_steps / 6))
        self.eval_rows, self.eval_ids = self._eval_data(eval_rows)
        from mechsteer.generation import lm_stop_token_ids

        self.stop_ids = lm_stop_token_ids(lm)
        self.metrics = MetricsLog(self.output_dir / "metrics.jsonl")

    @classmethod
    def from_spec(cls, spec: TrainSpec | LoadedTrainSpec, *, base_dir: Path | None = None, **options) -> Trainer:
        """Load the model `spec` names (after checking that its rollouts can run here) and build the trainer
        on it; `options` are the constructor's."""
        from mechsteer.models.loading import load_model

        inner = spec.spec if isinstance(spec, LoadedTrainSpec) else spec
        check_rollouts(inner, options.get("rollout_engine"))
        if isinstance(spec, LoadedTrainSpec):
            base_dir = spec.base_dir
        lm = load_model("policy", inner.model, Path(base_dir) if base_dir is not None else Path("."))
        return cls(spec, lm=lm, base_dir=base_dir, **options)

    # ------------------------------------------------------------------ set-up helpers
    def _resolve(self, p: str) -> Path:
        return resolve_path(p, self.base_dir)

    def _optimizer(self) -> torch.optim.AdamW:
        r = self.spec.rloo
        n_layers = self.lm.shape.n_layers
        table = {resolve_layer(k, n_layers)[0]: v for k, v in (r.lr_per_layer or {}).items()}
        groups: dict[float, list] = {}
        self.block_lr: dict[int, float] = {}
        """The learning rate each trained block actually gets (recorded in the exported metadata)."""
        for name, p in self.trainable.items():
            block = self.params.block_of(name)
            lr = table.get(block, r.lr) if block is not None else r.lr
            groups.setdefault(lr, []).append(p)
            if block is not None:
                self.block_lr[block] = lr
        return torch.optim.AdamW(
            [{"params": ps, "lr": lr, "base_lr": lr} for lr, ps in groups.items()],
            lr=r.lr,
            betas=tuple(r.betas),
            eps=r.eps,
            weight_decay=r.weight_decay,
        )

    def _eval_data(self, eval_rows):
        ev = self.eval_spec
        if ev is None:
            return [], []
        if eval_rows is None:
            from mechsteer.eval.mini_task import generate_mini

            variant = ev.variant or (self.spec.data.variant if self.spec.data.kind == "mini" else None)
            eval_rows = generate_mini(split=ev.split, n=ev.n, seed=ev.seed, **({"variant": variant} if variant else {}))
        ids = encode_prompts(
            self.lm, [r["problem"] for r in eval_rows], self.spec.data.template, self.spec.data.prefix_token
        )
        return eval_rows, ids

    # ------------------------------------------------------------------ one step
    def step(self, step: int) -> dict:
        """Run optimizer step `step` (0-based) and return its metrics record."""
        r = self.spec.rloo
        tok = self.lm.tokenizer
        t0 = time.perf_counter()
        items = self.pool.batch(step)
        prompts = pad_prompts([list(it.prompt_ids) for it in items], tok.pad_token_id, self.device)
        max_new = row_budgets(prompts, self.spec.model.max_length, r.max_new_tokens)  # per prompt, as the authors
        if bool((max_new <= 0).any()):
            raise MechsteerError(
                f"step {step}: no room to generate (prompt {int(prompts.lengths.max())} tokens, "
                f"max_length {self.spec.model.max_length})"
            )
        engine_info: dict = {}
        if self.spec.rollouts == "vllm":
            ro, engine_info = self._vllm_sample(step, items, prompts, max_new)
        else:
            settings = SamplingSettings(
                max_new_tokens=int(max_new.max()),
                temperature=r.temperature,
                samples=r.group_size,
                seed=step_seed(self.spec.seed, step),
                stop_ids=tuple(self.stop_ids),
            )
            ro = sample_rollouts(self.lm.model, prompts, settings, pad_id=tok.pad_token_id, budgets=max_new)
        t_sample = time.perf_counter() - t0

        graded = []
        for row, toks in enumerate(ro.token_lists()):
            item = items[row // r.group_size]
            text = tok.decode(toks, skip_special_tokens=True)
            graded.append(self.grader(Completion(text, item.answer, tuple(toks), bool(ro.finished[row]))))
        rewards = torch.tensor([g.reward for g in graded], dtype=torch.float32).view(len(items), r.group_size)
        adv = rloo_advantages(rewards)
        t_reward = time.perf_counter() - t0 - t_sample

        self.lm.model.train(False)
        res = rloo_loss_backward(
            self.lm.model,
            ro,
            adv.to(self.device),
            temperature=r.temperature,
            chunk_prompts=r.loss_chunk_prompts or DEFAULT_CHUNK_PROMPTS,
        )
        params = list(self.trainable.values())
        if not res.backward_ran:
            for p in params:
                p.grad = torch.zeros_like(p)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, r.max_grad_norm))
        factor = lr_factor(step, self.warmup_steps)
        for g in self.optimizer.param_groups:
            g["lr"] = g["base_lr"] * factor
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        t_total = time.perf_counter() - t0
        lengths = ro.lengths.float()
        n = len(graded)
        return {
            "type": "step",
            "step": step + 1,
            "lr": self.optimizer.param_groups[0]["lr"],
            "reward_mean": float(rewards.mean()),
            "accuracy": sum(g.lenient for g in graded) / n,
            "boxed_accuracy": sum(g.boxed for g in graded) / n,
            "boxed_rate": sum(g.has_box for g in graded) / n,
            "loss": res.loss,
            "grad_norm": grad_norm,
            "n_tokens": ro.n_tokens,
            "mean_len": float(lengths.mean()),
            "truncated": float((~ro.finished).float().mean()),
            "groups_with_signal": res.groups_with_signal,
            "groups": len(items),
            "backward_skipped": not res.backward_ran,
            "param_norm": self._param_norm(),
            "t_sample": t_sample,
            "t_reward": t_reward,
            "t_update": t_total - t_sample - t_reward,
            "t_step": t_total,
            "tokens_per_s": ro.n_tokens / max(t_sample - engine_info.get("t_engine_start", 0.0), 1e-9),
            **engine_info,
        }

    # ------------------------------------------------------------------ vLLM rollouts (rollouts: vllm)
    def _vllm_engine(self):
        """The run's vLLM rollout engine, started on first use (after `--resume` has loaded the vectors)."""
        if self.rollout_engine is None:
            from mechsteer.train.vllm_rollouts import VllmRollouts

            if not isinstance(self.params, BlockVectors):
                raise MechsteerError(
                    f"rollouts: vllm needs a vector setup; {self.params.describe()} changes more than a bias",
                    hint="use rollouts: hf",
                )
            longest = max(len(it.prompt_ids) for it in self.pool.items)
            budget = self.spec.model.max_length or longest + (self.spec.rloo.max_new_tokens or 0)
            try:
                self.rollout_engine = VllmRollouts.for_model(self.lm, max_model_len=budget, seed=self.spec.seed)
            except CompileError as e:
                raise MechsteerError(f"rollouts: vllm: {e}", hint="use rollouts: hf for this model") from None
            self.progress.message(f"vLLM rollout engine started in {self.rollout_engine.start_seconds:.0f} s")
        return self.rollout_engine

    def _vllm_sample(self, step: int, items, prompts, max_new) -> tuple:
        """Step `step`'s rollouts from the vLLM engine: sync the current vectors into it, then sample (the
        same prompts, budgets, stop ids and temperature as the HF sampler; seed from (seed, step))."""
        from mechsteer.train.vllm_rollouts import block_biases, rollouts_from_samples

        t0 = time.perf_counter()
        fresh = self.rollout_engine is None
        engine = self._vllm_engine()
        info = {"t_engine_start": time.perf_counter() - t0} if fresh else {}
        info["t_sync"] = engine.sync(block_biases(self.params, self.lm.shape.n_layers, self.lm.shape.d_model))
        samples = engine.generate(
            [list(it.prompt_ids) for it in items],
            group_size=self.spec.rloo.group_size,
            max_new_tokens=[int(b) for b in max_new],
            temperature=self.spec.rloo.temperature,
            stop_ids=self.stop_ids,
            seed=step_seed(self.spec.seed, step),
        )
        info["t_generate"] = samples.timing.get("generate")
        return rollouts_from_samples(prompts, self.spec.rloo.group_size, samples, self.lm.tokenizer.pad_token_id), info

    def _param_norm(self) -> float | None:
        if isinstance(self.params, FullModel):
            return None  # the norm of every weight says nothing about the update
        return float(torch.sqrt(sum((p.detach().float() ** 2).sum() for p in self.trainable.values())))

    # ------------------------------------------------------------------ evaluation / export
    def evaluate(self) -> dict | None:
        """Held-out accuracy with the current parameters active (the hooks must be attached)."""
        ev = self.eval_spec
        if ev is None or not self.eval_rows:
            return None
        from mechsteer.train.evaluate import evaluate

        return evaluate(
            self.lm,
            self.eval_rows,
            self.eval_ids,
            greedy=ev.greedy,
            samples=ev.samples,
            temperature=ev.temperature,
            max_new_tokens=ev.max_new_tokens,
            batch_size=ev.batch_size,
            seed=self.spec.seed,
            template=self.spec.data.template,
        )

    def effective_lr(self) -> float:
        """The learning rate training used: the one every trained block got (`rloo.lr_per_layer` included),
        else `rloo.lr` (then `lr_per_block` in the metadata lists each block's)."""
        lrs = set(self.block_lr.values())
        return lrs.pop() if len(lrs) == 1 else self.spec.rloo.lr

    def export_meta(self, step: int, last: dict | None, last_eval: dict | None) -> dict:
        """Metadata written into every exported vector file."""
        meta = {
            "source": f"mechsteer train {self.spec.name} (step {step})",
            "step": step,
            "seed": self.spec.seed,
            "model": self.spec.model.id,
            "model_revision": self.lm.revision or "",
            "setup": self.params.describe(),
            "reward": self.spec.reward,
            "lr": self.effective_lr(),
            "group_size": self.spec.rloo.group_size,
            "prompts_per_step": self.spec.rloo.prompts_per_step,
            "dtype": self.spec.model.dtype,
        }
        if len(set(self.block_lr.values())) > 1:
            meta["lr_per_block"] = json.dumps({str(k): v for k, v in sorted(self.block_lr.items())})
        if last:
            meta.update(
                reward_mean=f"{last['reward_mean']:.4f}", accuracy=f"{last['accuracy']:.4f}", lr_at_step=last["lr"]
            )
        if last_eval:
            for k in ("greedy", "sampled"):
                if k in last_eval:
                    meta[f"eval_{k}_lenient"] = f"{last_eval[k]['lenient']:.4f}"
                    meta[f"eval_{k}_boxed"] = f"{last_eval[k]['boxed']:.4f}"
        return {k: str(v) for k, v in meta.items()}

    def write_params(self, folder: Path, meta: dict) -> Path | None:
        """Write the trained parameters into `folder` in their public format; returns the main file."""
        from safetensors.torch import save_file

        from mechsteer.vectors.vector_set import save_vector_set

        if isinstance(self.params, (BlockVectors, PlaceVector)):
            path = save_vector_set(self.params.to_vector_set(), folder / "vectors.safetensors", **meta)
        elif isinstance(self.params, Lora1):
            path = folder / "lora1.safetensors"
            tmp = folder / ".lora1.safetensors.tmp"
            save_file(self.params.tensors(), str(tmp), metadata={**meta, "format": "mechsteer.lora1/1"})
            os.replace(tmp, path)
        else:
            return None  # full fine-tuning: the weights live in the checkpoint state
        os.chmod(path, default_mode())  # the vector-set writer's temp file is 0600
        return path

    # ------------------------------------------------------------------ the loop
    def run(self, resume: bool = False) -> TrainResult:
        """Train to the last step (from the latest checkpoint when `resume`; a fresh run first clears an earlier
        run's files), checkpointing and evaluating on the spec's cadence, then write the final parameters,
        `summary.json`, the curves and (with `eval.select`) `best.json`."""
        spec = self.spec
        ckpt_root = self.output_dir / "checkpoints"
        self.output_dir.mkdir(parents=True, exist_ok=True)
        fp = spec_fingerprint(spec)
        records: list[dict] = []
        eval_before = last_eval = None
        start = 0
        train_seconds = 0.0
        with HookScope("train") as scope:
            self.params.attach(scope)
            try:
                if resume:
                    ck = latest_checkpoint(ckpt_root)
                    if ck is None:
                        raise MechsteerError(
                            f"--resume: no checkpoint under {ckpt_root}", hint="run without --resume to start training"
                        )
                    state = load_checkpoint(ck, self.trainable, self.optimizer)
                    if state.get("fingerprint") != fp:
                        raise MechsteerError(
                            f"--resume: checkpoint {ck} was made with a different training spec",
                            hint="only rloo.steps, eval, checkpoint_every and output may change "
                            "on resume; use a fresh output folder otherwise",
                        )
                    start = int(state["step"])
                    train_seconds = float(state.get("train_seconds", 0.0))
                    self.metrics.cut(int(state["metrics_lines"]))
                    records = self.metrics.records()
                    evals = [r for r in records if r["type"] == "eval"]
                    eval_before = next((r for r in evals if r["step"] == 0), None)
                    last_eval = evals[-1] if evals else None
                    self.progress.message(f"resuming from {ck} (step {start}/{self.total_steps})")
                else:
                    removed = clear_previous_run(self.output_dir)
                    if removed:
                        self.progress.message(
                            f"fresh run: removed {len(removed)} files and checkpoints of an earlier run in "
                            f"{self.output_dir} (--resume continues a run instead)"
                        )
                    self.metrics.reset()
                    self._write_run_info()
                    if self.eval_spec is not None and self.eval_spec.before:
                        eval_before = last_eval = self._eval_record(0)
                        records.append(eval_before)
                records += self._loop(start, ckpt_root, fp, train_seconds, last_eval)
            finally:
                self.params.detach()
                if self._owns_rollout_engine and self.rollout_engine is not None:
                    self.rollout_engine.close()
                    self.rollout_engine = None
        return self._finish(records, eval_before)

    def _eval_record(self, step: int) -> dict:
        ev = self.evaluate()
        rec = {"type": "eval", "step": step, **ev}
        self.metrics.append(rec)
        self.progress.eval(rec)
        return rec

    def _loop(self, start: int, ckpt_root: Path, fp: str, train_seconds: float, last_eval) -> list[dict]:
        out: list[dict] = []
        last = None
        self.progress.start(self.spec.name, self.total_steps, start)
        try:
            for s in range(start, self.total_steps):
                rec = self.step(s)
                train_seconds += rec["t_step"]
                rec["train_seconds"] = train_seconds
                self.metrics.append(rec)
                out.append(rec)
                last = rec
                self.progress.step(rec, self.total_steps)
                done = rec["step"]
                final = done == self.total_steps
                ev = self.eval_spec
                if ev is not None and (final or (ev.every and done % ev.every == 0)):
                    last_eval = self._eval_record(done)
                    out.append(last_eval)
                if final or done % self.checkpoint_every == 0:
                    self._checkpoint(
                        ckpt_root,
                        done,
                        fp,
                        train_seconds,
                        last,
                        last_eval if last_eval and last_eval["step"] == done else None,
                    )
        finally:
            self.progress.end()
        return out

    def _checkpoint(self, root: Path, step: int, fp: str, train_seconds: float, last, last_eval) -> Path:
        meta = self.export_meta(step, last, last_eval)
        info = {
            "fingerprint": fp,
            "train_seconds": train_seconds,
            "metrics_lines": len(self.metrics),
            "total_steps": self.total_steps,
        }
        return save_checkpoint(
            root, step, self.trainable, self.optimizer, info, lambda folder: self.write_params(folder, meta)
        )

    def _write_run_info(self) -> None:
        info = {
            "spec": self.spec.model_dump(mode="json"),
            "profile": self.loaded.profile if self.loaded else None,
            "model": self.lm.provenance() if hasattr(self.lm, "provenance") else {},
            "setup": self.params.describe(),
            "trainable_parameters": self.params.n_params(),
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "checkpoint_every": self.checkpoint_every,
            "train_prompts": len(self.pool),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        }
        atomic_write_text(self.output_dir / "run.json", json.dumps(info, indent=1, sort_keys=True, default=str))

    def _select_best(self, evals: list[dict]) -> dict | None:
        """Write `best.json` when `eval.select` is set: the checkpoint with the best held-out metric."""
        ev = self.eval_spec
        if ev is None or ev.select is None:
            return None
        best = select_best(evals, set(checkpoint_steps(self.output_dir / "checkpoints")), ev.select)
        if best is None:
            self.progress.warning(
                f"eval.select {ev.select}: no checkpoint has an evaluation at its step; no best.json "
                "(set eval.every to checkpoint_every)"
            )
            return None
        atomic_write_text(self.output_dir / BEST_FILE, json.dumps(best, indent=1, sort_keys=True))
        self.progress.message(f"best checkpoint by {ev.select}: step {best['step']} ({best['value']:.3f})")
        return best

    def _finish(self, new_records: list[dict], eval_before) -> TrainResult:
        records = self.metrics.records()
        steps = [r for r in records if r["type"] == "step"]
        evals = [r for r in records if r["type"] == "eval"]
        last, last_eval = (steps[-1] if steps else None), (evals[-1] if evals else None)
        done = last["step"] if last else 0
        meta = self.export_meta(done, last, last_eval if last_eval and last_eval["step"] == done else None)
        final = self.write_params(self.output_dir, meta)
        train_seconds = last["train_seconds"] if last else 0.0
        summary = {
            "name": self.spec.name,
            "steps": done,
            "setup": self.params.describe(),
            "trainable_parameters": self.params.n_params(),
            "train_seconds": train_seconds,
            "eval_before": eval_before,
            "eval_after": last_eval,
            "final": str(final) if final else None,
        }
        best = self._select_best(evals)
        if best is not None:
            summary["best"] = best
        atomic_write_text(self.output_dir / "summary.json", json.dumps(summary, indent=1, sort_keys=True))
        if records:
            plot_metrics(records, self.output_dir / "train.png", title=f"{self.spec.name} ({self.params.describe()})")
        return TrainResult(self.output_dir, done, final, train_seconds, eval_before, last_eval, records)
