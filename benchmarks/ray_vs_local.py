"""Local executor vs Ray executor (2 CPU workers) on the same small study of several cells, in one run.

The study: the embedded SmolLM2-135M, 4 conditions (base, the bundled all-layer vectors, two norm-matched
random controls) x a greedy `generate` readout on 16 `mini` problems (32 new tokens). Local: one process,
`--threads 1`. Ray: a local Ray instance with 2 workers x 1 thread (workers x threads = the 2 cores), each
worker loading the model once for its share of the cells. Both runs write into fresh output folders; the
script checks that they produce the same cells and metrics, and writes the wall-time ratio (local / Ray; > 1
means Ray is faster) into benchmarks/results/ray_vs_local.{md,json}. Ray's start-up is included.

    python benchmarks/ray_vs_local.py [--problems 16] [--tokens 32]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from _sections import command_line, facts_lines, machine_facts, setup_env, write_section

setup_env()


def study(problems: int, tokens: int) -> dict:
    return {
        "name": "ray_bench",
        "models": {"smol": {"id": "smollm2-135m", "dtype": "auto"}},
        "vectors": {
            "trained": {"kind": "bundled", "name": "smollm2-135m/all_layers"},
            "r1": {"kind": "random", "seed": 1, "norm_like": "trained"},
            "r2": {"kind": "random", "seed": 2, "norm_like": "trained"},
        },
        "conditions": {
            "base": [],
            "steered": [{"kind": "add", "vector": "trained"}],
            "random_1": [{"kind": "add", "vector": "r1"}],
            "random_2": [{"kind": "add", "vector": "r2"}],
        },
        "readouts": {
            "gen": {"kind": "generate", "task": "mini", "limit": problems, "max_new_tokens": tokens, "batch_size": 16}
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=32)
    a = ap.parse_args()

    import mechsteer as ms

    facts = machine_facts()
    doc = study(a.problems, a.tokens)
    with tempfile.TemporaryDirectory() as tmp:
        s = ms.Study.from_dict(doc)
        t0 = time.perf_counter()
        local = s.run(output_dir=Path(tmp) / "local", threads=1, report=False)
        t_local = time.perf_counter() - t0
        t0 = time.perf_counter()
        remote = s.run(output_dir=Path(tmp) / "ray", threads=1, report=False, executor="ray")
        t_ray = time.perf_counter() - t0
        same_cells = sorted(c["hash"] for c in local.cells) == sorted(c["hash"] for c in remote.cells)
        metrics = lambda r: {
            c["hash"]: json.loads((r.store.dir(c["hash"]) / "metrics.json").read_text())  # noqa: E731
            for c in r.cells
        }
        same_metrics = metrics(local) == metrics(remote)
    n_cells = len({c["hash"] for c in local.cells})
    data = {
        "cells": n_cells,
        "problems": a.problems,
        "tokens": a.tokens,
        "local_s": round(t_local, 1),
        "ray_s": round(t_ray, 1),
        "ratio_local_over_ray": round(t_local / t_ray, 3),
        "same_cells": same_cells,
        "same_metrics": same_metrics,
        "machine": facts,
    }
    lines = [
        "## Local executor vs Ray (2 CPU workers)",
        "",
        f"`{command_line()}`",
        "",
        f"{n_cells} cells (4 conditions x a greedy generate readout on {a.problems} mini problems, {a.tokens} "
        "new tokens) on the embedded model; local = one process with 1 torch thread, Ray = a local Ray "
        "instance with 2 workers x 1 thread (start-up included).",
        "",
        "| executor | wall time (s) |",
        "|---|---|",
        f"| local | {t_local:.1f} |",
        f"| Ray, 2 workers | {t_ray:.1f} |",
        "",
        f"Ratio local / Ray: **{t_local / t_ray:.2f}** (> 1: Ray faster). Same cell hashes: {same_cells}; "
        f"same metrics: {same_metrics}.",
        "",
        *facts_lines(facts),
        "",
    ]
    write_section("ray_vs_local", lines, data)


if __name__ == "__main__":
    main()
