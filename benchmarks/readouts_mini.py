"""Wall time and headline numbers of `studies/readouts_mini.yaml` (every mechanistic readout on the embedded
SmolLM2-135M-Instruct with its bundled vectors), measured in one fresh run through the CLI.

Headlines (read from the run's report tables, never typed): the tokens the last-layer vector boosts most
(logit lens, dot), the non-Latin share of the bottom-k vs top-k logit-lens tokens against the vocabulary,
persistence (DV off the diagonal, self-alignment at the last block), the first generated token's KL and
dp("To") under the all-layer vectors, stable ranks.

Usage: python benchmarks/readouts_mini.py [--threads 1] [--output /tmp/readouts_mini_bench]
Writes benchmarks/results/readouts_mini.md and benchmarks/results/readouts_mini.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from mechsteer.atomic import atomic_write_text

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT = HERE / "results"
STUDY = "studies/readouts_mini.yaml"


def headlines(report: Path) -> dict:
    lens = pd.read_csv(report / "logit_lens.csv", keep_default_na=False)
    sel = lens[
        (lens.vectors == "last") & (lens.metric == "dot") & (lens.end == "top") & (lens.normed.astype(str) == "False")
    ]
    bottom = lens[
        (lens.vectors == "last")
        & (lens.metric == "dot")
        & (lens.end == "bottom")
        & (lens.normed.astype(str) == "False")
    ]
    ne = pd.read_csv(report / "non_english.csv")
    frac = ne.groupby(["vectors", "k", "end"])["frac_non_latin"].mean()
    pers = pd.read_csv(report / "persistence.csv")
    later = pers[pers.target > pers.source]
    last_block = pers[pers.target == pers.target.max()]
    ts = pd.read_csv(report / "token_shift_groups.csv")
    stats = pd.read_csv(report / "vector_stats.csv")
    out = {
        "last_top_boosted": sel.sort_values("rank").token.head(10).tolist(),
        "last_top_suppressed": bottom.sort_values("rank").token.head(10).tolist(),
        "non_latin": {f"{v}/k{k}/{e}": float(x) for (v, k, e), x in frac.items()},
        "persistence": {
            "sources": int(pers.source.nunique()),
            "dv_diag": float(pers[pers.source == pers.target].dv.mean()),
            "dv_later": float(later.dv.mean()),
            "dd_later": float(later.dd.mean()),
            "self_last_block": float(last_block.self_cos.mean()),
        },
        "token_shift": ts[["condition", "group", "n", "kl", "dp[To]", "reinforces_top"]].to_dict("records"),
        "stable_rank": dict(zip(stats.vectors, stats.stable_rank.astype(float), strict=True)),
    }
    vocab = next(report.parent.glob("cells/*/non_english/vocab.csv"))
    out["non_latin"]["vocabulary"] = float(pd.read_csv(vocab)["frac_non_latin"].iloc[0])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--output", default="/tmp/readouts_mini_bench")
    args = ap.parse_args()
    shutil.rmtree(args.output, ignore_errors=True)
    cmd = [sys.executable, "-m", "mechsteer.cli.app", "run", STUDY, "--threads", str(args.threads), "-o", args.output]
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    report = Path(args.output) / "readouts_mini" / "report"
    cells = [json.loads(p.read_text()) for p in (Path(args.output) / "readouts_mini" / "cells").glob("*/cell.json")]
    per_readout: dict[str, float] = {}
    for c in cells:
        per_readout[c["measurement"]] = per_readout.get(c["measurement"], 0.0) + c["timing"]["seconds"]
    h = headlines(report)
    machine = {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
    }
    data = {
        "command": " ".join(["mechsteer", *cmd[3:]]),
        "wall_seconds": wall,
        "cells": len(cells),
        "seconds_by_readout": per_readout,
        "machine": machine,
        "headlines": h,
    }
    OUT.mkdir(exist_ok=True)
    atomic_write_text(OUT / "readouts_mini.json", json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    nl = h["non_latin"]
    lines = [
        "## Mechanistic readouts on SmolLM2-135M (`studies/readouts_mini.yaml`)",
        "",
        f"Command: `{data['command']}` (written by `benchmarks/readouts_mini.py`). Machine: {machine['cpus']} CPUs "
        f"shared with other jobs, {machine['platform']}, Python {machine['python']}.",
        "",
        f"Wall time of the whole run (model load, {len(cells)} cells, report): **{wall:.0f} s**. Cell time by readout: "
        + ", ".join(f"{k.split(':', 1)[1]} {v:.0f} s" for k, v in sorted(per_readout.items()))
        + ".",
        "",
        "- Last-layer vector, logit lens (dot, no final norm), top 10 boosted: "
        + " ".join(repr(t) for t in h["last_top_boosted"])
        + "; top 10 suppressed: "
        + " ".join(repr(t) for t in h["last_top_suppressed"])
        + ".",
        "- Non-Latin share, all-layer vectors (mean over layers): bottom-1000 "
        f"{100 * nl['all_layers/k1000/bottom']:.2f}% vs top-1000 {100 * nl['all_layers/k1000/top']:.2f}%; bottom-50 "
        f"{100 * nl['all_layers/k50/bottom']:.2f}% vs top-50 {100 * nl['all_layers/k50/top']:.2f}%; whole vocabulary "
        f"{100 * nl['vocabulary']:.2f}%.",
        f"- Persistence ({h['persistence']['sources']} sources of the all-layer set): DV at j = l "
        f"{h['persistence']['dv_diag']:.3f}, mean DV for j > l {h['persistence']['dv_later']:.3f}, mean DD for j > l "
        f"{h['persistence']['dd_later']:.3f}, self-alignment at the last block "
        f"{h['persistence']['self_last_block']:.3f}.",
    ]
    for r in h["token_shift"]:
        lines.append(
            f"- Token shift, {r['condition']} vs unsteered, {r['group']} generated tokens (n = {r['n']}): "
            f'KL {r["kl"]:.4f} nats, dp("To") {r["dp[To]"]:+.4f}, boosted token = reference argmax in '
            f"{100 * r['reinforces_top']:.0f}% of positions."
        )
    lines.append("- Stable rank: " + ", ".join(f"{k} {v:.2f}" for k, v in h["stable_rank"].items() if v == v) + ".")
    atomic_write_text(OUT / "readouts_mini.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
