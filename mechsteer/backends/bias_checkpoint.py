"""Compile an all-position `add` condition into a checkpoint that stock inference engines (vLLM) load as is.

Why this is exact: `add` puts s_l on the residual stream after block l at every position, and block l's
output is h + attn(...) + down_proj(...), so a bias s_l on block l's `mlp.down_proj` gives the same output
(paper, section 2; tested against the hooked `add` in tests/unit/test_bias_checkpoint.py). Several `add`
interventions on the same layer sum into one bias.

The checkpoint is the Llama architecture with `mlp_bias: true` (vLLM's and transformers' Llama both build
biases on gate/up/down when it is set): zero gate/up biases, s_l as the down_proj bias. Qwen2 checkpoints
are carried as Llama with `attention_bias: true`: Qwen2's q/k/v biases are kept, and the o_proj bias that
Llama then also expects is zero. Everything else is the same network in both architectures (RMSNorm,
SwiGLU MLP, rotary attention with GQA, same parameter names); the conversion copies rope settings,
rms_norm_eps, head_dim, tie_word_embeddings and token ids, and refuses Qwen2 configs with sliding-window
layers (Llama has none). Gemma3 is refused: its post-feed-forward norm sits between down_proj and the
residual stream, so a down_proj bias is not an `add` there.

The original weight shards are hard-linked (copied across file systems), the new biases go into one extra
shard listed in `model.safetensors.index.json`, and tokenizer files, chat template and generation config are
copied unchanged. The folder is content-addressed (base model fingerprint + bias sha256 + compiler version)
under `cache_root()/compiled/` and written atomically, like cells.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import torch

from mechsteer.atomic import atomic_dir
from mechsteer.backends.expressible import NORM_AFTER_MLP, architecture_problem, vllm_expressible  # noqa: F401 - vllm_expressible re-exported
from mechsteer.errors import CompileError, ModelLoadError
from mechsteer.models.embedded import cache_root
from mechsteer.spec.layers import LayerResolutionError, resolve_layers
from mechsteer.vectors import VectorSet

COMPILER_VERSION = "1"
"""Part of every compiled folder's key: bump when the checkpoint layout changes."""
BIAS_SHARD = "mechsteer-bias.safetensors"
INDEX = "model.safetensors.index.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack")
SUPPORTED = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}
LLAMA_KEYS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "hidden_act",
    "max_position_embeddings",
    "initializer_range",
    "rms_norm_eps",
    "use_cache",
    "tie_word_embeddings",
    "rope_theta",
    "rope_scaling",
    "rope_parameters",
    "attention_dropout",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "torch_dtype",
    "dtype",
    "transformers_version",
)
"""Qwen2 config keys that mean the same in a Llama config (everything else of Qwen2 is sliding-window)."""


# ---------------------------------------------------------------------------------------------------------
# Which conditions vLLM can run
# ---------------------------------------------------------------------------------------------------------


def condition_bias(interventions: list, vectors: dict[str, VectorSet], n_layers: int, d_model: int) -> torch.Tensor:
    """The [n_layers, d_model] down_proj bias equal to a condition of all-position `add`s: the sum over
    interventions of scale x row l, for the layers each names (`all` = every row its vector set has).

    float64, and stored so in the checkpoint (a few KiB): each term is formed in float32 exactly as the
    hooked `add` forms it (row x scale), and the sum of several is then exact, so a float64 model gives the
    hooked logits to rounding of the last bit; engines cast it to their compute dtype on load."""
    ok, why = vllm_expressible(interventions)
    if not ok:
        raise CompileError(f"condition cannot be compiled into a checkpoint: {why}", hint="run it with backend: hf")
    bias = torch.zeros(n_layers, d_model, dtype=torch.float64)
    for spec in interventions:
        vs = vectors[spec.vector]
        if vs.d_model != d_model:
            raise CompileError(f"vector set {spec.vector!r} has d_model {vs.d_model}, the model {d_model}")
        if spec.layer == "all":
            layers = list(vs.layers)
        else:
            try:
                layers = resolve_layers(spec.layer, n_layers)
            except LayerResolutionError as e:
                raise CompileError(f"add.layer: {e}") from None
        missing = [i for i in layers if i not in vs.layers]
        if missing:
            raise CompileError(
                f"vector set {spec.vector!r} has no rows for layers {missing}", hint=f"its rows: {vs.layers}"
            )
        for i in layers:
            if i >= n_layers:
                raise CompileError(f"vector set {spec.vector!r} row {i} is beyond the model's {n_layers} layers")
            bias[i] += (vs.vectors[i] * float(spec.scale)).double()  # the hooked add's float32 product
    return bias


