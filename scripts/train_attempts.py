"""Run a list of training attempts for one bundled vector, resumably, and write their record.

    python scripts/train_attempts.py mechsteer/data/vectors/smollm2-135m/attempts/penultimate.yaml
    python scripts/train_attempts.py ATTEMPTS.yaml --report-only     # rewrite the record from finished runs

An attempts file names a training file and profile and lists attempts, each a name and overrides merged onto
that profile (the same deep merge as a profile: `rloo: {lr: 0.05, steps: 48}`); `run_name` keeps the name an
attempt's run was started under when the attempt is renamed (a resumed run must keep its name). Every attempt trains in its
own folder `<out>/<attempt>/` (default `outputs/attempts/<file stem>/`); a finished attempt (its summary.json
has every step) is skipped and an interrupted one resumes from its last checkpoint, so the script can be
stopped and started again across sittings. The model is loaded once. An attempt whose run folder is not here
(outputs/ does not survive a fresh checkout) but which the earlier record says finished, with the same
overrides, is kept from that record (marked carried) and not rerun; add attempts to a file and only they train.

Selection. During training each attempt evaluates its checkpoints on a few training-pool problems (`eval:` of the
training file: 32 problems, 64 new tokens), which is noisy (one standard error is about 9 points). An attempts file
may add `selection: {n, seed, max_new_tokens, fractions}`: after training, the checkpoints at those fractions of
the run (the paper's candidates are 1/3, 1/2, 2/3, 5/6 and 1 of its steps) are re-evaluated greedily on `n`
training-pool problems (drawn with `seed`; the test split stays unseen) at the study's generation budget, and
the best of them (ties: the later step) is the attempt's checkpoint (`<attempt>/selection.json`).

The record (`<file stem>.attempts.md` and `.json` beside the attempts file, and a curve plot) lists every
attempt with its settings, its training curve, its held-out selection metric at each evaluation, its best
checkpoint and its compute. `chosen` in the record is the attempt with the best selection metric (ties: the
earlier attempt); `--bundle` copies that attempt's selected checkpoint to the bundled vector file the
attempts file names. Nothing in the record is typed by hand.

Why a script and not `mechsteer train`: an attempt series is how the bundled vectors of this repository were
made (a development record), not a study a user runs; each attempt is an ordinary `mechsteer train` run.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import resource
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


REPLACED = ("setup",)
"""Keys an override replaces instead of merging (as a training profile does: a setup is one form or another)."""


def deep_merge(base: dict, over: dict) -> dict:
    """`over` merged onto `base` (dicts merge key by key, anything else and the REPLACED keys replace)."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        merge = isinstance(v, dict) and isinstance(out.get(k), dict) and k not in REPLACED
        out[k] = deep_merge(out[k], v) if merge else copy.deepcopy(v)
    return out


def load_attempts(path: Path) -> dict:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    for key in ("train", "attempts"):
        if key not in doc:
            sys.exit(f"{path}: missing `{key}`")
    names = [a["name"] for a in doc["attempts"]]
    if len(set(names)) != len(names):
        sys.exit(f"{path}: attempt names repeat: {names}")
    return doc


def attempt_specs(doc: dict, path: Path):
    """(loaded base training file, {attempt name: TrainSpec}) for the attempts file at `path`."""
    from mechsteer.spec.training import TrainSpec, load_train_spec

    loaded = load_train_spec((path.parent / doc["train"]).resolve(), doc.get("profile"))
    base = loaded.spec.model_dump(mode="json")
    specs = {}
    for a in doc["attempts"]:
        d = deep_merge(base, a.get("overrides", {}))
        d["name"] = f"{loaded.spec.name}-{a.get('run_name', a['name'])}"  # resume checks the name too
        d.pop("profiles", None)
        specs[a["name"]] = TrainSpec.model_validate(d)
    return loaded, specs


def finished(folder: Path, steps: int) -> bool:
    p = folder / "summary.json"
    return p.is_file() and json.loads(p.read_text()).get("steps") == steps


def previous_records(path: Path) -> tuple[dict, dict[str, dict]]:
    """The record this attempts file wrote before (`<stem>.attempts.json`, or {}) and its attempts by name."""
    p = path.with_suffix(".attempts.json")
    prev = json.loads(p.read_text()) if p.is_file() else {}
    return prev, {r["name"]: r for r in prev.get("records", [])}


