"""Vector files: round trip with metadata, and a clear error for every way a file can be wrong."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from tolerance import tolerance

from mechsteer.engine.vectors import BuildContext
from mechsteer.errors import VectorError
from mechsteer.spec.kinds.vectors import RandomVectors, ScaledVectors, ZeroVectors
from mechsteer.vectors import VectorSet, load_vector_set, save_vector_set


def test_round_trip_keeps_rows_values_and_metadata(tmp_path):
    vs = VectorSet(torch.randn(6, 8), [1, 4], {"model": "m"})
    p = save_vector_set(vs, tmp_path / "v.safetensors", step=3)
    back = load_vector_set(p)
    assert back.layers == [1, 4] and torch.equal(back.vectors, vs.vectors)
    assert back.meta["model"] == "m" and back.meta["step"] == "3" and back.meta["sha256"] == vs.sha256()
    assert not list(tmp_path.glob(".*tmp"))


@pytest.mark.parametrize(
    "tensors,msg",
    [
        ({"other": torch.zeros(2, 3)}, "no tensor named 'vectors'"),
        ({"vectors": torch.zeros(2, 3, 4)}, "expected [n_layers, d_model]"),
        ({"vectors": torch.zeros(2, 3, dtype=torch.int32)}, "expected a float dtype"),
        ({"vectors": torch.tensor([[float("nan"), 0.0]])}, "NaN"),
    ],
)
def test_bad_files_give_clear_errors(tmp_path, tensors, msg):
    p = tmp_path / "bad.safetensors"
    save_file(tensors, str(p))
    with pytest.raises(VectorError) as e:
        load_vector_set(p)
    assert msg in str(e.value) and str(p) in str(e.value)


def test_not_safetensors_and_missing(tmp_path):
    p = tmp_path / "x.safetensors"
    p.write_bytes(b"\x80\x04pickle?")
    with pytest.raises(VectorError, match="not a readable safetensors file"):
        load_vector_set(p)
    with pytest.raises(VectorError, match="not found"):
        load_vector_set(tmp_path / "nope.safetensors")


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(VectorError, match=r"\[30, 576\].*\[28, 3584\]"):
        VectorSet(torch.zeros(30, 576), list(range(30))).check_fits(28, 3584)


def _ctx(specs):
    return BuildContext(n_layers=4, d_model=16, specs=specs)


def test_random_norm_like_copies_rows_and_norms_and_is_seeded():
    base = VectorSet(torch.randn(4, 16) * torch.tensor([1.0, 2.0, 3.0, 4.0])[:, None], [0, 2])
    ctx = _ctx(
        {
            "r": RandomVectors(seed=3, norm_like="t"),
            "r2": RandomVectors(seed=3, norm_like="t"),
            "r3": RandomVectors(seed=4, norm_like="t"),
        }
    )
    ctx.built["t"] = base
    r, r2, r3 = ctx.get("r"), ctx.get("r2"), ctx.get("r3")
    assert r.layers == [0, 2]
    for i in r.layers:
        want = base.vectors[i].norm()
        assert abs(r.vectors[i].norm() - want) <= tolerance(torch.float32, want, 16)  # a float32 rescale
    assert torch.equal(r.vectors, r2.vectors) and not torch.equal(r.vectors, r3.vectors)
    assert float(torch.nn.functional.cosine_similarity(r.vectors[0], base.vectors[0], dim=0)).__abs__() < 0.9


def test_zeros_and_scaled():
    ctx = _ctx(
        {"z": ZeroVectors(layers=[1, "last"]), "r": RandomVectors(norm=2.0), "s": ScaledVectors(of="r", factor=-0.5)}
    )
    z = ctx.get("z")
    assert z.layers == [1, 3] and not z.vectors.any()
    assert torch.allclose(ctx.get("s").vectors, -0.5 * ctx.get("r").vectors)
