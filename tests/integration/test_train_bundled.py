"""The vector sets shipped for the embedded model: loadable, the promised rows, training provenance in their
metadata, documented, and reachable through the `bundled` vector kind."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tolerance import tolerance

from mechsteer.spec.kinds.vectors import BUNDLED_VECTOR_DIR, bundled_vector_names
from mechsteer.vectors.vector_set import load_vector_set

EXPECTED = {"all_layers": list(range(30)), "last": [29], "penultimate": [28]}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bundled_set_has_rows_and_provenance(name):
    vs = load_vector_set(BUNDLED_VECTOR_DIR / "smollm2-135m" / f"{name}.safetensors")
    assert (vs.n_layers, vs.d_model) == (30, 576) and vs.layers == EXPECTED[name]
    assert torch.isfinite(vs.vectors).all() and all(n > 0 for n in vs.norms().values())
    for key in ("step", "lr", "seed", "model_revision", "reward_mean", "accuracy", "setup"):
        assert vs.meta.get(key), key
    assert vs.meta["model"] == "smollm2-135m"


def test_bundled_sets_are_documented_and_listed():
    readme = (BUNDLED_VECTOR_DIR / "smollm2-135m" / "README.md").read_text()
    for name in EXPECTED:
        assert f"`{name}.safetensors`" in readme and f"smollm2-135m/{name}" in bundled_vector_names()


def test_bundled_kind_and_norm_matched_control_build(tmp_path: Path):
    from mechsteer.engine.vectors import BuildContext
    from mechsteer.spec.kinds.vectors import BundledVectors, RandomVectors

    ctx = BuildContext(
        n_layers=30,
        d_model=576,
        specs={"s": BundledVectors(name="smollm2-135m/last"), "r": RandomVectors(norm_like="s")},
    )
    s, r = ctx.get("s"), ctx.get("r")
    want = s.norms()[29]  # the random row is rescaled to it in float32
    assert r.layers == [29] and r.norms()[29] == pytest.approx(want, abs=tolerance(torch.float32, want, 576))
