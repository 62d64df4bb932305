"""Per-block training inside the package (`mechsteer train FILE -p P --per-block LAYERS`, the paper's per-layer
study): one run per block under `<output>/layer-KK/`, each with the learning rate the rule gives and recording
the lr it actually used; single-block rank-1 LoRA runs (Appendix S); finished blocks skipped; the hint of a
missing per-block run names this exact command; outputs never depend on the working directory."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from conftest import REPO, make_tiny_model
from safetensors import safe_open
from train_helpers import VOCAB, rows, tiny_lm

from mechsteer.errors import MechsteerError
from mechsteer.spec.training import load_train_spec
from mechsteer.train.layout import per_block_command
from mechsteer.train.per_block import block_lr, parse_layers, train_per_block
from mechsteer.vectors.vector_set import load_vector_set

TRAIN = """
name: tr
model: {id: tiny, dtype: float32, device: cpu}
setup: all_layers
rloo: {group_size: 4, prompts_per_step: 2, steps: 2, lr: 0.05, max_new_tokens: 3, warmup_ratio: 0.0}
reward: last_number
data: {kind: jsonl, path: data.jsonl, template: raw}
checkpoint_every: 1
profiles:
  single:
    setup: {single_layer: 3}
    rloo: {lr_per_layer: {1: 0.02, -1: 0.2}}
  norm:
    setup: {single_layer: 3}
    rloo: {lr_per_layer: {1: 0.02}}
    per_block: {lr_rule: norm, base_lr: 0.1, ref_layer: 2, norm_prompts: 3}
  lora:
    setup: {lora1: 3}
    rloo: {lr_per_layer: {0: 0.01}}
"""


def _reward(c):
    return 1.0 if c.token_ids and c.token_ids[0] % 2 == 0 else -1.0


def _loaded(tmp_path, profile):
    (tmp_path / "train.yaml").write_text(textwrap.dedent(TRAIN))
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows(5)))
    return load_train_spec(tmp_path / "train.yaml", profile)


def _meta(path: Path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        return f.metadata()


def _run(loaded, layers, out, **kw):
    lm = tiny_lm(make_tiny_model("llama", vocab_size=VOCAB))
    return train_per_block(loaded, layers, out, lm=lm, rows=rows(5), reward_fn=_reward, **kw)


def test_one_run_per_block_with_the_files_lr_recorded_and_finished_blocks_skipped(tmp_path, capfd):
    from mechsteer.train.progress import TrainProgress

    class Messages(TrainProgress):
        def __init__(self):
            self.lines = []

        def message(self, text):
            self.lines.append(text)

    loaded = _loaded(tmp_path, "single")
    out = loaded.output_dir()
    said = Messages()
    runs = _run(loaded, [0, 1, 3], out, progress=said)
    assert capfd.readouterr() == ("", "")  # library code prints nothing: the driver's lines go to `progress`
    assert said.lines[0] == "0 of 3 blocks already trained; to do: [0, 1, 3]"
    assert [t for t in said.lines if t.startswith("== block")] == [
        "== block 0: lr 0.05 [file]",
        "== block 1: lr 0.02 [file]",
        "== block 3: lr 0.2 [file]",
    ]
    assert [(r.layer, r.lr, r.status) for r in runs] == [
        (0, 0.05, "trained"),
        (1, 0.02, "trained"),
        (3, 0.2, "trained"),
    ]
    for k, lr in ((0, 0.05), (1, 0.02), (3, 0.2)):
        folder = out / f"layer-{k:02d}"
        vs = load_vector_set(folder / "vectors.safetensors")
        assert vs.layers == [k] and float(vs.vectors[k].norm()) > 0  # block k's own run trained block k only
        assert float(_meta(folder / "vectors.safetensors")["lr"]) == lr  # the lr training used is recorded
        assert float(_meta(folder / "checkpoints" / "step-000001" / "vectors.safetensors")["lr"]) == lr
        spec = json.loads((folder / "run.json").read_text())["spec"]
        assert spec["rloo"]["lr"] == lr and spec["rloo"]["lr_per_layer"] is None
        assert spec["setup"] == {"single_layer": k}
    again = _run(loaded, [0, 1, 3], out)
    assert [r.status for r in again] == ["skipped"] * 3  # finished runs are not retrained


def test_lr_recorded_by_a_plain_single_layer_run_is_the_table_value(tmp_path):
    """The table entry for the trained block, not `rloo.lr`, is what the run's files say (finding 8)."""
    from mechsteer.train.trainer import Trainer

    loaded = _loaded(tmp_path, "single")  # setup: block 3 = the last block, table: -1 -> 0.2, rloo.lr 0.05
    lm = tiny_lm(make_tiny_model("llama", vocab_size=VOCAB))
    Trainer(loaded, lm=lm, rows=rows(5), reward_fn=_reward).run()
    assert float(_meta(loaded.output_dir() / "vectors.safetensors")["lr"]) == 0.2


