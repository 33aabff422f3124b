"""`load_model(model.pt) -> Predictor`: expressions of videos of any format PyAV reads, or image folders.

A file that is not already an MPEG-4 Part 2 clip of the checkpoint's frame size (or any input when the
checkpoint was trained on face crops) is first turned into one: its frames are cropped (to the tracked
face, or the largest centred square) to `image_size` and encoded in the MIC format, in a temporary folder
or a cache folder. The clip is then read by the one-clip loader that fed training (`cvfer.data.clip`), so
the inputs are exactly what the model was trained on.
"""

from __future__ import annotations

import hashlib
import pickletools
import tempfile
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cvfer import codec
from cvfer.data.clip import ClipSpec, load_clip, stack_input
from cvfer.data.manifest import ClipRecord
from cvfer.errors import CheckpointError, CompressedVideoError, CvferError
from cvfer.io import broken_link, check_output_folder
from cvfer.runs import CHECKPOINT_PT, MODEL_PT, load_inference_model

CACHED_CLIP = "clips/clip.mp4"  # where `encode_clip` (prepare_clip with key "clip") writes
TRAINING_CHECKPOINT_KEYS = ("optimizers", "schedulers", "rng", "history")  # in checkpoint.pt, not in model.pt


@dataclass
class Prediction:
    """The expression of one video, with every class probability and where the time went (seconds)."""

    path: Path
    label: str
    probabilities: dict[str, float]
    timing: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return {"path": str(self.path), "label": self.label, "probabilities": self.probabilities, "timing": self.timing}


def _image_files(folder: Path) -> tuple[Path, ...]:
    from cvfer.data.datasets.common import image_files

    return image_files(folder)


def encode_clip(source: Path, work_dir: Path, size: int, face_crop: bool) -> ClipRecord:
    """Crop `source` (video or image folder) to the face or its centred square, resize to `size` and write it
    in the MIC format as `work_dir/clips/<name>.mp4`, exactly as `cvfer prepare` prepares a dataset's clips."""
    from cvfer.data.datasets.common import SourceClip
    from cvfer.data.datasets.prepare import CropSettings, Skipped, prepare_clip

    frames: Path | tuple[Path, ...] = _image_files(source) if source.is_dir() else source
    if source.is_dir() and not frames:
        raise CompressedVideoError("folder holds no images", source, "pass a video or a folder of PNG/JPEG frames")
    clip = SourceClip(key="clip", frames=frames, subject="unknown", label="unknown", apex="last", source=str(source))
    outcome = prepare_clip(clip, work_dir, "predict", CropSettings(size=size, crop_faces=face_crop))
    if isinstance(outcome, Skipped):
        raise CompressedVideoError(outcome.reason, source, "pass a readable video (or image folder) showing a face")
    return outcome


