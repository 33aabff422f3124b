"""Expression over time in a long video: `predict_timeline(model.pt, video, out_dir) -> TimelineResult`.

The video is cut into windows (`window_seconds` long every `stride_seconds`, or one per GOP) and read
once, frame by frame (`cvfer.codec.iter_frames`): only the frames of the windows still open are kept, so
memory depends on the window length, not on the video's. Each window is framed exactly as `cvfer predict`
frames a clip of the same frames for the same checkpoint: a face-crop model's window is cropped with the
box `faces.track_face` gives for those frames (same defaults), any other model's with the largest centred
square; it is then encoded in the MIC format and read by the one-clip loader training and `cvfer predict`
use. A face-crop window in which no face is found is marked, not guessed.
Writes `<stem>_timeline.csv`, `.json` and `.png` (stacked class probabilities, argmax label band).
"""

from __future__ import annotations

import csv
import io
import itertools
import tempfile
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from cvfer import codec
from cvfer.data import faces
from cvfer.data.clip import load_clip, stack_input
from cvfer.errors import ConfigError, CompressedVideoError
from cvfer.eval.predict import Predictor, load_model
from cvfer.io import atomic_savefig, atomic_write_json, atomic_write_text, broken_link, check_output_folder

WINDOW_SECONDS = 1.0
STRIDE_SECONDS = 0.5
BATCH_WINDOWS = 8  # windows classified in one forward pass
MIN_WINDOW_FRAMES = 2  # an I frame and a P frame
OK, NO_FACE, TOO_SHORT = "ok", "no_face", "too_short"  # a row's status


@dataclass(frozen=True)
class Window:
    """Frames [start_frame, end_frame) of the video."""

    start_frame: int
    end_frame: int

    @property
    def num_frames(self) -> int:
        """Frames in the window."""
        return self.end_frame - self.start_frame