def test_norm_rule_scales_the_base_lr_by_the_blocks_residual_norm(tmp_path):
    loaded = _loaded(tmp_path, "norm")
    out = loaded.output_dir()
    runs = _run(loaded, [1, 3], out)
    norms = json.loads((out / "residual_norms.json").read_text())["median_norm"]
    assert len(norms) == 4 and len(set(norms)) == 4  # one median norm per block of the tiny model
    for r in runs:
        assert r.lr == pytest.approx(0.1 * norms[r.layer] / norms[2], rel=1e-12)  # table ignored under `norm`
        assert float(_meta(r.folder / "vectors.safetensors")["lr"]) == pytest.approx(r.lr, rel=1e-12)
    assert block_lr(loaded, 1, 4, "file", None) == 0.02  # while the file rule reads the table


def test_single_block_lora1_runs(tmp_path):
    loaded = _loaded(tmp_path, "lora")
    out = loaded.output_dir()
    runs = _run(loaded, [0, 2], out)
    assert [(r.layer, r.lr) for r in runs] == [(0, 0.01), (2, 0.05)]
    for k in (0, 2):
        with safe_open(str(out / f"layer-{k:02d}" / "lora1.safetensors"), framework="pt") as f:
            assert f.get_tensor("layers").tolist() == [k]  # a separate adapter on block k alone
            assert float(f.metadata()["lr"]) == (0.01 if k == 0 else 0.05)
            b = f.get_tensor("B")
        assert float(b[k].norm()) > 0 and float(b[[i for i in range(4) if i != k]].abs().sum()) == 0


def test_a_setup_that_is_not_one_block_is_refused_before_anything_loads(tmp_path):
    loaded = _loaded(tmp_path, None)
    with pytest.raises(MechsteerError, match=r"setup must be a single block.*single_layer: k"):
        train_per_block(loaded, [0], tmp_path / "o", lm=object())


def test_layers_text_resolves_against_the_depth():
    assert parse_layers("all", 4, "m") == [0, 1, 2, 3]
    assert parse_layers("3,0,last,-2", 4, "m") == [0, 2, 3]
    with pytest.raises(MechsteerError, match="--per-block 5: layer 5 is out of range"):
        parse_layers("5", 4, "m")


def test_the_missing_run_hint_is_the_exact_command_with_the_files_lr_rule(tmp_path):
    _loaded(tmp_path, None)

    class Spec:  # the fields of a bound `trained` vector spec that the command needs
        train, profile, output = str(tmp_path / "train.yaml"), "norm", None

    assert per_block_command(Spec, [2, 3]) == (
        f"mechsteer train {tmp_path / 'train.yaml'} --profile norm --per-block 2,3 --lr-rule norm"
    )
    Spec.profile = "single"
    assert per_block_command(Spec, [1]).endswith("--profile single --per-block 1 --lr-rule file")
    Spec.output = str(tmp_path / "elsewhere")
    assert per_block_command(Spec, [1]).endswith(f"--lr-rule file --output {tmp_path / 'elsewhere'}")


