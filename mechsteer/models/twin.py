"""Random-weight twins of a model, for rehearsals (`mechsteer run --rehearse`, `mechsteer train --rehearse`).

A twin has the model's transformers class (Qwen2ForCausalLM, LlamaForCausalLM, Gemma3ForCausalLM, ...), its
number of blocks, query heads and KV heads, and its head layout (hidden = heads x head_dim where the model has
that, RoPE settings, sliding windows, tied embeddings, q/k/v biases), so block indices, query-head and KV-head
sweeps expand exactly as on the model; only widths are shrunk (head_dim `TWIN_HEAD_DIM`, hidden scaled with it,
an MLP of twice the hidden size) and the vocabulary is the stand-in tokenizer's
(`mechsteer/data/rehearsal/tokenizer.json`, `scripts/make_rehearsal_tokenizer.py`: a 1,536-token byte-level
BPE with the ChatML, Llama 3 and Gemma special tokens), with the chat template of the model's family (or none
for a base model). Weights are random (seeded by the model id); its numbers mean nothing.

So that samples end as a real model's do (readouts that keep only finished samples, stop tokens, answers of
different lengths), the twin is made to stop: one residual channel (0) carries a constant from the embedding
to the final norm (no block writes to it) and the unembedding rows of the stop tokens read it, scaled so that
at temperature 1 the twin ends a sample with probability about `STOP_PROBABILITY` per token on the stand-in
prompts; the other logits are scaled to a spread of about `LOGIT_SPREAD`, so greedy decoding does not always
stop at once.

Twins are written once per recipe (config facts, this module's `TWIN_FORMAT`, the tokenizer file) into the
cache (`~/.cache/mechsteer/twins/<model>-<digest>`, `MECHSTEER_CACHE` moves it), with a `rehearsal_twin.json`
that says what the folder is; the planner refuses such a folder outside a rehearsal.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import tempfile
from pathlib import Path

from mechsteer.errors import ModelLoadError
from mechsteer.spec.model_configs import ModelConfig

TWIN_FORMAT = 1
"""Version of the twin recipe (part of every twin folder's name: a new recipe builds new twins)."""
TWIN_HEAD_DIM = 4
"""head_dim of a twin (8 for a model whose hidden size is not heads x head_dim, such as Gemma 3)."""
STOP_PROBABILITY = 0.2
"""Mean probability that a twin ends a sample at each generated token at temperature 1 (calibrated)."""
LOGIT_SPREAD = 3.0
"""Standard deviation of a twin's other logits (so greedy decoding varies between stopping and writing)."""
CONSTANT_RATIO = 10.0
"""The constant channel's size against the norm of the rest of the final residual stream: large, so that its share
after the final norm (which the stop tokens read) barely moves when generated tokens change the rest."""
TIED_EMBEDDING_SHRINK = 0.2
"""With tied embeddings, the token part of the input embedding is shrunk by this factor, so that a generated token
does not make itself the next token almost surely (the unembedding is the same matrix)."""
MARKER = "rehearsal_twin.json"
"""The file that marks a folder as a twin (what it is a twin of, and that its weights are random)."""
TOKENIZER = Path(__file__).resolve().parent.parent / "data" / "rehearsal" / "tokenizer.json"

CHAT_TEMPLATES = {
    "chatml": (
        "{%- if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
        "{%- endif %}{%- for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
        "{%- endfor %}{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}"
    ),
    "llama3": (
        "{{- bos_token }}{%- for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n'"
        " + m['content'] | trim + '<|eot_id|>' }}{%- endfor %}{%- if add_generation_prompt %}"
        "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
    ),
    "gemma": (
        "{{- bos_token }}{%- set first = '' %}{%- if messages[0]['role'] == 'system' %}"
        "{%- set first = messages[0]['content'] + '\\n\\n' %}{%- set messages = messages[1:] %}{%- endif %}"
        "{%- for m in messages %}{{ '<start_of_turn>' + ('model' if m['role'] == 'assistant' else m['role']) + '\\n'"
        " + (first if loop.first else '') + m['content'] | trim + '<end_of_turn>\\n' }}{%- endfor %}"
        "{%- if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{%- endif %}"
    ),
}
"""Short versions of the families' chat templates (system, user, assistant turns; the generation prompt)."""

SPECIAL_TOKENS = {
    "chatml": {"bos": None, "eos": "<|endoftext|>", "pad": "<|endoftext|>", "turn_end": "<|im_end|>"},
    "llama3": {"bos": "<|begin_of_text|>", "eos": "<|eot_id|>", "pad": None, "turn_end": "<|eot_id|>"},
    "gemma": {"bos": "<bos>", "eos": "<eos>", "pad": "<pad>", "turn_end": "<end_of_turn>"},
}
"""bos / eos / pad of each chat family's tokenizers (Qwen's, Llama 3 Instruct's, Gemma's)."""

BASE_TOKENS = {
    "LlamaForCausalLM": {"bos": "<|begin_of_text|>", "eos": "<|end_of_text|>", "pad": None, "turn_end": None},
    "Gemma3ForCausalLM": {"bos": "<bos>", "eos": "<eos>", "pad": "<pad>", "turn_end": None},
}
"""Tokens of a base model's tokenizer (no chat template), by architecture (others: ChatML's without a turn end)."""


def special_tokens(mc: ModelConfig) -> dict:
    """bos, eos, pad and the end-of-turn token of the twin's tokenizer."""
    if mc.chat_template != "none":
        return SPECIAL_TOKENS[mc.chat_template]
    return BASE_TOKENS.get(mc.architecture, {**SPECIAL_TOKENS["chatml"], "turn_end": None})


def twin_widths(mc: ModelConfig) -> dict:
    """The shrunk widths: head_dim, hidden size, MLP size (the head counts stay)."""
    square = mc.d_model == mc.n_heads * mc.head_dim
    head_dim = TWIN_HEAD_DIM if square else 2 * TWIN_HEAD_DIM
    hidden = mc.n_heads * head_dim if square else max(8, 4 * round(mc.d_model * head_dim / mc.head_dim / 4))
    return {"head_dim": head_dim, "hidden_size": hidden, "intermediate_size": 2 * hidden}


def recipe(mc: ModelConfig) -> dict:
    """Everything a twin is built from (its folder's digest covers it)."""
    return {
        "format": TWIN_FORMAT,
        "model": mc.model_id,
        "config": mc.config,
        "chat_template": mc.chat_template,
        "tokenizer_sha256": hashlib.sha256(TOKENIZER.read_bytes()).hexdigest(),
        "widths": twin_widths(mc),
        "stop_probability": STOP_PROBABILITY,
        "logit_spread": LOGIT_SPREAD,
        "constant_ratio": CONSTANT_RATIO,
        "tied_embedding_shrink": TIED_EMBEDDING_SHRINK,
    }


def twin_dir(mc: ModelConfig, root: Path | None = None) -> Path:
    """The twin folder of a model, built on first use (atomically; concurrent builders write the same files)."""
    from mechsteer.models.embedded import cache_root

    digest = hashlib.sha256(json.dumps(recipe(mc), sort_keys=True).encode()).hexdigest()[:12]
    slug = "".join(c if c.isalnum() or c in "-._" else "-" for c in mc.model_id.strip("/")).strip("-.")[-60:]
    target = (root or cache_root() / "twins") / f"{slug}-{digest}"
    if (target / MARKER).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".twin-"))
    try:
        build_twin(mc, tmp)
        try:
            tmp.rename(target)
        except OSError:
            if not (target / MARKER).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def stand_in_tokenizer(mc: ModelConfig):
    """The stand-in tokenizer with the model family's special tokens, post-processor and chat template."""
    from tokenizers import Tokenizer, processors
    from transformers import PreTrainedTokenizerFast

    toks = special_tokens(mc)
    tok = Tokenizer.from_file(str(TOKENIZER))
    if toks["bos"]:  # Llama and Gemma tokenizers put BOS before a plain prompt
        bos = toks["bos"]
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, tok.token_to_id(bos))]
        )
    kwargs = {k: v for k, v in (("bos_token", toks["bos"]), ("eos_token", toks["eos"])) if v}
    if toks["pad"]:
        kwargs["pad_token"] = toks["pad"]
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs)
    specials = sorted((t.content for t in tok.get_added_tokens_decoder().values() if t.special), key=tok.token_to_id)
    fast.add_special_tokens({"additional_special_tokens": specials})
    if mc.chat_template != "none":
        fast.chat_template = CHAT_TEMPLATES[mc.chat_template]
    return fast


