"""Profile names join the output path (`outputs/<study>-<profile>`): they follow the study-name rule, with
the problem located at the profile's key in the file, for study and training files alike."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mechsteer.engine.plan import compile_study
from mechsteer.errors import SpecError
from mechsteer.spec.loader import load_study
from mechsteer.spec.training import load_train_spec

REPO = Path(__file__).resolve().parents[2]

STUDY = """\
name: t
models:
  m: {id: Qwen/Qwen2.5-Math-7B}
conditions:
  base: []
readouts:
  r: {kind: first_token, prompts: [hi]}
profiles:
  mini:
    seeds: [1]
  {bad}:
    seeds: [2]
"""


@pytest.mark.parametrize("bad", ["../../x", "a/b", ".hidden", "-x", "x y"])
def test_bad_profile_name_in_a_study_is_located(tmp_path, bad):
    p = tmp_path / "s.yaml"
    p.write_text(STUDY.replace("{bad}", yaml.safe_dump(bad).split("\n")[0]))
    for profile in (None, "mini", bad):
        with pytest.raises(SpecError) as e:
            load_study(p, profile)
        assert f"{p}:11:3: profiles.{bad}: invalid profile name {bad!r}" in str(e.value)
        assert "output folder" in str(e.value)


def test_good_profile_names_load_and_stay_inside_the_output_folder(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text(STUDY.replace("{bad}", "paper-7B_v1.2"))
    plan = compile_study(load_study(p, "paper-7B_v1.2"), output_root=tmp_path / "out")
    assert plan.output_dir == tmp_path / "out" / "t-paper-7B_v1.2"
    assert load_study(p, "mini").spec.seeds == [1]


def test_bad_profile_name_on_the_command_line_is_rejected_before_lookup(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text(STUDY.replace("{bad}", "paper"))
    with pytest.raises(SpecError, match=r"invalid profile name '\.\./\.\./x' \(--profile\)"):
        load_study(p, "../../x")


def test_bad_profile_name_in_a_training_file_is_located(tmp_path):
    src = yaml.safe_load((REPO / "studies" / "train_mini.yaml").read_text())
    src["profiles"] = {"../up": {}}
    p = tmp_path / "t.yaml"
    p.write_text(yaml.safe_dump(src, sort_keys=False))
    line = next(i for i, text in enumerate(p.read_text().splitlines(), 1) if text.strip().startswith("../up"))
    with pytest.raises(SpecError) as e:
        load_train_spec(p, None)
    assert f"{p}:{line}:3: profiles.../up: invalid profile name '../up'" in str(e.value)
