"""Adapters from public FER datasets' official layouts to cvfer's prepared format (one adapter a file)."""

from cvfer.data.datasets.prepare import SCANNERS, PrepareReport, prepare_dataset

__all__ = ["SCANNERS", "PrepareReport", "prepare_dataset"]
