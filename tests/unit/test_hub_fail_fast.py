"""With the Hugging Face hub unreachable, loading a hub model or benchmark fails at once with a clear error
(which model/dataset, and the fix), instead of after huggingface_hub's retries; a model in the local cache
still loads. The network is never touched: the TCP probe is replaced by a stand-in."""

from __future__ import annotations

import pytest
from conftest import make_tiny_model
from tiny_tokenizer import VOCAB_SIZE, make_tiny_tokenizer

from mechsteer import hub
from mechsteer.errors import ModelLoadError
from mechsteer.spec.models import ModelSpec


@pytest.fixture
def no_network(monkeypatch):
    """No offline setting, and a probe that finds no connection (counting its calls)."""
    for v in (
        "HF_HUB_OFFLINE",
        "HF_DATASETS_OFFLINE",
        "HF_ENDPOINT",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
    ):
        monkeypatch.delenv(v, raising=False)
    calls: list[tuple[str, int]] = []

    def probe(host, port, timeout):
        calls.append((host, port))
        return False

    monkeypatch.setattr(hub, "tcp_reachable", probe)
    hub.forget()
    yield calls
    hub.forget()


def test_probe_runs_once_per_process(no_network):
    assert hub.hub_unreachable() == "no connection to huggingface.co:443 within 2 s"
    assert hub.hub_unreachable() and hub.hub_unreachable(("HF_DATASETS_OFFLINE",))
    assert no_network == [("huggingface.co", 443)]


def test_offline_setting_answers_without_probing(no_network, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.hub_unreachable() == "HF_HUB_OFFLINE=1"
    assert no_network == []


def test_probe_follows_the_endpoint_and_the_proxy(no_network, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.example.org:8443")
    hub.hub_unreachable()
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example.org:3128")
    hub.forget()
    hub.hub_unreachable()
    assert no_network == [("hub.example.org", 8443), ("proxy.example.org", 3128)]


def test_reachable_hub_is_not_reported(no_network, monkeypatch):
    monkeypatch.setattr(hub, "tcp_reachable", lambda host, port, timeout: True)
    assert hub.hub_unreachable() is None


def _stub_from_pretrained(monkeypatch, cached: bool):
    """transformers' loaders replaced: record the keyword arguments; only `local_files_only=True` may be
    asked, and it finds the model in the 'cache' when `cached`."""
    import transformers

    seen: list[dict] = []
    model, tok = make_tiny_model("llama", vocab_size=VOCAB_SIZE), make_tiny_tokenizer()

    def loader(obj):
        def from_pretrained(where, **kwargs):
            seen.append(kwargs)
            if not cached:
                raise OSError(f"{where} is not in the cache")
            return obj

        return from_pretrained

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", loader(tok))
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", loader(model))
    return seen


def test_hub_model_fails_at_once_when_unreachable(no_network, monkeypatch):
    from mechsteer.models.loading import load_model

    seen = _stub_from_pretrained(monkeypatch, cached=False)
    with pytest.raises(ModelLoadError) as e:
        load_model("m", ModelSpec(id="someorg/some-model", dtype="float32", device="cpu"))
    msg = str(e.value)
    assert "'someorg/some-model'" in msg and "unreachable: no connection to huggingface.co:443" in msg
    assert "local directory" in msg and "\n" not in msg
    assert seen and all(kw.get("local_files_only") is True for kw in seen)  # no download was attempted


def test_cached_hub_model_still_loads_when_unreachable(no_network, monkeypatch):
    from mechsteer.models.loading import load_model

    seen = _stub_from_pretrained(monkeypatch, cached=True)
    lm = load_model("m", ModelSpec(id="someorg/some-model", dtype="float32", device="cpu"))
    assert lm.source == "hub" and lm.shape.n_layers == 4
    assert len(seen) == 2 and all(kw.get("local_files_only") is True for kw in seen)


def test_hub_benchmark_fails_at_once_when_unreachable(no_network, monkeypatch):
    import datasets

    from mechsteer.eval.datasets import DatasetUnavailableError, load_benchmark

    def never(*args, **kwargs):
        raise AssertionError("datasets.load_dataset must not be called with the hub unreachable")

    monkeypatch.setattr(datasets, "load_dataset", never)
    with pytest.raises(DatasetUnavailableError) as e:
        load_benchmark("math500", None)
    msg = str(e.value)
    assert "'math500'" in msg and "HuggingFaceH4/MATH-500" in msg and "unreachable" in msg and "--data-dir" in msg
