"""Training curves of one or several runs on one figure (``collegial plot RUN_DIR ...``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from collegial.io import save_figure

#: The panels: (metrics.jsonl keys, y label); the train and test series share a panel.
PANELS = ((("train_loss", "test_loss"), "loss"), (("train_top1_err", "test_top1_err"), "top-1 error %"))


def plot_runs(runs: Sequence[tuple[str, Sequence[dict[str, Any]]]], path: str | Path) -> Path:
    """Loss and top-1 error against the epoch for every ``(label, metrics)`` of ``runs``
    (``metrics``: the epochs of a run's ``metrics.jsonl``); train dashed, test solid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PANELS), figsize=(5.2 * len(PANELS), 3.8))
    for ax, (keys, ylabel) in zip(axes, PANELS):
        for i, (label, metrics) in enumerate(runs):
            color = f"C{i % 10}"
            for key, style in zip(keys, ("--", "-")):
                pts = [(r["epoch"], r[key]) for r in metrics if r.get(key) is not None]
                if pts:
                    ax.plot(*zip(*pts), style, color=color, marker="o", ms=3,
                            label=f"{label} ({key.split('_')[0]})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)