def carried(attempt: dict, folder: Path, prev: dict[str, dict]) -> dict | None:
    """The earlier record of an attempt whose run folder is not here (a fresh checkout: outputs/ is not kept),
    if that record says it finished with the same overrides; None where the attempt has to run here.

    Why: the record is the provenance of a bundled vector; rerunning a finished attempt only because its run
    folder did not survive a checkout would cost its whole training again, and dropping it would lose it."""
    r = prev.get(attempt["name"])
    started_here = (folder / "metrics.jsonl").is_file()
    if started_here or r is None or not r.get("finished") or r.get("overrides") != attempt.get("overrides", {}):
        return None
    return r


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def train(doc: dict, path: Path, out: Path, threads: int, only: list[str] | None) -> None:
    import torch

    from mechsteer.models.loading import load_model
    from mechsteer.progress import RichTrainProgress
    from mechsteer.train.checkpoint import latest_checkpoint
    from mechsteer.train.trainer import Trainer

    torch.set_num_threads(threads)
    loaded, specs = attempt_specs(doc, path)
    _, prev = previous_records(path)
    kept = [a["name"] for a in doc["attempts"] if carried(a, out / a["name"], prev)]
    todo = [
        n
        for n, s in specs.items()
        if (only is None or n in only) and n not in kept and not finished(out / n, s.rloo.steps)
    ]
    if kept:
        print(f"finished in an earlier sitting (kept from the record, not rerun): {kept}", flush=True)
    print(f"attempts to run: {todo or 'none'}", flush=True)
    lm = None
    for name in todo:
        spec = specs[name]
        if lm is None:
            lm = load_model("policy", spec.model, loaded.base_dir)
        folder = out / name
        resume = latest_checkpoint(folder / "checkpoints") is not None
        print(f"== attempt {name}" + (" (resuming)" if resume else ""), flush=True)
        c0, t0 = cpu_seconds(), time.perf_counter()
        show = RichTrainProgress(bar=False)  # one line per step, no bar (the output is often a log)
        Trainer(spec, lm=lm, output_dir=folder, base_dir=loaded.base_dir, progress=show).run(resume=resume)
        timing = {"wall_seconds": time.perf_counter() - t0, "cpu_seconds": cpu_seconds() - c0, "resumed": resume}
        prev = folder / "compute.json"
        if resume and prev.is_file():
            old = json.loads(prev.read_text())
            timing = {k: (timing[k] + old.get(k, 0.0) if k != "resumed" else True) for k in timing}
        prev.write_text(json.dumps(timing, indent=1))


def candidate_steps(total: int, every: int, fractions: list[float]) -> list[int]:
    """Checkpoint steps at the given fractions of a run, rounded to the nearest multiple of the checkpoint cadence."""
    return sorted({min(total, max(every, every * round(f * total / every))) for f in fractions})


