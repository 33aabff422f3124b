"""`cvfer report RUN`: a Markdown page with the figures of a cross-validation run.

Reads what `cvfer cv` leaves in RUN (`metrics.json`, `cv.json`, `fold_XX/history.csv`,
`fold_XX/features.npz`) and writes `report.md` with its PNGs beside it: metric tables, the summed
confusion matrix, per-class accuracy, training curves, a 2-D embedding of z_E coloured by expression and
by identity, the run's configuration and the software versions.
"""

from __future__ import annotations

import json
import math
import platform
from pathlib import Path
from typing import Any

import numpy as np

from cvfer.io import atomic_savefig, atomic_write_text
from cvfer.runs import (
    CV_JSON,
    FEATURES_NPZ,
    HISTORY_CSV,
    METRICS_JSON,
    PER_CLASS_ACCURACY_PNG,
    REPORT_CONFUSION_PNG,
    REPORT_MD,
    TRAINING_CURVES_PNG,
    embedding_png,
    fold_dirs,
    read_features,
    read_history,
    read_metrics_document,
    read_run_record,
)

# t-SNE needs enough points for its perplexity to mean something; below this only PCA is drawn.
TSNE_MIN_POINTS = 30
TSNE_PERPLEXITY = 30.0


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(matrix: np.ndarray, classes: list[str], path: str | Path, title: str = "Confusion matrix") -> None:
    """Heat map of a confusion matrix (rows: true class, normalised per row; cells show counts)."""
    plt = _pyplot()
    matrix = np.asarray(matrix, dtype=np.float64)
    support = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, support, out=np.zeros_like(matrix), where=support > 0)
    size = 1.6 + 0.7 * len(classes)
    figure, axes = plt.subplots(figsize=(size + 1.2, size))
    image = axes.imshow(normalised, cmap="Blues", vmin=0.0, vmax=1.0)
    axes.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    axes.set_yticks(range(len(classes)), classes)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    for row in range(len(classes)):
        for column in range(len(classes)):
            colour = "white" if normalised[row, column] > 0.6 else "black"
            axes.text(column, row, f"{int(matrix[row, column])}", ha="center", va="center", color=colour, fontsize=8)
    figure.colorbar(image, ax=axes, fraction=0.046, label="fraction of true class")
    figure.tight_layout()
    atomic_savefig(path, figure, dpi=120)
    plt.close(figure)


def plot_per_class_accuracy(recall: list[float | None], classes: list[str], path: str | Path) -> None:
    """Bar chart of per-class recall (classes never seen in testing are left empty)."""
    plt = _pyplot()
    values = [np.nan if value is None else value for value in recall]
    figure, axes = plt.subplots(figsize=(1.5 + 0.7 * len(classes), 3.2))
    axes.bar(range(len(classes)), values, color="tab:blue")
    axes.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    axes.set_ylim(0, 1)
    axes.set_ylabel("recall")
    axes.set_title("Per-class accuracy (all folds)")
    figure.tight_layout()
    atomic_savefig(path, figure, dpi=120)
    plt.close(figure)


def plot_training_curves(histories: dict[str, dict[str, np.ndarray]], path: str | Path) -> None:
    """One panel per logged quantity, one line per fold, against the epoch."""
    plt = _pyplot()
    quantities = sorted({name for history in histories.values() for name in history if name not in ("epoch", "step")})
    columns = min(3, len(quantities))
    rows = math.ceil(len(quantities) / columns)
    figure, axes_grid = plt.subplots(rows, columns, figsize=(4.2 * columns, 2.8 * rows), squeeze=False)
    for axes, quantity in zip(axes_grid.flat, quantities):
        for fold_name, history in histories.items():
            if quantity in history:
                x = history.get("epoch", np.arange(len(history[quantity])))
                axes.plot(x, history[quantity], marker=".", label=fold_name)
        axes.set_title(quantity)
        axes.set_xlabel("epoch")
    for axes in list(axes_grid.flat)[len(quantities) :]:
        axes.axis("off")
    if len(histories) <= 10:
        axes_grid.flat[0].legend(fontsize=7)
    figure.tight_layout()
    atomic_savefig(path, figure, dpi=110)
    plt.close(figure)


