"""What a run writes (rank 0 only): config.json at the start; history, curves and checkpoint.pt after every
epoch; model.pt, predictions.csv, features.npz and result.json at the end (names and formats: `cvfer.runs`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cvfer.data.dataset import ClipDataset
from cvfer.data.manifest import Manifest
from cvfer.io import atomic_write_json, atomic_write_text, remove_stale_temp_files
from cvfer.models.base import FERModel
from cvfer.runs import (
    CHECKPOINT_PT,
    CONFIG_JSON,
    FEATURES_NPZ,
    PREDICTIONS_CSV,
    RESULT_JSON,
    SplitFeatures,
    save_inference_model,
    write_features,
    write_history,
    write_predictions,
)
from cvfer.train.checkpoint import save_checkpoint
from cvfer.train.config import TrainConfig
from cvfer.train.data import FoldData
from cvfer.train.evaluate import Evaluator
from cvfer.train.history import plot_curves
from cvfer.train.optimizers import GroupOptimizers

CURVES_EVERY = 10  # epochs between redraws of curves.png (drawing costs about a second)


@dataclass
class TrainResult:
    """What a finished run left in `out_dir`, with its final test metrics."""

    out_dir: Path
    model_path: Path
    epochs: int
    history: list[dict[str, Any]]
    test_war: float
    test_uar: float
    skipped_clips: list[tuple[str, str]] = field(default_factory=list)


class RunWriter:
    """Writes into `out_dir` the files of the run of `config` on fold `fold` of the prepared folder `data_dir`."""

    def __init__(self, out_dir: Path, config: TrainConfig, data_dir: Path, fold: int):
        self.out_dir = out_dir
        self.config = config
        self.data_dir = data_dir
        self.fold = fold

    def start(self) -> None:
        """Create the folder, remove temp files a killed run left in it and record the configuration (`config.json`)."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(self.out_dir)
        atomic_write_text(self.out_dir / CONFIG_JSON, self.config.to_json() + "\n")

    def end_epoch(
        self, epoch: int, step: int, model: FERModel, optimizers: GroupOptimizers, history: list[dict[str, Any]]
    ) -> None:
        """After 0-based `epoch`: the history so far, the curves (every `CURVES_EVERY` epochs and at the end) and
        the checkpoint a resumed run continues from."""
        write_history(self.out_dir, history)
        if (epoch + 1) % CURVES_EVERY == 0 or epoch + 1 == self.config.epochs:
            plot_curves(self.out_dir, history)
        save_checkpoint(
            self.out_dir / CHECKPOINT_PT,
            epoch=epoch + 1,
            step=step,
            config=self.config.to_dict(),
            model=model,
            optimizers=optimizers.optimizers,
            schedulers=optimizers.schedulers,
            history=history,
        )

    def finish(
        self,
        result: TrainResult,
        model: FERModel,
        model_cfg: dict[str, Any],
        manifest: Manifest,
        data: FoldData,
        evaluator: Evaluator,
    ) -> None:
        """The test-time `model.pt`, the test clips' `predictions.csv`, z_E of the training and test clips
        (`features.npz`) and `result.json` (`result`'s summary)."""
        config = self.config
        save_inference_model(
            result.model_path,
            name=config.model,
            cfg=model_cfg,
            classes=manifest.classes,
            module=model.inference_module(),
            data={
                "image_size": model_cfg["image_size"],
                "num_frames": config.num_frames,
                "inputs": list(model.test_inputs),
                "residual": "rgb",
                "accumulate": config.accumulate,
                "face_crop": _face_cropped(manifest),
            },
        )
        test = evaluator.predict(data.test)
        write_predictions(
            self.out_dir / PREDICTIONS_CSV, data.test.paths, data.test.labels.tolist(), test.probabilities, manifest.classes
        )
        write_features(
            self.out_dir / FEATURES_NPZ,
            manifest.classes,
            train=_split_features(data.train, evaluator.predict(data.train).features),
            test=_split_features(data.test, test.features),
        )
        summary = {"epochs": result.epochs, "test_war": result.test_war, "test_uar": result.test_uar}
        summary |= {"skipped_clips": result.skipped_clips, "fold": self.fold, "data": str(self.data_dir)}
        atomic_write_json(self.out_dir / RESULT_JSON, summary)


def _split_features(dataset: ClipDataset, features: np.ndarray) -> SplitFeatures:
    """`features.npz`'s rows of `dataset`: z_E `features` with the clips' labels, subjects, paths and z_I."""
    return SplitFeatures(
        features=features,
        labels=dataset.labels.numpy(),
        subjects=[clip.subject for clip in dataset.records],
        paths=dataset.paths,
        identity=None if dataset.identity is None else dataset.identity.numpy(),
    )


def _face_cropped(manifest: Manifest) -> bool:
    """Whether the clips are face crops (`cvfer prepare` writes `"crop": "face"`), so predict crops too."""
    return bool(manifest.meta.get("face_crop", manifest.meta.get("crop") == "face"))
