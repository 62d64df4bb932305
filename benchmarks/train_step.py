"""Time and memory of one RLOO update: steering vectors vs full fine-tuning, on the embedded model, same batch.

The paper's efficiency table (digest section 3.7) in miniature. One run of this script:
1. loads SmolLM2-135M-Instruct (bf16), samples ONE rollout batch (P prompts x G samples at T=1 from the
   bundled task, seed 0) and draws fixed +-1 rewards (seed 0) so that every group has a learning signal;
   the batch is saved to a temporary file;
2. runs each setup in its own child process (so that peak memory is measured per setup): load the model,
   build the parameterisation (`all_layers` vectors or `full`), then `--steps` RLOO updates on that same
   batch (loss forward + backward, grad clip, AdamW step), after one untimed warm-up update;
3. writes a Markdown table and the raw numbers (`benchmarks/results/train_step.{md,json}`, or `--out`).

Reported per setup: trainable parameters, gradient and AdamW-state bytes (exact, from the tensors), median
time of the loss forward+backward and of clip+AdamW, peak resident memory of the child (CPU) or peak CUDA
memory (GPU), and the rollout (sampling) time of the batch, which both setups pay and the paper's table
leaves out.

Usage: HF_HUB_OFFLINE=1 python benchmarks/train_step.py [--steps 3] [--threads 1] [--prompts 8] [--group 8]
       [--max-new-tokens 64]

`--rollouts` measures something else, in the vLLM environment (`.venv-vllm/bin/python benchmarks/train_step.py
--rollouts`; benchmarks/gpu_check.sh runs it on a GPU): whole RLOO steps of the embedded model's all-layer
vectors through `mechsteer.train.Trainer`, once with `rollouts: hf` and once with `rollouts: vllm`, same
spec, seed and prompts, `--steps` steps each. Per step the trainer records sampling (vLLM: the in-place
sync of the vectors + generation), grading and the update (HF loss forward + backward + AdamW, the same
code for both); vLLM's engine start-up is paid once, in the first step, and reported apart. Prefill vs
decode of the rollouts is estimated by sampling the first step's prompts again with 1 new token. Writes
`benchmarks/results/train_step_rollouts.{md,json}` (`--stem` renames).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

HERE = Path(__file__).resolve().parent


def _load(threads: int):
    import torch

    torch.set_num_threads(threads)
    from mechsteer.models.loading import load_model
    from mechsteer.spec.models import ModelSpec

    return load_model("policy", ModelSpec(id="smollm2-135m", dtype="bfloat16", device="auto"))


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def make_batch(args, path: Path) -> dict:
    """Sample the shared rollout batch and save it (safetensors)."""
    import torch
    from safetensors.torch import save_file

    from mechsteer.eval.mini_task import generate_mini
    from mechsteer.generation import lm_stop_token_ids
    from mechsteer.train.data import encode_prompts
    from mechsteer.train.rollout import pad_prompts, sample

    lm = _load(args.threads)
    rows = generate_mini("train", args.prompts)
    prompts = pad_prompts(
        encode_prompts(lm, [r["problem"] for r in rows], "qwen_math", None), lm.tokenizer.pad_token_id, lm.device
    )
    t0 = time.perf_counter()
    ro = sample(
        lm.model,
        prompts,
        group_size=args.group,
        max_new_tokens=args.max_new_tokens,
        temperature=1.0,
        stop_ids=lm_stop_token_ids(lm),
        pad_id=lm.tokenizer.pad_token_id,
        generator=torch.Generator(device=lm.device).manual_seed(0),
    )
    t_sample = time.perf_counter() - t0
    gen = torch.Generator().manual_seed(0)
    rewards = torch.where(torch.rand(args.prompts, args.group, generator=gen) < 0.5, 1.0, -1.0)
    rewards[:, 0], rewards[:, 1] = 1.0, -1.0  # every group has both outcomes, so every group has signal
    save_file(
        {
            "prompt_ids": prompts.ids.cpu(),
            "prompt_mask": prompts.mask.cpu(),
            "tokens": ro.tokens.cpu(),
            "mask": ro.mask.cpu(),
            "finished": ro.finished.cpu(),
            "rewards": rewards,
        },
        str(path),
    )
    return {
        "t_sample": t_sample,
        "n_tokens": ro.n_tokens,
        "shape": list(ro.tokens.shape),
        "prompt_len": prompts.ids.shape[1],
        "device": str(lm.device),
    }


def run_setup(setup: str, batch_path: str, steps: int, threads: int, chunk: int) -> dict:
    """Child process: `steps` timed RLOO updates of `setup` on the saved batch."""
    import torch
    from safetensors.torch import load_file

    from mechsteer.hooks import HookScope
    from mechsteer.train.params import BlockVectors, FullModel
    from mechsteer.train.rloo import rloo_advantages, rloo_loss_backward
    from mechsteer.train.rollout import Prompts, Rollouts

    lm = _load(threads)
    cuda = lm.device.type == "cuda"
    rss_loaded = _rss_mb()
    b = {k: v.to(lm.device) for k, v in load_file(batch_path).items()}
    G = b["rewards"].shape[1]
    ro = Rollouts(Prompts(b["prompt_ids"], b["prompt_mask"]), G, b["tokens"], b["mask"], b["finished"].bool())
    adv = rloo_advantages(b["rewards"].float())
    if setup == "vectors":
        params = BlockVectors(lm.model, lm.adapter, list(range(lm.shape.n_layers)))
        lr = 1e-2
    else:
        params = FullModel(lm.model)
        lr = 1e-5
    trainable = list(params.named_trainable().values())
    opt = torch.optim.AdamW(trainable, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t_fb, t_opt = [], []
    with HookScope("bench") as scope:
        params.attach(scope)
        for i in range(steps + 1):
            t0 = time.perf_counter()
            rloo_loss_backward(lm.model, ro, adv, temperature=1.0, chunk_prompts=chunk)
            if cuda:
                torch.cuda.synchronize()
            t1 = time.perf_counter()
            torch.nn.utils.clip_grad_norm_(trainable, 2.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if cuda:
                torch.cuda.synchronize()
            t2 = time.perf_counter()
            if i:  # the first update is a warm-up
                t_fb.append(t1 - t0)
                t_opt.append(t2 - t1)
        params.detach()
    state_bytes = sum(
        v.numel() * v.element_size() for st in opt.state.values() for v in st.values() if torch.is_tensor(v)
    )
    out = {
        "setup": setup,
        "params": sum(p.numel() for p in trainable),
        "grad_bytes": sum(p.numel() * p.element_size() for p in trainable),
        "opt_state_bytes": state_bytes,
        "t_fwd_bwd": statistics.median(t_fb),
        "t_optim": statistics.median(t_opt),
        "t_fwd_bwd_all": t_fb,
        "t_optim_all": t_opt,
        "rss_loaded_mb": rss_loaded,
        "lr": lr,
    }
    if cuda:
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def _child(setup, batch_path, args) -> dict:
    """Run one setup in a fresh interpreter; its peak RSS comes from wait4 (per child, not cumulative)."""
    res_path = Path(batch_path).with_suffix(f".{setup}.json")
    cmd = [
        sys.executable,
        __file__,
        "--child",
        setup,
        "--batch",
        batch_path,
        "--steps",
        str(args.steps),
        "--threads",
        str(args.threads),
        "--chunk",
        str(args.chunk),
        "--result",
        str(res_path),
    ]
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        sys.exit(f"benchmark child for {setup} failed (status {status})")
    res = json.loads(res_path.read_text())
    res["peak_rss_mb"] = usage.ru_maxrss / 1024  # Linux reports KiB
    res["cpu_s"] = usage.ru_utime + usage.ru_stime
    return res


def _mb(b: float) -> str:
    return f"{b / 2**20:,.2f} MiB" if b >= 2**20 else f"{b / 2**10:,.1f} KiB"


def write_table(batch: dict, results: list[dict], args, seconds: float) -> str:
    import torch
    import transformers

    v, f = (next(r for r in results if r["setup"] == s) for s in ("vectors", "full"))
    mem_key = "peak_cuda_mb" if "peak_cuda_mb" in v else "peak_rss_mb"
    mem_name = "peak CUDA memory" if mem_key == "peak_cuda_mb" else "peak resident memory (whole process)"
    ws_v, ws_f = (batch["t_sample"] + r["t_fwd_bwd"] + r["t_optim"] for r in (v, f))
    lines = [
        "# One RLOO update: steering vectors vs full fine-tuning (embedded SmolLM2-135M, same batch)",
        "",
        f"Measured by `python benchmarks/train_step.py --steps {args.steps} --threads {args.threads} --prompts "
        f"{args.prompts} --group {args.group} --max-new-tokens {args.max_new_tokens}` on "
        f"{platform.machine()} ({os.cpu_count()} CPUs visible, torch threads {args.threads}, device "
        f"{batch['device']}), torch {torch.__version__}, transformers {transformers.__version__}, bf16 weights; "
        f"{time.strftime('%Y-%m-%d')}. Whole run {seconds:.0f} s.",
        "",
        f"Batch: {args.prompts} prompts x {args.group} samples = {batch['shape'][0]} rollouts of at most "
        f"{args.max_new_tokens} new tokens ({batch['n_tokens']} generated tokens, prompts {batch['prompt_len']} "
        f"tokens), sampled once at T=1 and reused by both setups; rewards fixed +-1 so every group has signal. "
        f"Loss chunks of {args.chunk} prompt groups. Times are medians of {args.steps} updates after one warm-up.",
        "",
        "| | all-layer vectors | full fine-tuning | full / vectors |",
        "|---|---|---|---|",
        f"| trainable parameters | {v['params']:,} | {f['params']:,} | {f['params'] / v['params']:,.0f}x |",
        f"| gradient memory | {_mb(v['grad_bytes'])} | {_mb(f['grad_bytes'])} | "
        f"{f['grad_bytes'] / v['grad_bytes']:,.0f}x |",
        f"| AdamW state | {_mb(v['opt_state_bytes'])} | {_mb(f['opt_state_bytes'])} | "
        f"{f['opt_state_bytes'] / v['opt_state_bytes']:,.0f}x |",
        f"| loss forward + backward per update | {v['t_fwd_bwd']:.2f} s | {f['t_fwd_bwd']:.2f} s | "
        f"{f['t_fwd_bwd'] / v['t_fwd_bwd']:.2f}x |",
        f"| grad clip + AdamW step | {v['t_optim'] * 1e3:.1f} ms | {f['t_optim'] * 1e3:.1f} ms | "
        f"{f['t_optim'] / max(v['t_optim'], 1e-9):,.0f}x |",
        f"| {mem_name} | {v[mem_key]:,.0f} MiB | {f[mem_key]:,.0f} MiB | {f[mem_key] / v[mem_key]:.2f}x |",
        f"| rollout sampling of the batch (both pay it) | {batch['t_sample']:.1f} s | {batch['t_sample']:.1f} s | 1x |",
        f"| whole RL step (sampling + update) | {ws_v:.1f} s | {ws_f:.1f} s | {ws_f / ws_v:.2f}x |",
        "",
        f"Resident memory right after loading the model: {v['rss_loaded_mb']:,.0f} MiB (vectors run), "
        f"{f['rss_loaded_mb']:,.0f} MiB (full run). Child CPU time: vectors {v['cpu_s']:.0f} s, "
        f"full {f['cpu_s']:.0f} s.",
        f"All update times (s): vectors fwd+bwd {[round(x, 2) for x in v['t_fwd_bwd_all']]}, full fwd+bwd "
        f"{[round(x, 2) for x in f['t_fwd_bwd_all']]}.",
        "",
        "Reading: the optimizer slice (the paper's 'per-step time') and the optimizer memory shrink by the parameter "
        "ratio, but the backward pass still runs through the whole frozen network (only the weight-gradient "
        "matmuls are saved), and rollout sampling is identical, so a whole RL step is far less than "
        f"{f['params'] / v['params']:,.0f}x cheaper. Full fine-tuning here keeps bf16 weights and bf16 AdamW "
        "state (no float32 master copy), which understates its memory. Peak memory of the vector run is mostly the "
        "float32 log-softmax over the 49k-token vocabulary for each loss chunk; `rloo.loss_chunk_prompts: 1` "
        "lowers it.",
        "",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- --rollouts


def _rollout_spec(args, rollouts: str):
    from mechsteer.spec.training import TrainSpec

    return TrainSpec.model_validate(
        {
            "name": f"bench_{rollouts}",
            "model": {"id": "smollm2-135m", "dtype": args.dtype, "device": args.device},
            "setup": "all_layers",
            "rollouts": rollouts,
            "rloo": {
                "group_size": args.group,
                "prompts_per_step": args.prompts,
                "steps": args.steps,
                "lr": 1e-2,
                "max_new_tokens": args.max_new_tokens,
                "warmup_ratio": 0.0,
                "loss_chunk_prompts": args.chunk,
            },
            "reward": "last_number",
            "data": {"kind": "mini"},
            "seed": 0,
        }
    )


def _prefill_probe(trainer) -> float:
    """Seconds to sample step 1's prompts with 1 new token each (prefill + one sampled token)."""
    import torch

    from mechsteer.train.rollout import pad_prompts, sample
    from mechsteer.train.trainer import step_seed
    from mechsteer.train.vllm_rollouts import block_biases

    r = trainer.spec.rloo
    items = trainer.pool.batch(0)
    ids = [list(it.prompt_ids) for it in items]
    t0 = time.perf_counter()
    if trainer.spec.rollouts == "vllm":
        eng = trainer._vllm_engine()
        eng.sync(block_biases(trainer.params, trainer.lm.shape.n_layers, trainer.lm.shape.d_model))
        t0 = time.perf_counter()
        eng.generate(ids, group_size=r.group_size, max_new_tokens=[1] * len(ids), temperature=1.0, stop_ids=[], seed=0)
    else:
        sample(
            trainer.lm.model,
            pad_prompts(ids, trainer.lm.tokenizer.pad_token_id, trainer.device),
            group_size=r.group_size,
            max_new_tokens=1,
            temperature=1.0,
            stop_ids=[],
            pad_id=trainer.lm.tokenizer.pad_token_id,
            generator=torch.Generator(device=trainer.device).manual_seed(step_seed(0, 0)),
        )
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def _run_trainer(lm, args, rollouts: str, out_dir: Path) -> dict:
    from mechsteer.hooks import HookScope
    from mechsteer.progress import RichTrainProgress
    from mechsteer.train.trainer import Trainer

    show = RichTrainProgress(bar=False)  # the per-step lines, as before the trainer stopped printing itself
    tr = Trainer(_rollout_spec(args, rollouts), lm=lm, output_dir=out_dir, run_eval=False, progress=show)
    start = None
    if rollouts == "vllm":  # started here (timed) and kept after the run for the prefill probe
        t0 = time.perf_counter()
        tr._vllm_engine()
        start = time.perf_counter() - t0
        tr._owns_rollout_engine = False
    try:
        res = tr.run()
        with HookScope("probe") as scope:  # the probe samples with the trained vectors active, as a step does
            tr.params.attach(scope)
            probe = _prefill_probe(tr)
            tr.params.detach()
    finally:
        if tr.rollout_engine is not None:
            tr.rollout_engine.close()
    steps = [r for r in res.records if r["type"] == "step"]
    keys = ("t_sample", "t_reward", "t_update", "t_step", "n_tokens", "t_sync", "t_generate", "backward_skipped")
    return {
        "rollouts": rollouts,
        "steps": [{k: s[k] for k in keys if k in s} for s in steps],
        "prefill_probe_s": probe,
        "engine_start_s": start,
    }


