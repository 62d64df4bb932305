"""Transfer between models of different depth is writable in a study file: a 7-block donor's rows 0, 3, 6
applied with `layer_map: relative_depth` to a 4-block model land on blocks 0, 2, 3 and give exactly the
metrics of adding those rows there directly; `same_index` is refused with both shapes named."""

from __future__ import annotations

import pytest
import torch
import yaml
from conftest import make_tiny_model
from tiny_tokenizer import VOCAB_SIZE, make_tiny_tokenizer

from mechsteer.api import load_study
from mechsteer.errors import MechsteerError
from mechsteer.vectors.vector_set import VectorSet, save_vector_set


def _study(tmp_path, layer_map):
    return {
        "name": f"transfer_{layer_map}",
        "models": {"tiny": {"id": "model", "dtype": "float32", "device": "cpu"}},
        "vectors": {
            "donor": {"kind": "file", "path": "donor.safetensors"},
            "mapped": {"kind": "file", "path": "mapped.safetensors"},
        },
        "conditions": {
            "base": [],
            "transferred": [{"kind": "transfer", "vector": "donor", "layer_map": layer_map}],
            "direct": [{"kind": "add", "vector": "mapped"}],
        },
        "readouts": {"first": {"kind": "first_token", "prompts": ["ab", "ba"], "template": "raw", "track": ["a", "b"]}},
    }


def test_relative_depth_transfer_from_a_study_file(tmp_path):
    model = make_tiny_model("llama", vocab_size=VOCAB_SIZE)
    assert model.config.num_hidden_layers == 4
    model.save_pretrained(tmp_path / "model")
    make_tiny_tokenizer().save_pretrained(tmp_path / "model")
    d = model.config.hidden_size
    gen = torch.Generator().manual_seed(3)
    donor = torch.zeros(7, d)
    donor[[0, 3, 6]] = torch.randn(3, d, generator=gen) * 3.0
    save_vector_set(VectorSet(donor, [0, 3, 6], {"model": "donor/seven-blocks"}), tmp_path / "donor.safetensors")
    mapped = torch.zeros(4, d)
    mapped[[0, 2, 3]] = donor[[0, 3, 6]]  # round(l / 6 * 3): 0 -> 0, 3 -> 2 (1.5 rounds to even), 6 -> 3
    save_vector_set(VectorSet(mapped, [0, 2, 3]), tmp_path / "mapped.safetensors")

    (tmp_path / "s.yaml").write_text(yaml.safe_dump(_study(tmp_path, "relative_depth")))
    res = load_study(tmp_path / "s.yaml").run(output_dir=tmp_path / "out")
    t = res.table()
    by = {c: g.set_index("metric").value.to_dict() for c, g in t.groupby("condition")}
    assert by["transferred"] != by["base"]  # the transfer changes the next-token distribution
    assert by["transferred"] == by["direct"]  # ... exactly as adding the mapped rows by hand

    (tmp_path / "same.yaml").write_text(yaml.safe_dump(_study(tmp_path, "same_index")))
    with pytest.raises(MechsteerError, match=r"\[7 layers x d_model 32\].*\[4 layers x d_model 32\].*relative_depth"):
        load_study(tmp_path / "same.yaml").run(output_dir=tmp_path / "out_same")
