"""Check that a DiffSAE folder written by mechsteer loads in SAELens and encodes/decodes identically.

Run with a Python that has sae-lens installed (it is not a mechsteer dependency), e.g.
    python scripts/check_saelens_compat.py [SAE_FOLDER]
Without a folder, a random TopK SAE is written to a temporary folder first. Exit status 0 = identical.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mechsteer.diffsae.sae import TopKSAE, load_saelens, save_saelens  # noqa: E402


def main() -> int:
    import sae_lens
    from sae_lens import SAE

    with tempfile.TemporaryDirectory() as tmp:
        if len(sys.argv) > 1:
            folder = Path(sys.argv[1])
        else:
            folder = Path(tmp) / "sae"
            sae = TopKSAE(48, 200, 6)
            sae.init_weights(torch.Generator().manual_seed(0), b_dec=torch.randn(48))
            with torch.no_grad():
                sae.b_enc.copy_(torch.randn(200) * 0.1)
            save_saelens(sae, folder, {"model_name": "random", "hook_name": "model.layers.0.output"})
        ours, _ = load_saelens(folder)
        theirs = SAE.load_from_disk(str(folder), device="cpu")
        x = torch.randn(256, ours.d_in) * 3
        with torch.no_grad():
            a_ours, a_theirs = ours.encode(x), theirs.encode(x)
            d_ours, d_theirs = ours.decode(a_ours), theirs.decode(a_theirs)
        enc_diff = float((a_ours - a_theirs).abs().max())
        dec_diff = float((d_ours - d_theirs).abs().max())
        print(
            f"sae_lens {sae_lens.__version__}: loaded {type(theirs).__name__} (architecture "
            f"{theirs.cfg.architecture()}, d_in {theirs.cfg.d_in}, d_sae {theirs.cfg.d_sae}, k {theirs.cfg.k}); "
            f"max |encode diff| {enc_diff:.3g}, max |decode diff| {dec_diff:.3g}, "
            f"active per token {float((a_theirs > 0).sum(-1).float().mean()):.2f}"
        )
        return 0 if enc_diff < 1e-5 and dec_diff < 1e-5 else 1


if __name__ == "__main__":
    raise SystemExit(main())
