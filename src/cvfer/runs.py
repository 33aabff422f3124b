"""The run folder: the names, paths and formats of everything `cvfer train`, `cv`, `compare` and `report` write.

A training run (`cvfer train --out`, or one `fold_NN/` of a cross-validation run) holds `checkpoint.pt`,
`config.json`, `history.csv`/`.jsonl`, `curves.png` and, once finished, `model.pt`, `predictions.csv`,
`features.npz` and `result.json` (plus `fold_metrics.json` once `cvfer cv` has scored it). A cross-validation
run holds `cv.json`, `metrics.json`, `confusion.png` and the `cvfer report` page, a sweep one run per
`OPTION=VALUE/`, a comparison `compare.md`/`.json` and one run per `MODEL/` (with `error.txt` if it failed).
Formats written in one module and read in another are read and written here; old run folders stay readable.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cvfer.errors import CheckpointError, ConfigError, CvferError
from cvfer.io import atomic_open, atomic_torch_save, atomic_write_json, atomic_write_text, load_torch_file

if TYPE_CHECKING:
    import torch

# A training run
CHECKPOINT_PT = "checkpoint.pt"
MODEL_PT = "model.pt"
CONFIG_JSON = "config.json"
HISTORY_CSV = "history.csv"
HISTORY_JSONL = "history.jsonl"
CURVES_PNG = "curves.png"
PREDICTIONS_CSV = "predictions.csv"
FEATURES_NPZ = "features.npz"
RESULT_JSON = "result.json"
FOLD_METRICS_JSON = "fold_metrics.json"
# A cross-validation run, its report and a sweep of them
CV_JSON = "cv.json"
METRICS_JSON = "metrics.json"
CONFUSION_PNG = "confusion.png"
REPORT_MD = "report.md"
REPORT_CONFUSION_PNG = "report_confusion.png"
PER_CLASS_ACCURACY_PNG = "per_class_accuracy.png"
TRAINING_CURVES_PNG = "training_curves.png"
SWEEP_MD = "sweep.md"
SWEEP_JSON = "sweep.json"
# A comparison
COMPARE_MD = "compare.md"
COMPARE_JSON = "compare.json"
ERROR_TXT = "error.txt"

MODEL_KEYS = ("name", "cfg", "classes", "state_dict", "data")
_FOLD_PREFIX = "fold_"


def fold_dir(run_dir: str | Path, fold: int) -> Path:
    """`RUN/fold_NN`: where fold `fold` of a cross-validation run trains."""
    return Path(run_dir) / f"{_FOLD_PREFIX}{fold:02d}"


def fold_dirs(run_dir: str | Path) -> list[Path]:
    """The fold folders of a cross-validation run, in fold order."""
    return sorted(path for path in Path(run_dir).glob(f"{_FOLD_PREFIX}*") if path.is_dir())


def fold_is_trained(train_dir: str | Path) -> bool:
    """Whether the training run in `train_dir` finished: its model, predictions and features are written."""
    return all((Path(train_dir) / name).is_file() for name in (MODEL_PT, PREDICTIONS_CSV, FEATURES_NPZ))


def sweep_run_dir(sweep_dir: str | Path, option: str, value: str) -> Path:
    """`SWEEP/OPTION=VALUE`: the cross-validation run of one value of a sweep."""
    return Path(sweep_dir) / f"{option}={value}"


def model_run_dir(compare_dir: str | Path, model: str) -> Path:
    """`COMPARE/MODEL`: the cross-validation run of one model of a comparison."""
    return Path(compare_dir) / model


def embedding_png(method: str) -> str:
    """The report's figure of the 2-D embedding of z_E by `method` ("pca" or "tsne")."""
    return f"embedding_{method}.png"


# ----------------------------------------------------------------- model.pt
def save_inference_model(
    path: str | Path,
    *,
    name: str,
    cfg: dict[str, Any],
    classes: Sequence[str],
    module: torch.nn.Module,
    data: dict[str, Any],
) -> None:
    """Write `model.pt`: what `cvfer predict` needs to rebuild the test-time model and its input."""
    state_dict = {key: value.detach().cpu() for key, value in module.state_dict().items()}
    atomic_torch_save(path, {"name": name, "cfg": cfg, "classes": list(classes), "state_dict": state_dict, "data": data})


