"""The GPU estimate of the whole paper (`mechsteer plan --estimate --all`) as a section: one row per paper profile
of every bundled study and per paper training run, the total against the goal, what dominates and where the
rates come from. Writes benchmarks/results/paper_estimate.{md,json}; `python benchmarks/collect.py` copies it
into docs/paper.md and the README. An estimate from the throughput table, not a measurement: its rates are
uncalibrated assumptions until a GPU run calibrates them (benchmarks/gpu_check.sh).

    python benchmarks/paper_estimate.py [--gpu h100-80gb] [--throughput FILE]
"""

from __future__ import annotations

import argparse

from _sections import REPO, command_line, setup_env, write_section

setup_env()


def _h(x: float) -> str:
    return f"{x:,.0f}" if x >= 10 else f"{x:.1f}"


def lines_of(est: dict) -> list[str]:
    """The section's Markdown."""
    goal, tot = est["goal"], est["total"]
    budget = goal["gpu_hours"]
    out = [
        "# GPU estimate of the whole paper",
        "",
        f"Command: `{command_line()}` (= `mechsteer plan --estimate --all --gpu {est['gpu']}`). GPU: "
        f"{est['gpu_name']}. GPU hours on one GPU: as planned (each cell on its study's engine: transformers), "
        "with every sample run to its cap, and with vLLM wherever a bias-compiled checkpoint can run the cell "
        "(evaluation of `add` conditions) or the rollouts (vector setups). Expected lengths and rates are "
        "**uncalibrated assumptions** (mechsteer/data/throughput.yaml states each one); per-block training counts "
        "one run per block the studies read.",
        "",
        "| study or training file | profile | models | cells / runs | GPU h | at the cap | with vLLM |",
        "|---|---|---|---|---|---|---|",
    ]
    for i in est["items"]:
        count = str(i["cells"]) if i["kind"] == "study" else f"{i['runs']} x {i['steps']} steps"
        models = ", ".join(m.rsplit("/", 1)[-1] for m in i["models"])
        out.append(
            f"| `{i['file'].rsplit('/', 1)[-1]}` | {i['profile'] or '-'} | {models} | {count} | "
            f"{_h(i['gpu_hours'])} | {_h(i['gpu_hours_cap'])} | {_h(i['gpu_hours_vllm'])} |"
        )
    out.append(
        f"| **total** | | | | **{_h(tot['gpu_hours'])}** | **{_h(tot['gpu_hours_cap'])}** | "
        f"**{_h(tot['gpu_hours_vllm'])}** |"
    )
    out += [""]
    for key, what in (("gpu_hours", "As planned"), ("gpu_hours_vllm", "With vLLM wherever it can run")):
        verdict = "fits" if est["fits"][key] else "does **not** fit"
        out.append(
            f"- {what}: {_h(tot[key])} GPU hours, {tot[key] / budget:.0f}x the goal's {budget:.0f} "
            f"({goal['gpus']} GPUs x {goal['hours']} h, {goal['what']}): the design {verdict}."
        )
    total = max(tot["gpu_hours"], 1e-9)
    dom = "; ".join(
        f"`{d['file'].rsplit('/', 1)[-1]}`{' -p ' + d['profile'] if d['profile'] else ''} "
        f"{_h(d['gpu_hours'])} h ({100 * d['gpu_hours'] / total:.0f}%)"
        for d in est["dominant"]
    )
    out += [f"- Dominated by: {dom}.", ""]
    from mechsteer.engine.estimate import sources_by_text

    out += [f"- Rates for {', '.join(used)}: {src}" for src, used in sources_by_text(est["sources"])]
    return out


def main() -> None:
    from mechsteer.engine.estimate import estimate_paper, load_throughput

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpu", default=None)
    ap.add_argument("--throughput", default=None)
    args = ap.parse_args()
    table = load_throughput(args.throughput)
    est = estimate_paper(REPO / "studies", table, args.gpu)
    write_section("paper_estimate", lines_of(est), est)


if __name__ == "__main__":
    main()
