"""Training metrics: one JSON object per line (`metrics.jsonl`), atomic file writes, and the end-of-run plot.

Records have `type: "step"` (one per optimizer step) or `type: "eval"` (held-out accuracy at a step).
On `--resume` the log is cut back to the records of the checkpoint being resumed, so the finished log of a
resumed run equals the log of an uninterrupted one (timings aside).
"""

from __future__ import annotations

import json
from pathlib import Path

from mechsteer.atomic import atomic_path, atomic_write_text
from mechsteer.readouts.plots import plain_labels


class MetricsLog:
    """Append-only JSONL log with a resume cut."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def reset(self) -> None:
        """Empty the log (a fresh run)."""
        atomic_write_text(self.path, "")

    def append(self, record: dict) -> None:
        """Append one record as a JSON line, flushed, so a crash loses at most the record being written."""
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()

    def records(self) -> list[dict]:
        """Every record so far."""
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def cut(self, n_lines: int) -> None:
        """Keep the first `n_lines` records (those written before the resumed checkpoint)."""
        keep = self.records()[:n_lines]
        atomic_write_text(self.path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in keep))

    def __len__(self) -> int:
        return len(self.records())


@plain_labels
def plot_metrics(records: list[dict], path: Path, title: str = "") -> Path:
    """Reward, loss / grad norm, and accuracy (training rollouts; held-out evaluations as markers) against step,
    as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r for r in records if r.get("type") == "step"]
    evals = [r for r in records if r.get("type") == "eval"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    x = [r["step"] for r in steps]
    axes[0].plot(x, [r["reward_mean"] for r in steps], marker=".", label="mean reward (T=1 rollouts)")
    axes[0].set_xlabel("step")
    axes[0].set_title("reward")
    axes[0].legend(fontsize=8)
    axes[1].plot(x, [r["loss"] for r in steps], marker=".", label="loss")
    ax2 = axes[1].twinx()
    ax2.plot(x, [r["grad_norm"] for r in steps], color="tab:orange", marker=".", label="grad norm (pre-clip)")
    axes[1].set_xlabel("step")
    axes[1].set_title("loss / grad norm")
    axes[1].legend(loc="upper left", fontsize=8)
    ax2.legend(loc="upper right", fontsize=8)
    axes[2].plot(x, [r["accuracy"] for r in steps], color="grey", alpha=0.6, label="training rollouts (lenient)")
    for key, label in (("greedy", "greedy"), ("sampled", "T=1")):
        pts = [(r["step"], r[key]["lenient"]) for r in evals if key in r]
        if pts:
            axes[2].plot(*zip(*pts), marker="o", label=f"{label} lenient")
        pts = [(r["step"], r[key]["boxed"]) for r in evals if key in r]
        if pts:
            axes[2].plot(*zip(*pts), marker="x", linestyle="--", label=f"{label} boxed")
    axes[2].set_ylim(-0.02, 1.02)
    axes[2].set_xlabel("step")
    axes[2].set_title("accuracy (held-out: markers)")
    axes[2].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)
    return path
