"""Work done once per process: a spec file parsed once while unchanged (a study names one training file in many
vector sets), and lm-eval's environment report computed once (it runs a dozen subprocesses per evaluation)."""

from __future__ import annotations

import os

from mechsteer.spec import loader


def test_a_spec_file_is_parsed_once_while_unchanged(tmp_path, monkeypatch):
    f = tmp_path / "s.yaml"
    f.write_text("name: a\nmodels: {m: {id: smollm2-135m}}\n")
    calls = []
    real = loader.parse_yaml
    monkeypatch.setattr(loader, "parse_yaml", lambda text, name: calls.append(name) or real(text, name))
    raw, _ = loader.read_spec_file(f, "study file", "", "")
    raw["name"] = "changed by a caller"  # callers merge profiles into what they get: the cache must not see it
    again, positions = loader.read_spec_file(f, "study file", "", "")
    assert again["name"] == "a" and positions[("name",)] == (1, 1)
    assert len(calls) == 1
    f.write_text("name: bb\nmodels: {m: {id: smollm2-135m}}\n")  # another size and mtime: parsed again
    os.utime(f, ns=(1, 10**18))
    assert loader.read_spec_file(f, "study file", "", "")[0]["name"] == "bb"
    assert len(calls) == 2


def test_lm_eval_environment_report_is_computed_once(monkeypatch):
    import lm_eval.evaluator as evaluator
    import lm_eval.loggers.utils as utils

    from mechsteer.eval import runner

    calls = []
    monkeypatch.setattr(utils, "add_env_info", lambda storage: calls.append(1) or storage.update(pretty_env_info="x"))
    monkeypatch.setattr(runner, "_ENV_INFO", {})
    with runner._quiet_lm_eval():
        assert evaluator.add_env_info is runner._add_env_info_once  # what simple_evaluate calls
        first, second = {}, {}
        evaluator.add_env_info(first)
        evaluator.add_env_info(second)
    assert first == second == {"pretty_env_info": "x"}
    assert calls == [1]
    assert evaluator.add_env_info is not runner._add_env_info_once  # restored
