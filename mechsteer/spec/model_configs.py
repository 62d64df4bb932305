"""Config facts of a model, known without loading it: from the table of the models the bundled studies name
(`mechsteer/data/model_configs.yaml`), or from a local model folder's own config.json.

Validation reads the shape (layers, width, query and KV heads) to check layer and head references; the rehearsal
(`mechsteer run --rehearse`) builds a random-weight twin from the whole config; the estimate (`mechsteer plan
--estimate`) sizes a model's work from its parameter count. Torch-free.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml

from mechsteer.spec.paths import resolve_path

TABLE = Path(__file__).resolve().parent.parent / "data" / "model_configs.yaml"
"""The package's table of model configs (see the file's header)."""

ChatFamily = Literal["chatml", "llama3", "gemma", "none"]
"""The family of a tokenizer's chat template: ChatML (`<|im_start|>role`, Qwen, SmolLM2), Llama 3
(`<|start_header_id|>role<|end_header_id|>`), Gemma (`<start_of_turn>role`), or none (a base model)."""


@dataclass(frozen=True)
class ModelConfig:
    """A model's config facts: its config.json keys (`config`), its chat-template family and where they come
    from."""

    model_id: str
    config: dict = field(hash=False)
    """Keys of the model's config.json (`architectures`, `model_type`, `hidden_size`, ...)."""
    chat_template: ChatFamily
    source: str
    """Where the facts come from (a hub config.json, typed into the table, or a local file)."""

    @property
    def architecture(self) -> str:
        """The transformers class (`Qwen2ForCausalLM`, `LlamaForCausalLM`, `Gemma3ForCausalLM`, ...)."""
        return (self.config.get("architectures") or ["?"])[0]

    @property
    def n_layers(self) -> int:
        """Decoder blocks."""
        return int(self.config["num_hidden_layers"])

    @property
    def d_model(self) -> int:
        """Width of the residual stream."""
        return int(self.config["hidden_size"])

    @property
    def n_heads(self) -> int:
        """Query heads."""
        return int(self.config["num_attention_heads"])

    @property
    def n_kv_heads(self) -> int:
        """Key/value heads (grouped-query attention; equal to the query heads without it)."""
        return int(self.config.get("num_key_value_heads") or self.n_heads)

    @property
    def head_dim(self) -> int:
        """Width of one head (`head_dim`, else hidden_size / heads, as transformers computes it)."""
        return int(self.config.get("head_dim") or self.d_model // self.n_heads)

    @property
    def tied(self) -> bool:
        """Whether the unembedding is the embedding matrix (`tie_word_embeddings`)."""
        return bool(self.config.get("tie_word_embeddings", False))

    def n_params(self) -> int:
        """Parameters of the model (embeddings, attention, MLP, norms; an untied unembedding counted)."""
        c, d, h, kv, hd = self.config, self.d_model, self.n_heads, self.n_kv_heads, self.head_dim
        vocab, ff = int(c["vocab_size"]), int(c["intermediate_size"])
        attn = d * h * hd + 2 * d * kv * hd + h * hd * d
        if c.get("model_type") == "qwen2":
            attn += h * hd + 2 * kv * hd  # q/k/v biases
        block = attn + 3 * d * ff + 4 * d
        return vocab * d * (1 if self.tied else 2) + self.n_layers * block + d


@lru_cache(maxsize=1)
def table() -> dict[str, ModelConfig]:
    """The package's table, by model id (read once)."""
    data = yaml.safe_load(TABLE.read_text(encoding="utf-8"))
    return {
        mid: ModelConfig(
            mid, dict(entry["config"]), entry.get("chat_template", "none"), entry.get("source", str(TABLE))
        )
        for mid, entry in data["models"].items()
    }


def chat_family(template: str | None) -> ChatFamily:
    """The family of a chat template's text (by the markers it writes); `none` for no template."""
    if not template:
        return "none"
    text = template if isinstance(template, str) else json.dumps(template)
    if "<|im_start|>" in text:
        return "chatml"
    if "<|start_header_id|>" in text:
        return "llama3"
    if "<start_of_turn>" in text:
        return "gemma"
    return "chatml"  # an unknown template: the most common layout stands in for it


def folder_chat_template(folder: Path) -> str | None:
    """The chat template a local model folder carries (`chat_template.jinja`, or tokenizer_config.json's)."""
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    cfg = folder / "tokenizer_config.json"
    if cfg.is_file():
        try:
            return json.loads(cfg.read_text(encoding="utf-8")).get("chat_template")
        except (OSError, ValueError):
            return None
    return None


def model_config(model_id: str, base_dir: Path | None = None) -> ModelConfig | None:
    """The config facts of a model: the table's entry for a known id, else a local folder's config.json
    (relative to `base_dir`); None when neither exists (a hub model not in the table)."""
    known = table().get(model_id)
    if known is not None:
        return known
    folder = resolve_path(model_id, base_dir)
    if not folder.is_dir():
        folder = Path(model_id).expanduser()
    cfg = folder / "config.json"
    if not cfg.is_file():
        return None
    try:
        data = json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or "num_hidden_layers" not in data:
        return None
    return ModelConfig(model_id, data, chat_family(folder_chat_template(folder)), str(cfg))
