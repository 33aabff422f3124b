"""`load_model(model.pt) -> Predictor`: expressions of videos of any format PyAV reads, or image folders.

An MPEG-4 Part 2 file of the checkpoint's frame size is taken as a prepared clip and read as it is (one
GOP, no B frames, else it is re-encoded); a face-crop checkpoint does not search it for a face again. Any
other input is first turned into one by `cvfer.data.cropping.write_cropped_clip`, the function `cvfer prepare`
made the training clips with: its frames are decoded once (kept in memory up to `FRAME_MEMORY_BYTES`, else
decoded a second time), the face is tracked (`cvfer.data.faces.track_face`: detected on the first frame and
every 10th, searched at 320 px) or the largest centred square taken, and every frame is cropped to
`image_size` with that one box and encoded in the MIC format, in a temporary folder or a cache folder. The
clip is then read by the one-clip loader that fed training (`cvfer.data.clip`), so the inputs are exactly
what the model was trained on. Each `Prediction` carries the seconds of every stage (`STAGES`).
"""

from __future__ import annotations

import hashlib
import pickletools
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cvfer import codec
from cvfer.data.clip import ClipSpec, load_clip, stack_input
from cvfer.data.cropping import write_cropped_clip
from cvfer.errors import CheckpointError, CompressedVideoError, CvferError
from cvfer.io import broken_link, check_output_folder
from cvfer.runs import CHECKPOINT_PT, MODEL_PT, load_inference_model

CACHED_CLIP = "clips/clip.mp4"  # where a re-encoded clip lies in its `--cache-dir` entry
# Part of the cache key: raise it when the re-encoded clip of the same input changes (2: area-averaged
# crop, face searched at `faces.DETECTION_SIDE`).
ENCODING_VERSION = 2
TRAINING_CHECKPOINT_KEYS = ("optimizers", "schedulers", "rng", "history")  # in checkpoint.pt, not in model.pt
DEFAULT_FPS = 25.0  # given to image folders (and videos whose header states no rate), as `cvfer prepare` does
# Seconds of each stage in `Prediction.timing`: demux + decode of the input; face detection and tracking;
# crop + MPEG-4 encode; reading the model's inputs from the MIC clip (residuals, vectors, frames); the
# forward pass. `prepare_s` is all but the last, `total_s` all.
STAGES = ("decode_s", "detect_s", "crop_encode_s", "read_s", "forward_s")


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


def _source_frames(source: Path) -> tuple[Callable[[], Iterator[np.ndarray]], float]:
    """(a fresh iterator over the RGB frames of a video or image folder on each call, its frame rate)."""
    if not source.is_dir():
        return (lambda: codec.iter_frames(source)), codec.read_header(source).fps or DEFAULT_FPS
    files = _image_files(source)
    if not files:
        raise CompressedVideoError("folder holds no images", source, "pass a video or a folder of PNG/JPEG frames")
    return (lambda: (codec.read_image(file) for file in files)), DEFAULT_FPS


