"""Find, align and crop the face: dlib's HOG detector plus its 5-point landmark model.

A clip is cropped with ONE box for all its frames (`track_face` → `FaceTrack.clip_box`), so the motion
vectors of the re-encoded clip describe the face moving, not the crop window moving. The box is the
union of the aligned face boxes detected every `detect_every` frames from the first (the I frame) on (the
face is re-detected near its last position, so a second face in the frame does not pull the box away),
rotated so the eyes of the first detection are level. `track_face` searches the first frame resized so its
shorter side is `DETECTION_SIDE` pixels, later ones in a window around the last box resized to that box's
scale, and places the landmarks on the full frame: the same clip at 640×480 and at 1280×960 gets the same
box (scaled), and the search costs the same at any resolution. A single image is aligned with `align_face`
(the identity encoder's input), searched at its own size.
"""

from __future__ import annotations

import functools
import importlib.util
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
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
# `track_face` searches frames resized to this shorter side: faces of 1/4 of it and more are found at
# upsampling 0 (about 9 ms a frame on one core), of 1/8 and more at upsampling 1.
DETECTION_SIDE = 320
# Once found, the face is searched first in a window `TRACK_WINDOW` box sides wide around its last box,
# resized so that box is `TRACK_BOX_SIDE` pixels (its HOG face then about 90 px), whatever the frame's size.
TRACK_WINDOW = 1.25
TRACK_BOX_SIDE = 150
# dlib's frontal face detector (`get_frontal_face_detector`) saved in its binary form: it loads in a
# millisecond where dlib's built-in text copy takes one to two seconds to parse.
HOG_DETECTOR_FILE = Path(__file__).with_name("frontal_face_hog.svm")


class FaceNotFoundError(DatasetError):
    """No face was found where one was needed."""


@dataclass(frozen=True)
class FaceBox:
    """A square region of an image: centre and side in pixels, rotated by `angle` radians (dlib's sign)."""

    center_x: float
    center_y: float
    side: float
    angle: float = 0.0

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
    if HOG_DETECTOR_FILE.is_file():
        return dlib.fhog_object_detector(str(HOG_DETECTOR_FILE))
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


def _resized(image: np.ndarray, scale: float) -> tuple[np.ndarray, float, float]:
    """(`image` resized by about `scale`: area-averaged down, bilinear up; the exact x and y scales)."""
    if scale == 1.0:
        return image, 1.0, 1.0
    height, width = image.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    return resized, size[0] / width, size[1] / height


def _mapped_back(rect: dlib.rectangle, scale_x: float, scale_y: float, left: int = 0, top: int = 0) -> dlib.rectangle:
    """`rect` found in a region (at `left`, `top`) resized by `scale_x`, `scale_y`, in the image's pixels."""

    def back(value: int, scale: float, offset: int) -> int:
        return round((value + 0.5) / scale - 0.5) + offset

    return dlib.rectangle(back(rect.left(), scale_x, left), back(rect.top(), scale_y, top),
                          back(rect.right(), scale_x, left), back(rect.bottom(), scale_y, top))


def _detections(image: np.ndarray, search_side: int | None = None) -> list[tuple[dlib.rectangle, float]]:
    """dlib's HOG detections (rectangle in `image`'s pixels, score) of an RGB uint8 image at the first of
    `UPSAMPLE_LEVELS` that finds a face; empty if none does. With `search_side` the image is searched
    resized so its shorter side is that many pixels."""
    scale = 1.0 if search_side is None else search_side / min(image.shape[:2])
    searched, scale_x, scale_y = _resized(image, scale)
    for upsample in UPSAMPLE_LEVELS:
        rects, scores, _ = _detector().run(searched, upsample)
        if len(rects):
            return [(_mapped_back(rect, scale_x, scale_y), float(score)) for rect, score in zip(rects, scores)]
    return []