def compare_rollouts(args) -> None:
    import torch

    sys.path.insert(0, str(HERE))
    from _sections import command_line, machine_facts, write_section

    from mechsteer import machine
    from mechsteer.models.loading import load_model
    from mechsteer.spec.models import ModelSpec

    problem = machine.vllm_problem()
    if problem is not None:
        sys.exit(f"train_step --rollouts: not run: {problem} (hint: {machine.VLLM_HINT})")
    from mechsteer.backends.vllm_engine import on_cpu, vllm_version

    if on_cpu():
        torch.set_num_threads(args.threads)
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{args.threads - 1}" if args.threads > 1 else "0")
    t0 = time.perf_counter()
    lm = load_model("policy", ModelSpec(id="smollm2-135m", dtype=args.dtype, device=args.device))
    with tempfile.TemporaryDirectory() as tmp:
        runs = [_run_trainer(lm, args, r, Path(tmp) / r) for r in ("hf", "vllm")]
    total = time.perf_counter() - t0
    import transformers

    facts = machine_facts()
    versions = f"{vllm_version()}, transformers {transformers.__version__}, torch {torch.__version__}"
    if torch.cuda.is_available():
        versions += f", GPU {torch.cuda.get_device_name(0)}"
    write_section(
        args.stem,
        _rollouts_section(
            runs, args, f"{str(lm.dtype).removeprefix('torch.')}, {lm.device}", facts, versions, total, command_line()
        ),
        {
            "args": vars(args),
            "command": command_line(),
            "model": f"{str(lm.dtype).removeprefix('torch.')}, {lm.device}",
            "machine": facts,
            "versions": versions,
            "runs": runs,
            "seconds": total,
        },
    )


