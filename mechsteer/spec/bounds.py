"""Size limits a study must respect before anything is expanded or loaded: the number of cells it compiles to
(`--max-cells` raises the limit) and generation lengths against each model's `max_length`.

The cell count is computed from the sizes of the sweeps' ranges (a product of lengths), never by expanding
them, so a 1500 x 1500 sweep is refused at once. It is an upper bound: a sweep's grid is counted exactly
after `where` only up to `sweeps.EXACT_COUNT_MAX` combinations (larger grids count whole), and a readout
restricted by `conditions:` patterns counts every condition of a sweep its pattern can match. Nothing here
imports torch.
"""

from __future__ import annotations

import fnmatch
import re

from mechsteer.errors import Problem
from mechsteer.spec.models import ModelShape
from mechsteer.spec.sweeps import SweepSpec, count_combinations

DEFAULT_MAX_CELLS = 50_000
"""Cells (model x condition x measurement x seed) a study may compile to unless `--max-cells` allows more; the
paper's largest grid (every pair of Qwen2.5-Math-7B's 28 blocks with the singles, on six benchmarks at three
seeds) is about 7,300."""


def _seeds(spec) -> list[tuple[object, int]]:
    """(measurement spec, seed count) per measurement, as the compiler makes them (`engine.plan`)."""
    out: list[tuple[object, int]] = []
    ev = spec.evaluation
    if ev is not None:
        out += [(None, len(ev.resolved_seeds()))] * len(ev.tasks)
    for r in spec.readouts.values():
        deterministic = float(getattr(r, "temperature", 0.0)) == 0.0
        out.append((r, 1 if deterministic else len(spec.seeds)))
    return out


def _applies(measurement, name: str, sweep: bool) -> bool:
    wanted = getattr(measurement, "conditions", None) if measurement is not None else None
    if wanted is None:
        return True
    if not sweep:
        return any(fnmatch.fnmatchcase(name, w) for w in wanted)
    template = re.sub(r"\{\w+\}", "*", name)
    return any(fnmatch.fnmatchcase(template, w) or fnmatch.fnmatchcase(w, template) for w in wanted)


def cell_bound(spec, shapes: dict[str, ModelShape | None]) -> tuple[int, dict[str, int]]:
    """(upper bound on the study's cells, each sweep's largest count over the models). A sweep over a named
    range of a model whose shape is not known counts 0 here (the compiler refuses it)."""
    measurements = _seeds(spec)
    total, grids = 0, {}
    for shape in shapes.values():
        for name, cond in spec.conditions.items():
            sweep = isinstance(cond, SweepSpec)
            n = (count_combinations(cond, shape) or 0) if sweep else 1
            if sweep:
                grids[name] = max(grids.get(name, 0), n)
            total += n * sum(seeds for m, seeds in measurements if _applies(m, name, sweep))
    return total, grids


def cell_problems(ls, shapes: dict[str, ModelShape | None], max_cells: int) -> list[Problem]:
    """A study whose cell bound exceeds `max_cells`, located at its largest sweep (or its conditions)."""
    total, grids = cell_bound(ls.spec, shapes)
    if total <= max_cells:
        return []
    where = ("conditions",)
    biggest = max(grids.items(), key=lambda kv: kv[1], default=None)
    detail = ""
    if biggest is not None and biggest[1] > 1:
        where = ("conditions", biggest[0])
        detail = f"; the sweep {biggest[0]!r} alone makes up to {biggest[1]:,} conditions"
    return [
        ls.problem(
            where,
            f"the study compiles to up to {total:,} cells (models x conditions x measurements x seeds), more "
            f"than the limit of {max_cells:,}{detail}",
            hint="narrow the sweep ranges, or pass --max-cells N to allow more",
        )
    ]


def length_problems(ls) -> list[Problem]:
    """Generation lengths that cannot fit a model's `max_length` (prompt + generation): each readout's and the
    evaluation's `max_new_tokens` must leave room for at least one prompt token."""
    spec, out = ls.spec, []
    limits = {name: m.max_length for name, m in spec.models.items() if m.max_length is not None}
    wants = [
        (("readouts", r, "max_new_tokens"), getattr(rs, "max_new_tokens", None)) for r, rs in spec.readouts.items()
    ]
    if spec.evaluation is not None:
        wants.append((("evaluation", "max_new_tokens"), spec.evaluation.max_new_tokens))
    for where, n in wants:
        if not isinstance(n, int):
            continue
        for model, max_length in limits.items():
            if n >= max_length:
                out.append(
                    ls.problem(
                        where,
                        f"max_new_tokens {n} does not fit model {model!r}: its max_length is {max_length} tokens "
                        "for prompt and generation together",
                        hint=f"lower max_new_tokens below {max_length}, or raise models.{model}.max_length",
                    )
                )
                break
    return out
