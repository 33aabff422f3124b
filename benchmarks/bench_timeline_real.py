"""`predict_timeline` on REAL faces with known boundaries: one fold's CK+ test stills made into a long video.

Each test clip of the fold (its neutral and peak stills, paired as `cvfer prepare`'s `pairs` source pairs
them) becomes one segment: the neutral face, the landmark morph to the peak (`cvfer.data.datasets.prepare.
morphed_frames`, as the training clips were made), the peak held, the morph back and the neutral face
again. The 128 px grey crops are enlarged to `--face-size` and pasted on a plain grey 1280×720 frame (fixed,
or drifting slowly with `--drift`); `--blanks` segments without a face are spread between them. The video
(MPEG-4, 25 fps, an I frame every 2 s) and its ground truth are written to OUT (built in a child process,
so its memory is not the timeline's; reused when already there), then the timeline of the model runs on it
in this process, single-threaded, and the agreement, throughput and peak RSS are printed as a table. The
timeline's CSV, JSON and PNG go to `--results`.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_timeline_real.py runs/e2e-face/mic/model.pt \\
        data/sources/ckplus-pairs data/real/ckplus-pairs-face/splits.json data/timeline_real \\
        --results runs/timeline_real
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing
import resource
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

FPS = 25.0
FRAME_SIZE = (720, 1280)  # height, width
BACKGROUND = 110  # grey level of the plain background
GOP_SECONDS = 2.0
QUALITY = 4  # MPEG-4 q, as the synthetic long video
DRIFT_PERIOD_S = (23.0, 31.0)  # periods of the x and y drift (slow: under 2π·amplitude/23 px a second)
# Frames of each part of a segment: neutral, rise (the morph, as long as a training clip), apex held,
# fall (the rise reversed), neutral again.
PHASES = ("neutral_in", "rise", "hold", "fall", "neutral_out")
PHASE_FRAMES = {"neutral_in": 20, "rise": 16, "hold": 40, "fall": 16, "neutral_out": 20}


def fold_test_clips(sources: Path, splits: Path, fold: int) -> list:
    """The `pairs` source clips (neutral + peak) of the fold's test subjects, in the splits' order."""
    from cvfer.data.datasets import pairs
    from cvfer.data.splits import read_splits

    folder = splits.parent if splits.suffix == ".json" else splits
    wanted = [str(Path(path).with_suffix("")).removeprefix("clips/") for path in read_splits(folder).folds[fold].test]
    found = {clip.key: clip for clip in pairs.scan(sources).clips}
    missing = [key for key in wanted if key not in found]
    if missing:
        raise SystemExit(f"{sources}: no source stills for {len(missing)} test clips, e.g. {missing[0]}")
    return [found[key] for key in wanted]


def segment_frames(clip, face_size: int) -> list[np.ndarray]:
    """One segment's face images (`face_size` px, RGB): neutral, rise, apex held, fall, neutral."""
    from cvfer.data.datasets.prepare import morphed_frames

    rise = morphed_frames(dataclasses.replace(clip, morph_frames=PHASE_FRAMES["rise"]))
    enlarged = [cv2.resize(frame, (face_size, face_size), interpolation=cv2.INTER_CUBIC) for frame in rise]
    neutral, peak = enlarged[0], enlarged[-1]
    return [
        *[neutral] * PHASE_FRAMES["neutral_in"], *enlarged, *[peak] * PHASE_FRAMES["hold"],
        *enlarged[::-1], *[neutral] * PHASE_FRAMES["neutral_out"],
    ]


