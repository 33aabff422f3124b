"""Find, align and crop the face: dlib's HOG detector plus its 5-point landmark model.

A clip is cropped with ONE box for all its frames (`track_face` → `FaceTrack.clip_box`), so the motion
vectors of the re-encoded clip describe the face moving, not the crop window moving. The box is the
union of the aligned face boxes detected every `detect_every` frames (the face is re-detected near its
last position, so a second face in the frame does not pull the box away), rotated so the eyes of the
first detection are level. A single image is aligned with `align_face` (the identity encoder's input).
"""

from __future__ import annotations

import functools
import importlib.util
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dlib
import numpy as np

from cvfer.errors import ConfigError, DatasetError

LANDMARKS_MODEL = "shape_predictor_5_face_landmarks.dat"
# iBUG 300-W's 68 points (jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, mouth 48-67): drives `cvfer.data.morph`.
LANDMARKS_68_MODEL = "shape_predictor_68_face_landmarks.dat"
# Context around the eyes-nose landmarks, in dlib's `get_face_chip_details` units: 0.25 is dlib's face
# recognition crop (eyebrows to chin); expressions also use the forehead and the jaw line.
FACE_PADDING = 0.4
# Upsampling levels tried in order: 0 finds faces of 80 px and more, 1 finds faces down to 40 px.
UPSAMPLE_LEVELS = (0, 1)


class FaceNotFoundError(DatasetError):
    """No face was found where one was needed."""


@dataclass(frozen=True)
class FaceBox:
    """A square region of an image: centre and side in pixels, rotated by `angle` radians (dlib's sign)."""

    center_x: float
    center_y: float
    side: float
    angle: float = 0.0

    def chip_details(self, size: int) -> dlib.chip_details:
        """dlib's description of this box resampled to a `size`×`size` chip."""
        half = self.side / 2
        rect = dlib.drectangle(self.center_x - half, self.center_y - half, self.center_x + half, self.center_y + half)
        return dlib.chip_details(rect, dlib.chip_dims(size, size), self.angle)

    def to_box_coordinates(self, points: np.ndarray) -> np.ndarray:
        """Image points (N×2, x y) → offsets from the centre along the box's own (rotated) axes, in pixels."""
        cos, sin = math.cos(self.angle), math.sin(self.angle)
        offsets = np.asarray(points, dtype=np.float64) - (self.center_x, self.center_y)
        return offsets @ np.array([[cos, -sin], [sin, cos]])

    def corners(self) -> np.ndarray:
        """The four corners in image coordinates (4×2, x y)."""
        half = self.side / 2
        cos, sin = math.cos(self.angle), math.sin(self.angle)
        local = np.array([[-half, -half], [half, -half], [half, half], [-half, half]])
        return local @ np.array([[cos, sin], [-sin, cos]]) + (self.center_x, self.center_y)

    def contains(self, other: FaceBox, tolerance: float = 1e-6) -> bool:
        """Whether every corner of `other` lies inside this box (up to `tolerance` pixels)."""
        extent = np.abs(self.to_box_coordinates(other.corners())).max()
        return bool(extent <= self.side / 2 + tolerance)


@dataclass(frozen=True)
class FaceTrack:
    """The faces found in a clip and the one box that crops all its frames."""

    detections: list[tuple[int, FaceBox]]
    clip_box: FaceBox
    num_frames: int


def model_path(name: str) -> Path:
    """Path of a dlib model file shipped by `face_recognition_models` (located without importing it)."""
    spec = importlib.util.find_spec("face_recognition_models")
    locations = list(spec.submodule_search_locations or ()) if spec is not None else []
    for location in locations:
        candidate = Path(location) / "models" / name
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"dlib model {name} not found", None, "install it with `pip install face-recognition-models`"
    )


@functools.cache
def _detector() -> dlib.fhog_object_detector:
    return dlib.get_frontal_face_detector()


@functools.cache
def _landmarks_predictor() -> dlib.shape_predictor:
    return dlib.shape_predictor(str(model_path(LANDMARKS_MODEL)))


@functools.cache
def _landmarks_68_predictor() -> dlib.shape_predictor:
    return dlib.shape_predictor(str(model_path(LANDMARKS_68_MODEL)))


def _as_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ConfigError(f"expected a uint8 image, got {image.dtype}", None, "convert the image to uint8 RGB")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ConfigError(f"expected an H×W×3 RGB image, got shape {image.shape}")
    return np.ascontiguousarray(image)


def _aligned_box(image: np.ndarray, rect: dlib.rectangle, padding: float) -> FaceBox:
    shape = _landmarks_predictor()(image, rect)
    details = dlib.get_face_chip_details(shape, 2, padding)
    rect = details.rect
    side = (rect.right() - rect.left() + rect.bottom() - rect.top()) / 2
    center_x, center_y = (rect.left() + rect.right()) / 2, (rect.top() + rect.bottom()) / 2
    return FaceBox(center_x, center_y, side, details.angle)


def _detections(image: np.ndarray) -> list[tuple[dlib.rectangle, float]]:
    """dlib's HOG detections (rectangle, score) of an RGB uint8 image at the first of `UPSAMPLE_LEVELS` that
    finds a face; empty if none does."""
    for upsample in UPSAMPLE_LEVELS:
        rects, scores, _ = _detector().run(image, upsample)
        if len(rects):
            return [(rect, float(score)) for rect, score in zip(rects, scores)]
    return []


