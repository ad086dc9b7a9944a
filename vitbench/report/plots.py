"""Report plots (matplotlib, headless): data-requirement curves and fine-tuning loss curves.

Exercised by `vitbench report`. Each function writes one PNG and returns its path, or None when the
records hold nothing to plot.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def data_requirement_plot(agg: pd.DataFrame, path: Path) -> Path | None:
    """Accuracy against shots per class (log x) of every method with a `shots` parameter (few-shot), one line per
    model and panel per task, seed std bars."""
    fs = agg[agg["shots"].notna()]
    if fs.empty or fs["shots"].nunique() < 2:
        return None
    tasks = list(dict.fromkeys(fs["task"]))
    cols = min(4, len(tasks))
    rows = (len(tasks) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.9 * rows), squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        part = fs[fs["task"] == task]
        for label, line in part.groupby(["model", "weights_id", "pretrain"], sort=False):
            model, weights_id, pretrain = label
            label = (model, pretrain if pretrain == "random-init" else weights_id)
            line = line.sort_values("shots")
            ax.errorbar(line["shots"], line["mean"], yerr=line["std"], marker="o", capsize=3, label=" ".join(map(str, label)))
        ax.set_xscale("log")
        ax.set_xticks(sorted(part["shots"].unique()))
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_title(task, fontsize=10)
        ax.set_xlabel("examples per class")
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(3, len(labels)), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06 if labels else 0, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def loss_curve_plot(records: list[dict[str, Any]], path: Path) -> Path | None:
    """Training loss against step for every record that holds a loss curve (fine-tuning)."""
    runs = [r for r in records if (r.get("details") or {}).get("loss_curve")]
    if not runs:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for r in runs[:20]:
        curve = r["details"]["loss_curve"]
        ax.plot([p["step"] for p in curve], [p["loss"] for p in curve], label=f"{r['task']} {r['model']} s{r['seed']}")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