def build_video(
    video: Path, sources: Path, splits: Path, fold: int, face_size: int, drift: float, blanks: int, blank_s: float,
    seed: int,
) -> None:
    """Write `video` and `<video>_truth.json` (segments and phases, seconds)."""
    from tqdm import tqdm

    from cvfer.codec import write_video
    from cvfer.data.synthetic.long_video import BLANK
    from cvfer.io import atomic_write_json

    torch.set_num_threads(1)
    clips = fold_test_clips(sources, splits, fold)
    order = np.random.default_rng(seed).permutation(len(clips)).tolist()
    plan: list[object] = [clips[index] for index in order]
    for number in range(blanks, 0, -1):  # spread evenly between the clips
        plan.insert(round(number * len(clips) / (blanks + 1)), BLANK)
    height, width = FRAME_SIZE
    top, left = (height - face_size) // 2, (width - face_size) // 2 - width // 8  # a little left of centre
    blank_frames = round(blank_s * FPS)
    segments: list[tuple[float, float, str]] = []
    phases: list[tuple[float, float, str, str]] = []

    def frames() -> Iterator[np.ndarray]:
        index = 0
        for item in plan:
            start = index
            if item == BLANK:
                faces = [None] * blank_frames
            else:
                faces = segment_frames(item, face_size)
                bound = start
                for phase in PHASES:
                    phases.append((bound / FPS, (bound + PHASE_FRAMES[phase]) / FPS, item.label, phase))
                    bound += PHASE_FRAMES[phase]
            for face in faces:
                frame = np.full((height, width, 3), BACKGROUND, np.uint8)
                if face is not None:
                    seconds = index / FPS
                    dx = round(drift * math.sin(2 * math.pi * seconds / DRIFT_PERIOD_S[0]))
                    dy = round(drift / 2 * math.sin(2 * math.pi * seconds / DRIFT_PERIOD_S[1]))
                    frame[top + dy : top + dy + face_size, left + dx : left + dx + face_size] = face
                index += 1
                yield frame
            segments.append((start / FPS, index / FPS, BLANK if item == BLANK else item.label))

    total = sum(blank_frames if item == BLANK else sum(PHASE_FRAMES.values()) for item in plan)
    bar = tqdm(frames(), total=total, desc=f"video {video.name}", unit="frame")
    write_video(video, bar, fps=FPS, quality=QUALITY, gop_size=round(GOP_SECONDS * FPS))
    truth = {"segments": segments, "phases": phases, "clips": [getattr(item, "key", BLANK) for item in plan]}
    atomic_write_json(truth_path(video), truth)


def truth_path(video: Path) -> Path:
    """Where the ground truth of `video` is written."""
    return video.with_name(f"{video.stem}_truth.json")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def face_rates(rows: Sequence, segments: Sequence[tuple[float, float, str]]) -> dict[str, tuple[int, int]]:
    """(right, checked): a face found in windows centred in a face segment ("face"), none in windows centred
    in a blank ("blank") and in windows wholly inside one ("blank_whole")."""
    from cvfer.data.synthetic.long_video import BLANK

    counts = {"face": [0, 0], "blank": [0, 0], "blank_whole": [0, 0]}
    for row in rows:
        centre = (row.start + row.end) / 2
        for start, end, label in segments:
            if not start <= centre < end:
                continue
            whole = start <= row.start and row.end <= end
            kinds = ["face"] if label != BLANK else ["blank", "blank_whole"] if whole else ["blank"]
            for kind in kinds:
                counts[kind][1] += 1
                counts[kind][0] += row.face if kind == "face" else not row.face
            break
    return {kind: (right, checked) for kind, (right, checked) in counts.items()}


