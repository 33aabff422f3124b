"""Face detectors on the same real-face frames: detection rate, ms per frame, and agreement of the crop box
with dlib's HOG at full resolution (docs/results.md, "End to end from a raw video").

Usage: taskset -c 0 .venv/bin/python benchmarks/bench_detectors.py [--stills data/sources/ckplus-pairs]
       [--count 200] [--scales 2.5,1.25]

Frames: `--count` CK+ stills of the real-face set (neutral and peak images, spread over every folder), each
put on a black 640×480 frame at `--scales` times its 128-px size, at a position that varies. Rows:
- dlib HOG at the frame's own size: what `track_face` searched before (the reference box);
- dlib HOG at 320 px (`cvfer.data.faces.DETECTION_SIDE`): the default now;
- OpenCV's Haar cascade (`haarcascade_frontalface_default.xml`, at 320 px), when the installed OpenCV ships
  it (the 4.x wheels do; run with an OpenCV 4 on PYTHONPATH to measure it). Its rectangle is mapped onto
  dlib's (scale and offset fitted on the first half of the frames), and the 5 landmarks then give the same
  aligned, padded box as dlib's, so the crop geometry is that of the training crops;
- MediaPipe's face detector, when installed with a bundled model.
"Found" counts frames whose best face overlaps the placed still; IoU and the offsets (in pixels of the
64-px chip) compare each detector's final crop box with the reference box, on frames both found. ms is
the median CPU time per frame of detection alone and of detection + landmarks (the box `track_face` uses).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import dlib
import numpy as np
from skimage.draw import polygon

from cvfer.codec import read_image
from cvfer.data import faces

Rect = tuple[float, float, float, float]  # left, top, right, bottom in frame pixels


def stills(root: Path, count: int) -> list[Path]:
    """`count` still images spread evenly over every expression folder (and neutral) of `root`."""
    files = sorted(path for path in root.rglob("*.png") if path.parent.name != "err")
    step = max(1, len(files) // count)
    return files[::step][:count]


def placed(still: np.ndarray, scale: float, index: int) -> tuple[np.ndarray, Rect]:
    """`still` (grey or RGB) scaled by `scale` on a black 640×480 frame at a position set by `index`."""
    rgb = np.repeat(still[:, :, None], 3, axis=2) if still.ndim == 2 else still
    side = round(128 * scale)
    face = cv2.resize(rgb, (side, side), interpolation=cv2.INTER_CUBIC)
    frame = np.zeros((480, 640, 3), np.uint8)
    left = (37 * index) % (640 - side + 1)
    top = (23 * index) % (480 - side + 1)
    frame[top : top + side, left : left + side] = face
    return frame, (left, top, left + side, top + side)


def box_mask(box: faces.FaceBox, shape: tuple[int, int]) -> np.ndarray:
    corners = box.corners()
    mask = np.zeros(shape, bool)
    rows, cols = polygon(corners[:, 1], corners[:, 0], shape)
    mask[rows, cols] = True
    return mask


def iou(first: faces.FaceBox, second: faces.FaceBox) -> float:
    shape = (960, 1280)  # large enough for boxes that leave the 640×480 frame (padded crop boxes do)
    shift = faces.FaceBox(first.center_x + 320, first.center_y + 240, first.side, first.angle)
    other = faces.FaceBox(second.center_x + 320, second.center_y + 240, second.side, second.angle)
    a, b = box_mask(shift, shape), box_mask(other, shape)
    return float((a & b).sum() / max((a | b).sum(), 1))


def overlaps(box: faces.FaceBox, rect: Rect) -> bool:
    return rect[0] <= box.center_x <= rect[2] and rect[1] <= box.center_y <= rect[3]


def dlib_detector(search_side: int | None) -> Callable[[np.ndarray], faces.FaceBox | None]:
    return lambda frame: faces.detect_face(frame, search_side=search_side)


def resized(frame: np.ndarray, side: int) -> tuple[np.ndarray, float]:
    scale = side / min(frame.shape[:2])
    size = (round(frame.shape[1] * scale), round(frame.shape[0] * scale))
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA), scale


class HaarDetector:
    """OpenCV's frontal-face Haar cascade at 320 px, its best rectangle mapped onto dlib's, then dlib's landmarks."""

    def __init__(self, path: Path):
        self.cascade = cv2.CascadeClassifier(str(path))
        self.mapping = (0.0, 0.0, 1.0)  # centre x, centre y offsets (in Haar sides) and side ratio to dlib's rectangle

    def rect(self, frame: np.ndarray) -> Rect | None:
        small, scale = resized(frame, faces.DETECTION_SIDE)
        grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
        found, _, weights = self.cascade.detectMultiScale3(grey, 1.1, 5, minSize=(40, 40), outputRejectLevels=True)
        if len(found) == 0:
            return None
        x, y, w, h = (value / scale for value in found[int(np.argmax(weights))])
        return x, y, x + w, y + h

    def fit(self, pairs: list[tuple[Rect, dlib.rectangle]]) -> None:
        """Scale and offset that carry the Haar rectangle onto dlib's HOG rectangle (medians over `pairs`)."""
        dx, dy, ratio = [], [], []
        for (left, top, right, bottom), rect in pairs:
            side = right - left
            dx.append(((rect.left() + rect.right()) / 2 - (left + right) / 2) / side)
            dy.append(((rect.top() + rect.bottom()) / 2 - (top + bottom) / 2) / side)
            ratio.append((rect.right() - rect.left()) / side)
        self.mapping = (statistics.median(dx), statistics.median(dy), statistics.median(ratio))

    def __call__(self, frame: np.ndarray) -> faces.FaceBox | None:
        found = self.rect(frame)
        if found is None:
            return None
        left, top, right, bottom = found
        side = right - left
        dx, dy, ratio = self.mapping
        cx, cy, half = (left + right) / 2 + dx * side, (top + bottom) / 2 + dy * side, ratio * side / 2
        rect = dlib.rectangle(round(cx - half), round(cy - half), round(cx + half), round(cy + half))
        return faces._aligned_box(frame, rect, faces.FACE_PADDING)


