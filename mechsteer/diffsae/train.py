"""Train a TopK SAE on collected dF (or any [tokens, d] activations), resumably.

Recipe (Gao et al. 2024, as in SAELens' TopK trainer): inputs scaled by one constant so that the mean squared
norm is d_in (the constant is folded back into b_enc and b_dec when the SAE is exported, so the saved SAE
reads raw dF); b_dec initialised to the data mean; decoder rows unit norm, the gradient component along each
row removed before the Adam step and the rows renormalised after it; loss = reconstruction MSE plus an
auxiliary-k loss that makes "dead" latents (not fired for `dead_tokens` tokens) reconstruct the residual.

Data order is deterministic (a seeded shard order and a seeded permutation inside each shard, per epoch),
and a checkpoint holds the SAE, the Adam state, the data position and the dead-latent counters, so a
resumed run produces the same weights as an uninterrupted one (CPU, same seed; tested).

Reported: normalised MSE (sum |x - x_hat|^2 / sum |x|^2, i.e. relative to reconstructing 0), explained
variance (1 - sum |x - x_hat|^2 / sum |x - mean x|^2, relative to reconstructing the mean: dF has a large
mean, the steering vector's own push, so this is the stricter one), the fraction of dead latents (never
fired on the evaluation pass; and not fired in the last `dead_tokens` training tokens) and L0.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from mechsteer.atomic import atomic_dir, atomic_write_text
from mechsteer.diffsae.collect import load_shard, read_manifest
from mechsteer.diffsae.sae import TopKSAE, save_saelens
from mechsteer.errors import MechsteerError


@dataclass(frozen=True)
class SAETrainConfig:
    """How the DiffSAE's TopK SAE is trained: its width and k, the optimizer, how many tokens, the auxiliary loss
    for dead latents, and the checkpoint and log cadence."""

    width: int = 1024
    """Number of latents (d_sae)."""
    k: int = 16
    """Active latents per token."""
    lr: float = 5e-4
    tokens: int = 200_000
    """Training tokens (steps = tokens // batch_size); the data is repeated in epochs when smaller."""
    batch_size: int = 256
    seed: int = 0
    aux_k: int | None = None
    """Latents used by the auxiliary loss (default: min(d_in // 2, width))."""
    aux_coef: float = 1 / 32
    dead_tokens: int = 20_000
    """A latent that has not fired for this many training tokens counts as dead."""
    checkpoint_every: int = 0
    """Steps between checkpoints (0: only at the end or when stopped early)."""
    log_every: int = 50

    def __post_init__(self):
        for name in ("width", "k", "tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise MechsteerError(f"diffsae sae.{name} must be >= 1, got {getattr(self, name)}")
        if self.k > self.width:
            raise MechsteerError(f"diffsae sae.k={self.k} exceeds sae.width={self.width}", hint="lower k")
        if not self.lr > 0:
            raise MechsteerError(f"diffsae sae.lr must be > 0, got {self.lr}")

    @property
    def steps(self) -> int:
        """Optimizer steps: training tokens over the batch size, at least one."""
        return max(1, self.tokens // self.batch_size)


# -------------------------------------------------------------------------------------------- data
class TokenSource:
    """Activations split in shards: `counts[i]` rows in shard i, `load(i)` -> float32 [counts[i], d]."""

    def __init__(self, counts: list[int], load: Callable[[int], torch.Tensor], d_in: int):
        self.counts, self.load, self.d_in = counts, load, d_in

    @property
    def n_tokens(self) -> int:
        """Rows over all shards."""
        return sum(self.counts)

    @classmethod
    def from_tensor(cls, x: torch.Tensor, shard_size: int | None = None) -> TokenSource:
        """A source over an in-memory tensor, split into shards of `shard_size` rows (tests and small runs)."""
        x = x.float()
        size = shard_size or x.shape[0]
        parts = list(x.split(size))
        return cls([p.shape[0] for p in parts], lambda i: parts[i], x.shape[1])

    @classmethod
    def from_collection(cls, folder: str | Path, layer: int) -> TokenSource:
        """A source over one layer of a dF collection on disk, loading one shard at a time."""
        m = read_manifest(folder)
        if layer not in m["layers"]:
            raise MechsteerError(f"{folder} has no layer {layer}; collected layers: {m['layers']}")
        names = [s["name"] for s in m["shards"]]
        return cls([s["n_tokens"] for s in m["shards"]], lambda i: load_shard(folder, names[i], layer), m["d_model"])


class BatchStream:
    """Deterministic, resumable batches: epochs over a seeded shard order, rows permuted within a shard."""

    def __init__(self, source: TokenSource, batch_size: int, seed: int):
        if source.n_tokens == 0:
            raise MechsteerError("diffsae: no tokens to train the SAE on", hint="collect dF first")
        self.source, self.batch_size, self.seed = source, batch_size, seed
        self.epoch, self.pos, self.offset = 0, 0, 0
        self._cached: tuple[tuple[int, int], torch.Tensor] | None = None

    def _gen(self, *key: int) -> torch.Generator:
        g = torch.Generator()
        g.manual_seed(hash_ints(self.seed, *key))
        return g

    def _shard(self) -> torch.Tensor:
        key = (self.epoch, self.pos)
        if self._cached is None or self._cached[0] != key:
            order = torch.randperm(len(self.source.counts), generator=self._gen(self.epoch))
            i = int(order[self.pos])
            data = self.source.load(i)
            self._cached = (key, data[torch.randperm(data.shape[0], generator=self._gen(self.epoch, i, 1))])
        return self._cached[1]

    def next(self) -> torch.Tensor:
        """The next batch of `batch_size` rows, crossing shard and epoch boundaries as needed."""
        parts, need = [], self.batch_size
        while need > 0:
            data = self._shard()
            take = data[self.offset : self.offset + need]
            parts.append(take)
            need -= take.shape[0]
            self.offset += take.shape[0]
            if self.offset >= data.shape[0]:
                self.offset, self.pos = 0, self.pos + 1
                if self.pos >= len(self.source.counts):
                    self.pos, self.epoch = 0, self.epoch + 1
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    def state(self) -> dict:
        """Where the stream is (epoch, shard, row), saved with a checkpoint."""
        return {"epoch": self.epoch, "pos": self.pos, "offset": self.offset}

    def restore(self, state: dict) -> None:
        """Continue from a saved `state`, so a resumed run sees the batches an uninterrupted one would."""
        self.epoch, self.pos, self.offset = state["epoch"], state["pos"], state["offset"]


def hash_ints(*xs: int) -> int:
    """A stable 63-bit mix of integers (Python's hash() of tuples is stable too, but this is explicit)."""
    h = 1469598103934665603
    for x in xs:
        h = ((h ^ (int(x) & 0xFFFFFFFFFFFF)) * 1099511628211) % (1 << 63)
    return h


def _sample(source: TokenSource, n: int) -> torch.Tensor:
    """The first up to n rows in shard order (for the input scale and b_dec initialisation)."""
    parts, have = [], 0
    for i in range(len(source.counts)):
        if have >= n:
            break
        parts.append(source.load(i)[: n - have])
        have += parts[-1].shape[0]
    return torch.cat(parts)


# -------------------------------------------------------------------------------------------- checkpoints
_STEP = re.compile(r"^step-(\d+)$")


def _latest(root: Path) -> Path | None:
    if not root.is_dir():
        return None
    found = [
        (int(m.group(1)), p) for p in root.iterdir() if (m := _STEP.match(p.name)) and (p / "state.json").is_file()
    ]
    return max(found)[1] if found else None


def _save_ckpt(
    root: Path, step: int, sae: TopKSAE, opt: torch.optim.Optimizer, since_fired: torch.Tensor, info: dict
) -> Path:
    from safetensors.torch import save_file

    final = root / f"step-{step:06d}"
    with atomic_dir(final, prefix=f".step-{step:06d}.") as tmp:
        tensors = {f"param/{n}": p.detach().clone().contiguous() for n, p in sae.named_parameters()}
        sd = opt.state_dict()
        for idx, st in sd["state"].items():
            for key, v in st.items():
                tensors[f"opt/{idx}/{key}"] = (v if torch.is_tensor(v) else torch.tensor(v)).clone().contiguous()
        tensors["since_fired"] = since_fired.clone()
        save_file(tensors, str(tmp / "state.safetensors"))
        (tmp / "state.json").write_text(
            json.dumps({"step": step, "param_groups": sd["param_groups"], **info}, indent=1)
        )
    return final


def _load_ckpt(path: Path, sae: TopKSAE, opt: torch.optim.Optimizer) -> tuple[dict, torch.Tensor]:
    from safetensors.torch import load_file

    state = json.loads((path / "state.json").read_text())
    t = load_file(str(path / "state.safetensors"))
    with torch.no_grad():
        for n, p in sae.named_parameters():
            if t[f"param/{n}"].shape != p.shape:
                raise MechsteerError(
                    f"checkpoint {path}: {n} has shape {tuple(t[f'param/{n}'].shape)}, this run "
                    f"trains {tuple(p.shape)}",
                    hint="resume with the same config or a fresh folder",
                )
            p.copy_(t[f"param/{n}"])
    opt_state: dict[int, dict] = {}
    for key, v in t.items():
        if key.startswith("opt/"):
            _, idx, name = key.split("/", 2)
            opt_state.setdefault(int(idx), {})[name] = v
    opt.load_state_dict({"state": opt_state, "param_groups": state["param_groups"]})
    return state, t["since_fired"]


# -------------------------------------------------------------------------------------------- training
@dataclass
class TrainResult:
    """A trained SAE with its final metrics and the training log."""

    sae: TopKSAE
    """The trained SAE in raw input units (the input scale folded in), as saved."""
    metrics: dict
    log: list[dict]


def fold_scale(sae: TopKSAE, scale: float) -> TopKSAE:
    """An SAE for raw inputs x from one trained on scale * x: b_enc and b_dec divided by the scale (the TopK
    selection is unchanged by a positive factor; decoder rows stay unit norm)."""
    out = TopKSAE(sae.d_in, sae.d_sae, sae.k)
    with torch.no_grad():
        out.W_enc.copy_(sae.W_enc)
        out.W_dec.copy_(sae.W_dec)
        out.b_enc.copy_(sae.b_enc / scale)
        out.b_dec.copy_(sae.b_dec / scale)
    return out


@torch.no_grad()
def evaluate_sae(sae: TopKSAE, source: TokenSource, batch_size: int = 4096) -> dict:
    """Reconstruction and sparsity over every token of `source` (raw units)."""
    n, err, sq, l0 = 0, 0.0, 0.0, 0.0
    s1 = torch.zeros(source.d_in, dtype=torch.float64)
    fired = torch.zeros(sae.d_sae, dtype=torch.long)
    for i in range(len(source.counts)):
        for x in source.load(i).split(batch_size):
            acts = sae.encode(x)
            err += float((x - sae.decode(acts)).double().pow(2).sum())
            sq += float(x.double().pow(2).sum())
            s1 += x.double().sum(0)
            fired += (acts > 0).sum(0)
            l0 += float((acts > 0).sum())
            n += x.shape[0]
    centered = sq - float(s1.pow(2).sum()) / n
    return {
        "n_tokens": n,
        "nmse": err / sq if sq > 0 else float("nan"),
        "explained_variance": 1 - err / centered if centered > 0 else float("nan"),
        "dead_fraction": float((fired == 0).float().mean()),
        "l0": l0 / n,
        "mean_sq_norm": sq / n,
    }


def train_sae(
    source: TokenSource,
    cfg: SAETrainConfig,
    out_dir: str | Path,
    *,
    stop_after: int | None = None,
    metadata: dict | None = None,
    progress: Callable[[int, int, dict], None] | None = None,
) -> TrainResult:
    """Train (or resume from the latest checkpoint under `out_dir/checkpoints`) and export the SAE to
    `out_dir/sae` in SAELens format. `stop_after`: stop after that many steps in total (checkpointing there),
    which is how an interruption is simulated; the result is then the partial SAE."""
    out_dir = Path(out_dir)
    ck_root = out_dir / "checkpoints"
    d_in = source.d_in
    aux_k = cfg.aux_k or min(max(d_in // 2, 1), cfg.width)
    sae = TopKSAE(d_in, cfg.width, cfg.k)
    opt = torch.optim.Adam(sae.parameters(), lr=cfg.lr)
    stream = BatchStream(source, cfg.batch_size, cfg.seed)
    fingerprint = {"config": asdict(cfg), "d_in": d_in, "n_tokens_data": source.n_tokens}
    latest = _latest(ck_root)
    if latest is not None:
        state, since_fired = _load_ckpt(latest, sae, opt)
        if state["fingerprint"] != json.loads(json.dumps(fingerprint)):
            raise MechsteerError(
                f"checkpoint {latest} was made with another config or data: {state['fingerprint']}",
                hint="use the same config and collection, or a fresh output folder",
            )
        start, scale, log, acc = state["step"], state["scale"], state["log"], state["acc"]
        stream.restore(state["stream"])
    else:
        sample = _sample(source, 8192)
        scale = math.sqrt(d_in / float(sample.pow(2).sum(-1).mean().clamp_min(1e-30)))
        g = torch.Generator()
        g.manual_seed(hash_ints(cfg.seed, 7))
        sae.init_weights(g, b_dec=(sample * scale).mean(0))
        start, log, since_fired = 0, [], torch.zeros(cfg.width, dtype=torch.long)
        acc = {"mse": 0.0, "var": 0.0, "aux": 0.0, "n": 0}  # running sums of the current log window

    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    for step in range(start, end):
        x = stream.next() * scale
        pre = sae.pre_acts(x)
        acts = sae.topk(pre)
        err = x - sae.decode(acts)
        mse = err.pow(2).sum(-1).mean()
        with torch.no_grad():
            fired = (acts > 0).any(0)
            since_fired = torch.where(fired, torch.zeros_like(since_fired), since_fired + x.shape[0])
            dead = since_fired >= cfg.dead_tokens
        loss = mse
        aux_val = 0.0
        n_dead = int(dead.sum())
        if n_dead and cfg.aux_coef > 0:
            kk = min(aux_k, n_dead)
            vals, idx = pre.masked_fill(~dead, float("-inf")).topk(kk, dim=-1)
            e_hat = torch.zeros_like(pre).scatter(-1, idx, vals.relu()) @ sae.W_dec
            target = err.detach()
            aux = (e_hat - target).pow(2).sum(-1).mean() / target.pow(2).sum(-1).mean().clamp_min(1e-12)
            loss = loss + cfg.aux_coef * aux
            aux_val = float(aux.detach())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        sae.remove_parallel_grad()
        opt.step()
        sae.normalize_decoder()
        with torch.no_grad():
            acc["mse"] += float(mse)
            acc["var"] += float((x - x.mean(0)).pow(2).sum(-1).mean())
            acc["aux"] += aux_val
            acc["n"] += 1
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            rec = {
                "step": done,
                "tokens": done * cfg.batch_size,
                "mse": acc["mse"] / acc["n"],
                "explained_variance": 1 - acc["mse"] / max(acc["var"], 1e-30),
                "aux_loss": acc["aux"] / acc["n"],
                "dead_fraction": float(dead.float().mean()),
            }
            log.append(rec)
            acc = {"mse": 0.0, "var": 0.0, "aux": 0.0, "n": 0}
            if progress:
                progress(done, cfg.steps, rec)
        if (cfg.checkpoint_every and done % cfg.checkpoint_every == 0) or done == end:
            _save_ckpt(
                ck_root,
                done,
                sae,
                opt,
                since_fired,
                {"fingerprint": fingerprint, "scale": scale, "log": log, "acc": acc, "stream": stream.state()},
            )

    final = fold_scale(sae, scale)
    metrics = {
        "steps": end,
        "complete": end == cfg.steps,
        "scale": scale,
        "dead_fraction_train": float((since_fired >= cfg.dead_tokens).float().mean()),
        **evaluate_sae(final, source),
        "config": asdict(cfg),
    }
    if end == cfg.steps:
        save_saelens(final, out_dir / "sae", {"mechsteer_train": metrics, **(metadata or {})})
        atomic_write_text(out_dir / "train_metrics.json", json.dumps(metrics, indent=1))
        atomic_write_text(out_dir / "train_log.jsonl", "".join(json.dumps(r) + "\n" for r in log))
    return TrainResult(final, metrics, log)
