"""The `token_shift` readout kind (Figures 3 and 6): the cell's condition against a reference condition (the
unsteered model by default) on the same teacher-forced sequences, sampled under one of them. Logits come from
one base pass and a replay of each condition from the first block it touches (a full forward when replay
cannot reproduce it), one chunk at a time; per-position rows from `mechsteer.readouts.token_shift`; the
samples with the largest KL are drawn as coloured-token HTML."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from mechsteer.atomic import atomic_write_text
from mechsteer.cell_tables import csv_bytes, md, slug
from mechsteer.errors import MechsteerError
from mechsteer.measurement import MeasurementResult, MeasurementTask
from mechsteer.readouts.plots import line_plot
from mechsteer.readouts.teacher_forced import (
    chunks,
    final_resid,
    kept_sequences,
    token_strings,
)
from mechsteer.readouts.token_shift import generated_positions, html_samples, summarize, token_shift
from mechsteer.replay import unembed
from mechsteer.sequences import pad_id
from mechsteer.sequences.html import render_tokens

KIND = "token_shift"
SLICE = 128
"""Positions unembedded at a time (memory: batch x SLICE x vocab logits per condition)."""


def reference_interventions(task) -> list:
    """The reference condition's bound interventions for this model: [] for the unsteered model (`reference:
    null`); a named condition comes bound from the compiled plan (`MeasurementTask.reference_interventions`)."""
    if task.spec.reference is None:
        return []
    if task.reference_interventions is None:
        raise MechsteerError(
            f"token_shift.reference {task.spec.reference!r} was not resolved by the compiler",
            hint="the condition must exist for this model (sweeps expand per model)",
        )
    return list(task.reference_interventions)


def tracked_ids(tokenizer, strings: list[str]) -> dict[str, int]:
    """name -> token id of each tracked string (each must be one token of this tokenizer)."""
    out = {}
    for s in strings:
        ids = tokenizer.encode(s, add_special_tokens=False)
        if len(ids) != 1:
            pieces = tokenizer.convert_ids_to_tokens(ids)
            raise MechsteerError(
                f"token_shift.track: {s!r} is {len(ids)} tokens {pieces} for this model's tokenizer, not one",
                hint="track a single token: try it with or without a leading space",
            )
        out[s] = ids[0]
    return out


def category_ids(tokens: list[str], categories: dict[str, str]) -> dict[str, list[int]]:
    """name -> the ids of the vocabulary tokens whose text the category's regular expression matches in full."""
    out = {}
    for name, pattern in categories.items():
        rx = re.compile(pattern)
        out[name] = [i for i, t in enumerate(tokens) if t and rx.fullmatch(t)]
    return out


def run(task: MeasurementTask) -> MeasurementResult:
    """Record how the condition shifts next-token distributions against the reference condition on the same
    teacher-forced sequences (KL, entropies, argmax changes, tracked tokens)."""
    spec, lm = task.spec, task.lm
    track = tracked_ids(lm.tokenizer, spec.track)
    ref = reference_interventions(task)
    cond = list(task.interventions)
    seqs, n_dropped = kept_sequences(task, cond if spec.sample_from == "condition" else ref)
    tokens = token_strings(lm)
    cats = category_ids(tokens, spec.categories)
    parts = []
    task.progress(0, len(seqs))
    for ids, mask, plens, sids, _ in chunks(seqs, spec.batch_size, pad_id(lm.tokenizer), lm.device):
        h_ref, h_cond = final_resid(lm, [ref, cond], task.vectors, ids, mask, plens)
        gen = generated_positions(mask.cpu(), plens)
        for s0 in range(0, ids.shape[1], SLICE):  # [b, SLICE, vocab] logits at a time
            g = gen[:, s0 : s0 + SLICE]
            if bool((g >= 0).any()):
                ref_logits, cond_logits = (
                    unembed(lm.model, lm.adapter, h[:, s0 : s0 + SLICE]).float().cpu() for h in (h_ref, h_cond)
                )
                parts.append(
                    token_shift(ref_logits, cond_logits, g, tokens, track=track, categories=cats, sample_ids=sids)
                )
        task.progress(len(sids), None)
    if not parts:
        raise MechsteerError(
            f"token_shift: no generated position to analyse ({len(seqs)} sequences kept, {n_dropped} truncated "
            "ones dropped by only_finished)",
            hint="raise max_new_tokens or limit, or set only_finished: false",
        )
    table = pd.concat(parts, ignore_index=True).sort_values(["sample", "pos"], kind="stable", ignore_index=True)
    s = summarize(table, top=spec.top)
    files = {
        f"{KIND}/positions.csv": csv_bytes(table),
        f"{KIND}/by_token.csv": csv_bytes(s["by_token"]),
        f"{KIND}/by_group.csv": csv_bytes(s["by_group"]),
        f"{KIND}/by_position.csv": csv_bytes(s["by_position"]),
    }
    sequences = {n: [tokens[i] if i < len(tokens) else "" for i in q.ids] for n, q in enumerate(seqs)}
    plen = {n: q.prompt_length for n, q in enumerate(seqs)}
    if len(table):
        html = render_tokens(
            [("", html_samples(table, sequences, plen, samples=_top(table, min(spec.top, 5)), value="kl"))],
            title=f"token shift vs {spec.reference or 'unsteered'}: KL per generated token",
            value_name="KL(reference || condition)",
        )
        files[f"{KIND}/samples.html"] = html.encode()
    metrics = {
        "n_positions": float(len(table)),
        "n_sequences": float(len(seqs)),
        "n_unfinished_dropped": float(n_dropped),
        "kl": float(table["kl"].mean()) if len(table) else float("nan"),
    }
    for _, r in s["by_group"].iterrows():
        metrics[f"{r['group']}/kl"] = float(r["kl"])
        metrics[f"{r['group']}/reinforces_top"] = float(r["reinforces_top"])
        for name in track:
            metrics[f"{r['group']}/dp[{name}]"] = float(r[f"dp[{name}]"])
        for name in cats:
            for col in (f"mass[{name}]", f"boosted_in[{name}]", f"ref_top_in[{name}]"):
                metrics[f"{r['group']}/{col}"] = float(r[col])
    info = {
        "reference": spec.reference,
        "sample_from": spec.sample_from,
        "track": track,
        "categories": {name: len(ids) for name, ids in cats.items()},
    }
    return MeasurementResult(metrics, [], files=files, info=info)


def _top(table: pd.DataFrame, n: int) -> list:
    return table.groupby("sample")["kl"].max().sort_values(ascending=False).head(n).index.tolist()


def report_section(results, out_dir: Path) -> list[str]:
    """The report's token-shift section: per-group and per-token tables and the most shifted samples."""
    g = results.gather(KIND, "by_group.csv")
    if g.empty:
        return []
    atomic_write_text(out_dir / "token_shift_groups.csv", g.to_csv(index=False))
    tok = results.gather(KIND, "by_token.csv")
    atomic_write_text(out_dir / "token_shift_tokens.csv", tok.to_csv(index=False))
    pos = results.gather(KIND, "by_position.csv")
    atomic_write_text(out_dir / "token_shift_positions.csv", pos.to_csv(index=False))
    lines = [
        "## Token shift against the reference condition",
        "",
        "Per generated position of the same teacher-forced sequences: KL(reference || condition) in nats, mean "
        "dp of the most boosted token, entropies, the share of positions where the boosted token is the "
        "reference's argmax, and dp of tracked tokens; `first` = the first generated token. With token "
        "categories: `mass[c]` = mean dp summed over category c's tokens, `boosted_in[c]` = share of positions "
        "whose most boosted token is in c, `ref_top_in[c]` = the same for the reference's top token (the base "
        "rate to compare with).",
        "",
        md(g.drop(columns=["cell"])),
        "",
        "Most boosted tokens (seen at least twice, by mean dp):",
        "",
        md(tok.drop(columns=["cell"]).groupby(["model", "condition", "seed"]).head(5)),
        "",
    ]
    p = line_plot(
        pos.assign(series=pos["condition"] + " s" + pos["seed"].astype(str)),
        out_dir / "token_shift_kl_by_position.png",
        x="pos",
        y="kl",
        hue="series",
        title="KL(reference || condition) by generated position",
        ylabel="KL (nats)",
    )
    lines += [f"![KL by position]({p.name})", ""]
    for c in sorted(set(zip(g["cell"], g["condition"], g["seed"], strict=True))):
        lines.append(f"- top samples by KL, {c[1]} seed {c[2]}: [html](../cells/{c[0]}/{KIND}/samples.html)")
    lines += [
        "",
        "Files: `token_shift_groups.csv`, `token_shift_tokens.csv`, `token_shift_positions.csv`; per cell "
        "`token_shift/positions.csv` (every analysed position).",
        "",
    ]
    return lines


__all__ = ["run", "report_section", "slug"]