def reselect(doc: dict, path: Path, out: Path, threads: int) -> None:
    """Re-evaluate each finished attempt's candidate checkpoints (`selection:` of the attempts file)."""
    sel = doc.get("selection")
    if not sel:
        return
    import torch

    from mechsteer.eval.mini_task import generate_mini
    from mechsteer.generation import lm_stop_token_ids
    from mechsteer.interventions import steering
    from mechsteer.models.loading import load_model
    from mechsteer.sequences import SamplingSettings
    from mechsteer.spec.kinds.interventions import AddSpec
    from mechsteer.spec.kinds.placement import Lora1Spec
    from mechsteer.train.data import encode_prompts
    from mechsteer.train.evaluate import accuracy
    from mechsteer.vectors.vector_set import load_vector_set

    torch.set_num_threads(threads)
    loaded, specs = attempt_specs(doc, path)
    lm = None
    for name, spec in specs.items():
        folder = out / name
        target = folder / "selection.json"
        if not finished(folder, spec.rloo.steps):
            continue
        steps = candidate_steps(
            spec.rloo.steps, spec.checkpoint_every, sel.get("fractions", [1 / 3, 1 / 2, 2 / 3, 5 / 6, 1])
        )
        settings = {k: sel.get(k) for k in ("n", "seed", "max_new_tokens")} | {"steps": steps}
        if target.is_file() and json.loads(target.read_text()).get("settings") == settings:
            continue
        if lm is None:
            lm = load_model("policy", spec.model, loaded.base_dir)
            rows = generate_mini("train", sel["n"], seed=sel["seed"])
            ids = encode_prompts(lm, [r["problem"] for r in rows], spec.data.template, spec.data.prefix_token)
        results = []
        for step in steps:
            ck = folder / "checkpoints" / f"step-{step:06d}"
            if (ck / "vectors.safetensors").is_file():
                ivs, vecs = [AddSpec(vector="v")], {"v": load_vector_set(ck / "vectors.safetensors")}
            else:
                ivs, vecs = [Lora1Spec(path=str(ck / "lora1.safetensors"))], {}
            with steering(lm.model, lm.adapter, ivs, vecs, tokenizer=lm.tokenizer):
                sampling = SamplingSettings(
                    max_new_tokens=sel["max_new_tokens"],
                    batch_size=32,
                    seed=spec.seed,
                    stop_ids=tuple(lm_stop_token_ids(lm)),
                )
                acc = accuracy(lm, rows, ids, sampling, template=spec.data.template)
            results.append({"step": step, "value": acc["lenient"], "mean_len": acc["mean_len"]})
            print(f"{name} step {step}: {100 * acc['lenient']:.1f}% on {sel['n']} training-pool problems", flush=True)
        best = max(results, key=lambda r: (r["value"], r["step"]))
        atomic = folder / ".selection.json.tmp"
        atomic.write_text(json.dumps({"settings": settings, "candidates": results, "best": best}, indent=1))
        atomic.replace(target)


def attempt_record(name: str, attempt: dict, spec, folder: Path) -> dict:
    """What the record says of one attempt (finished or not)."""
    from mechsteer.train.metrics import MetricsLog

    rec = {
        "name": name,
        "why": attempt.get("why", ""),
        "overrides": attempt.get("overrides", {}),
        "setup": spec.setup if isinstance(spec.setup, str) else spec.setup.model_dump(mode="json"),
        "lr": spec.rloo.lr,
        "steps": spec.rloo.steps,
        "prompts_per_step": spec.rloo.prompts_per_step,
        "group_size": spec.rloo.group_size,
        "max_new_tokens": spec.rloo.max_new_tokens,
        "finished": finished(folder, spec.rloo.steps),
    }
    metrics = MetricsLog(folder / "metrics.jsonl").records() if (folder / "metrics.jsonl").is_file() else []
    steps = [r for r in metrics if r["type"] == "step"]
    rec["steps_done"] = steps[-1]["step"] if steps else 0
    rec["reward"] = [r["reward_mean"] for r in steps]
    rec["accuracy"] = [r["accuracy"] for r in steps]
    rec["mean_len"] = [r["mean_len"] for r in steps]
    rec["param_norm"] = [r["param_norm"] for r in steps]
    sel = spec.eval.select if spec.eval else None
    rec["select"] = sel
    rec["evals"] = [
        {"step": r["step"], "value": r[sel.split("_")[0]][sel.split("_")[1]]}
        for r in metrics
        if r["type"] == "eval" and sel
    ]
    best, selection = folder / "best.json", folder / "selection.json"
    rec["best"] = json.loads(best.read_text()) if best.is_file() else None
    rec["selection"] = json.loads(selection.read_text()) if selection.is_file() else None
    if rec["selection"]:  # the re-evaluation on more problems decides
        rec["best"] = rec["selection"]["best"]
    comp = folder / "compute.json"
    rec["compute"] = json.loads(comp.read_text()) if comp.is_file() else None
    rec["train_seconds"] = steps[-1]["train_seconds"] if steps else 0.0
    return rec


def block_mean(xs: list[float], lo: int, hi: int) -> float | None:
    part = xs[lo:hi]
    return sum(part) / len(part) if part else None