# ---------------------------------------------------------------------------------------------------------
# Where the base model lives, and what it is
# ---------------------------------------------------------------------------------------------------------


def loaded_model_dir(lm) -> Path:
    """The directory a LoadedModel was read from (the embedded cache, a local folder, or the hub snapshot)."""
    if lm.source == "embedded":
        from mechsteer.models.embedded import embedded_dir

        return embedded_dir(lm.spec.id)
    where = getattr(lm.model.config, "_name_or_path", None) or lm.spec.id
    if Path(where).is_dir():
        return Path(where)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(where, revision=lm.revision, local_files_only=True))
    except Exception as e:  # noqa: BLE001 - any hub error is the same user problem
        raise ModelLoadError(
            f"cannot find the local files of {where!r} to compile a checkpoint: {e}",
            hint="download the model (`hf download ID --local-dir DIR`) and use that directory",
        ) from None


def fingerprint(model_dir: str | Path) -> str:
    """sha256 over the names and contents of every file of a model directory that loading reads (weights,
    config, tokenizer, chat template: `mechsteer.models.identity.model_files`), so a compiled checkpoint is
    keyed by what it was built from. File hashes are memoised (`mechsteer.file_hash`): a 15 GB model is read
    once."""
    from mechsteer.models.identity import folder_content

    h = hashlib.sha256()
    for name, digest in folder_content(Path(model_dir)).items():
        h.update(f"{name}\0{digest}\n".encode())
    return h.hexdigest()


def bias_sha256(bias: torch.Tensor) -> str:
    """sha256 of a bias stack's shape and float64 values: which biases a compiled checkpoint holds, recorded in its
    manifest and cache key."""
    t = bias.detach().to(torch.float64).cpu().contiguous()
    return hashlib.sha256(repr(tuple(t.shape)).encode() + t.numpy().tobytes()).hexdigest()


def llama_config(cfg: dict) -> dict:
    """The config.json of the compiled checkpoint: a Llama with mlp_bias (and attention_bias for Qwen2)."""
    kind = cfg.get("model_type")
    if kind not in SUPPORTED:
        why = f" ({NORM_AFTER_MLP})" if architecture_problem(kind) else ""
        raise CompileError(
            f"cannot compile a bias checkpoint for model_type {kind!r}{why}",
            hint=f"supported: {', '.join(SUPPORTED)}; use backend: hf",
        )
    if kind == "llama":
        out = dict(cfg)
    else:
        types = cfg.get("layer_types") or []
        if cfg.get("use_sliding_window") or any(t != "full_attention" for t in types):
            raise CompileError(
                "this Qwen2 checkpoint uses sliding-window attention, which Llama cannot carry",
                hint="use backend: hf for this model",
            )
        out = {k: cfg[k] for k in LLAMA_KEYS if k in cfg}
        out["head_dim"] = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
        out["attention_bias"] = True  # Qwen2's q/k/v biases; the o_proj bias Llama adds is zero
        out["pretraining_tp"] = 1
    out["architectures"] = ["LlamaForCausalLM"]
    out["model_type"] = "llama"
    out["mlp_bias"] = True
    return out


def _weight_map(src: Path) -> dict[str, str]:
    from safetensors import safe_open

    index = src / INDEX
    if index.is_file():
        return dict(json.loads(index.read_text())["weight_map"])
    single = src / "model.safetensors"
    if not single.is_file():
        raise CompileError(
            f"{src} has no safetensors weights (model.safetensors or {INDEX})",
            hint="re-save the model with save_pretrained(safe_serialization=True)",
        )
    with safe_open(str(single), "pt") as f:
        return {k: single.name for k in f.keys()}


SINGLE_RENAMED = "model-base.safetensors"
"""A single-file base is linked under this name: a folder holding `model.safetensors` is loaded from that
file alone (the index and the bias shard would be ignored by transformers)."""


