"""How a study's vector set was trained, as far as validation can tell without loading a model, and the rule
that needs it: readouts whose object is "s_l trained alone" must not read rows of a jointly trained set.

The paper's effective unembedding bias (Figure 4) and persistence (Figure 2) analyse independently trained
single-layer vectors s_l (the authors' `match_effect` loads the merged stack of per-layer runs). Row l of an
all-layer vector is something else: it was trained together with every other row, and added alone it is not
the vector that block l learned to use by itself. So `logit_lens` with `unembedding_bias` and `persistence`
refuse a jointly trained set unless the readout says `joint_rows: true` (an explicit, different question).
"""

from __future__ import annotations

import fnmatch
from typing import Literal

from mechsteer.errors import MechsteerError, Problem
from mechsteer.spec.sweeps import SweepSpec

Origin = Literal["joint", "single", "per_block", "control"]


def _setup_origin(setup: str) -> Origin | None:
    """Origin from a vector file's `setup` metadata (what the trainer or the bundling script wrote)."""
    if setup == "all_layers":
        return "joint"
    if setup.startswith("single_layer stack"):
        return "per_block"
    if setup.startswith("layers "):
        return "joint" if "," in setup else "single"
    return None


def _file_setup(path) -> str | None:
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as f:
            return (f.metadata() or {}).get("setup")
    except Exception:  # noqa: BLE001 - unreadable files are reported when the set is built
        return None


def vector_origin(ls, name: str, _seen: tuple = ()) -> Origin | None:
    """`joint` (rows trained together), `single` (one trained row), `per_block` (a stack of rows each trained
    alone), `control` (random or zero rows) or None (cannot tell: a hand-made file)."""
    from mechsteer.spec.checks import BUNDLED_VECTOR_DIR

    v = ls.spec.vectors.get(name)
    if v is None or name in _seen:
        return None
    if v.kind in ("random", "zeros"):
        return "control"
    if v.kind == "scaled":
        return vector_origin(ls, v.of, _seen + (name,))
    if v.kind == "bundled":
        setup = _file_setup(BUNDLED_VECTOR_DIR / f"{v.name}.safetensors")
        return _setup_origin(setup) if setup else None
    if v.kind == "file":
        setup = _file_setup(ls.resolve_path(v.path))
        return _setup_origin(setup) if setup else None
    if v.kind == "trained":
        if v.per_block is not None:
            return "per_block"
        from mechsteer.spec.training import LayersSetup, SingleLayerSetup, load_train_spec

        try:
            setup = load_train_spec(ls.resolve_path(v.train), v.profile).spec.setup
        except MechsteerError:
            return None  # the training file's own problem is reported where it is named
        if setup == "all_layers":
            return "joint"
        if isinstance(setup, SingleLayerSetup):
            return "single"
        if isinstance(setup, LayersSetup):
            sel = setup.layers
            return "joint" if sel == "all" or (isinstance(sel, list) and len(sel) > 1) else "single"
    return None


def _added_vectors(cond) -> list[tuple[int | None, str]]:
    """(intervention index, vector name) of the `add` interventions of a condition (a sweep: its template's
    literal names)."""
    if isinstance(cond, SweepSpec):
        return [
            (None, iv.get("vector"))
            for iv in cond.interventions
            if isinstance(iv, dict) and iv.get("kind") == "add" and "{" not in str(iv.get("vector"))
        ]
    return [(i, iv.vector) for i, iv in enumerate(cond) if getattr(iv, "kind", None) == "add"]


def single_source_problems(ls) -> list[Problem]:
    """u_l and persistence read per-layer sources: a jointly trained set there is an error (see the module
    docstring), located at the readout, naming the set and the fix."""
    out = []
    for rname, r in ls.spec.readouts.items():
        wants = (r.kind == "logit_lens" and r.unembedding_bias) or r.kind == "persistence"
        if not wants or getattr(r, "joint_rows", False):
            continue
        what = "the effective unembedding bias u_l" if r.kind == "logit_lens" else "persistence"
        patterns = getattr(r, "conditions", None)
        for cname, cond in ls.spec.conditions.items():
            if patterns is not None and not any(fnmatch.fnmatchcase(cname, p) for p in patterns):
                continue
            for _, vname in _added_vectors(cond):
                if vector_origin(ls, vname) != "joint":
                    continue
                out.append(
                    ls.problem(
                        ("readouts", rname),
                        f"{what} runs under condition {cname!r}, which adds {vname!r}: rows of a jointly trained "
                        "vector set, not independently trained single-layer vectors s_l (the paper's Figures 2 "
                        "and 4 use one run per block)",
                        hint="add a per-block stack instead ({kind: trained, ..., per_block: all} or the bundled "
                        "smollm2-135m/single_layers), or set joint_rows: true to analyse the joint rows on purpose",
                    )
                )
    return out
