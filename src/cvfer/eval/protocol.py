"""Subject-independent k-fold cross-validation, cross-dataset testing and hyper-parameter sweeps.

`run_cv` trains every fold with `cvfer.train.train` into `RUN/fold_XX/` (a finished fold is skipped, a
partial one resumes from its checkpoint), scores it, probes its features for identity, and writes
`RUN/metrics.json` (per fold and mean ± std) and `RUN/confusion.png` (summed over folds).
With `test_data`, each fold's model is tested on the other dataset's fold over the shared classes
(MIC Tables 5–8). `run_sweep` repeats `run_cv` for each value of one training option (Tables 10–11).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from cvfer.errors import ConfigError, DatasetError
from cvfer.eval.metrics import classification_summary, mean_std
from cvfer.eval.probes import (
    ProbeResult,
    VerificationResult,
    identity_probe,
    identity_verification,
    linear_probe,
    mutual_information_estimate,
)
from cvfer.eval.report import plot_confusion
from cvfer.io import atomic_write_json, atomic_write_text, check_output_folder
from cvfer.runs import (
    CHECKPOINT_PT,
    CONFIG_JSON,
    CONFUSION_PNG,
    CV_JSON,
    FEATURES_NPZ,
    FOLD_METRICS_JSON,
    METRICS_JSON,
    MODEL_PT,
    PREDICTIONS_CSV,
    SWEEP_JSON,
    SWEEP_MD,
    FoldFeatures,
    fold_dir,
    fold_is_trained,
    read_features,
    read_predictions,
    read_run_record,
    sweep_run_dir,
    write_metrics_document,
    write_run_record,
)
from cvfer.train.config import parse_value, resumable_options, split_assignment


@dataclass
class FoldResult:
    """Scores of one fold."""

    fold: int
    war: float
    uar: float
    macro_f1: float
    per_class_recall: list[float | None]
    confusion: list[list[int]]
    num_samples: int
    identity_probe: ProbeResult | None = None
    expression_from_identity: ProbeResult | None = None
    identity_verification: VerificationResult | None = None  # z_E of the test clips (unseen subjects)
    identity_verification_zi: VerificationResult | None = None  # the same on z_I: the ceiling
    mutual_information: float | None = None
    mutual_information_null: float | None = None  # the same estimator on pairs shuffled to independence

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FoldResult:
        """Inverse of `as_dict`; results missing from an older file are None."""
        results: dict[str, ProbeResult | VerificationResult | None] = {
            name: None if data.get(name) is None else ProbeResult(**data[name])
            for name in ("identity_probe", "expression_from_identity")
        }
        results |= {
            name: None if data.get(name) is None else VerificationResult(**data[name])
            for name in ("identity_verification", "identity_verification_zi")
        }
        plain = {key: value for key, value in data.items() if key not in results}
        return cls(**plain, **results)


@dataclass
class CVResult:
    """All folds of a run and their summary, as written to `metrics.json`."""

    model: str
    train_data: str
    test_data: str
    classes: list[str]
    folds: list[FoldResult] = field(default_factory=list)

    def fold_scores(self) -> dict[str, list[float]]:
        """Every scalar score, one value per fold (NaN where a fold has none)."""
        return {
            "war": [fold.war for fold in self.folds],
            "uar": [fold.uar for fold in self.folds],
            "macro_f1": [fold.macro_f1 for fold in self.folds],
            "identity_probe_accuracy": [_probe_value(fold.identity_probe, "accuracy") for fold in self.folds],
            "identity_probe_chance": [_probe_value(fold.identity_probe, "chance") for fold in self.folds],
            "identity_verification_auc": [_probe_value(fold.identity_verification, "auc") for fold in self.folds],
            "identity_verification_auc_zi": [
                _probe_value(fold.identity_verification_zi, "auc") for fold in self.folds
            ],
            "expression_from_identity_accuracy": [
                _probe_value(fold.expression_from_identity, "accuracy") for fold in self.folds
            ],
            "expression_from_identity_chance": [
                _probe_value(fold.expression_from_identity, "chance") for fold in self.folds
            ],
            "mutual_information": [
                math.nan if fold.mutual_information is None else fold.mutual_information for fold in self.folds
            ],
            "mutual_information_null": [
                math.nan if fold.mutual_information_null is None else fold.mutual_information_null for fold in self.folds
            ],
        }

    def summary(self) -> dict[str, dict[str, float]]:
        """Mean ± std over folds of every scalar score."""
        summary = {}
        for name, values in self.fold_scores().items():
            mean, std = mean_std(values)
            summary[name] = {"mean": mean, "std": std, "folds": int(np.sum(~np.isnan(values)))}
        return summary

    def summed_confusion(self) -> np.ndarray:
        """Confusion matrix summed over folds."""
        return np.sum([np.asarray(fold.confusion) for fold in self.folds], axis=0)

    def as_dict(self) -> dict[str, Any]:
        """The `metrics.json` document."""
        confusion = self.summed_confusion()
        recall = _recall_from_confusion(confusion)
        return {
            "model": self.model,
            "train_data": self.train_data,
            "test_data": self.test_data,
            "classes": self.classes,
            "folds": [fold.as_dict() for fold in self.folds],
            "summary": self.summary(),
            "confusion": confusion.tolist(),
            "per_class_recall": recall,
        }


def _probe_value(probe: ProbeResult | VerificationResult | None, name: str) -> float:
    return math.nan if probe is None else float(getattr(probe, name))


def _recall_from_confusion(confusion: np.ndarray) -> list[float | None]:
    support = confusion.sum(axis=1)
    return [None if count == 0 else float(confusion[index, index] / count) for index, count in enumerate(support)]


def probe_fold(features: FoldFeatures, seed: int = 0, mine_steps: int = 300) -> dict[str, Any]:
    """Identity probe on z_E, identity verification on the test clips' z_E (and z_I, the ceiling; pairs of
    different expressions only), expression
    probe on z_I (train → test clips) and MI(z_E; z_I).

    The probe is None where too few clips per subject make it meaningless, verification where the test clips
    hold fewer than two subjects or no subject with two clips.
    The MI estimate comes with its null: the same estimator on the pairs with z_I shuffled across clips,
    which makes them independent; the null shows how far from 0 the estimator strays on this many pairs.
    """
    probes: dict[str, Any] = {
        "identity_probe": None,
        "expression_from_identity": None,
        "identity_verification": None,
        "identity_verification_zi": None,
        "mutual_information": None,
        "mutual_information_null": None,
    }
    try:
        probes["identity_probe"] = identity_probe(features.expression, features.subjects, seed=seed)
    except ValueError:
        probes["identity_probe"] = None  # too few clips per subject for a linear probe
    test_subjects, test_labels = features.subjects[features.is_test], features.labels[features.is_test]
    probes["identity_verification"] = _verification_or_none(
        features.expression[features.is_test], test_subjects, test_labels, seed
    )
    if features.identity is not None:
        probes["identity_verification_zi"] = _verification_or_none(
            features.identity[features.is_test], test_subjects, test_labels, seed
        )
        train, test = ~features.is_test, features.is_test
        if train.any() and test.any():
            probes["expression_from_identity"] = linear_probe(
                features.identity[train], features.labels[train], features.identity[test], features.labels[test], seed=seed
            )
        probes["mutual_information"] = mutual_information_estimate(
            features.expression, features.identity, steps=mine_steps, seed=seed
        )
        shuffled = features.identity[np.random.default_rng(seed).permutation(len(features.identity))]
        probes["mutual_information_null"] = mutual_information_estimate(
            features.expression, shuffled, steps=mine_steps, seed=seed
        )
    return probes


def _verification_or_none(
    features: np.ndarray, subjects: np.ndarray, labels: np.ndarray, seed: int
) -> VerificationResult | None:
    try:
        return identity_verification(features, subjects, labels=labels, seed=seed)
    except ValueError:
        return None  # fewer than two subjects, or none with two clips of different expressions


def score_fold(fold: int, labels: np.ndarray, predictions: np.ndarray, classes: list[str], probes: dict[str, Any]) -> FoldResult:
    """A `FoldResult` from a fold's predictions and probe results."""
    summary = classification_summary(labels, predictions, len(classes))
    return FoldResult(fold=fold, **summary, **probes)


