"""How a study's vector sets were trained, as far as validation can tell without loading a model, and the rule
that needs it: readouts whose object is "s_l trained alone" must not read rows of a jointly trained set.

The paper's effective unembedding bias (Figure 4) and persistence (Figure 2) analyse independently trained
single-layer vectors s_l (the authors' `match_effect` loads the merged stack of per-layer runs). Row l of an
all-layer vector is something else: it was trained together with every other row, and added alone it is not
the vector that block l learned to use by itself. So a readout that says it analyses single-layer sources
(`MeasurementBase.single_source_analysis`) refuses a jointly trained set; each vector kind says how its rows
were trained (`VectorSourceBase.origin`). Nothing here names a kind.
"""

from __future__ import annotations

from typing import Literal

from mechsteer.errors import Problem

Origin = Literal["joint", "single", "per_block", "control"]
"""`joint` (rows trained together), `single` (one trained row), `per_block` (a stack of rows each trained
alone), `control` (random or zero rows)."""


def setup_origin(setup: str | None) -> Origin | None:
    """Origin from a vector file's `setup` metadata (what the trainer or the bundling script wrote)."""
    if not setup:
        return None
    if setup == "all_layers":
        return "joint"
    if setup.startswith("single_layer stack"):
        return "per_block"
    if setup.startswith("layers "):
        return "joint" if "," in setup else "single"
    return None


def file_origin(path) -> Origin | None:
    """Origin of a mechsteer vector file from its header's `setup` (None: unreadable, or a hand-made file)."""
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as f:
            return setup_origin((f.metadata() or {}).get("setup"))
    except Exception:  # noqa: BLE001 - unreadable files are reported when the set is built
        return None


def vector_origin(ls, name: str, _seen: tuple = ()) -> Origin | None:
    """How the rows of the study's vector set `name` were trained (None: cannot tell, or no such set)."""
    v = ls.spec.vectors.get(name)
    if v is None or name in _seen:
        return None
    return v.origin(ls.resolve_path, lambda other: vector_origin(ls, other, _seen + (name,)))


def _condition_interventions(cond) -> list:
    """A condition's interventions as specs; a sweep's from its sample expansion (names filled with the first
    value of each variable), or none when that does not validate (reported where the sweep is checked)."""
    from pydantic import ValidationError

    from mechsteer.spec.study import intervention_list, interventions_of
    from mechsteer.spec.sweeps import SweepSpec, sample_env, substitute

    if not isinstance(cond, SweepSpec):
        return list(interventions_of(cond))
    try:
        return intervention_list(substitute(cond.interventions, sample_env(cond)))
    except (ValueError, ValidationError):
        return []


def single_source_problems(ls) -> list[Problem]:
    """Readouts that analyse single-layer sources, under a condition whose source intervention reads a jointly
    trained set: one error each, located at the readout, naming the set and the fix."""
    out = []
    for rname, r in ls.spec.readouts.items():
        wants = r.single_source_analysis()
        if wants is None:
            continue
        what, kinds = wants
        for cname, cond in ls.spec.conditions.items():
            if not r.applies_to(cname):
                continue
            for iv in _condition_interventions(cond):
                if getattr(iv, "kind", None) not in kinds:
                    continue
                for vname in iv.vector_refs():
                    if vector_origin(ls, vname) != "joint":
                        continue
                    out.append(
                        ls.problem(
                            ("readouts", rname),
                            f"{what} runs under condition {cname!r}, which adds {vname!r}: rows of a jointly "
                            "trained vector set, not independently trained single-layer vectors s_l (the paper's "
                            "Figures 2 and 4 use one run per block)",
                            hint="add a per-block stack instead ({kind: trained, ..., per_block: all} or the bundled "
                            "smollm2-135m/single_layers), or set joint_rows: true to analyse the joint rows on purpose",
                        )
                    )
    return out