def embed_2d(features: np.ndarray, method: str, seed: int = 0) -> np.ndarray:
    """2-D embedding of standardised features by "pca" or "tsne"."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from sklearn.preprocessing import StandardScaler

    from threadpoolctl import threadpool_limits  # installed with scikit-learn

    if method not in ("pca", "tsne"):
        raise ValueError(f"unknown embedding method {method!r}; use 'pca' or 'tsne'")
    standardised = StandardScaler().fit_transform(np.asarray(features, dtype=np.float64))
    # A few hundred points: one thread is fastest, and OpenMP threads on a busy machine are much slower.
    with threadpool_limits(1):
        if method == "pca":
            return PCA(n_components=2, random_state=seed).fit_transform(standardised)
        perplexity = min(TSNE_PERPLEXITY, (len(standardised) - 1) / 3)
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(standardised)


def plot_embedding(
    points: np.ndarray, expressions: list[str], subjects: list[str], path: str | Path, title: str
) -> None:
    """Side-by-side scatter of the same 2-D points coloured by expression and by identity."""
    plt = _pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4.4))
    for axes, names, caption in ((left, expressions, "expression"), (right, subjects, "identity")):
        distinct = sorted(set(names))
        colour_map = plt.get_cmap("tab10" if len(distinct) <= 10 else "tab20" if len(distinct) <= 20 else "hsv")
        for index, name in enumerate(distinct):
            mask = np.asarray(names) == name
            colour = colour_map(index / max(len(distinct) - 1, 1) if len(distinct) > 20 else index)
            axes.scatter(points[mask, 0], points[mask, 1], s=14, color=colour, label=name)
        axes.set_title(f"{title}, coloured by {caption}")
        axes.set_xticks([])
        axes.set_yticks([])
        if len(distinct) <= 12:
            axes.legend(fontsize=7, loc="best")
    figure.tight_layout()
    atomic_savefig(path, figure, dpi=110)
    plt.close(figure)


def software_versions() -> dict[str, str]:
    """Versions of python, torch, av (PyAV), numpy, scikit-learn and cvfer."""
    from importlib.metadata import version

    import sklearn
    import torch

    import cvfer

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "av": version("av"),
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "cvfer": cvfer.__version__,
    }


def _percent(value: float | None) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}"


def _mean_std_cell(entry: dict[str, float] | None, scale: float = 100.0, digits: int = 2) -> str:
    if not entry or entry.get("mean") is None or math.isnan(entry["mean"]):
        return "–"
    return f"{scale * entry['mean']:.{digits}f} ± {scale * entry['std']:.{digits}f}"


def _with_ceiling(auc_cell: str, ceiling_cell: str) -> str:
    """An identity AUC cell, followed by z_I's AUC (the ceiling) where there is one."""
    return auc_cell if ceiling_cell == "–" else f"{auc_cell} (z_I {ceiling_cell})"