def load_inference_model(path: str | Path) -> dict[str, Any]:
    """The dict of a `model.pt` (keys `MODEL_KEYS`); `CheckpointError` if missing, unreadable or not one."""
    path = Path(path)
    fix = f"give the {MODEL_PT} of a training run; `cvfer train --data DIR --model mic --fold 0 --out RUN` writes RUN/{MODEL_PT}"
    corrupt_fix = (
        f"delete it and run the same `cvfer train ... --resume` on {path.parent}: it rewrites {MODEL_PT} from the "
        f"{CHECKPOINT_PT} beside it"
    )
    checkpoint = load_torch_file(
        path, "checkpoint", missing_fix=fix, unreadable_fix=fix, corrupt_fix=corrupt_fix, expect_checksum=True
    )
    missing = [key for key in MODEL_KEYS if not isinstance(checkpoint, dict) or key not in checkpoint]
    if missing:
        raise CheckpointError(
            f"not an inference checkpoint (missing {missing})", path, f"give {MODEL_PT}, not {CHECKPOINT_PT}"
        )
    return checkpoint


# ----------------------------------------------------------------- history.csv / history.jsonl
def write_history(out_dir: str | Path, rows: list[dict[str, Any]]) -> None:
    """Rewrite `history.csv` and `history.jsonl` with all `rows` (one per epoch), atomically."""
    out_dir = Path(out_dir)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n", restval="")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out_dir / HISTORY_CSV, buffer.getvalue())
    atomic_write_text(out_dir / HISTORY_JSONL, "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows))


def read_history(path: str | Path) -> dict[str, np.ndarray]:
    """Numeric columns of a `history.csv` (non-numeric cells become NaN)."""
    with Path(path).open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    columns: dict[str, np.ndarray] = {}
    for name in rows[0] if rows else []:
        values = []
        for row in rows:
            try:
                values.append(float(row[name]))
            except (TypeError, ValueError):
                values.append(np.nan)
        if not all(np.isnan(values)):
            columns[name] = np.asarray(values)
    return columns


# ----------------------------------------------------------------- predictions.csv
def write_predictions(
    path: str | Path,
    clip_paths: Sequence[str],
    labels: Sequence[int],
    probabilities: np.ndarray,
    classes: Sequence[str],
) -> None:
    """Write `predictions.csv`: each test clip's path, true and predicted class, and every class probability."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "label", "pred", *(f"p_{name}" for name in classes)])
    for clip_path, label, row in zip(clip_paths, labels, probabilities, strict=True):
        writer.writerow([clip_path, classes[label], classes[int(row.argmax())], *(f"{value:.6f}" for value in row)])
    atomic_write_text(path, buffer.getvalue())


def read_predictions(path: str | Path, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(labels, predictions) as class indices from a fold's `predictions.csv` (names or indices)."""
    path = Path(path)

    def index_of(value: str, line: int) -> int:
        if value in classes:
            return classes.index(value)
        try:
            index = int(value)
        except ValueError:
            raise CvferError(f"line {line}: unknown class {value!r}", path) from None
        if not 0 <= index < len(classes):
            raise CvferError(f"line {line}: class index {index} out of range", path)
        return index

    labels, predictions = [], []
    with path.open(newline="", encoding="utf-8") as handle:
        for line, row in enumerate(csv.DictReader(handle), start=2):
            labels.append(index_of(row["label"], line))
            predictions.append(index_of(row["pred"], line))
    if not labels:
        raise CvferError("has no predictions", path, "re-run the fold")
    return np.asarray(labels), np.asarray(predictions)


# ----------------------------------------------------------------- features.npz
@dataclass
class SplitFeatures:
    """One split (train or test clips) as training writes it to `features.npz`."""

    features: np.ndarray  # z_E, (N, D)
    labels: np.ndarray  # (N,) int class index
    subjects: Sequence[str]
    paths: Sequence[str]
    identity: np.ndarray | None = None  # z_I, (N, D_I), when the run loaded it


@dataclass
class FoldFeatures:
    """What `features.npz` holds: z_E (and z_I when the model uses it) of a fold's train and test clips."""

    expression: np.ndarray  # z_E, (N, D)
    identity: np.ndarray | None  # z_I, (N, D_I)
    labels: np.ndarray  # (N,) int class index
    subjects: np.ndarray  # (N,) subject id as str
    is_test: np.ndarray  # (N,) bool
    classes: list[str] | None = None  # names of the label indices (the training dataset's classes)


def write_features(path: str | Path, classes: Sequence[str], train: SplitFeatures, test: SplitFeatures) -> None:
    """Write `features.npz`: `classes` and `{train,test}_{features,labels,subjects,paths}` (+ `_identity`)."""
    arrays: dict[str, np.ndarray] = {"classes": np.array(classes)}
    for name, split in (("train", train), ("test", test)):
        arrays[f"{name}_features"] = split.features.astype(np.float32)
        arrays[f"{name}_labels"] = split.labels
        arrays[f"{name}_subjects"] = np.array(split.subjects)
        arrays[f"{name}_paths"] = np.array(split.paths)
        if split.identity is not None:
            arrays[f"{name}_identity"] = split.identity
    with atomic_open(path, "wb") as handle:
        np.savez(handle, **arrays)


def read_features(path: str | Path) -> FoldFeatures:
    """Load a fold's `features.npz` (keys `{train,test}_{features,labels,subjects}`, optional `_identity`)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            parts = {key: archive[key] for key in archive.files}
    except (OSError, ValueError) as error:
        raise CvferError(f"cannot read features ({error})", path, "re-run the fold to rewrite it") from None
    needed = [f"{split}_{kind}" for split in ("train", "test") for kind in ("features", "labels", "subjects")]
    missing = [key for key in needed if key not in parts]
    if missing:
        raise CvferError(f"missing arrays {missing}", path, "re-run the fold with this version of cvfer")
    has_identity = "train_identity" in parts and "test_identity" in parts
    return FoldFeatures(
        expression=np.concatenate([parts["train_features"], parts["test_features"]]).astype(np.float32),
        identity=np.concatenate([parts["train_identity"], parts["test_identity"]]).astype(np.float32)
        if has_identity
        else None,
        labels=np.concatenate([parts["train_labels"], parts["test_labels"]]).astype(np.int64),
        subjects=np.concatenate([parts["train_subjects"], parts["test_subjects"]]).astype(str),
        is_test=np.concatenate([np.zeros(len(parts["train_labels"]), bool), np.ones(len(parts["test_labels"]), bool)]),
        classes=[str(name) for name in parts["classes"]] if "classes" in parts else None,
    )


# ----------------------------------------------------------------- cv.json and metrics.json
def write_run_record(path: str | Path, record: dict[str, Any]) -> None:
    """Write `cv.json`: a cross-validation run's data, fold count, seed and `train_config`."""
    atomic_write_json(path, record)


def read_run_record(path: str | Path) -> dict[str, Any] | None:
    """A run's `cv.json`, None if there is none; `ConfigError` if it cannot be read."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        record = None
    if not isinstance(record, dict):
        raise ConfigError("is unreadable", path, "delete the run folder to start it again")
    return record


def write_metrics_document(path: str | Path, document: dict[str, Any]) -> None:
    """Write `metrics.json` (`cvfer.eval.protocol.CVResult.as_dict`)."""
    atomic_write_json(path, document)


def read_metrics_document(path: str | Path) -> dict[str, Any]:
    """A finished run's `metrics.json`, checked to name its classes and folds; `CvferError` otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CvferError(
            f"no {path.name}; not a finished cross-validation run", path.parent, "run `cvfer cv ... --out RUN` first"
        )
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        document["classes"], document["folds"] = list(document["classes"]), list(document["folds"])
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise CvferError(f"malformed ({error})", path, "re-run `cvfer cv` to rewrite it") from None
    return document
