"""Scoring the run's model on a dataset: class probabilities and z_E of every clip, and WAR/UAR from them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from cvfer.data.dataset import ClipDataset
from cvfer.eval.metrics import accuracy, mean_class_accuracy
from cvfer.models.base import FERModel

EVAL_BATCH = 64


@dataclass
class Predictions:
    """One row per clip of a dataset: class probabilities (N, C) and z_E (N, D)."""

    probabilities: np.ndarray
    features: np.ndarray


class Evaluator:
    """Runs `model` in eval mode on the test inputs of a dataset's clips (training mode is restored after)."""

    def __init__(self, model: FERModel, num_classes: int, device: torch.device):
        self.model = model
        self.num_classes = num_classes
        self.device = device

    def predict(self, dataset: ClipDataset) -> Predictions:
        """Class probabilities and z_E of every clip of `dataset`."""
        model = self.model
        was_training = model.training
        model.eval()
        probabilities, features = [], []
        with torch.no_grad():
            for start in range(0, len(dataset), EVAL_BATCH):
                indices = range(start, min(start + EVAL_BATCH, len(dataset)))
                batch = {key: value.to(self.device) for key, value in dataset.batch(indices, model.test_inputs).items()}
                output = model(batch)
                probabilities.append(torch.softmax(output.logits.float(), dim=1).cpu().numpy())
                features.append(output.features.float().reshape(len(indices), -1).cpu().numpy())
        model.train(was_training)
        return Predictions(np.concatenate(probabilities), np.concatenate(features))

    def scores(self, dataset: ClipDataset, prefix: str) -> dict[str, float]:
        """`{prefix}_war` (accuracy) and `{prefix}_uar` (mean per-class recall) of `dataset`."""
        labels = dataset.labels.numpy()
        predictions = self.predict(dataset).probabilities.argmax(1)
        return {
            f"{prefix}_war": accuracy(labels, predictions),
            f"{prefix}_uar": mean_class_accuracy(labels, predictions, self.num_classes),
        }