def metrics_table(metrics: dict[str, Any]) -> str:
    """Markdown table: one row per fold and a mean ± std row (accuracies in %, AUC as a fraction, MI in nats)."""
    lines = [
        "| fold | clips | WAR | UAR | macro-F1 | identity probe (chance) | identity AUC (z_E) | MI(z_E; z_I) (null) "
        "| expression from z_I (chance) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def nats(value: float | None) -> str:
        return "–" if value is None else f"{value:.3f}"

    def auc(verification: dict[str, Any] | None) -> str:
        return "–" if verification is None else f"{verification['auc']:.2f}"

    for fold in metrics["folds"]:
        probe, from_identity = fold.get("identity_probe"), fold.get("expression_from_identity")
        probe_cell = f"{_percent(probe['accuracy'])} ({_percent(probe['chance'])})" if probe else "–"
        auc_cell = _with_ceiling(auc(fold.get("identity_verification")), auc(fold.get("identity_verification_zi")))
        identity_cell = f"{_percent(from_identity['accuracy'])} ({_percent(from_identity['chance'])})" if from_identity else "–"
        information = fold.get("mutual_information")
        information_cell = "–" if information is None else f"{nats(information)} ({nats(fold.get('mutual_information_null'))})"
        lines.append(
            f"| {fold['fold']} | {fold['num_samples']} | {_percent(fold['war'])} | {_percent(fold['uar'])} | "
            f"{_percent(fold['macro_f1'])} | {probe_cell} | {auc_cell} | {information_cell} | {identity_cell} |"
        )
    summary = metrics["summary"]
    probe_cell = f"{_mean_std_cell(summary.get('identity_probe_accuracy'))} ({_mean_std_cell(summary.get('identity_probe_chance'))})"
    auc_cell = _with_ceiling(
        _mean_std_cell(summary.get("identity_verification_auc"), scale=1.0),
        _mean_std_cell(summary.get("identity_verification_auc_zi"), scale=1.0),
    )
    identity_cell = (
        f"{_mean_std_cell(summary.get('expression_from_identity_accuracy'))} "
        f"({_mean_std_cell(summary.get('expression_from_identity_chance'))})"
    )
    information_cell = (
        f"{_mean_std_cell(summary.get('mutual_information'), scale=1.0, digits=3)} "
        f"({_mean_std_cell(summary.get('mutual_information_null'), scale=1.0, digits=3)})"
    )
    lines.append(
        f"| **mean ± std** | {sum(fold['num_samples'] for fold in metrics['folds'])} | "
        f"{_mean_std_cell(summary['war'])} | {_mean_std_cell(summary['uar'])} | {_mean_std_cell(summary['macro_f1'])} | "
        f"{probe_cell} | {auc_cell} | {information_cell} | {identity_cell} |"
    )
    return "\n".join(lines)


def _embedding_section(run_dir: Path, classes: list[str]) -> list[str]:
    for fold_dir in fold_dirs(run_dir):
        if not (fold_dir / FEATURES_NPZ).is_file():
            continue
        features = read_features(fold_dir / FEATURES_NPZ)
        names = features.classes or classes  # a cross-dataset run's metrics list only the shared classes
        expressions = [names[int(label)] for label in features.labels]
        subjects = [str(subject) for subject in features.subjects]
        lines = [f"## Embedding of z_E ({fold_dir.name}, {len(features.labels)} clips, train and test)", ""]
        methods = ["pca"] + (["tsne"] if len(features.labels) >= TSNE_MIN_POINTS else [])
        for method in methods:
            points = embed_2d(features.expression, method)
            name = embedding_png(method)
            plot_embedding(points, expressions, subjects, run_dir / name, f"z_E, {method.upper()}")
            lines.append(f"![z_E {method}]({name})")
        if len(methods) == 1:
            lines.append(f"(t-SNE skipped: fewer than {TSNE_MIN_POINTS} clips.)")
        return lines + [""]
    return []


def write_report(run_dir: str | Path) -> Path:
    """Write `RUN/report.md` and its figures from a finished (or partly finished) `cvfer cv` run."""
    run_dir = Path(run_dir)
    metrics = read_metrics_document(run_dir / METRICS_JSON)
    classes, folds = metrics["classes"], metrics["folds"]
    config = read_run_record(run_dir / CV_JSON) or {}

    lines = [f"# Report: {run_dir.name}", ""]
    lines += [
        f"Model `{metrics.get('model', '?')}`, trained on `{metrics.get('train_data', '?')}`, "
        f"tested on `{metrics.get('test_data', metrics.get('train_data', '?'))}`; {len(folds)} fold(s); "
        f"classes: {', '.join(classes)}.",
        "",
        "## Metrics (%, MI in nats)",
        "",
        metrics_table(metrics),
        "",
        "WAR = accuracy over clips, UAR = mean per-class recall, identity probe = linear probe on z_E predicting the "
        "subject from held-out clips of known subjects (chance = 1 / subjects tested; – with too few clips per "
        "subject), identity AUC = same- vs different-subject ROC-AUC of the cosine similarity of the test clips' z_E "
        "(0.5: no identity, 1: fully recoverable; z_I's AUC, the ceiling, in brackets), MI = Donsker–Varadhan estimate "
        "by a freshly trained MINE network on held pairs (null: the same with z_I shuffled across clips).",
        "",
    ]
    summed = np.asarray(metrics["confusion"])
    plot_confusion(summed, classes, run_dir / REPORT_CONFUSION_PNG, "Confusion matrix (all folds)")
    plot_per_class_accuracy(metrics["per_class_recall"], classes, run_dir / PER_CLASS_ACCURACY_PNG)
    lines += ["## Confusion matrix and per-class accuracy", "", f"![confusion]({REPORT_CONFUSION_PNG})", ""]
    lines += [f"![per-class accuracy]({PER_CLASS_ACCURACY_PNG})", ""]
    lines += ["| class | " + " | ".join(classes) + " |", "|---|" + "---|" * len(classes)]
    lines += ["| recall | " + " | ".join(_percent(value) for value in metrics["per_class_recall"]) + " |", ""]

    histories = {
        fold_dir.name: read_history(fold_dir / HISTORY_CSV)
        for fold_dir in fold_dirs(run_dir)
        if (fold_dir / HISTORY_CSV).is_file()
    }
    histories = {name: history for name, history in histories.items() if history}
    if histories:
        plot_training_curves(histories, run_dir / TRAINING_CURVES_PNG)
        lines += ["## Training curves", "", f"![training curves]({TRAINING_CURVES_PNG})", ""]

    lines += _embedding_section(run_dir, classes)
    lines += ["## Configuration", "", "```json", json.dumps(config, indent=2, sort_keys=True, default=str), "```", ""]
    lines += ["## Versions", "", "| package | version |", "|---|---|"]
    lines += [f"| {name} | {version} |" for name, version in software_versions().items()]
    report_path = run_dir / REPORT_MD
    atomic_write_text(report_path, "\n".join(lines) + "\n")
    return report_path