def _face_near(image: np.ndarray, near: FaceBox, padding: float) -> FaceBox | None:
    """The face closest to `near` found in a window of `TRACK_WINDOW` box sides around it, resized so the
    box is `TRACK_BOX_SIDE` pixels (a face of the same size is then found at upsampling 0); None if none."""
    height, width = image.shape[:2]
    half = near.side * TRACK_WINDOW / 2
    left, top = max(0, math.floor(near.center_x - half)), max(0, math.floor(near.center_y - half))
    right, bottom = min(width, math.ceil(near.center_x + half)), min(height, math.ceil(near.center_y + half))
    if right - left < 2 or bottom - top < 2:
        return None
    window, scale_x, scale_y = _resized(image[top:bottom, left:right], TRACK_BOX_SIDE / near.side)
    rects = _detector()(np.ascontiguousarray(window), 0)
    boxes = [_aligned_box(image, _mapped_back(rect, scale_x, scale_y, left, top), padding) for rect in rects]
    return _closest(boxes, near)


def _closest(boxes: list[FaceBox], near: FaceBox) -> FaceBox | None:
    """The box of `boxes` closest to `near` within one side of it; None if there is none."""

    def distance(box: FaceBox) -> float:
        return math.hypot(box.center_x - near.center_x, box.center_y - near.center_y)

    close = [box for box in boxes if distance(box) <= near.side]
    return min(close, key=distance) if close else None


def detect_faces(
    image: np.ndarray, padding: float = FACE_PADDING, search_side: int | None = None
) -> list[tuple[FaceBox, float]]:
    """All faces dlib's HOG detector finds, aligned by their 5 landmarks, with their scores (best first).

    Tries each of `UPSAMPLE_LEVELS` in turn and stops at the first that finds a face. With `search_side`
    the image is searched resized so its shorter side is that many pixels; the landmarks are always placed
    on `image` itself.
    """
    image = _as_rgb(image)
    found = [(_aligned_box(image, rect, padding), score) for rect, score in _detections(image, search_side)]
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


def detect_face(
    image: np.ndarray, near: FaceBox | None = None, padding: float = FACE_PADDING, search_side: int | None = None
) -> FaceBox | None:
    """The most confident face, or with `near` the face closest to it (within one box side); else None.
    `search_side` as for `detect_faces`."""
    faces = [box for box, _ in detect_faces(image, padding, search_side)]
    if near is None:
        return faces[0] if faces else None
    return _closest(faces, near)


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

    dlib's chip geometry: the box's edges fall on the centres of the chip's outer pixels. Each chip pixel
    is the mean of its footprint in the image: the box is sampled rotated, bilinearly, at one sample per
    image pixel (a box over 3 image pixels per chip pixel is first block-averaged by a whole factor, to
    1.5 to 3 samples per chip pixel), then area-averaged down to `size`. So downscaling does not alias
    fine texture into the residuals and the chip of a face does not depend on the frame's resolution.
    """
    if size < 2:
        raise ConfigError(f"crop size must be at least 2 pixels, got {size}")
    image = _as_rgb(image)
    extent = box.side * size / (size - 1)  # the footprint of the chip's pixels
    factor = int(extent / (1.5 * size))
    if factor >= 2:
        image, box = _block_averaged(image, box, extent, factor)
        extent /= factor
    samples = max(size, round(extent))
    sampled = cv2.warpAffine(
        image, samples_to_image(box, extent, samples), (samples, samples), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT, borderValue=0,
    )
    if samples == size:
        return sampled
    return cv2.resize(sampled, (size, size), interpolation=cv2.INTER_AREA)


def samples_to_image(box: FaceBox, extent: float, samples: int) -> np.ndarray:
    """The 2×3 affine map (for `cv2.warpAffine` with `WARP_INVERSE_MAP`) from a `samples`×`samples` grid spread
    evenly over `box`'s footprint, `extent` pixels wide and rotated with the box, to image coordinates."""
    step = extent / samples
    cos, sin = math.cos(box.angle), math.sin(box.angle)
    linear = np.array([[cos, -sin], [sin, cos]]) * step
    start = (step - extent) / 2  # box coordinate of the first sample's centre, on both axes
    offset = np.array([box.center_x, box.center_y]) + linear @ np.array([start, start]) / step
    return np.hstack([linear, offset[:, None]])


def block_grid(box: FaceBox, extent: float, factor: int) -> tuple[int, int, int]:
    """(left, top, blocks): the grid of blocks × blocks `factor`×`factor` blocks, from image pixel (left, top),
    that `crop` averages a footprint `extent` wide on. It is fixed by the box's centre and extent, and holds
    the footprint at any rotation."""
    reach = extent / math.sqrt(2) + factor  # half the footprint's diagonal, whatever its rotation
    return math.floor(box.center_x - reach), math.floor(box.center_y - reach), math.ceil(2 * reach / factor)


