"""The loss/accuracy curves `curves.png` of a run's per-epoch history (`cvfer.runs.write_history`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from cvfer.io import atomic_savefig
from cvfer.runs import CURVES_PNG

# Columns that are accuracies (drawn on the right-hand panel, as is any column naming "acc"); every other
# numeric column is a logged training term (losses, MI estimate, schedule weights such as MIC's beta).
ACCURACY_COLUMNS = ("train_acc", "val_war", "val_uar", "test_war", "test_uar")
NOT_PLOTTED = ("epoch", "step", "skipped_steps")


def plot_curves(out_dir: str | Path, rows: list[dict[str, Any]]) -> None:
    """`curves.png`: every logged term (left) and accuracies (right, any column naming "acc") per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in rows]
    columns = list(dict.fromkeys(key for row in rows for key in row))
    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(11, 4))
    for column in columns:
        if column in NOT_PLOTTED or column.startswith("lr_"):
            continue
        values = [_as_float(row.get(column)) for row in rows]
        if all(math.isnan(value) for value in values):
            continue
        axes = accuracy_axes if column in ACCURACY_COLUMNS or "acc" in column else loss_axes
        style = "--" if column.startswith("test_") else "-"
        axes.plot(epochs, values, style, marker="o", markersize=3, label=column)
    loss_axes.set(title="logged terms (train, epoch means)", xlabel="epoch")
    accuracy_axes.set(title="accuracy (test: monitoring only)", xlabel="epoch", ylim=(0, 1.02))
    for axes in (loss_axes, accuracy_axes):
        if axes.lines:
            axes.legend(fontsize=8)
        axes.grid(alpha=0.3)
    figure.subplots_adjust(left=0.06, right=0.98, bottom=0.12, top=0.92, wspace=0.15)
    atomic_savefig(Path(out_dir) / CURVES_PNG, figure, dpi=100)
    plt.close(figure)


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