def _link_or_copy(src: Path, dst: Path) -> None:
    real = src.resolve()  # hub snapshots are symlinks into blobs/
    try:
        os.link(real, dst)
    except OSError:
        shutil.copyfile(real, dst)


def _new_tensors(cfg: dict, llama: dict, bias: torch.Tensor, weight_map: dict[str, str]) -> dict[str, torch.Tensor]:
    n, d, ff = cfg["num_hidden_layers"], cfg["hidden_size"], cfg["intermediate_size"]
    if tuple(bias.shape) != (n, d):
        raise CompileError(f"bias has shape {tuple(bias.shape)}; the model needs [{n}, {d}]")
    out: dict[str, torch.Tensor] = {}
    for layer in range(n):
        p = f"model.layers.{layer}."
        out[p + "mlp.down_proj.bias"] = bias[layer].to(torch.float64).clone()
        out[p + "mlp.gate_proj.bias"] = torch.zeros(ff, dtype=torch.float32)
        out[p + "mlp.up_proj.bias"] = torch.zeros(ff, dtype=torch.float32)
        if llama.get("attention_bias"):
            for name, size in (("q_proj", None), ("k_proj", None), ("v_proj", None), ("o_proj", d)):
                key = p + f"self_attn.{name}.bias"
                if key not in weight_map:
                    if size is None:
                        raise CompileError(f"attention_bias is set but the checkpoint has no {key}")
                    out[key] = torch.zeros(size, dtype=torch.float32)
    clash = sorted(k for k in out if k in weight_map)
    if clash:
        raise CompileError(
            f"the base checkpoint already has MLP biases ({clash[0]}, ...)",
            hint="compile from the original model, not from a compiled checkpoint",
        )
    return out


def compile_bias_checkpoint(base, bias: torch.Tensor) -> Path:
    """A folder holding `base` (a model directory or a LoadedModel) with `bias[l]` on block l's down_proj, as
    a Llama checkpoint with mlp_bias. Cached: the same base and bias return the same folder at once."""
    from safetensors.torch import save_file

    src = Path(base) if isinstance(base, (str, Path)) else loaded_model_dir(base)
    cfg_path = src / "config.json"
    if not cfg_path.is_file():
        raise ModelLoadError(f"{src} has no config.json", hint="point at a directory written by save_pretrained")
    cfg = json.loads(cfg_path.read_text())
    llama = llama_config(cfg)
    base_fp = fingerprint(src)
    b_sha = bias_sha256(bias)
    key = hashlib.sha256(f"{COMPILER_VERSION}\0{base_fp}\0{b_sha}".encode()).hexdigest()[:32]
    target = cache_root() / "compiled" / key
    if (target / "mechsteer_compiled.json").is_file():
        return target
    weight_map = _weight_map(src)
    new = _new_tensors(cfg, llama, bias, weight_map)
    with atomic_dir(target, prefix=".compile-") as tmp:
        for f in sorted(src.iterdir()):
            if not f.is_file() or f.name.startswith(".") or f.name in ("config.json", INDEX):
                continue
            if f.name.endswith(".safetensors"):
                if f.name in weight_map.values():
                    _link_or_copy(f, tmp / (SINGLE_RENAMED if f.name == "model.safetensors" else f.name))
            elif not f.name.endswith(WEIGHT_SUFFIXES):
                shutil.copyfile(f.resolve(), tmp / f.name)  # tokenizer, chat template, generation config
        save_file(new, str(tmp / BIAS_SHARD), metadata={"format": "pt"})
        full_map = {k: (SINGLE_RENAMED if v == "model.safetensors" else v) for k, v in weight_map.items()}
        full_map |= {k: BIAS_SHARD for k in new}
        total = sum((tmp / name).stat().st_size for name in set(full_map.values()))
        (tmp / INDEX).write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": dict(sorted(full_map.items()))}, indent=2)
        )
        (tmp / "config.json").write_text(json.dumps(llama, indent=2, sort_keys=True))
        (tmp / "mechsteer_compiled.json").write_text(
            json.dumps(
                {
                    "compiler_version": COMPILER_VERSION,
                    "source_dir": str(src),
                    "source_model_type": cfg.get("model_type"),
                    "source_fingerprint": base_fp,
                    "bias_sha256": b_sha,
                    "bias_norms": [round(float(x), 6) for x in bias.norm(dim=1)],
                },
                indent=2,
            )
        )
    return target