def twin_config(mc: ModelConfig, tokenizer):
    """The transformers config of the twin: the model's config with shrunk widths and the stand-in's ids."""
    from transformers import AutoConfig

    toks = special_tokens(mc)
    cfg = dict(mc.config)
    model_type = cfg.pop("model_type")
    cfg.pop("architectures", None)
    cfg.update(twin_widths(mc))
    if model_type.startswith("gemma3") and "query_pre_attn_scalar" in cfg:
        cfg["query_pre_attn_scalar"] = cfg["head_dim"]  # the attention scale follows the head width
    ids = {k: tokenizer.convert_tokens_to_ids(v) for k, v in toks.items() if v}
    cfg.update(
        vocab_size=len(tokenizer),
        bos_token_id=ids.get("bos"),
        eos_token_id=ids["eos"],
        pad_token_id=ids.get("pad", ids["eos"]),
        initializer_range=0.02,
    )
    config = AutoConfig.for_model(model_type, **cfg)
    config.architectures = [mc.architecture]
    return config


def stop_ids(mc: ModelConfig, tokenizer) -> list[int]:
    """The tokens that end a sample: eos, the chat template's end of turn, and Llama 3's end of text."""
    toks = special_tokens(mc)
    names = [toks["eos"], toks["turn_end"]] + (["<|end_of_text|>"] if mc.chat_template == "llama3" else [])
    return sorted({tokenizer.convert_tokens_to_ids(n) for n in names if n})


