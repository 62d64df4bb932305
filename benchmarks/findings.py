"""Which of the paper's findings show on the embedded model: computed from the output folders of a real run of
the studies (`python benchmarks/studies.py`), never typed by hand.

    python benchmarks/findings.py                         # the newest outputs/studies_bench/<time>/ root
    python benchmarks/findings.py --root outputs/studies_bench/20261201-0130 [--root another]

For each study present it tabulates the accuracies the claim rests on and tests the comparison the paper
makes with an exact McNemar test on the shared problems (greedy, lenient accuracy, n = the study's problems):
the penultimate-block vector and its circuit on the last block (Figures 5, 20, 21), single-layer vectors
against their norm-matched random control and the unsteered model (Figure 1), pairs
against their better single (Figure 13), the block-24 vector at each place inside the block (Appendix C),
persistence cosines at later blocks (Figure 2), the transfer row (Table 1), the rank-1 LoRA's accuracy and its
token-wise magnitude per prompt segment (Appendix S). Statements are generated from the
numbers with a fixed threshold (p < 0.05); "no effect" means no significant difference at this sample size,
not evidence of absence. Writes benchmarks/results/findings.md/.json; `benchmarks/collect.py` puts the Markdown
into the README block `<!-- results:findings -->`.
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

from _sections import REPO, command_line, setup_env, write_section

ALPHA = 0.05
METRIC = "acc_lenient"


def newest_root() -> Path | None:
    roots = sorted((REPO / "outputs" / "studies_bench").glob("*/"))
    return roots[-1] if roots else None


def find_study(roots: list[Path], study: str):
    """Results of `study` from the last root that has it recorded (None when absent)."""
    import mechsteer as ms

    for root in reversed(roots):
        folder = root / study
        if (folder / "plan.json").is_file():
            res = ms.load_results(folder)
            if res.recorded():
                return res
    return None


class Acc:
    """Accuracy per condition of one study's eval cells, and paired tests between conditions."""

    def __init__(self, res, measurement: str | None = None, kind: str = "eval", metric: str = METRIC):
        self.res, self.kind, self.metric = res, kind, metric
        t = res.table()
        t = t[(t.kind == kind) & (t.metric == metric)]
        if measurement is not None:
            t = t[t.measurement == measurement]
        self.t = t
        self.value = t.groupby("condition").value.mean().to_dict()

    def cells(self, cond: str) -> list[str]:
        return [c["hash"] for c in self.res.recorded() if c["condition"] == cond and c["kind"] == self.kind]

    def test(self, a: str, b: str) -> tuple[float, float, int]:
        """(b - a in points on the shared problems, exact McNemar p, number of shared problems)."""
        from mechsteer.comparison import mcnemar_exact, problem_scores

        sa, _ = problem_scores(self.res, self.cells(a), self.kind, self.metric)
        sb, _ = problem_scores(self.res, self.cells(b), self.kind, self.metric)
        common = sa.index.intersection(sb.index)
        if len(common) == 0:
            return math.nan, math.nan, 0
        xa, xb = (sa[common] >= 0.5).to_numpy(), (sb[common] >= 0.5).to_numpy()
        _, _, p = mcnemar_exact(xa, xb)
        return 100 * (sb[common].mean() - sa[common].mean()), p, len(common)

    def pct(self, cond: str) -> str:
        v = self.value.get(cond)
        return "-" if v is None else f"{100 * v:.1f}"


def _sig(diff: float, p: float) -> str:
    if math.isnan(p):
        return "-"
    mark = "**" if p < ALPHA else ""
    return f"{mark}{diff:+.1f} ({_p(p)}){mark}"