def test_outputs_resolve_against_the_training_file_never_the_working_directory(tmp_path, monkeypatch):
    loaded = _loaded(tmp_path, "single")
    monkeypatch.chdir(tmp_path / "..")
    first = loaded.output_dir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert loaded.output_dir() == first == tmp_path.resolve() / "outputs" / "train" / "tr-single"
    # `output:` is relative to the file; a profile without its own `output` gets its own suffixed folder
    (tmp_path / "train.yaml").write_text(textwrap.dedent(TRAIN).replace("checkpoint_every: 1", "output: runs/x"))
    assert load_train_spec(tmp_path / "train.yaml").output_dir() == tmp_path.resolve() / "runs" / "x"
    assert load_train_spec(tmp_path / "train.yaml", "lora").output_dir() == tmp_path.resolve() / "runs" / "x-lora"
    paper = load_train_spec(REPO / "studies" / "train_paper.yaml", "single_layer").output_dir()
    assert paper == REPO.resolve() / "outputs" / "train" / "train_paper-single_layer"


def test_cli_per_block_runs_the_driver_and_refuses_a_joint_setup(tmp_path):
    from typer.testing import CliRunner

    from mechsteer.cli.app import app

    _loaded(tmp_path, None)
    f = str(tmp_path / "train.yaml")
    res = CliRunner().invoke(app, ["train", f, "-p", "norm", "--per-block", "1,3", "--validate"])
    assert res.exit_code == 0, res.output
    assert "one run per block: 1,3, lr rule norm" in " ".join(res.output.split())
    bad = CliRunner().invoke(app, ["train", f, "--per-block", "1"])
    assert bad.exit_code == 1 and "setup must be a single block" in res.output + bad.output
    assert "Traceback" not in bad.output


def test_the_bundle_script_trains_through_the_package_driver_into_the_same_layout(monkeypatch, tmp_path):
    """`python scripts/train_single_layers.py --layers 3,9` keeps training the embedded stack into
    `<out>/layer-KK/` with train_mini's norm rule, now through `train_per_block`."""
    import sys

    from script_loader import load_script

    import mechsteer.train.per_block as pb

    script = load_script("scripts/train_single_layers.py")
    seen = {}

    def fake(loaded, layers, out, **kw):
        seen.update(profile=loaded.profile, layers=layers, out=out, rule=kw["lr_rule"] or loaded.spec.per_block.lr_rule)
        seen["base_lr"], seen["ref"] = loaded.spec.per_block.base_lr, loaded.spec.per_block.ref_layer
        return []

    monkeypatch.setattr(pb, "train_per_block", fake)
    monkeypatch.setattr(sys, "argv", ["x", "--layers", "3,9", "--no-bundle", "--threads", "1"])
    script.main()
    assert seen["layers"] == [3, 9] and seen["profile"] == "single" and seen["rule"] == "norm"
    assert (seen["base_lr"], seen["ref"]) == (0.05, 12)
    assert seen["out"] == REPO.resolve() / "outputs" / "train" / "train_mini-single"
    argv = ["x", "--layers", "3", "--no-bundle", "--threads", "1", "--out", str(tmp_path), "--lr-rule", "file"]
    monkeypatch.setattr(sys, "argv", argv)
    script.main()
    assert seen["out"] == tmp_path and seen["rule"] == "file"