def report(doc: dict, path: Path, out: Path) -> dict:
    from mechsteer.atomic import atomic_write_text
    from mechsteer.machine import cpu_model

    _, specs = attempt_specs(doc, path)
    prev_info, prev = previous_records(path)
    records = []
    for a in doc["attempts"]:
        old = carried(a, out / a["name"], prev)
        if old is not None:  # keep where it was first recorded, through any number of later sittings
            old = old | {"carried_from": old.get("carried_from") or f"{prev_info.get('runs')}, {prev_info.get('date')}"}
        records.append(old or attempt_record(a["name"], a, specs[a["name"]], out / a["name"]))
    done = [r for r in records if r["finished"] and r["best"]]
    chosen = max(done, key=lambda r: (r["best"]["value"], -records.index(r)))["name"] if done else None
    info = {
        "title": doc.get("title", path.stem),
        "attempts_file": str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path),
        "train": doc["train"],
        "profile": doc.get("profile"),
        "bundle": doc.get("bundle"),
        "selection": doc.get("selection"),
        "records": records,
        "chosen": chosen,
        "date": datetime.now(UTC).date().isoformat(),
        "machine": f"{platform.machine()}, {cpu_model()}",
        "runs": str(out.relative_to(ROOT)) if out.is_absolute() and out.is_relative_to(ROOT) else str(out),
    }
    stem = path.with_suffix("")
    atomic_write_text(stem.with_suffix(".attempts.json"), json.dumps(info, indent=1))
    atomic_write_text(stem.with_suffix(".attempts.md"), markdown(info))
    plot(records, stem.with_suffix(".attempts.png"))
    print(f"record: {stem.with_suffix('.attempts.md')} (chosen: {chosen})")
    return info


