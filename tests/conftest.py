"""Shared fixtures: tiny random-init Llama and Qwen2 models (GQA, larger init so attention is not uniform)
and the hook-leak guard that fails any test leaving a hook on any model it built."""

from __future__ import annotations

import gc
import os
import weakref
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
DATA_FIXTURES = REPO / "tests" / "fixtures" / "data"
"""The first 4 problems of each local benchmark copy (tests read nothing outside the repository)."""

_MODELS: list[weakref.ref] = []


def _tiny_config(arch: str, **over):
    from transformers import Gemma3TextConfig, LlamaConfig, Qwen2Config

    common = dict(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        initializer_range=0.3,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    if arch == "gemma3":  # sandwich-norm blocks, q/k norms, a sliding-window layer shorter than the tests' prompts
        n = over.get("num_hidden_layers", common["num_hidden_layers"])
        common.update(
            head_dim=8,
            query_pre_attn_scalar=8,
            sliding_window=4,
            layer_types=[("sliding_attention", "full_attention")[i % 2] for i in range(n)],
            final_logit_softcapping=None,
        )
    common.update(over)
    configs = {"llama": LlamaConfig, "qwen2": Qwen2Config, "gemma3": Gemma3TextConfig}
    return configs[arch](**common)


def make_tiny_model(arch: str = "llama", dtype=torch.float32, seed: int = 0, **over):
    """A tiny random-init causal LM (`llama`, `qwen2` or `gemma3`); registered with the hook-leak guard."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    cfg = _tiny_config(arch, **over)
    cfg._attn_implementation = "eager"
    model = AutoModelForCausalLM.from_config(cfg, dtype=dtype).eval()
    if arch == "gemma3":  # Gemma norms scale by (1 + weight), initialised to 0: give them weights that matter
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "norm" in name:
                    p.normal_(0.0, 0.3)
    _MODELS.append(weakref.ref(model))
    return model


@pytest.fixture(params=["llama", "qwen2"])
def tiny_model(request):
    return make_tiny_model(request.param)


@pytest.fixture
def tiny_llama():
    return make_tiny_model("llama")


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Every test model here is tiny: one intra-op thread is far faster than two spin-waiting OpenMP threads
    on a shared 2-core machine. Restored at the end of the session."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def no_hub_probe(monkeypatch):
    """Tests never touch the network: mechsteer's hub probe (mechsteer.hub) answers "reachable" without a
    connection; the Hugging Face libraries stay offline through HF_HUB_OFFLINE above. Tests of the probe
    replace this stand-in with their own."""
    from mechsteer import hub

    monkeypatch.setattr(hub, "tcp_reachable", lambda host, port, timeout: True)
    hub.forget()
    yield
    hub.forget()


@pytest.fixture(autouse=True)
def hook_leak_guard():
    """Every model built through make_tiny_model (or registered via register_model) must end the test with
    no hooks at all: mechsteer never leaves hooks behind, even when a test fails midway."""
    from mechsteer.hooks import count_hooks

    yield
    leaked = []
    for ref in list(_MODELS):
        m = ref()
        if m is not None and count_hooks(m) != 0:
            leaked.append((type(m).__name__, count_hooks(m)))
    _MODELS.clear()
    _collect_if_grown()
    assert not leaked, f"hooks leaked on models after the test: {leaked}"


_COLLECT_ABOVE = 256 * 2**20
"""Resident-memory growth (bytes) since the last full collection above which a test's teardown collects."""
_rss_after_collect = [0]


def _collect_if_grown() -> None:
    """Free what the test left in reference cycles (transformers models sit in cycles, so refcounting alone does
    not free them), but only when memory grew noticeably: one full collection scans every object of torch,
    transformers, pandas and lm-eval (about 0.5-1 s here), which after each of ~650 tests was most of the unit
    tier's time, while the tiny test models weigh kilobytes. Python's own generational collector still runs."""
    import psutil

    rss = psutil.Process().memory_info().rss
    if rss - _rss_after_collect[0] > _COLLECT_ABOVE:
        gc.collect()
        _rss_after_collect[0] = psutil.Process().memory_info().rss


def register_model(model):
    """Put an externally built model under the hook-leak guard."""
    _MODELS.append(weakref.ref(model))
    return model