def _backward_ran(step: dict) -> bool:
    """Whether a step's loss backward ran (False when every advantage was 0). Runs recorded before the flag
    was kept: a skipped backward leaves an update of well under a second, a real one takes seconds here."""
    if "backward_skipped" in step:
        return not step["backward_skipped"]
    return step["t_update"] > 1.0


def _rollouts_section(runs, args, model: str, facts, versions, total, command) -> list[str]:
    from _sections import facts_lines

    hf, vl = runs

    def med(run, key, only_backward=False):
        vals = [s[key] for s in run["steps"] if s.get(key) is not None and (_backward_ran(s) or not only_backward)]
        return statistics.median(vals) if vals else float("nan")

    start = vl["engine_start_s"]
    roll = {id(r): med(r, "t_sample") for r in runs}
    upd = {id(r): med(r, "t_update", only_backward=True) for r in runs}
    grade = {id(r): med(r, "t_reward") for r in runs}
    rows = [
        (
            "RLOO step with a backward (rollouts + grading + update)",
            *(roll[id(r)] + grade[id(r)] + upd[id(r)] for r in runs),
        ),
        ("rollouts (vLLM: sync + generate)", roll[id(hf)], roll[id(vl)]),
        ("  of which prefill (probe: 1 new token)", hf["prefill_probe_s"], vl["prefill_probe_s"]),
        (
            "  of which decode (the rest)",
            roll[id(hf)] - hf["prefill_probe_s"],
            med(vl, "t_generate") - vl["prefill_probe_s"],
        ),
        ("  of which bias sync into the engine", float("nan"), med(vl, "t_sync")),
        ("grading", grade[id(hf)], grade[id(vl)]),
        ("update: HF loss forward + backward + AdamW (steps whose backward ran)", upd[id(hf)], upd[id(vl)]),
    ]

    def fmt(x):
        return "-" if x != x else (f"{x * 1e3:.1f} ms" if x < 0.1 else f"{x:.2f} s")

    lines = [
        "# One RLOO step with vLLM rollouts vs HF rollouts (benchmarks/train_step.py --rollouts)",
        "",
        f"Command: `{command}` ({total:.0f} s in all). {versions}. The embedded model "
        f"({model}), all-layer vectors, {args.prompts} prompts x "
        f"{args.group} samples at T=1, at most {args.max_new_tokens} new tokens, {args.steps} steps per engine "
        f"through `mechsteer.train.Trainer` (same spec and seed; only `rollouts:` differs), {args.threads} "
        "thread(s) for HF and for vLLM's worker on CPU. Medians over the steps; the update only over steps whose "
        "backward ran (a step whose advantages are all 0 skips it), and the whole step is composed from the medians "
        "so that both sides include a backward.",
        "",
        "| | HF rollouts | vLLM rollouts | vLLM / HF |",
        "|---|---|---|---|",
    ]
    for name, a, b in rows:
        ratio = "" if (a != a or b != b or a <= 0) else f"{b / a:.2f}"
        lines.append(
            f"| {name} | {fmt(a)} | {fmt(b)} | {('**' + ratio + '**') if name.startswith('RLOO') else ratio} |"
        )
    tok_h = statistics.median(s["n_tokens"] for s in hf["steps"])
    tok_v = statistics.median(s["n_tokens"] for s in vl["steps"])
    ran = {r["rollouts"]: [_backward_ran(s) for s in r["steps"]] for r in runs}
    lines += [
        "",
        f"vLLM engine start-up, once per run (before step 1): {fmt(start)}. Generated tokens per step (median): HF "
        f"{tok_h:.0f}, vLLM {tok_v:.0f} (different samples: the two engines draw from the same distribution with "
        "different random streams, so lengths, rewards and which steps have a learning signal differ too). All step "
        f"times (s): HF {[round(s['t_step'], 2) for s in hf['steps']]}, vLLM {[round(s['t_step'], 2) for s in vl['steps']]}; "
        f"backward ran: HF {ran['hf']}, vLLM {ran['vllm']}. The update is the same transformers code on both sides; "
        "its time differs only through the load of this shared machine (and, with vLLM, the engine's processes "
        "sharing the two cores).",
        "",
        *facts_lines(facts),
        "",
    ]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--chunk", type=int, default=4, help="prompt groups per loss forward/backward chunk")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "train_step.md")
    ap.add_argument("--rollouts", action="store_true", help="RLOO steps with vLLM vs HF rollouts (see above)")
    ap.add_argument("--device", default="auto", help="--rollouts: the HF model's device (auto | cpu | cuda)")
    ap.add_argument("--dtype", default="auto", help="--rollouts: model dtype")
    ap.add_argument("--stem", default="train_step_rollouts", help="--rollouts: results file stem")
    ap.add_argument("--section-from", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--child", choices=["vectors", "full"], help=argparse.SUPPRESS)
    ap.add_argument("--batch", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.section_from:  # rebuild a --rollouts section from its recorded JSON (no new measurement)
        sys.path.insert(0, str(HERE))
        from _sections import write_section

        d = json.loads(args.section_from.read_text())
        a = argparse.Namespace(**d["args"])
        cmd = d.get("command") or (
            f"python benchmarks/train_step.py --rollouts --prompts {a.prompts} --group {a.group} "
            f"--max-new-tokens {a.max_new_tokens} --steps {a.steps}"
        )
        write_section(
            a.stem,
            _rollouts_section(d["runs"], a, d.get("model", a.dtype), d["machine"], d["versions"], d["seconds"], cmd),
            d,
        )
        return
    if args.rollouts:
        compare_rollouts(args)
        return
    if args.child:
        res = run_setup(args.child, args.batch, args.steps, args.threads, args.chunk)
        Path(args.result).write_text(json.dumps(res))
        return
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        batch_path = str(Path(tmp) / "batch.safetensors")
        batch = make_batch(args, Path(batch_path))
        print(f"batch: {batch}", flush=True)
        results = []
        for setup in ("vectors", "full"):
            res = _child(setup, batch_path, args)
            print(json.dumps({k: v for k, v in res.items() if not k.endswith("_all")}), flush=True)
            results.append(res)
    text = write_table(batch, results, args, time.perf_counter() - t0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps({"batch": batch, "results": results}, indent=1, default=str))
    print(text)


if __name__ == "__main__":
    main()