def markdown(info: dict) -> str:
    def f(x, fmt="{:+.2f}"):
        return "-" if x is None else fmt.format(x)

    lines = [
        f"# Training attempts: {info['title']}",
        "",
        f"Written by `python scripts/train_attempts.py {info['attempts_file']}` (do not edit by hand). Base: "
        f"`{info['train']}`" + (f" profile `{info['profile']}`" if info["profile"] else "") + "; each attempt "
        "overrides it as listed. Runs in `" + info["runs"] + "`. " + info["machine"] + ", " + info["date"] + ".",
        "",
        "Selection: greedy lenient accuracy on training-pool problems (the test split stays unseen). The "
        "training-time metric uses the training file's `eval:` (few problems, short budget); where the attempts "
        "file has `selection:` ("
        + (
            f"{info['selection']['n']} problems, seed {info['selection']['seed']}, "
            f"{info['selection']['max_new_tokens']} new tokens"
            if info.get("selection")
            else "none here"
        )
        + "), the candidate checkpoints are re-evaluated and that decides. The chosen attempt has the best "
        "selected checkpoint."
        + (
            " Attempts marked *carried* finished in an earlier sitting whose run folder is not here; their row "
            "is the earlier record's."
            if any(r.get("carried_from") for r in info["records"])
            else ""
        ),
        "",
        "| attempt | lr | P x G | steps done | reward first 4 -> last 4 | length first -> last | vector norm at end "
        "| training-time metric by step | re-selection by step | selected step (value) | CPU s | why |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in info["records"]:
        n = len(r["reward"])
        evals = ", ".join(f"{e['step']}: {100 * e['value']:.0f}" for e in r["evals"]) or "-"
        resel = (
            ", ".join(f"{c['step']}: {100 * c['value']:.1f}" for c in r["selection"]["candidates"])
            if r["selection"]
            else "-"
        )
        best = f"{r['best']['step']} ({100 * r['best']['value']:.1f}%)" if r["best"] else "-"
        cpu = f"{r['compute']['cpu_seconds']:.0f}" if r["compute"] else "-"
        carry = f" (*carried*: {r['carried_from']})" if r.get("carried_from") else ""
        lines.append(
            f"| {r['name']}{' (chosen)' if r['name'] == info['chosen'] else ''}"
            f"{carry} | {r['lr']:g} | "
            f"{r['prompts_per_step']} x {r['group_size']} | {r['steps_done']}/{r['steps']} | "
            f"{f(block_mean(r['reward'], 0, 4))} -> {f(block_mean(r['reward'], max(0, n - 4), n))} | "
            f"{f(block_mean(r['mean_len'], 0, 1), '{:.0f}')} -> {f(block_mean(r['mean_len'], n - 1, n), '{:.0f}')} | "
            f"{f(r['param_norm'][-1] if r['param_norm'] else None, '{:.2f}')} | {evals} | {resel} | {best} | {cpu} | "
            f"{r['why']} |"
        )
    lines += ["", f"![curves]({Path(info['attempts_file']).stem}.attempts.png)", ""]
    return "\n".join(lines)


def plot(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for r in records:
        x = range(1, len(r["reward"]) + 1)
        axes[0].plot(x, r["reward"], label=r["name"])
        axes[1].plot(x, r["mean_len"])
        axes[2].plot([e["step"] for e in r["evals"]], [100 * e["value"] for e in r["evals"]], "o-")
    axes[0].set(title="training reward (T=1 rollouts)", xlabel="step", ylabel="mean reward")
    axes[1].set(title="mean rollout length", xlabel="step", ylabel="tokens")
    axes[2].set(title="selection metric (training pool, greedy)", xlabel="step", ylabel="%")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def bundle(info: dict, out: Path, path: Path) -> None:
    """Copy the chosen attempt's best checkpoint (a vector set, or a rank-1 LoRA file) to the bundled file the
    attempts file names, with metadata saying where it came from."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from mechsteer.vectors.vector_set import load_vector_set, save_vector_set

    if not info["chosen"] or not info["bundle"]:
        sys.exit("nothing to bundle: no finished attempt with a best checkpoint, or no `bundle:` in the file")
    rec = next(r for r in info["records"] if r["name"] == info["chosen"])
    dest = (path.parent / info["bundle"]).resolve()
    provenance = {
        "source": f"scripts/train_attempts.py {info['attempts_file']} (attempt {rec['name']}, step {rec['best']['step']})",
        "attempts_record": Path(info["attempts_file"]).with_suffix(".attempts.md").name,
    }
    if rec.get("carried_from"):
        # the bundled file's own provenance (written below when it was copied) says whether it already holds it
        held = None
        if dest.is_file():
            with safe_open(str(dest), "pt") as f:
                held = (f.metadata() or {}).get("source")
        if held == provenance["source"]:
            print(f"{dest} already holds the chosen attempt {rec['name']} (bundled in an earlier sitting); unchanged")
            return
        sys.exit(
            f"{path}: the chosen attempt {rec['name']} finished in an earlier sitting ({rec['carried_from']}) and its "
            f"run folder is not under {out}, so its checkpoint cannot be copied to {dest}: restore the run folder, "
            "or remove the attempt's entry from the .attempts.json record to train it again"
        )
    folder = out / rec["name"] / "checkpoints" / f"step-{rec['best']['step']:06d}"
    if (folder / "vectors.safetensors").is_file():
        src = folder / "vectors.safetensors"
        vs = load_vector_set(src)
        meta = {k: v for k, v in vs.meta.items() if k != "path"} | provenance  # `path`: where it was read from
        save_vector_set(type(vs)(vs.vectors, vs.layers, meta), dest)
    else:
        src = folder / "lora1.safetensors"
        with safe_open(str(src), "pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
            meta = {**(f.metadata() or {}), **provenance}
        tmp = dest.with_name(f".{dest.name}.tmp")
        save_file(tensors, str(tmp), metadata=meta)
        tmp.replace(dest)
    print(f"bundled {src} -> {dest}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("attempts", type=Path)
    ap.add_argument("--out", type=Path, default=None, help="runs folder (default outputs/attempts/<file stem>)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", default=None, help="comma-separated attempt names to run")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--bundle", action="store_true", help="copy the chosen attempt's best checkpoint to `bundle:`")
    args = ap.parse_args()
    path = args.attempts.resolve()
    doc = load_attempts(path)
    out = (args.out or ROOT / "outputs" / "attempts" / path.stem).resolve()
    if not args.report_only:
        train(doc, path, out, args.threads, args.only.split(",") if args.only else None)
        reselect(doc, path, out, args.threads)
    info = report(doc, path, out)
    if args.bundle:
        bundle(info, out, path)


if __name__ == "__main__":
    main()