def test_the_bundle_script_takes_a_row_from_an_attempts_record_and_keeps_the_others(monkeypatch, tmp_path):
    """`--rows-from X.attempts.json --keep-bundled --bundle-only`: the chosen attempt's selected checkpoint becomes
    its block's row (with the attempt's own steps, lr and selection in the record), the other rows are carried
    bit for bit, and a record with no chosen attempt is refused with a message naming the file."""
    import sys

    import torch
    from script_loader import load_script

    from mechsteer.vectors.vector_set import VectorSet, save_vector_set

    script = load_script("scripts/train_single_layers.py")
    bundle_dir = tmp_path / "bundle"
    monkeypatch.setattr(script, "BUNDLE_DIR", bundle_dir)
    monkeypatch.setattr(script, "PLOT", tmp_path / "curves.png")
    torch.manual_seed(0)
    old = torch.zeros(30, 576)
    old[0], old[28] = torch.randn(576), torch.randn(576)
    save_vector_set(VectorSet(old, [0, 28]), bundle_dir / "single_layers.safetensors")

    def record(k, lr, steps):
        return {"layer": k, "lr": lr, "steps": steps, "residual_norm": 10.0 * (k + 1), "best_step": steps,
                "best_value": 0.5, "candidates": [{"step": steps, "value": 0.5}], "norm": 1.0, "train_seconds": 1.0,
                "wall_seconds": 1.0, "cpu_seconds": 1.0, "threads": 1, "reward": [-0.5], "accuracy": [0.1],
                "mean_len": [50.0]}  # fmt: skip

    info = {"steps": 12, "commit": "abc", "date": "2026-12-01", "runs": "outputs/x", "records": [record(0, 0.01, 12),
            record(28, 0.2, 12)]}  # fmt: skip
    (bundle_dir / "single_layers.json").write_text(json.dumps(info))
    trained = torch.zeros(30, 576)
    trained[28] = torch.randn(576)
    save_vector_set(VectorSet(trained, [28]), bundle_dir / "penultimate.safetensors")
    attempts = bundle_dir / "attempts"
    attempts.mkdir()
    chosen = {"name": "lr0.1", "setup": {"single_layer": 28}, "lr": 0.1, "steps": 96, "best": {"step": 96,
              "value": 0.79}, "selection": {"settings": {"n": 128, "max_new_tokens": 208}, "candidates": [{"step":
              96, "value": 0.79}]}, "evals": [], "train_seconds": 5.0, "compute": {"wall_seconds": 6.0,
              "cpu_seconds": 4.0}, "reward": [-0.7, -0.3], "accuracy": [0.1, 0.3], "mean_len": [58.0, 48.0]}  # fmt: skip
    rec = {"bundle": "../penultimate.safetensors", "records": [chosen], "chosen": "lr0.1", "date": "2026-12-04",
           "runs": "outputs/attempts/penultimate"}  # fmt: skip
    (attempts / "penultimate.attempts.json").write_text(json.dumps(rec))
    argv = ["x", "--layers", "0,28", "--bundle-only", "--keep-bundled", "--out", str(tmp_path / "runs")]
    monkeypatch.setattr(sys, "argv", [*argv, "--rows-from", str(attempts / "penultimate.attempts.json")])
    script.main()
    new = load_vector_set(bundle_dir / "single_layers.safetensors")
    assert new.layers == [0, 28]
    assert torch.equal(new.vectors[0], old[0]) and torch.equal(new.vectors[28], trained[28])
    out = json.loads((bundle_dir / "single_layers.json").read_text())
    row28 = next(r for r in out["records"] if r["layer"] == 28)
    assert (row28["steps"], row28["lr"], row28["best_value"]) == (96, 0.1, 0.79)
    assert row28["residual_norm"] == 290.0 and row28["attempts"].endswith("penultimate.attempts.md")
    md = (bundle_dir / "single_layers.md").read_text()
    assert "| 28 | 0.1000 | 96 |" in md and "79.0 (128 @ 208)" in md and "Rows trained longer" in md
    rec["chosen"] = None
    (attempts / "penultimate.attempts.json").write_text(json.dumps(rec))
    with pytest.raises(SystemExit, match="no attempt is chosen yet"):
        script.main()