def _p(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def _numbered(values, prefix: str) -> list[int]:
    rx = re.compile(rf"^{prefix}_(\d+)$")
    return sorted(int(m.group(1)) for c in values if (m := rx.match(c)))


def single_layer_section(res) -> tuple[list[str], dict]:
    acc = Acc(res, "mini")
    blocks = _numbered(acc.value, "single")
    rows, data = [], []
    beats_random, beats_base = [], []
    for k in blocks:
        d_r, p_r, n = acc.test(f"random_{k}", f"single_{k}")
        d_b, p_b, _ = acc.test("base", f"single_{k}")
        if p_r < ALPHA and d_r > 0:
            beats_random.append(k)
        if p_b < ALPHA and d_b > 0:
            beats_base.append(k)
        rows.append(
            f"| {k} | {acc.pct(f'single_{k}')} | {acc.pct(f'random_{k}')} | {_sig(d_r, p_r)} | {_sig(d_b, p_b)} |"
        )
        data.append(
            {
                "block": k,
                "single": acc.value.get(f"single_{k}"),
                "random": acc.value.get(f"random_{k}"),
                "vs_random": [d_r, p_r],
                "vs_base": [d_b, p_b],
                "n": n,
            }
        )
    t1 = Acc(res, "sampled", kind="generate") if "sampled" in set(res.table().measurement) else None
    lines = [
        "### Single-layer vectors, accuracy per block (Figure 1; `studies/single_layer.yaml`)",
        "",
        f"Greedy lenient accuracy (%) on {data[0]['n'] if data else '?'} held-out `mini` problems. Unsteered: "
        f"{acc.pct('base')}; all-layer vector: {acc.pct('all_layers')}"
        + (
            f"; at temperature 1 (readout `sampled`): unsteered {t1.pct('base')}, all-layer {t1.pct('all_layers')}"
            if t1
            else ""
        )
        + ". Differences in points with the exact McNemar p; bold: p < 0.05.",
        "",
        "| block | s_k | random_k | s_k - random_k | s_k - unsteered |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"- s_k beats its norm-matched random control (p < 0.05) at blocks: {beats_random or 'none'} (of {blocks}).",
        f"- s_k beats the unsteered model (p < 0.05) at blocks: {beats_base or 'none'}.",
        "",
    ]
    return lines, {
        "blocks": data,
        "beats_random": beats_random,
        "beats_base": beats_base,
        "base": acc.value.get("base"),
        "all_layers": acc.value.get("all_layers"),
    }


def composition_section(res) -> tuple[list[str], dict]:
    from mechsteer.report.composition import relative_improvement

    acc = Acc(res, "mini")
    rx = re.compile(r"^pair_(\d+)_(\d+)$")
    pairs = sorted((int(m.group(1)), int(m.group(2))) for c in acc.value if (m := rx.match(c)))
    steer = acc.value.get("all_layers")
    better, worse, reach, rows, data = 0, 0, 0, [], []
    for i, j in pairs:
        si, sj = acc.value.get(f"single_{i}"), acc.value.get(f"single_{j}")
        if si is None or sj is None:
            continue
        best = f"single_{i}" if si >= sj else f"single_{j}"
        d, p, _ = acc.test(best, f"pair_{i}_{j}")
        v = acc.value[f"pair_{i}_{j}"]
        ri = relative_improvement(v, si, sj, steer)[0] if steer is not None else math.nan
        better += p < ALPHA and d > 0
        worse += p < ALPHA and d < 0
        reach += (not math.isnan(ri)) and ri > 0.99
        rows.append(
            f"| {i}, {j} | {acc.pct(f'pair_{i}_{j}')} | {100 * si:.1f} / {100 * sj:.1f} | {_sig(d, p)} "
            f"| {'-' if math.isnan(ri) else f'{ri:.2f}'} |"
        )
        data.append({"pair": [i, j], "acc": v, "singles": [si, sj], "vs_best_single": [d, p], "ri": ri})
    lines = [
        "### Composition of single-layer vectors (Figure 13; `studies/composition.yaml`)",
        "",
        f"Greedy lenient accuracy (%); all-layer vector {acc.pct('all_layers')}, unsteered {acc.pct('base')}. "
        "RI = (pair - better single) / (all-layer - better single).",
        "",
        "| blocks | pair | singles | pair - better single | RI |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"- Of {len(data)} pairs, {better} beat their better single vector and {worse} fall below it (p < 0.05); "
        f"{reach} reach the all-layer result (RI > 0.99).",
        "",
    ]
    return lines, {"pairs": data, "better": better, "worse": worse, "reach_all_layers": reach}


def add_place_section(res) -> tuple[list[str], dict]:
    acc = Acc(res, "mini")
    places = [c[3:] for c in acc.value if c.startswith("at_")]
    rows, data = [], []
    for place in places:
        d_r, p_r, _ = acc.test(f"random_at_{place}", f"at_{place}")
        d_b, p_b, _ = acc.test("base", f"at_{place}")
        rows.append(
            f"| {place} | {acc.pct(f'at_{place}')} | {acc.pct(f'random_at_{place}')} | {_sig(d_r, p_r)} "
            f"| {_sig(d_b, p_b)} |"
        )
        data.append(
            {"place": place, "acc": acc.value.get(f"at_{place}"), "vs_random": [d_r, p_r], "vs_base": [d_b, p_b]}
        )
    lines = [
        "### Where inside the block (Appendix C; `studies/add_place.yaml`)",
        "",
        f"The block-24 single-layer vector added after each submodule of block 24; unsteered {acc.pct('base')}.",
        "",
        "| place | vector | random | vector - random | vector - unsteered |",
        "|---|---|---|---|---|",
        *rows,
        "",
    ]
    return lines, {"places": data}


def persistence_section(res) -> tuple[list[str], dict]:
    t = res.table()
    t = t[t.kind == "persistence"]
    later = t[t.metric.str.startswith("later_")]
    if later.empty:
        return [], {}
    wide = later.pivot_table(index="condition", columns="metric", values="value", aggfunc="mean")
    lines = [
        "### Persistence (Figure 2; `studies/persistence.yaml`)",
        "",
        "Mean cosines at blocks after the source (averaged over sources, tokens and samples):",
        "",
        wide.round(3).reset_index().to_markdown(index=False),
        "",
    ]
    return lines, {"later": wide.round(4).to_dict()}


def transfer_section(res) -> tuple[list[str], dict]:
    acc = Acc(res, "mini")
    native = "from_instruct" if "from_instruct" in res.conditions else "from_math"  # older runs named the model `math`
    d, p, _ = acc.test("base", native)
    dr, pr, _ = acc.test("base", "random_donor")
    lines = [
        "### Transfer (Table 1; `studies/transfer.yaml`)",
        "",
        f"Only the native row exists on the embedded model: unsteered {acc.pct('base')}, own vectors "
        f"{acc.pct(native)} ({_sig(d, p)}), norm-matched random donor {acc.pct('random_donor')} "
        f"({_sig(dr, pr)}). Cross-model transfer needs a second model of the family (the `paper` profile).",
        "",
    ]
    return lines, {"native": [d, p], "random_donor": [dr, pr]}


def penultimate_section(res) -> tuple[list[str], dict]:
    """The circuit of the penultimate-block vector on the last block (Figures 5, 20, 21)."""
    acc = Acc(res, "mini")
    kv, heads = _numbered_plain(acc.value, "v_only_kv"), _numbered(acc.value, "steer_head")
    # (condition, what the paper compares it with)
    pairs = [("s_pen", "random_pen"), ("random_pen", None), ("skip_attn", "s_pen"), ("skip_layer", "s_pen")]
    pairs += [(f"v_only_kv{h}", "skip_attn") for h in kv] + [(f"steer_head_{h}", "s_pen") for h in heads]
    rows, data = [], {}
    for cond, ref in pairs:
        if cond not in acc.value:
            continue
        d_b, p_b, n = acc.test("base", cond)
        d_r, p_r, _ = acc.test(ref, cond) if ref in acc.value else (math.nan, math.nan, 0)
        rows.append(f"| {cond} | {acc.pct(cond)} | {_sig(d_b, p_b)} | {ref or '-'} | {_sig(d_r, p_r)} |")
        data[cond] = {"acc": acc.value.get(cond), "vs_base": [d_b, p_b], "ref": ref, "vs_ref": [d_r, p_r], "n": n}

    def verdict(cond: str, key: str, what: str) -> str:
        d = data.get(cond)
        if d is None:
            return f"{cond} was not run"
        diff, p = d[key]
        if math.isnan(p):
            return f"{cond}: no shared problems"
        if p < ALPHA:
            return f"{cond} is {'above' if diff > 0 else 'below'} {what} ({diff:+.1f} points, {_p(p)})"
        return f"{cond} does not differ from {what} at this sample size ({diff:+.1f} points, {_p(p)})"

    gain = lambda c: (acc.value[c] - acc.value["base"]) if c in acc.value and "base" in acc.value else math.nan  # noqa: E731
    kept = {c: gain(c) / gain("s_pen") for c in ("skip_attn", "skip_layer") if gain("s_pen") > 0 and c in acc.value}

    def above(prefix: str, numbers: list[int]) -> list[int]:
        """The numbers k whose condition `<prefix>k` is above the unsteered model at p < ALPHA."""
        return [
            k for k in numbers if (d := data.get(f"{prefix}{k}")) and d["vs_base"][1] < ALPHA and d["vs_base"][0] > 0
        ]

    n = next(iter(data.values()))["n"] if data else "?"
    lines = [
        "### Penultimate-block circuit (Figures 5, 20, 21; `studies/penultimate.yaml`)",
        "",
        f"Greedy lenient accuracy (%) on {n} held-out `mini` problems with the bundled block-28 vector s_pen "
        f"(SmolLM2 has 30 blocks; 28 is the penultimate). Unsteered: {acc.pct('base')}. Each circuit condition "
        "is compared with the unsteered model and with the condition the paper compares it with; differences in "
        "points with the exact McNemar p on the shared problems; bold: p < 0.05.",
        "",
        "| condition | accuracy | vs unsteered | compared with | vs that |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"- {verdict('s_pen', 'vs_base', 'the unsteered model')}; {verdict('s_pen', 'vs_ref', 'its norm-matched random control')}.",
        f"- Skip-Attn (the last block's attention reads the unsteered stream): {verdict('skip_attn', 'vs_ref', 's_pen')}"
        + (
            f"; it keeps {100 * kept['skip_attn']:.0f}% of s_pen's gain over the unsteered model"
            if "skip_attn" in kept
            else ""
        )
        + ".",
        f"- Skip-Layer (the last block runs on the unsteered stream, s_pen added after it): {verdict('skip_layer', 'vs_ref', 's_pen')}"
        + (f"; it keeps {100 * kept['skip_layer']:.0f}% of the gain" if "skip_layer" in kept else "")
        + ".",
        f"- V steered in one KV head only (all else unsteered): above the unsteered model (p < 0.05) for KV heads "
        f"{above('v_only_kv', kv) or 'none'} of {kv}.",
        f"- Steer-Head (one query head reads the steered stream): above the unsteered model (p < 0.05) for heads "
        f"{above('steer_head_', heads) or 'none'} of {heads}.",
        "",
    ]
    return lines, {"conditions": data, "base": acc.value.get("base"), "gain_kept": kept}


def tokenwise_section(res) -> tuple[list[str], dict]:
    """The rank-1 LoRA's accuracy and its token-wise magnitude per prompt segment (Appendix S)."""
    import pandas as pd

    acc = Acc(res, "mini")
    rows, data = [], {}
    for cond, ref in (("lora1", "base"), ("all_layers", "base"), ("lora1", "all_layers")):
        if cond not in acc.value or ref not in acc.value:
            continue
        d, p, n = acc.test(ref, cond)
        rows.append(f"| {cond} | {acc.pct(cond)} | {ref} | {acc.pct(ref)} | {_sig(d, p)} |")
        data[f"{cond}_vs_{ref}"] = {"acc": acc.value[cond], "ref_acc": acc.value[ref], "diff": d, "p": p, "n": n}
    lines = [
        "### Token-wise magnitude of a rank-1 LoRA (Appendix S; `studies/tokenwise.yaml`)",
        "",
        "Greedy lenient accuracy (%) on the held-out `mini` problems of the bundled rank-1 LoRA on every block's "
        "down_proj (`lora1`), against the unsteered model and the all-layer steering vector; exact McNemar p.",
        "",
        "| condition | accuracy | compared with | its accuracy | difference |",
        "|---|---|---|---|---|",
        *rows,
        "",
    ]
    seg_csv = Path(res.output_dir) / "report" / "tokenwise_segments.csv"
    if seg_csv.is_file():
        seg = pd.read_csv(seg_csv)
        by = seg.groupby("segment", sort=False).agg(
            blocks=("layer", "nunique"), tokens=("n", "max"), alpha=("mean_alpha_norm", "mean")
        )
        lines += [
            "alpha_t divided by the block's mean unadapted MLP-output norm and sign-flipped to a positive mean per "
            "block (the sign of B is arbitrary), averaged over blocks, per prompt segment of the teacher-forced "
            "samples:",
            "",
            "| segment | blocks | tokens per block | mean normalised alpha_t |",
            "|---|---|---|---|",
            *(f"| {s} | {int(r.blocks)} | {int(r.tokens)} | {r.alpha:.3f} |" for s, r in by.iterrows()),
            "",
        ]
        hi, lo = by["alpha"].idxmax(), by["alpha"].idxmin()
        if by.loc[lo, "alpha"] > 0:
            lines += [
                f"- The magnitude is largest on `{hi}` and smallest on `{lo}` tokens "
                f"({by.loc[hi, 'alpha'] / by.loc[lo, 'alpha']:.1f}x): the adapter's step along its fixed direction "
                "is chosen per token, not constant.",
                "",
            ]
        data["segments"] = by.round(5).to_dict(orient="index")
    return lines, data


def _numbered_plain(values, prefix: str) -> list[int]:
    """Numbers k of conditions named `<prefix><k>` (no underscore: `v_only_kv0`)."""
    rx = re.compile(rf"^{prefix}(\d+)$")
    return sorted(int(m.group(1)) for c in values if (m := rx.match(c)))


SECTIONS = [
    ("penultimate", penultimate_section),
    ("single_layer", single_layer_section),
    ("composition", composition_section),
    ("add_place", add_place_section),
    ("persistence", persistence_section),
    ("transfer", transfer_section),
    ("tokenwise", tokenwise_section),
]


def previous_sections() -> dict[str, tuple[list[str], str, dict | None]]:
    """{study: (its section's lines, the command that computed it, its JSON data)} from the current
    benchmarks/results/findings.md/.json: a section is the text under a `### ...` heading naming
    `studies/<study>.yaml`, up to the next such heading (a carried note of an earlier merge is dropped)."""
    import json

    md = REPO / "benchmarks" / "results" / "findings.md"
    if not md.is_file():
        return {}
    text = md.read_text().splitlines()
    js = REPO / "benchmarks" / "results" / "findings.json"
    data = json.loads(js.read_text()) if js.is_file() else {}
    command = next((m.group(1) for line in text if (m := re.match(r"Command: `([^`]*)`", line))), "unknown")
    out: dict[str, tuple[list[str], str, dict | None]] = {}
    study, body = None, []
    for line in [*text, "### end"]:
        if line.startswith("### "):
            if study is not None:
                kept = [b for b in body if not b.startswith("(Carried from an earlier sitting")]
                prior = next((b for b in body if b.startswith("(Carried from an earlier sitting")), None)
                cmd = re.search(r"`([^`]*)`", prior).group(1) if prior else command
                out[study] = (kept, cmd, data.get(study))
            m = re.search(r"`studies/(\w+)\.yaml`", line)
            study, body = (m.group(1) if m else None), [line]
        elif study is not None:
            body.append(line)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, action="append", help="studies output root(s); later ones win")
    ap.add_argument(
        "--section",
        choices=[name for name, _ in SECTIONS],
        help="compute only this study's section, into its own file benchmarks/results/findings_<study>.md "
        "(a study rerun alone, e.g. `--root outputs --section penultimate` after `mechsteer run studies/penultimate.yaml`)",
    )
    ap.add_argument(
        "--merge",
        action="store_true",
        help="keep the previous findings.md/.json sections of studies not in these roots (each carried section is "
        "marked with the command that computed it), so the studies can be rerun in several sittings",
    )
    args = ap.parse_args()
    setup_env()
    roots = args.root or ([newest_root()] if newest_root() else [])
    if not roots:
        raise SystemExit("no outputs/studies_bench/<time>/ folder: run python benchmarks/studies.py first")
    lines = [
        "## Paper findings on the embedded model (benchmarks/findings.py)",
        "",
        f"Command: `{command_line()}`. From the study outputs under "
        + ", ".join(f"`{r.relative_to(REPO) if r.is_absolute() and r.is_relative_to(REPO) else r}`" for r in roots)
        + ". Every number below is computed from the recorded cells.",
        "",
    ]
    data = {}
    previous = previous_sections() if args.merge and not args.section else {}
    if args.section:
        lines[0] = f"## Paper findings on the embedded model: {args.section} (benchmarks/findings.py)"
    for study, fn in SECTIONS:
        if args.section and study != args.section:
            continue
        res = find_study(roots, study)
        if res is None and args.merge and study in previous:
            text, command, d = previous[study]
            while text and not text[-1].strip():  # one blank line before the note, so it is not read as part of a list
                text = text[:-1]
            lines += [*text, "", f"(Carried from an earlier sitting: `{command}`; not rerun since.)", ""]
            if d is not None:
                data[study] = d
            continue
        if res is None:
            lines += [f"### {study}", "", "not run in these roots.", ""]
            continue
        section, d = fn(res)
        lines += section
        data[study] = d
    write_section(f"findings_{args.section}" if args.section else "findings", lines, data)


if __name__ == "__main__":
    main()