class Predictor:
    """A test-time model with the preprocessing its checkpoint asks for."""

    def __init__(self, module: torch.nn.Module, name: str, classes: Sequence[str], data: dict[str, Any]):
        self.module = module.eval()
        self.name = name
        self.classes = list(classes)
        self.image_size = int(data["image_size"])
        self.spec = ClipSpec(tuple(data["inputs"]), int(data["num_frames"]), bool(data.get("accumulate", False)))
        self.face_crop = bool(data.get("face_crop", False))
        self.data = dict(data)

    @property
    def inputs(self) -> tuple[str, ...]:
        """The batch keys the test-time model reads."""
        return self.spec.inputs

    def _needs_encoding(self, path: Path) -> bool:
        if path.is_dir() or self.face_crop:
            return True
        header = codec.read_header(path)
        return header.codec != "mpeg4" or header.size != (self.image_size, self.image_size)

    def _encoded(self, path: Path, work_dir: Path, cache_dir: Path | None) -> Path:
        """The MIC-format clip made from `path` (in `work_dir`, or in `cache_dir` when given)."""
        if cache_dir is None:
            return work_dir / encode_clip(path, work_dir, self.image_size, self.face_crop).path
        digest = hashlib.sha256(f"{self.image_size}:{self.face_crop}".encode())
        for file in _image_files(path) if path.is_dir() else (path,):
            digest.update(file.read_bytes())
        cached = cache_dir / digest.hexdigest()[:32]
        if not (cached / CACHED_CLIP).is_file():
            encode_clip(path, cached, self.image_size, self.face_crop)
        return cached / CACHED_CLIP

    def _load(self, clip: Path) -> dict[str, torch.Tensor]:
        """The clip's model inputs (no batch dimension), read by the loader training uses (`load_clip`)."""
        arrays = load_clip(clip, self.spec)
        return {key: stack_input(key, [arrays])[0] for key in self.inputs}

    def prepare(self, path: str | Path, cache_dir: str | Path | None = None) -> dict[str, torch.Tensor]:
        """Model inputs of one video or image folder: re-encode / crop if needed, then extract."""
        path = Path(path)
        if not path.exists():
            raise CompressedVideoError(broken_link(path) or "file not found", path, "check the path")
        cache = None if cache_dir is None else Path(cache_dir)
        if not self._needs_encoding(path):
            try:
                return self._load(path)
            except CvferError:
                pass  # e.g. B frames or several I frames: re-encode below
        with tempfile.TemporaryDirectory(prefix="cvfer-predict-") as work_dir:
            return self._load(self._encoded(path, Path(work_dir), cache))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Class probabilities (B, C) of a batch of inputs."""
        with torch.inference_mode():
            output = self.module(batch)
        logits = output.logits if hasattr(output, "logits") else output
        return torch.softmax(logits.float(), dim=1)

    def predict(self, path: str | Path, cache_dir: str | Path | None = None) -> Prediction:
        """Expression of one video (or image folder) with all class probabilities and timings."""
        start = time.perf_counter()
        item = self.prepare(path, cache_dir)
        prepared = time.perf_counter()
        probabilities = self.forward({key: value[None] for key, value in item.items()})[0].numpy()
        done = time.perf_counter()
        return Prediction(
            path=Path(path),
            label=self.classes[int(np.argmax(probabilities))],
            probabilities={name: float(value) for name, value in zip(self.classes, probabilities)},
            timing={"prepare_s": prepared - start, "forward_s": done - prepared, "total_s": done - start},
        )

    def predict_clips(
        self, manifest: Any, clip_paths: Sequence[str], batch_size: int = 16
    ) -> tuple[list[str], np.ndarray]:
        """(clip paths kept, probabilities N×C) for clips of a prepared dataset (unreadable clips are skipped)."""
        from cvfer.data.dataset import ClipDataset

        dataset = ClipDataset(manifest, clip_paths, self.inputs, self.spec.num_frames, accumulate=self.spec.accumulate)
        probabilities = []
        for start in range(0, len(dataset), batch_size):
            indices = list(range(start, min(start + batch_size, len(dataset))))
            probabilities.append(self.forward(dataset.batch(indices, keys=self.inputs)).numpy())
        return dataset.paths, np.concatenate(probabilities)


def _is_training_checkpoint(path: Path) -> bool:
    """Whether `path` is a `checkpoint.pt` (`cvfer.train.checkpoint.save_checkpoint`'s format), judged from
    the strings of its pickle without unpickling it."""
    try:
        with zipfile.ZipFile(path) as archive:
            name = next(name for name in archive.namelist() if name.endswith("/data.pkl"))
            strings = {arg for _, arg, _ in pickletools.genops(archive.read(name)) if isinstance(arg, str)}
    except (OSError, zipfile.BadZipFile, StopIteration, ValueError):
        return False
    return set(TRAINING_CHECKPOINT_KEYS) <= strings


def load_model(path: str | Path) -> Predictor:
    """Load an inference checkpoint (`model.pt` written by training) as a `Predictor`."""
    from cvfer.models import create_model

    if _is_training_checkpoint(Path(path)):
        raise CheckpointError(f"is a training {CHECKPOINT_PT}, not a {MODEL_PT}", path, f"give RUN/{MODEL_PT}")
    checkpoint = load_inference_model(path)
    # TFEN's F is in the state dict; model.pt files written before training resolved `face_weights` to a
    # file kept its name ("synthetic"), which only training may resolve.
    cfg = {key: value for key, value in checkpoint["cfg"].items() if key != "face_weights"}
    model = create_model(checkpoint["name"], **cfg)
    module = model.inference_module()
    try:
        module.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as error:
        first_line = str(error).splitlines()[0]
        raise CheckpointError(f"weights do not fit model {checkpoint['name']!r} ({first_line})", path) from None
    data = {"face_crop": False, **checkpoint["data"], "inputs": model.test_inputs}
    return Predictor(module, checkpoint["name"], checkpoint["classes"], data)


def predictor_for_name(spec: str, clip: str | Path, *, num_classes: int = 7, num_frames: int = 8) -> Predictor:
    """A registered model with random weights, sized for `clip` (for speed measurements).

    `spec` is a model name, optionally with builder options: `cnn-lstm:input_size=112:hidden_size=256`
    (values read as JSON, else kept as text).
    """
    from cvfer.models import create_model
    from cvfer.train.config import TrainConfig, parse_value, split_assignment

    name, *assignments = spec.split(":")
    options: dict[str, Any] = {}
    for assignment in assignments:
        key, raw = split_assignment(assignment, f"model option of {spec!r}:", "e.g. cnn-lstm:input_size=112")
        options[key] = parse_value(raw)
    height, width = codec.read_header(clip).size
    if height != width:
        raise CompressedVideoError(f"is {height}×{width}; benchmark clips must be square", clip, "re-encode it square")
    sizes = {"num_classes": num_classes, "image_size": height, "num_frames": num_frames}
    model = create_model(name, **{**sizes, **options})
    data = {
        "image_size": height,
        "num_frames": num_frames,
        "inputs": model.test_inputs,
        "face_crop": False,
        "accumulate": TrainConfig.accumulate,  # pre-process as training does by default
    }
    return Predictor(model.inference_module(), spec, [f"class_{index}" for index in range(num_classes)], data)


def _add_image_folder(folder: Path, clips: list[Path], skipped: list[tuple[Path, str]]) -> bool:
    """If `folder` holds image files: add it to `clips` as one clip, list its other visible entries in
    `skipped`, and return True; else return False."""
    from cvfer.data.datasets.common import is_image, sorted_entries

    entries = sorted_entries(folder)
    if not any(map(is_image, entries)):
        return False
    clips.append(folder)
    reason = f"skipped: not an image frame of the image-folder clip {folder}"
    skipped.extend((entry, reason) for entry in entries if not is_image(entry))
    return True


def expand_paths(paths: Sequence[str | Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """(clips to predict, (path, reason) of what is not predicted) for the paths given.

    A file is a clip. A folder holding image files is one clip (its frames). Any other folder gives its
    visible files (each a video) and its direct sub-folders holding image files (each a clip); a sub-folder
    without images (e.g. of videos) is listed as skipped, not searched, and so is a folder with no entry.
    """
    from cvfer.data.datasets.common import sorted_entries

    clips: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for path in map(Path, paths):
        if not path.is_dir():
            clips.append(path)
        elif not _add_image_folder(path, clips, skipped):
            entries = sorted_entries(path)
            if not entries:
                skipped.append((path, "folder holds no videos and no image frames (pass videos or folders of frames)"))
            for entry in entries:
                if not entry.is_dir():
                    clips.append(entry)
                elif not _add_image_folder(entry, clips, skipped):
                    reason = "skipped: sub-folder without image frames; folders are read one level deep"
                    skipped.append((entry, f"{reason} (give that folder itself)"))
    return clips, skipped


def predict_paths(
    predictor: Predictor, paths: Sequence[str | Path], cache_dir: str | Path | None = None
) -> tuple[list[Prediction], list[tuple[Path, str]]]:
    """Predict every clip of `expand_paths(paths)`; what is skipped, and a clip that fails, is listed with its
    reason and the rest still run. `ConfigError` up front if `cache_dir` is not a writable folder."""
    from tqdm import tqdm

    cache = None if cache_dir is None else check_output_folder(cache_dir, "--cache-dir")
    predictions: list[Prediction] = []
    items, failures = expand_paths(paths)
    for path in tqdm(items, desc="predict", unit="clip", disable=len(items) < 2):
        try:
            predictions.append(predictor.predict(path, cache))
        except CvferError as error:
            failures.append((path, error.problem + (f" ({error.fix})" if error.fix else "")))
    return predictions, failures