@dataclass(frozen=True)
class TimelineRow:
    """One window's result: times in seconds, and the expression when it was classified (`status` "ok").
    `face_searched` is False for a model that crops the centred square (no face is looked for)."""

    start: float
    end: float
    start_frame: int
    end_frame: int
    status: str
    label: str = ""
    probabilities: dict[str, float] = field(default_factory=dict)
    face_searched: bool = True

    @property
    def face(self) -> bool:
        """Whether the window was classified: a face was found, or (centred-square model) none was needed."""
        return self.status == OK

    @property
    def face_found(self) -> bool | None:
        """Whether a face was found in the window; None when none was looked for."""
        return self.face if self.face_searched else None

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for JSON (`face`: found, or null when not looked for)."""
        return {
            "start": self.start, "end": self.end, "start_frame": self.start_frame, "end_frame": self.end_frame,
            "face": self.face_found, "status": self.status, "label": self.label or None,
            "probabilities": self.probabilities or None,
        }


@dataclass
class TimelineResult:
    """What `predict_timeline` wrote and found; `timing` has the wall time and the throughput."""

    csv_path: Path
    json_path: Path
    png_path: Path
    rows: list[TimelineRow]
    classes: list[str]
    fps: float
    num_frames: int
    timing: dict[str, float]


def fixed_windows(fps: float, window_seconds: float, stride_seconds: float) -> Iterator[Window]:
    """Endless windows of `window_seconds` every `stride_seconds` (frame k is at time k / fps)."""
    length = max(MIN_WINDOW_FRAMES, round(window_seconds * fps))
    for index in itertools.count():
        start = round(index * stride_seconds * fps)
        yield Window(start, start + length)


def gop_windows(frame_types: str, max_frames: int) -> list[Window]:
    """One window per GOP (an I frame up to the next), a GOP longer than `max_frames` cut into pieces of it."""
    starts = sorted({0, *(index for index, letter in enumerate(frame_types) if letter in "Ii")})
    windows = []
    for start, end in zip(starts, [*starts[1:], len(frame_types)]):
        windows.extend(Window(piece, min(piece + max_frames, end)) for piece in range(start, end, max_frames))
    return windows


def windows_of(frames: Iterable[np.ndarray], windows: Iterable[Window]) -> Iterator[tuple[Window, list[np.ndarray]]]:
    """Each window (in start order) with its frames, reading `frames` once and keeping only the frames of
    the windows not yet returned. At the end the open window is returned cut to the video when it holds
    frames no earlier window did; windows starting after the video are not."""
    buffer: deque[tuple[int, np.ndarray]] = deque()
    pending = iter(windows)
    window = next(pending, None)
    covered = count = 0  # frames [0, covered) are in a returned window; `count` frames read
    for index, frame in enumerate(frames):
        if window is None:
            break
        count = index + 1
        if index < window.start_frame:
            continue
        buffer.append((index, frame))
        while window is not None and count >= window.end_frame:
            yield window, [kept for position, kept in buffer if position < window.end_frame]
            covered = window.end_frame
            window = next(pending, None)
            while buffer and (window is None or buffer[0][0] < window.start_frame):
                buffer.popleft()
    if window is not None and window.start_frame < count and count > covered:
        yield Window(window.start_frame, count), [kept for _, kept in buffer]


def _seconds(frame: int, fps: float) -> float:
    return round(frame / fps, 6)


class WindowFramer:
    """The box `cvfer predict` crops a clip of a window's frames with, for `predictor`'s checkpoint: the
    tracked face's box (`faces.track_face`, its defaults; None when no face is found) for a face-crop model,
    else the largest centred square.

    Windows come in start order. `track_face` tries every frame until it first finds a face, so the frames
    an earlier window found faceless that way (a run from its start) are skipped when they open the next
    window: the box is the same, and a faceless stretch is searched once, not once per window."""

    def __init__(self, predictor: Predictor):
        self.face_crop = predictor.face_crop
        self.faceless = (0, 0)  # frames [start, end) known to show no face in a whole-frame search

    def box(self, window: Window, frames: Sequence[np.ndarray]) -> faces.FaceBox | None:
        """The crop box of `window` (its `frames`)."""
        if not self.face_crop:
            return faces.center_box(*frames[0].shape[:2])
        start, end = self.faceless
        skipped = max(0, min(end, window.end_frame) - window.start_frame) if start <= window.start_frame else 0
        track = faces.track_face(frames[skipped:]) if skipped < len(frames) else None
        searched = len(frames) if track is None else skipped + track.detections[0][0]
        self.faceless = (window.start_frame, window.start_frame + searched)
        return None if track is None else track.clip_box


class _Classifier:
    """Crops, encodes and classifies windows in batches of `BATCH_WINDOWS`, as `cvfer predict` reads a clip."""

    def __init__(self, predictor: Predictor, fps: float, work_dir: Path):
        self.predictor = predictor
        self.framer = WindowFramer(predictor)
        self.fps = fps
        self.work_dir = work_dir
        self.waiting: list[tuple[Window, dict[str, np.ndarray]]] = []
        self.rows: list[TimelineRow] = []

    def add(self, window: Window, frames: list[np.ndarray]) -> None:
        if window.num_frames < MIN_WINDOW_FRAMES:
            self._row(window, TOO_SHORT)
        elif (box := self.framer.box(window, frames)) is None:
            self._row(window, NO_FACE)
        else:
            size = self.predictor.image_size
            clip = self.work_dir / "window.mp4"
            codec.write_video(clip, (faces.crop(frame, box, size) for frame in frames), fps=self.fps)
            self.waiting.append((window, load_clip(clip, self.predictor.spec, length=len(frames))))
            if len(self.waiting) >= BATCH_WINDOWS:
                self.flush()

    def _row(self, window: Window, status: str, probabilities: np.ndarray | None = None) -> None:
        classes = self.predictor.classes
        row = TimelineRow(
            _seconds(window.start_frame, self.fps), _seconds(window.end_frame, self.fps), window.start_frame,
            window.end_frame, status,
            "" if probabilities is None else classes[int(np.argmax(probabilities))],
            {} if probabilities is None else {name: float(value) for name, value in zip(classes, probabilities)},
            self.predictor.face_crop,
        )
        self.rows.append(row)

    def flush(self) -> None:
        """Classify the windows waiting."""
        if not self.waiting:
            return
        arrays = [item for _, item in self.waiting]
        batch = {key: stack_input(key, arrays) for key in self.predictor.inputs}
        for (window, _), probabilities in zip(self.waiting, self.predictor.forward(batch).numpy()):
            self._row(window, OK, probabilities)
        self.waiting = []

    def finish(self) -> list[TimelineRow]:
        self.flush()
        return sorted(self.rows, key=lambda row: (row.start_frame, row.end_frame))


def _check_options(video: Path, window_seconds: float, stride_seconds: float) -> None:
    if not video.is_file():
        reason = broken_link(video) or ("is a folder" if video.is_dir() else "file not found")
        raise CompressedVideoError(reason, video, "give one video file for --timeline")
    if not window_seconds > 0 or not stride_seconds > 0:
        raise ConfigError(
            f"--window and --stride must be positive seconds, got {window_seconds} and {stride_seconds}",
            fix=f"e.g. --window {WINDOW_SECONDS} --stride {STRIDE_SECONDS}",
        )


@dataclass(frozen=True)
class Agreement:
    """How a timeline agrees with known segments (each window judged by the segment holding its centre)."""

    windows: int  # classified windows whose centre lies in a segment of one of the model's classes
    correct: int  # ... labelled with that segment's expression
    face_checked: int  # windows searched for a face (face-crop model) whose centre lies in a segment
    face_correct: int  # ... with a face found exactly when the segment shows one
    segments: int  # segments of a model class holding at least one classified window's centre
    segments_correct: int  # ... whose windows' most frequent label is the segment's expression

    def as_dict(self) -> dict[str, float]:
        """Counts and the three rates (window accuracy, face agreement, segment accuracy)."""
        return {
            **{name: getattr(self, name) for name in self.__dataclass_fields__},
            "window_accuracy": self.correct / max(self.windows, 1),
            "face_agreement": self.face_correct / max(self.face_checked, 1),
            "segment_accuracy": self.segments_correct / max(self.segments, 1),
        }


def timeline_agreement(
    rows: Sequence[TimelineRow], ground_truth: Sequence[tuple[float, float, str]], classes: Sequence[str]
) -> Agreement:
    """Score `rows` against (start, end, expression) segments; `BLANK` segments should have no face."""
    from cvfer.data.synthetic.long_video import BLANK

    votes: dict[int, list[str]] = {}
    windows = correct = face_checked = face_correct = 0
    for row in rows:
        centre = (row.start + row.end) / 2
        found = [number for number, (start, end, _) in enumerate(ground_truth) if start <= centre < end]
        if not found:
            continue
        expression = ground_truth[found[0]][2]
        if row.face_searched:
            face_checked += 1
            face_correct += row.face == (expression != BLANK)
        if row.face and expression in classes:
            windows += 1
            correct += row.label == expression
            votes.setdefault(found[0], []).append(row.label)
    majority = {number: Counter(labels).most_common(1)[0][0] for number, labels in votes.items()}  # ties: first seen
    segments_correct = sum(label == ground_truth[number][2] for number, label in majority.items())
    return Agreement(windows, correct, face_checked, face_correct, len(majority), segments_correct)


def predict_timeline(
    model_path: str | Path | Predictor,
    video_path: str | Path,
    out_dir: str | Path,
    *,
    window_seconds: float = WINDOW_SECONDS,
    stride_seconds: float = STRIDE_SECONDS,
    per_gop: bool = False,
    ground_truth: Sequence[tuple[float, float, str]] | None = None,
    progress: bool = True,
) -> TimelineResult:
    """Classify `video_path` window by window with the model at `model_path` (a `model.pt`, or a loaded
    `Predictor`) and write `<stem>_timeline.csv`, `.json` and `.png` into `out_dir`.

    Windows are `window_seconds` long every `stride_seconds`, or with `per_gop` one per GOP (a GOP longer
    than `window_seconds` is cut into pieces of it, so memory stays bounded; the GOPs are found by a first,
    decode-only pass). `ground_truth` ((start, end, expression) segments) is drawn under the timeline.
    """
    video = Path(video_path)
    _check_options(video, window_seconds, stride_seconds)
    out = check_output_folder(out_dir, "--out")
    predictor = model_path if isinstance(model_path, Predictor) else load_model(model_path)
    started = time.perf_counter()
    fps = codec.read_header(video).fps or 25.0
    if per_gop:
        longest = max(MIN_WINDOW_FRAMES, round(window_seconds * fps))
        windows: Iterable[Window] = gop_windows(codec.probe(video).frame_types, longest)
    else:
        windows = fixed_windows(fps, window_seconds, stride_seconds)
    counter = _FrameCounter(codec.iter_frames(video))
    frames = tqdm(counter, desc=f"timeline {video.name}", unit="frame", disable=not progress)
    with tempfile.TemporaryDirectory(prefix="cvfer-timeline-") as work_dir:
        classifier = _Classifier(predictor, fps, Path(work_dir))
        for window, window_frames in windows_of(frames, windows):
            classifier.add(window, window_frames)
            window_frames.clear()  # let them go before the next window is read
        rows = classifier.finish()
    wall = time.perf_counter() - started
    video_seconds = counter.count / fps
    timing = {"wall_s": wall, "video_s": video_seconds, "video_s_per_wall_s": video_seconds / wall if wall else 0.0}
    stem = out / f"{video.stem}_timeline"
    result = TimelineResult(
        Path(f"{stem}.csv"), Path(f"{stem}.json"), Path(f"{stem}.png"), rows, predictor.classes, fps, counter.count, timing
    )
    write_timeline_csv(result.csv_path, rows, predictor.classes)
    document = {
        "video": str(video), "model": predictor.name, "classes": predictor.classes, "fps": fps,
        "num_frames": counter.count, "per_gop": per_gop, "window_s": window_seconds,
        "stride_s": None if per_gop else stride_seconds,
        "timing": timing, "rows": [row.as_dict() for row in rows],
    }
    atomic_write_json(result.json_path, document)
    plot_timeline(result.png_path, rows, predictor.classes, video_seconds, title=video.name, ground_truth=ground_truth)
    return result


class _FrameCounter:
    """Passes frames through and counts them."""

    def __init__(self, frames: Iterable[np.ndarray]):
        self.frames = frames
        self.count = 0

    def __iter__(self) -> Iterator[np.ndarray]:
        for frame in self.frames:
            self.count += 1
            yield frame


def write_timeline_csv(path: Path, rows: Sequence[TimelineRow], classes: Sequence[str]) -> None:
    """`start,end,start_frame,end_frame,face,status,label,p_<class>...` (`face` 1 or 0, empty when not looked
    for; probabilities empty for a window not classified)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = ["start", "end", "start_frame", "end_frame", "face", "status", "label"]
    writer.writerow([*header, *(f"p_{name}" for name in classes)])
    for row in rows:
        probabilities = [f"{row.probabilities[name]:.6f}" if row.probabilities else "" for name in classes]
        face = "" if row.face_found is None else int(row.face_found)
        facts = [row.start, row.end, row.start_frame, row.end_frame, face, row.status, row.label]
        writer.writerow([*facts, *probabilities])
    atomic_write_text(path, buffer.getvalue())