def encode_clip(
    source: Path, destination: Path, size: int, face_crop: bool, timing: dict[str, float] | None = None
) -> Path:
    """Crop `source` (video or image folder) to the tracked face or its centred square, resize to `size` and
    write it in the MIC format at `destination` with `cvfer.data.cropping.write_cropped_clip`, the function
    `cvfer prepare` makes a dataset's clips with. Adds the seconds of each stage to `timing` (`STAGES`)."""
    try:
        read, fps = _source_frames(source)
        write_cropped_clip(read, destination, size, face_crop, fps, source=source, timing=timing)
    except (OSError, ValueError) as error:
        raise CompressedVideoError(
            f"cannot be re-encoded ({type(error).__name__}: {error})", source, "pass a readable video or image folder"
        ) from None
    return destination


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

    def is_prepared_clip(self, path: Path) -> bool:
        """Whether `path` looks like a clip `cvfer prepare` made for this model (an MPEG-4 Part 2 file of its
        frame size, judged from the header): such a clip is read as it is, with no face search."""
        if path.is_dir():
            return False
        header = codec.read_header(path)
        return header.codec == "mpeg4" and header.size == (self.image_size, self.image_size)

    def _encoded(self, path: Path, work_dir: Path, cache_dir: Path | None, timing: dict[str, float]) -> Path:
        """The MIC-format clip made from `path` (in `work_dir`, or in `cache_dir` when given)."""
        if cache_dir is None:
            return encode_clip(path, work_dir / "clip.mp4", self.image_size, self.face_crop, timing)
        digest = hashlib.sha256(f"{ENCODING_VERSION}:{self.image_size}:{self.face_crop}".encode())
        for file in _image_files(path) if path.is_dir() else (path,):
            digest.update(file.read_bytes())
        cached = cache_dir / digest.hexdigest()[:32] / CACHED_CLIP
        if not cached.is_file():
            encode_clip(path, cached, self.image_size, self.face_crop, timing)
        return cached

    def _load(self, clip: Path, timing: dict[str, float]) -> dict[str, torch.Tensor]:
        """The clip's model inputs (no batch dimension), read by the loader training uses (`load_clip`)."""
        start = time.perf_counter()
        arrays = load_clip(clip, self.spec)
        inputs = {key: stack_input(key, [arrays])[0] for key in self.inputs}
        timing["read_s"] = time.perf_counter() - start
        return inputs

    def _prepare(self, path: Path, cache_dir: Path | None, timing: dict[str, float]) -> dict[str, torch.Tensor]:
        if not path.exists():
            raise CompressedVideoError(broken_link(path) or "file not found", path, "check the path")
        if self.is_prepared_clip(path):
            try:
                return self._load(path, timing)
            except CvferError:
                pass  # e.g. B frames or several I frames: re-encode below
        with tempfile.TemporaryDirectory(prefix="cvfer-predict-") as work_dir:
            return self._load(self._encoded(path, Path(work_dir), cache_dir, timing), timing)

    def prepare(self, path: str | Path, cache_dir: str | Path | None = None) -> dict[str, torch.Tensor]:
        """Model inputs of one video or image folder: re-encode / crop if needed, then extract."""
        return self._prepare(Path(path), None if cache_dir is None else Path(cache_dir), {})

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Class probabilities (B, C) of a batch of inputs."""
        with torch.inference_mode():
            output = self.module(batch)
        logits = output.logits if hasattr(output, "logits") else output
        return torch.softmax(logits.float(), dim=1)

    def predict(self, path: str | Path, cache_dir: str | Path | None = None) -> Prediction:
        """Expression of one video (or image folder) with all class probabilities and the seconds of each stage
        (`STAGES`, 0 for a stage skipped, plus `prepare_s` and `total_s`)."""
        timing = dict.fromkeys(STAGES, 0.0)
        start = time.perf_counter()
        item = self._prepare(Path(path), None if cache_dir is None else Path(cache_dir), timing)
        prepared = time.perf_counter()
        probabilities = self.forward({key: value[None] for key, value in item.items()})[0].numpy()
        done = time.perf_counter()
        timing.update(forward_s=done - prepared, prepare_s=prepared - start, total_s=done - start)
        return Prediction(
            path=Path(path),
            label=self.classes[int(np.argmax(probabilities))],
            probabilities={name: float(value) for name, value in zip(self.classes, probabilities)},
            timing=timing,
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
    predictor: Predictor,
    paths: Sequence[str | Path],
    cache_dir: str | Path | None = None,
    *,
    workers: int | str = 1,
    cluster: str | None = None,
) -> tuple[list[Prediction], list[tuple[Path, str]]]:
    """Predict every clip of `expand_paths(paths)`; what is skipped, and a clip that fails, is listed with its
    reason and the rest still run. `workers` > 1 predicts in that many single-threaded processes ("auto":
    every CPU when the clips after the first are worth it), `cluster` ("local" or a Dask scheduler address)
    on a Dask cluster (`cvfer.cluster.map_files`); the predictions are the same in every case.
    `ConfigError` up front if `cache_dir` is not a writable folder."""
    import functools

    from cvfer.cluster import TaskError, map_files

    cache = None if cache_dir is None else check_output_folder(cache_dir, "--cache-dir")
    items, failures = expand_paths(paths)
    predict_one = functools.partial(predictor.predict, cache_dir=cache)
    predictions: list[Prediction] = []
    for outcome in map_files(predict_one, items, workers=workers, cluster=cluster, desc="predict", unit="clip"):
        if isinstance(outcome, TaskError):
            failures.append((outcome.item, outcome.reason))
        else:
            predictions.append(outcome)
    return predictions, failures