def detect_faces(image: np.ndarray, padding: float = FACE_PADDING) -> list[tuple[FaceBox, float]]:
    """All faces dlib's HOG detector finds, aligned by their 5 landmarks, with their scores (best first).

    Tries each of `UPSAMPLE_LEVELS` in turn and stops at the first that finds a face.
    """
    image = _as_rgb(image)
    found = [(_aligned_box(image, rect, padding), score) for rect, score in _detections(image)]
    return sorted(found, key=lambda item: -item[1])


def face_landmarks(image: np.ndarray) -> np.ndarray:
    """The 68 landmarks (68×2 float, x y in pixels) of the most confident face; `FaceNotFoundError` if none."""
    image = _as_rgb(image)
    detections = _detections(image)
    if detections:
        best, _ = max(detections, key=lambda item: item[1])
        shape = _landmarks_68_predictor()(image, best)
        return np.array([(point.x, point.y) for point in shape.parts()], dtype=np.float64)
    raise FaceNotFoundError("no face found for the 68 landmarks", None, "pass an image with a frontal face")


def detect_face(image: np.ndarray, near: FaceBox | None = None, padding: float = FACE_PADDING) -> FaceBox | None:
    """The most confident face, or with `near` the face closest to it (within one box side); else None."""
    faces = [box for box, _ in detect_faces(image, padding)]
    if near is None:
        return faces[0] if faces else None

    def distance(box: FaceBox) -> float:
        return math.hypot(box.center_x - near.center_x, box.center_y - near.center_y)

    close = [box for box in faces if distance(box) <= near.side]
    return min(close, key=distance) if close else None


def align_face(image: np.ndarray, size: int = 150, padding: float = 0.25) -> np.ndarray:
    """The most confident face of an RGB image, rotated upright and resized to `size`×`size` uint8.

    Defaults match dlib's face recognition network input (150 px, padding 0.25). Raises
    `FaceNotFoundError` when no face is found.
    """
    box = detect_face(image, padding=padding)
    if box is None:
        raise FaceNotFoundError("no face found in the image", None, "pass an image with a frontal face")
    return crop(image, box, size)


def crop(image: np.ndarray, box: FaceBox, size: int) -> np.ndarray:
    """Resample `box` of an RGB image to a `size`×`size` uint8 chip (outside the image is black).

    A box k ≥ 2 times larger than the chip is first sampled at k×size and then averaged over k×k
    blocks, so downscaling does not alias fine texture into the residuals.
    """
    factor = max(1, int(box.side // size))
    chip = np.asarray(dlib.extract_image_chip(_as_rgb(image), box.chip_details(size * factor)))
    if factor == 1:
        return chip
    blocks = chip.reshape(size, factor, size, factor, 3).mean(axis=(1, 3))
    return np.rint(blocks).astype(np.uint8)


def crop_frames(frames: Iterable[np.ndarray], box: FaceBox, size: int) -> Iterator[np.ndarray]:
    """`crop` every frame with the same box."""
    for frame in frames:
        yield crop(frame, box, size)


def union_box(boxes: list[FaceBox]) -> FaceBox:
    """The smallest square, rotated like `boxes[0]`, that holds every box."""
    reference = boxes[0]
    corners = np.concatenate([box.corners() for box in boxes])
    local = reference.to_box_coordinates(corners)
    low, high = local.min(axis=0), local.max(axis=0)
    middle = (low + high) / 2
    side = float((high - low).max())
    cos, sin = math.cos(reference.angle), math.sin(reference.angle)
    center = middle @ np.array([[cos, sin], [-sin, cos]]) + (reference.center_x, reference.center_y)
    return FaceBox(float(center[0]), float(center[1]), side, reference.angle)


def track_face(
    frames: Iterable[np.ndarray], detect_every: int = 10, padding: float = FACE_PADDING
) -> FaceTrack | None:
    """Detect the face every `detect_every` frames (and on the last) and return the clip's fixed crop box.

    Until a face is first found, every frame is tried. Later detections keep only the face near the
    previous one. Returns None when no frame shows a face.
    """
    if detect_every < 1:
        raise ConfigError(f"detect_every must be at least 1, got {detect_every}")
    detections: list[tuple[int, FaceBox]] = []
    last_frame, last_index, last_checked = None, -1, -1
    for index, frame in enumerate(frames):
        last_frame, last_index = frame, index
        if detections and index - last_checked < detect_every:
            continue
        last_checked = index
        box = detect_face(frame, near=detections[-1][1] if detections else None, padding=padding)
        if box is not None:
            detections.append((index, box))
    if detections and last_checked != last_index and last_frame is not None:
        box = detect_face(last_frame, near=detections[-1][1], padding=padding)
        if box is not None:
            detections.append((last_index, box))
    if not detections:
        return None
    return FaceTrack(detections, union_box([box for _, box in detections]), last_index + 1)


def center_box(height: int, width: int) -> FaceBox:
    """The largest centred square of a `height`×`width` frame (the crop when face detection is off)."""
    side = min(height, width)
    return FaceBox(width / 2, height / 2, float(side), 0.0)