def plot_timeline(
    path: Path,
    rows: Sequence[TimelineRow],
    classes: Sequence[str],
    duration: float,
    *,
    title: str = "",
    ground_truth: Sequence[tuple[float, float, str]] | None = None,
) -> None:
    """Stacked class probabilities of each window, from its start to the next window's, the argmax label band
    under them (and the ground truth's, when given); windows without a face are hatched grey, not drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    colours = {name: plt.get_cmap("tab10")(index % 10) for index, name in enumerate(classes)}
    bands = 2 if ground_truth else 1
    figure, axes = plt.subplots(
        1 + bands, 1, figsize=(float(np.clip(duration / 20, 11, 30)), 3.2 + 0.5 * bands), sharex=True,
        gridspec_kw={"height_ratios": [6] + [1] * bands},
    )
    curve, label_band = axes[0], axes[1]
    # Each row owns the time from its start to the next row's start (the last: to its end).
    ends = [*(row.start for row in rows[1:]), rows[-1].end] if rows else []
    edges = [*(row.start for row in rows), *ends[-1:]]
    values = np.array([[row.probabilities.get(name, 0.0) for row in rows] for name in classes]).reshape(len(classes), -1)
    values = np.concatenate([values, values[:, -1:]], axis=1) if rows else values
    curve.stackplot(edges, values, colors=[colours[name] for name in classes], step="post", alpha=0.85)
    for row, end in zip(rows, ends):
        if row.face:
            label_band.axvspan(row.start, end, color=colours[row.label], linewidth=0)
        else:
            for axis in (curve, label_band):
                axis.axvspan(row.start, end, facecolor="0.85", hatch="//", edgecolor="0.6", linewidth=0)
    label_band.set_yticks([0.5], ["model"])
    if ground_truth:
        truth_band = axes[2]
        for start, end, expression in ground_truth:
            truth_band.axvspan(start, end, color=colours.get(expression, "white"), linewidth=0)
            truth_band.axvline(start, color="black", linewidth=0.4)  # two segments of one expression stay apart
            if end - start > 0.04 * duration:  # name the segment where the name fits
                truth_band.text((start + end) / 2, 0.5, expression, ha="center", va="center", fontsize=7)
        truth_band.set_yticks([0.5], ["truth"])
    curve.set_xlim(0, max(duration, ends[-1] if ends else 0.0, 1e-3))
    curve.set_ylim(0, 1)
    curve.set_ylabel("probability")
    curve.set_title(title)
    axes[-1].set_xlabel("time (s)")
    handles = [Patch(color=colours[name], label=name) for name in classes]
    handles.append(Patch(facecolor="0.85", hatch="//", edgecolor="0.6", label="no face"))
    curve.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    figure.tight_layout()
    atomic_savefig(path, figure, dpi=110)
    plt.close(figure)