def soft_votes(rows: Sequence, segments: Sequence[tuple[float, float, str]], classes: Sequence[str]) -> tuple[int, int]:
    """(right, segments): a segment labelled with the class of the largest probability summed over its windows
    (those with a face whose centre lies in it)."""
    right = total = 0
    for start, end, label in segments:
        if label not in classes:
            continue
        inside = [row for row in rows if row.face and start <= (row.start + row.end) / 2 < end]
        if inside:
            summed = {name: sum(row.probabilities[name] for row in inside) for name in classes}
            total += 1
            right += max(summed, key=summed.get) == label
    return right, total


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="a face-crop model.pt trained on the fold's training clips")
    parser.add_argument("sources", type=Path, help="the pairs source root (CK+/neutral, CK+/<expression>)")
    parser.add_argument("splits", type=Path, help="splits.json of the prepared set the model was trained on")
    parser.add_argument("out", type=Path, help="folder for the video and its ground truth (git-ignored data)")
    parser.add_argument("--results", type=Path, default=Path("runs/timeline_real"), help="timeline CSV/JSON/PNG")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--face-size", type=int, default=256, help="side of the pasted face crop, px")
    parser.add_argument("--drift", type=float, default=0.0, help="amplitude of the slow drift, px (0: fixed)")
    parser.add_argument("--blanks", type=int, default=2, help="segments without a face")
    parser.add_argument("--blank-seconds", type=float, default=2.0)
    parser.add_argument("--window", type=float, default=1.0)
    parser.add_argument("--stride", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0, help="order of the clips")
    args = parser.parse_args(argv)

    from cvfer.eval.predict import load_model
    from cvfer.eval.timeline import predict_timeline, timeline_agreement
    from cvfer.io import atomic_write_json

    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    video = args.out / f"ckplus_fold{args.fold}_face{args.face_size}_drift{args.drift:g}_seed{args.seed}.mp4"
    if not (video.is_file() and truth_path(video).is_file()):
        built = time.perf_counter()
        context = multiprocessing.get_context("spawn")
        child = context.Process(
            target=build_video,
            args=(video, args.sources, args.splits, args.fold, args.face_size, args.drift, args.blanks,
                  args.blank_seconds, args.seed),
        )
        child.start()
        child.join()
        if child.exitcode:
            raise SystemExit(f"building {video} failed (exit code {child.exitcode})")
        print(f"built {video} in {time.perf_counter() - built:.0f} s")
    truth = json.loads(truth_path(video).read_text())
    segments = [tuple(segment) for segment in truth["segments"]]
    phases = truth["phases"]

    predictor = load_model(args.model)
    rss_before = _rss_mb()
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    result = predict_timeline(
        predictor, video, args.results, window_seconds=args.window, stride_seconds=args.stride, ground_truth=segments
    )
    cpu, wall = time.process_time() - cpu_start, time.perf_counter() - wall_start
    rss_peak = _rss_mb()

    classes = predictor.classes
    overall = timeline_agreement(result.rows, segments, classes)
    by_phase = {
        phase: timeline_agreement(result.rows, [(s, e, label) for s, e, label, p in phases if p == phase], classes)
        for phase in PHASES
    }
    faces_seen = face_rates(result.rows, segments)
    soft = soft_votes(result.rows, segments, classes)
    video_s = result.timing["video_s"]
    face_segments = [segment for segment in segments if segment[2] in classes]

    def rate(correct: int, total: int) -> str:
        return f"{100 * correct / total:.1f} % ({correct} of {total})" if total else "–"

    lines = [
        f"video: {video.name}, {video_s:.1f} s, {result.num_frames} frames, {len(face_segments)} face segments "
        f"(fold {args.fold} test clips), {args.blanks} blank; windows {args.window:g} s every {args.stride:g} s: "
        f"{len(result.rows)}; model {args.model} (face_crop {predictor.face_crop}); chance {100 / len(classes):.1f} %",
        "",
        "| measure | value |",
        "|---|---|",
        f"| face found, windows centred in a face segment | {rate(*faces_seen['face'])} |",
        f"| no face found, windows centred in a blank | {rate(*faces_seen['blank'])} |",
        f"| no face found, windows wholly inside a blank | {rate(*faces_seen['blank_whole'])} |",
        f"| window label = segment label, all windows | {rate(overall.correct, overall.windows)} |",
    ]
    lines += [
        f"| window label = segment label, centre in {phase} | {rate(scores.correct, scores.windows)} |"
        for phase, scores in by_phase.items()
    ]
    lines += [
        f"| majority label of a segment = its label | {rate(overall.segments_correct, overall.segments)} |",
        f"| summed probabilities of a segment's windows: top = its label | {rate(*soft)} |",
        f"| wall s / CPU s (timeline only) | {wall:.1f} / {cpu:.1f} |",
        f"| video s per wall s / per CPU s | {video_s / wall:.2f} / {video_s / cpu:.2f} |",
        f"| peak RSS, MB (after loading the model → peak) | {rss_before:.0f} → {rss_peak:.0f} |",
    ]
    print("\n".join(lines))
    summary = {
        "video": str(video), "model": str(args.model), "fold": args.fold, "face_size": args.face_size,
        "drift": args.drift, "window": args.window, "stride": args.stride, "rows": len(result.rows),
        "video_s": video_s, "wall_s": wall, "cpu_s": cpu, "rss_after_model_mb": rss_before, "peak_rss_mb": rss_peak,
        "face_found": faces_seen, "soft_vote": soft, "overall": overall.as_dict(),
        "by_phase": {phase: scores.as_dict() for phase, scores in by_phase.items()},
        "csv": str(result.csv_path), "png": str(result.png_path),
    }
    summary_path = args.results / f"{video.stem}_summary.json"
    atomic_write_json(summary_path, summary)
    print(f"\nwrote {result.csv_path}, {result.png_path.name} and {summary_path.name}")


if __name__ == "__main__":
    main()