def shared_classes(train_classes: list[str], test_classes: list[str]) -> list[str]:
    """Classes both datasets label, in the training dataset's order."""
    shared = [name for name in train_classes if name in test_classes]
    if not shared:
        raise DatasetError(f"no class in common between {train_classes} and {test_classes}")
    return shared


def _cross_dataset_predictions(
    train_dir: Path, test_data: Path, fold: int, classes: list[str], batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Test a fold's model on the other dataset's test clips of the same fold, over `classes`."""
    from cvfer.data.manifest import read_manifest
    from cvfer.data.splits import read_splits
    from cvfer.eval.predict import load_model

    predictor = load_model(train_dir / MODEL_PT)
    manifest = read_manifest(test_data)
    splits = read_splits(test_data)
    if fold >= len(splits.folds):
        raise DatasetError(f"has {len(splits.folds)} folds, fold {fold} asked for", test_data / "splits.json")
    wanted = set(splits.folds[fold].test)
    clips = [clip for clip in manifest.clips if clip.path in wanted and clip.label in classes]
    if not clips:
        raise DatasetError(f"fold {fold} has no test clip of the shared classes {classes}", test_data)
    kept, probabilities = predictor.predict_clips(manifest, [clip.path for clip in clips], batch_size=batch_size)
    shared_columns = [predictor.classes.index(name) for name in classes]
    predictions = np.argmax(probabilities[:, shared_columns], axis=1)
    label_of = {clip.path: clip.label for clip in clips}
    labels = np.asarray([classes.index(label_of[path]) for path in kept])
    return labels, predictions


def _check_same_run(record_path: Path, record: dict[str, Any], config: Any) -> None:
    """Refuse to mix a run folder's finished folds with different data or training options."""
    previous = read_run_record(record_path)
    if previous is None:
        return
    different = [key for key in ("train_data", "test_data", "seed") if previous.get(key) != record[key]]
    changed = config.changed_from(previous.get("train_config", {}), ignore=resumable_options(from_checkpoint=False))
    different += [f"train_config.{key}" for key in changed]
    if different:
        raise ConfigError(
            f"holds a run with other settings ({', '.join(different)})",
            record_path.parent,
            "choose a new --out, or repeat the original options to resume",
        )


def _check_fold_config(train_dir: Path, config: Any) -> None:
    """Refuse to reuse a fold folder trained with other options (e.g. by `cvfer train` into a cv folder)."""
    config_path = train_dir / CONFIG_JSON
    if not fold_is_trained(train_dir) or not config_path.is_file():
        return
    try:
        saved = json.loads(config_path.read_text(encoding="utf-8"))
        changed = config.changed_from(saved, ignore=resumable_options(from_checkpoint=False))
    except (OSError, json.JSONDecodeError, AttributeError, TypeError):
        raise ConfigError("is unreadable", config_path, "delete the fold folder to train it again") from None
    if changed:
        raise ConfigError(
            f"was trained with other settings ({', '.join(changed)})",
            train_dir,
            "delete the fold folder, choose a new --out, or repeat the original options",
        )


def checked_fold_count(data_dir: str | Path, num_folds: int | None) -> int:
    """`num_folds`, or every fold of the dataset's splits.json when None; a `ConfigError` if out of range."""
    from cvfer.data.splits import read_splits

    available = len(read_splits(data_dir).folds)
    num_folds = available if num_folds is None else num_folds
    if not 1 <= num_folds <= available:
        raise ConfigError(
            f"{num_folds} folds asked for, splits.json has {available}",
            Path(data_dir) / "splits.json",
            f"use --folds 1..{available} or re-split the dataset",
        )
    return num_folds


def run_cv(
    data_dir: str | Path,
    config: Any,
    out_dir: str | Path,
    *,
    num_folds: int | None = None,
    test_data: str | Path | None = None,
    seed: int = 0,
    mine_steps: int = 300,
    batch_size: int = 16,
) -> CVResult:
    """Train and test folds 0..num_folds-1 (all by default) of `data_dir` with `config` (a `TrainConfig`)."""
    from cvfer.data.manifest import read_manifest
    from cvfer.train import train

    data_dir, out_dir = Path(data_dir), check_output_folder(out_dir, "--out")
    config = config.for_data(data_dir)
    manifest = read_manifest(data_dir)
    num_folds = checked_fold_count(data_dir, num_folds)
    classes = list(manifest.classes)
    if test_data is not None:
        classes = shared_classes(classes, read_manifest(test_data).classes)
    result = CVResult(
        model=str(getattr(config, "model", "?")),
        train_data=str(data_dir),
        test_data=str(test_data if test_data is not None else data_dir),
        classes=classes,
    )
    run_record = {
        "train_data": str(data_dir),
        "test_data": None if test_data is None else str(test_data),
        "folds": num_folds,
        "seed": seed,
        "train_config": config.to_dict(),
    }
    _check_same_run(out_dir / CV_JSON, run_record, config)
    for fold in range(num_folds):
        _check_fold_config(fold_dir(out_dir, fold), config)
    write_run_record(out_dir / CV_JSON, run_record)
    for fold in tqdm(range(num_folds), desc="folds", unit="fold"):
        train_dir = fold_dir(out_dir, fold)
        metrics_path = train_dir / FOLD_METRICS_JSON
        if metrics_path.is_file() and fold_is_trained(train_dir):
            result.folds.append(FoldResult.from_dict(json.loads(metrics_path.read_text(encoding="utf-8"))))
            continue
        if not fold_is_trained(train_dir):
            train(config, data_dir, fold, train_dir, resume=(train_dir / CHECKPOINT_PT).is_file())
        if test_data is None:
            labels, predictions = read_predictions(train_dir / PREDICTIONS_CSV, classes)
        else:
            labels, predictions = _cross_dataset_predictions(train_dir, Path(test_data), fold, classes, batch_size)
        probes = probe_fold(read_features(train_dir / FEATURES_NPZ), seed=seed, mine_steps=mine_steps)
        fold_result = score_fold(fold, labels, predictions, classes, probes)
        atomic_write_json(metrics_path, fold_result.as_dict())
        result.folds.append(fold_result)
    write_metrics(result, out_dir)
    return result


def write_metrics(result: CVResult, out_dir: str | Path) -> None:
    """Write `metrics.json` and the summed `confusion.png` of a run."""
    out_dir = Path(out_dir)
    write_metrics_document(out_dir / METRICS_JSON, result.as_dict())
    plot_confusion(result.summed_confusion(), result.classes, out_dir / CONFUSION_PNG, f"{result.model}: all folds")


_SWEEP_FIX = "write NAME=V1,V2,... e.g. alpha=0,0.05,0.1"


def parse_sweep(text: str) -> tuple[str, list[str]]:
    """`"alpha=0,0.05,0.1"` → ("alpha", ["0", "0.05", "0.1"])."""
    name, values = split_assignment(text, "bad sweep", _SWEEP_FIX)
    items = [value.strip() for value in values.split(",") if value.strip()]
    if not items:
        raise ConfigError(f"bad sweep {text!r}: no values", fix=_SWEEP_FIX)
    return name, items


def config_with(config: Any, name: str, value: str) -> Any:
    """A copy of a `TrainConfig` with option `name` set to `value` (`parse_value`): a field, a model option
    (`alpha` → `model_cfg["alpha"]`, checked against the model's builder as in the presets) or `model.KEY`."""
    if name.startswith("model."):
        return config.with_setting(f"{name}={value}")
    return config.with_flat({name: parse_value(value)})


def run_sweep(
    data_dir: str | Path, config: Any, out_dir: str | Path, sweep: str, **cv_options: Any
) -> list[dict[str, Any]]:
    """`run_cv` once per value of one option into `RUN/NAME=VALUE/`; writes `sweep.md` and `sweep.json`."""
    out_dir = check_output_folder(out_dir, "--out")
    name, values = parse_sweep(sweep)
    rows = []
    for value in values:
        result = run_cv(data_dir, config_with(config, name, value), sweep_run_dir(out_dir, name, value), **cv_options)
        rows.append({"option": name, "value": value, **result.summary()})
    atomic_write_json(out_dir / SWEEP_JSON, rows)
    atomic_write_text(out_dir / SWEEP_MD, sweep_table(rows) + "\n")
    return rows


def sweep_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of a sweep: WAR, UAR, macro-F1, identity probe, identity AUC and MI per value (mean ± std)."""

    def cell(entry: dict[str, float] | None, scale: float = 100.0, digits: int = 2) -> str:
        if entry is None or math.isnan(entry["mean"]):
            return "–"
        return f"{scale * entry['mean']:.{digits}f} ± {scale * entry['std']:.{digits}f}"

    def auc_cell(row: dict[str, Any]) -> str:
        ceiling = cell(row.get("identity_verification_auc_zi"), 1.0)
        return cell(row.get("identity_verification_auc"), 1.0) + ("" if ceiling == "–" else f" (z_I {ceiling})")

    name = rows[0]["option"] if rows else "value"
    lines = [
        f"| {name} | WAR (%) | UAR (%) | macro-F1 (%) | identity probe (%) | identity AUC (z_E) | MI(z_E; z_I) "
        "| MI null |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['value']} | {cell(row['war'])} | {cell(row['uar'])} | {cell(row['macro_f1'])} | "
            f"{cell(row['identity_probe_accuracy'])} | {auc_cell(row)} | {cell(row['mutual_information'], 1.0, 3)} | "
            f"{cell(row['mutual_information_null'], 1.0, 3)} |"
        )
    return "\n".join(lines)