def build_twin(mc: ModelConfig, folder: Path, seed: int | None = None) -> None:
    """Write the twin of `mc` into `folder` (config, random weights, tokenizer, generation config, marker)."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    tokenizer = stand_in_tokenizer(mc)
    config = twin_config(mc, tokenizer)
    seed = int(hashlib.sha256(mc.model_id.encode()).hexdigest()[:8], 16) if seed is None else seed
    torch.manual_seed(seed)
    try:
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    except (ValueError, KeyError) as e:
        raise ModelLoadError(f"cannot build a twin of {mc.model_id} ({mc.architecture}): {e}") from None
    if type(model).__name__ != mc.architecture:
        raise ModelLoadError(
            f"the twin of {mc.model_id} is a {type(model).__name__}, not a {mc.architecture}",
            hint="the config's model_type must match its architectures entry",
        )
    stops = stop_ids(mc, tokenizer)
    calibrate_stops(model, tokenizer, stops)
    eos = stops if len(stops) > 1 else stops[0]
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=eos, pad_token_id=config.pad_token_id
    )
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    marker = {
        "rehearsal_twin_of": mc.model_id,
        "architecture": mc.architecture,
        "blocks": mc.n_layers,
        "query_heads": mc.n_heads,
        "kv_heads": mc.n_kv_heads,
        "real_widths": {"hidden_size": mc.d_model, "head_dim": mc.head_dim, "vocab_size": mc.config.get("vocab_size")},
        "twin_widths": {**twin_widths(mc), "vocab_size": len(tokenizer)},
        "weights": f"random (seed {seed}); NOT the model's weights: nothing computed with them is a result",
        "tokenizer": f"stand-in byte-level BPE ({TOKENIZER.name}), chat template: {mc.chat_template}",
        "config_source": mc.source,
        "format": TWIN_FORMAT,
    }
    (folder / MARKER).write_text(json.dumps(marker, indent=1, sort_keys=True) + "\n")


def _embeddings(model):
    emb = model.get_input_embeddings()
    scale = getattr(emb, "embed_scale", None)  # Gemma 3 multiplies its embeddings by sqrt(hidden)
    return emb.weight, float(scale) if scale is not None else 1.0


def _blocks_write_nothing_to(model, channel: int) -> None:
    """Zero every block's writes into one residual channel (attention and MLP output projections)."""
    from mechsteer.models.adapters import adapter_for

    adapter = adapter_for(model)
    for i, block in enumerate(adapter.layers(model)):
        block.self_attn.o_proj.weight[channel].zero_()
        adapter.down_proj(model, i, "a twin").weight[channel].zero_()


