"""A small TopK sparse autoencoder, saved and loaded in SAELens' on-disk format.

Architecture (Gao et al. 2024, "Scaling and evaluating sparse autoencoders"; SAELens `topk`):
    pre   = (x - b_dec) @ W_enc + b_enc                      # the decoder bias is subtracted first
    acts  = ReLU of the k largest entries of `pre`, 0 elsewhere
    x_hat = acts @ W_dec + b_dec                              # W_dec rows are unit norm

File format (checked against SAELens 6.54.12, `sae_lens/saes/sae.py` `SAE.save_model` /
`SAE.load_from_disk`, `sae_lens/saes/topk_sae.py` `TopKSAEConfig`, `sae_lens/constants.py`): a folder with
`cfg.json` (the dataclass fields `d_in`, `d_sae`, `dtype`, `device`, `apply_b_dec_to_input`,
`normalize_activations`, `reshape_activations`, `k`, `rescale_acts_by_decoder_norm`, a `metadata` dict
holding `sae_lens_version` >= 6 so no pre-6.0 key renaming applies, plus `architecture: "topk"`) and
`sae_weights.safetensors` with `W_enc` [d_in, d_sae], `b_enc` [d_sae], `W_dec` [d_sae, d_in], `b_dec` [d_in].
`SAE.load_from_disk(folder)` then builds a `TopKSAE` whose encode/decode equal ours (verified by
`scripts/check_saelens_compat.py` in a separate venv with sae-lens installed).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from mechsteer.atomic import atomic_dir
from mechsteer.errors import MechsteerError

SAE_CFG_FILENAME = "cfg.json"
SAE_WEIGHTS_FILENAME = "sae_weights.safetensors"
SAELENS_FORMAT_VERSION = "6.54.12"
"""The SAELens version whose format we write (recorded as metadata.sae_lens_version)."""


class TopKSAE(nn.Module):
    """TopK SAE with parameters named as in SAELens."""

    def __init__(self, d_in: int, d_sae: int, k: int, dtype: torch.dtype = torch.float32):
        super().__init__()
        if not 0 < k <= d_sae:
            raise MechsteerError(f"TopK SAE: k={k} must be in 1..d_sae={d_sae}", hint="lower k or widen the SAE")
        self.d_in, self.d_sae, self.k = d_in, d_sae, k
        self.W_enc = nn.Parameter(torch.zeros(d_in, d_sae, dtype=dtype))
        self.b_enc = nn.Parameter(torch.zeros(d_sae, dtype=dtype))
        self.W_dec = nn.Parameter(torch.zeros(d_sae, d_in, dtype=dtype))
        self.b_dec = nn.Parameter(torch.zeros(d_in, dtype=dtype))

    @torch.no_grad()
    def init_weights(self, generator: torch.Generator, b_dec: torch.Tensor | None = None) -> None:
        """Unit-norm random decoder rows, encoder = decoder transposed, zero encoder bias, b_dec = the given
        data mean (or zero)."""
        w = torch.randn(self.d_sae, self.d_in, generator=generator, dtype=torch.float32)
        w = w / w.norm(dim=1, keepdim=True)
        self.W_dec.copy_(w)
        self.W_enc.copy_(w.T)
        self.b_enc.zero_()
        self.b_dec.copy_(b_dec if b_dec is not None else torch.zeros(self.d_in))

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder pre-activations (x - b_dec) W_enc + b_enc."""
        return (x - self.b_dec) @ self.W_enc + self.b_enc

    def topk(self, pre: torch.Tensor) -> torch.Tensor:
        """Keep each row's k largest pre-activations (ReLU'd), zero the rest."""
        vals, idx = pre.topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, idx, vals.relu())

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The sparse code of `x`: its TopK pre-activations."""
        return self.topk(self.pre_acts(x))

    def decode(self, acts: torch.Tensor) -> torch.Tensor:
        """The reconstruction acts W_dec + b_dec."""
        return acts @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruct `x` through its sparse code."""
        return self.decode(self.encode(x))

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Scale every decoder row to unit norm (after each step, as SAELens does), so latent size lives in the
        activations."""
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12))

    @torch.no_grad()
    def remove_parallel_grad(self) -> None:
        """Drop the gradient component along each decoder row (it only changes the norm, which is reset)."""
        if self.W_dec.grad is None:
            return
        w = self.W_dec
        self.W_dec.grad.sub_((self.W_dec.grad * w).sum(dim=1, keepdim=True) * w)


def save_saelens(sae: TopKSAE, folder: str | Path, metadata: dict | None = None) -> Path:
    """Write `sae` as a SAELens `topk` SAE folder (atomically). `metadata` lands in cfg.json's metadata
    (e.g. model_name, hook_name, and mechsteer's own keys: layer, condition)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    cfg = {
        "d_in": sae.d_in,
        "d_sae": sae.d_sae,
        "dtype": str(sae.W_enc.dtype).removeprefix("torch."),
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "k": sae.k,
        "rescale_acts_by_decoder_norm": False,
        "metadata": {"sae_lens_version": SAELENS_FORMAT_VERSION, "sae_lens_training_version": None, **(metadata or {})},
        "architecture": "topk",
    }
    with atomic_dir(folder, prefix=f".{folder.name}.") as tmp:
        tensors = {n: getattr(sae, n).detach().cpu().contiguous() for n in ("W_enc", "b_enc", "W_dec", "b_dec")}
        save_file(tensors, str(tmp / SAE_WEIGHTS_FILENAME))
        (tmp / SAE_CFG_FILENAME).write_text(json.dumps(cfg, indent=1))
    return folder


def load_saelens(folder: str | Path) -> tuple[TopKSAE, dict]:
    """Read a SAELens `topk` folder written by `save_saelens` (or by SAELens itself with the same options)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    cfg_path, w_path = folder / SAE_CFG_FILENAME, folder / SAE_WEIGHTS_FILENAME
    if not cfg_path.is_file() or not w_path.is_file():
        raise MechsteerError(
            f"{folder} is not a SAELens SAE folder (needs {SAE_CFG_FILENAME} and {SAE_WEIGHTS_FILENAME})"
        )
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("architecture") != "topk":
        raise MechsteerError(
            f"{cfg_path}: architecture {cfg.get('architecture')!r} is not supported",
            hint="only SAELens `topk` SAEs load here",
        )
    for key, want in (
        ("apply_b_dec_to_input", True),
        ("normalize_activations", "none"),
        ("rescale_acts_by_decoder_norm", False),
        ("reshape_activations", "none"),
    ):
        if cfg.get(key, want) != want:
            raise MechsteerError(f"{cfg_path}: {key}={cfg[key]!r} is not supported (only {want!r})")
    w = load_file(str(w_path))
    sae = TopKSAE(int(cfg["d_in"]), int(cfg["d_sae"]), int(cfg["k"]), dtype=w["W_enc"].dtype)
    with torch.no_grad():
        for n in ("W_enc", "b_enc", "W_dec", "b_dec"):
            if w[n].shape != getattr(sae, n).shape:
                raise MechsteerError(
                    f"{w_path}: {n} has shape {tuple(w[n].shape)}, expected {tuple(getattr(sae, n).shape)}"
                )
            getattr(sae, n).copy_(w[n])
    return sae, cfg