def _block_averaged(image: np.ndarray, box: FaceBox, extent: float, factor: int) -> tuple[np.ndarray, FaceBox]:
    """(the part of `image` around `box`'s footprint, black outside the image, averaged over `factor`×`factor`
    blocks; `box` in that reduced part's pixels).

    The blocks lie on a grid fixed by the box's centre and extent (not its angle) that holds the footprint at
    any rotation; only the blocks the rotated footprint and its bilinear neighbours reach are averaged (half the
    grid at angle 0), straight from the frame where they lie inside it, so the chip is the same as if the
    whole grid were."""
    left, top, blocks = block_grid(box, extent, factor)
    center_x, center_y = (box.center_x - left + 0.5) / factor - 0.5, (box.center_y - top + 0.5) / factor - 0.5
    # Half the footprint's axis-aligned width in blocks, plus the bilinear neighbour and one block to spare.
    half = extent / factor / 2 * (abs(math.cos(box.angle)) + abs(math.sin(box.angle))) + 2
    first_col, first_row = max(0, math.floor(center_x - half)), max(0, math.floor(center_y - half))
    stop_col, stop_row = min(blocks, math.ceil(center_x + half) + 1), min(blocks, math.ceil(center_y + half) + 1)
    x0, y0 = left + first_col * factor, top + first_row * factor
    x1, y1 = left + stop_col * factor, top + stop_row * factor
    height, width = image.shape[:2]
    if 0 <= x0 and 0 <= y0 and x1 <= width and y1 <= height:
        region = image[y0:y1, x0:x1]
    else:
        region = np.zeros((y1 - y0, x1 - x0, 3), np.uint8)
        inner_x0, inner_y0, inner_x1, inner_y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
        if inner_x0 < inner_x1 and inner_y0 < inner_y1:
            region[inner_y0 - y0 : inner_y1 - y0, inner_x0 - x0 : inner_x1 - x0] = image[inner_y0:inner_y1, inner_x0:inner_x1]
    # Placed in the whole grid (black elsewhere, never sampled) so `crop` maps the box exactly as before.
    reduced = np.zeros((blocks, blocks, 3), np.uint8)
    reduced[first_row:stop_row, first_col:stop_col] = cv2.resize(
        region, (stop_col - first_col, stop_row - first_row), interpolation=cv2.INTER_AREA
    )
    return reduced, FaceBox(center_x, center_y, box.side / factor, box.angle)


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
    frames: Iterable[np.ndarray],
    detect_every: int = 10,
    padding: float = FACE_PADDING,
    search_side: int | None = DETECTION_SIDE,
) -> FaceTrack | None:
    """Detect the face every `detect_every` frames (and on the last) and return the clip's fixed crop box.

    Until a face is first found, every frame is tried. Later detections keep only the face near the
    previous one, searched first in a window around it (`TRACK_WINDOW`), then in the whole frame. Frames
    are searched resized to `search_side` (None: at their own size, and no window). Returns None when no
    frame shows a face.
    """
    if detect_every < 1:
        raise ConfigError(f"detect_every must be at least 1, got {detect_every}")
    detections: list[tuple[int, FaceBox]] = []
    last_frame, last_index, last_checked = None, -1, -1

    def detect(frame: np.ndarray) -> FaceBox | None:
        near = detections[-1][1] if detections else None
        tracked = None if near is None or search_side is None else _face_near(_as_rgb(frame), near, padding)
        return tracked or detect_face(frame, near, padding, search_side)

    for index, frame in enumerate(frames):
        last_frame, last_index = frame, index
        if detections and index - last_checked < detect_every:
            continue
        last_checked = index
        box = detect(frame)
        if box is not None:
            detections.append((index, box))
    if detections and last_checked != last_index and last_frame is not None:
        box = detect(last_frame)
        if box is not None:
            detections.append((last_index, box))
    if not detections:
        return None
    return FaceTrack(detections, union_box([box for _, box in detections]), last_index + 1)


def center_box(height: int, width: int) -> FaceBox:
    """The largest centred square of a `height`×`width` frame (the crop when face detection is off)."""
    side = min(height, width)
    return FaceBox(width / 2, height / 2, float(side), 0.0)