def haar_cascade_file() -> Path | None:
    if not hasattr(cv2, "CascadeClassifier") or not hasattr(cv2, "data"):
        return None
    path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
    return path if path.is_file() else None


def mediapipe_note() -> str:
    spec = importlib.util.find_spec("mediapipe")
    if spec is None:
        return "MediaPipe: not installed (mediapipe 1.2.3's wheel bundles no .tflite model: its face detector needs a downloaded model file)"
    models = [path for location in spec.submodule_search_locations or () for path in Path(location).rglob("*face_detection*.tflite")]
    return f"MediaPipe: installed, bundled face-detection models: {len(models)}"


def timed(detect: Callable[[np.ndarray], object], frame: np.ndarray) -> tuple[object, float]:
    """(`detect(frame)`, the CPU seconds it took: robust to other processes on a shared machine)."""
    start = time.process_time()
    result = detect(frame)
    return result, time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stills", default="data/sources/ckplus-pairs")
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--scales", default="2.5,1.25", help="still sizes on the 640×480 frame (×128 px)")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    files = stills(Path(args.stills), args.count)
    haar_file = haar_cascade_file()
    print(f"{len(files)} CK+ stills, OpenCV {cv2.__version__}, dlib {dlib.__version__}")
    print(mediapipe_note())
    if haar_file is None:
        print(f"OpenCV Haar cascade: not available in OpenCV {cv2.__version__} (no CascadeClassifier or no "
              "cv2.data cascades; the 4.x wheels ship them)")
    print("| frames | detector | found | ms detect | ms detect + landmarks | IoU vs reference (median, 5th pct) | "
          "|Δcentre| / |Δside| in 64-px chip px (median) |")
    print("|---|---|---|---|---|---|---|")
    for scale in (float(value) for value in args.scales.split(",")):
        frames = [placed(read_image(path), scale, index) for index, path in enumerate(files)]
        detectors: dict[str, Callable[[np.ndarray], faces.FaceBox | None]] = {
            "dlib HOG, full frame (reference)": dlib_detector(None),
            f"dlib HOG at {faces.DETECTION_SIDE} px (default)": dlib_detector(faces.DETECTION_SIDE),
        }
        raw: dict[str, Callable[[np.ndarray], object]] = {
            "dlib HOG, full frame (reference)": lambda frame: faces._detections(frame),
            f"dlib HOG at {faces.DETECTION_SIDE} px (default)": lambda frame: faces._detections(frame, faces.DETECTION_SIDE),
        }
        if haar_file is not None:
            haar = HaarDetector(haar_file)
            half = frames[: len(frames) // 2]
            pairs = [(haar.rect(frame), faces._detections(frame)) for frame, _ in half]
            haar.fit([(rect, found[0][0]) for rect, found in pairs if rect is not None and found])
            detectors["OpenCV Haar at 320 px → dlib landmarks"] = haar
            raw["OpenCV Haar at 320 px → dlib landmarks"] = haar.rect
        results: dict[str, list[faces.FaceBox | None]] = {}
        for name, detect in detectors.items():
            boxes, detect_ms, full_ms = [], [], []
            for frame, rect in frames:
                _, seconds = timed(raw[name], frame)
                detect_ms.append(seconds * 1e3)
                box, seconds = timed(detect, frame)
                full_ms.append(seconds * 1e3)
                boxes.append(box if box is not None and overlaps(box, rect) else None)
            results[name] = boxes
            reference = results["dlib HOG, full frame (reference)"]
            both = [(box, ref) for box, ref in zip(boxes, reference) if box is not None and ref is not None]
            ious = [iou(box, ref) for box, ref in both]
            centre = [np.hypot(box.center_x - ref.center_x, box.center_y - ref.center_y) * 64 / ref.side for box, ref in both]
            side = [abs(box.side - ref.side) * 64 / ref.side for box, ref in both]
            found = sum(box is not None for box in boxes)
            print(f"| {round(128 * scale)} px faces | {name} | {found}/{len(frames)} ({100 * found / len(frames):.1f} %) | "
                  f"{statistics.median(detect_ms):.1f} | {statistics.median(full_ms):.1f} | "
                  f"{statistics.median(ious):.3f}, {np.percentile(ious, 5):.3f} | "
                  f"{statistics.median(centre):.2f} / {statistics.median(side):.2f} |")


if __name__ == "__main__":
    main()
