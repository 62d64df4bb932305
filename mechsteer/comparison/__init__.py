"""Comparisons of recorded conditions with paired statistics on shared problems, split by job:

* `comparison.scores`: per-problem scores of recorded cells (evaluation sample logs, `generate` records);
* `comparison.matching`: which conditions of two runs correspond (by name, layer sweeps by relative depth);
* `comparison.diff`: `mechsteer diff A B`, two runs of one study, B - A (`DiffResult`);
* `comparison.effects`: one run, each condition against its baseline and its declared control (the report's
  effects table, `Results.effects()`);
* `comparison.render`: Markdown, CSV, JSON and rich renderings of a diff.

The statistics themselves (exact McNemar, paired bootstrap, Wilson) are `mechsteer.stats`, shared by all.
"""

from __future__ import annotations

from mechsteer.comparison.diff import DiffResult, diff
from mechsteer.comparison.matching import match_conditions, relative_layer, template_regex
from mechsteer.comparison.scores import PAIRED_METRICS, PER_PROBLEM_KINDS, problem_scores
from mechsteer.stats import mcnemar_exact, paired_bootstrap_ci

__all__ = [
    "PAIRED_METRICS",
    "PER_PROBLEM_KINDS",
    "DiffResult",
    "diff",
    "match_conditions",
    "mcnemar_exact",
    "paired_bootstrap_ci",
    "problem_scores",
    "relative_layer",
    "template_regex",
]