def _final_states(model, tokenizer, prompts: list[str]):
    """The final norm's input and output at each prompt's last position ([n, hidden] each), in one batch."""
    seen = []
    handle = model.model.norm.register_forward_pre_hook(lambda _m, args: seen.append(args[0][:, -1]))
    side, pad = tokenizer.padding_side, tokenizer.pad_token
    tokenizer.padding_side = "left"
    tokenizer.pad_token = pad or tokenizer.eos_token
    try:
        batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=not tokenizer.chat_template)
        out = model.model(**batch).last_hidden_state[:, -1]
    finally:
        handle.remove()
        tokenizer.padding_side, tokenizer.pad_token = side, pad
    return seen[0], out


CALIBRATION_PROBLEMS = ("What is 7 * 9?", "Calculate 5 + 6.", "What is 12 + 30?", "Compute 4 * 8.")
CALIBRATION_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."


def _scale_norm(norm, factor: float) -> None:
    """Multiply an RMSNorm's gain on channels 1.. by `factor` (Gemma's norms apply 1 + weight)."""
    if type(norm).__name__.startswith("Gemma"):
        norm.weight[1:] = (1 + norm.weight[1:]) * factor - 1
    else:
        norm.weight[1:] *= factor


def calibration_prompts(tokenizer) -> list[str]:
    """A few arithmetic prompts as the paper writes them (its system prompt in the chat template, or plain)."""
    if not tokenizer.chat_template:
        return [f"{CALIBRATION_SYSTEM}\n\nUser: {p} Assistant:" for p in CALIBRATION_PROBLEMS]
    return [
        tokenizer.apply_chat_template(
            [{"role": "system", "content": CALIBRATION_SYSTEM}, {"role": "user", "content": p}],
            add_generation_prompt=True,
            tokenize=False,
        )
        for p in CALIBRATION_PROBLEMS
    ]


def calibrate_stops(model, tokenizer, stops: list[int]) -> None:
    """Make the twin stop (see the module docstring): a constant residual channel read by the stop tokens'
    unembedding rows, the other logits scaled to `LOGIT_SPREAD`, and the stop weight set by bisection so that the
    mean stop probability on the calibration prompts is `STOP_PROBABILITY`."""
    import torch

    with torch.no_grad():
        emb, scale = _embeddings(model)
        unemb = model.get_output_embeddings().weight
        tied = unemb.data_ptr() == emb.data_ptr()
        prompts = calibration_prompts(tokenizer)
        _blocks_write_nothing_to(model, 0)
        const = 0.0
        for _ in range(3):  # channel 0 CONSTANT_RATIO x the rest of the final residual stream, whatever the depth
            emb[:, 0] = const / scale
            x, _ = _final_states(model, tokenizer, prompts)
            const = CONSTANT_RATIO * float(x[:, 1:].norm(dim=-1).mean())
        emb[:, 0] = const / scale
        others = torch.ones(unemb.shape[0], dtype=torch.bool)
        others[stops] = False
        if tied:  # a small token part of the input: a token's own embedding must not dominate its next logits
            emb[:, 1:] *= TIED_EMBEDDING_SHRINK
        for _ in range(3):  # the spread of the other logits, set by the final norm's weight
            _, h = _final_states(model, tokenizer, prompts)
            spread = float((h[:, 1:] @ unemb[others, 1:].T).std())
            _scale_norm(model.model.norm, LOGIT_SPREAD / max(spread, 1e-6))
        _, h = _final_states(model, tokenizer, prompts)
        base = unemb[:, 0].clone()
        logits = h @ unemb.T - h[:, :1] * base[None, :]  # without channel 0's reading
        h0 = h[:, 0]

        def p_stop(beta: float) -> float:
            z = logits.clone()
            z[:, stops] += beta * h0[:, None]
            return float(torch.softmax(z, dim=-1)[:, stops].sum(-1).mean())

        lo, hi = -50.0 / max(float(h0.abs().mean()), 1e-6), 50.0 / max(float(h0.abs().mean()), 1e-6)
        if p_stop(hi) < p_stop(lo):
            lo, hi = hi, lo
        for _ in range(60):
            mid = (lo + hi) / 2
            if p_stop(mid) < STOP_PROBABILITY:
                lo = mid
            else:
                hi = mid
        beta = (lo + hi) / 2
        unemb[:, 0] = 0.0 if not tied else const / scale
        unemb[stops, 0] = beta + (const / scale if tied else 0.0)
        if not math.isfinite(beta):
            raise ModelLoadError("twin calibration failed (no stop weight found)")
