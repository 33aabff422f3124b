"""Every stage of `cvfer predict` from a raw H.264 video, for MIC and the CNN-LSTM (docs/results.md, "End to
end from a raw video").

Usage: taskset -c 0 .venv/bin/python benchmarks/bench_end_to_end.py [--mic RUN/fold_00/model.pt]
       [--stills data/sources/ckplus-pairs] [--split data/real/ckplus-pairs] [--repeats 5] [--agreement 12]
       [--out /tmp/cvfer-e2e]

Makes 2 s clips (60 frames at 30 fps, H.264 with B frames) of one real face, each at 640×480 and 1280×720
(the same scene: the 640×480 picture scaled by 1.5 and pillarboxed): skimage's astronaut drifting and
growing on grey, and CK+ neutral → peak morphs of the real-face set's stills (fold-0 test subjects) on
black. Each is predicted `--repeats` times in this process, the two models taking turns (warm: the detector
and models loaded), and the stages (`cvfer.eval.predict.STAGES`) of each model's fastest run are printed in ms,
with end-to-end frames per second; then the prepared 64×64 clip read directly, the MIC / CNN-LSTM ratio, the
CNN-LSTM trimmed to the frames it reads (no re-encode: a lower bound of its path) and MIC's ratio to that, each
model once more in a fresh `cvfer predict --json` process (cold: what one command costs), and how well the two
resolutions agree (crop box in 64-px units, label) over `--agreement` CK+ clips. MIC is `--mic` (a model.pt
trained on face crops, e.g. of the real-face set prepared with faces cropped) or, without it, random weights
(timings only; labels then mean nothing); the CNN-LSTM has random weights and reads 224×224 decoded frames
(its paper's setting).
Everything runs on one thread; pin the process to one core with taskset for the "one core" figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from cvfer.codec import iter_frames, write_video
from cvfer.data import faces
from cvfer.data.clip import stack_input
from cvfer.eval.predict import STAGES, Predictor, load_model
from cvfer.models import create_model
from cvfer.runs import save_inference_model

FPS, NUM_FRAMES = 30.0, 60
SIZES = ((480, 640), (720, 1280))
BIG_SCALE = 1.5  # 1280×720 = the 640×480 scene scaled by 1.5 (960×720), pillarboxed
DEFAULT_KEYS = ("CK+/disgust/S011_005_00000020", "CK+/surprise/S011_001_00000016")  # fold-0 test subjects
CLASSES = ["anger", "contempt", "disgust", "fear", "happiness", "sadness", "surprise"]


def enlarged(frame: np.ndarray, fill: int) -> np.ndarray:
    """The 640×480 `frame` as 1280×720: scaled by `BIG_SCALE` (area-true) and pillarboxed with `fill`."""
    scaled = cv2.resize(frame, (960, 720), interpolation=cv2.INTER_CUBIC)
    canvas = np.full((720, 1280, 3), fill, np.uint8)
    canvas[:, 160:1120] = scaled
    return canvas


def write_pair(frames: list[np.ndarray], fill: int, stem: Path) -> dict[tuple[int, int], Path]:
    """The 640×480 `frames` as H.264 at 640×480 and 1280×720: {(height, width): path}."""
    paths = {}
    for height, width in SIZES:
        sized = frames if width == 640 else [enlarged(frame, fill) for frame in frames]
        path = stem.with_name(f"{stem.name}_{width}x{height}.mp4")
        write_video(path, sized, fps=FPS, codec="libx264", quality=18, gop_size=250, max_b_frames=2)
        paths[(height, width)] = path
    return paths


def astronaut_frames() -> list[np.ndarray]:
    """The astronaut's head drifting right and down and growing by 10 % over the clip, on grey."""
    from skimage import data

    head = data.astronaut()[:300, 60:400]
    frames = []
    for index in range(NUM_FRAMES):
        scale = 1.0 + 0.1 * index / NUM_FRAMES
        moved = cv2.resize(head, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        canvas = np.full((480, 640, 3), 110, np.uint8)
        top, left = 40 + index // 2, 120 + index
        part = moved[: 480 - top, : 640 - left]
        canvas[top : top + part.shape[0], left : left + part.shape[1]] = part
        frames.append(canvas)
    return frames


def ckplus_frames(stills: Path, key: str) -> tuple[list[np.ndarray], str]:
    """(a CK+ neutral → peak morph of `key` over the clip, on black at 2.5× the still's size, its label).

    The head stands still, as in the real-face set's clips: a model trained on them answers "sadness" to
    the same morph drifting by half a pixel a frame (measured), whatever the crop."""
    from cvfer.data.datasets import pairs
    from cvfer.data.datasets.prepare import morphed_frames

    scan = pairs.scan(stills, morph_frames=NUM_FRAMES)
    clip = next(clip for clip in scan.clips if clip.key == key)
    frames = []
    for still in morphed_frames(clip):
        canvas = np.zeros((480, 640, 3), np.uint8)
        canvas[60:380, 140:460] = cv2.resize(still, (320, 320), interpolation=cv2.INTER_CUBIC)
        frames.append(canvas)
    return frames, clip.label


def random_predictor(name: str, image_size: int, folder: Path) -> Path:
    """A model.pt of `name` with random weights that crops faces to `image_size` (for timings)."""
    torch.manual_seed(0)
    cfg = {"num_classes": len(CLASSES), "image_size": image_size, "num_frames": 8}
    model = create_model(name, **cfg)
    data = {"image_size": image_size, "num_frames": 8, "inputs": list(model.test_inputs), "residual": "rgb",
            "accumulate": True, "face_crop": True}
    path = folder / f"{name}-{image_size}.pt"
    save_inference_model(path, name=name, cfg=cfg, classes=CLASSES, module=model.inference_module(), data=data)
    return path


def fastest(predictor: Predictor, clip: Path, repeats: int, cache_dir: Path | None = None):
    """The `repeats` predictions of `clip`, fastest (least disturbed by other processes) first."""
    runs = [predictor.predict(clip, cache_dir) for _ in range(repeats)]
    return sorted(runs, key=lambda prediction: prediction.timing["total_s"])


def cold(model: Path, clip: Path) -> tuple[float, float, dict[str, float]]:
    """(elapsed and CPU seconds of a whole `cvfer predict MODEL CLIP --json` process, its prediction's timing:
    elapsed seconds, as the command reports them)."""
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
    done = subprocess.run(
        [str(Path(sys.executable).with_name("cvfer")), "predict", str(model), str(clip), "--json", "--workers", "1"],
        capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    elapsed, after = time.monotonic() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return elapsed, cpu, json.loads(done.stdout)["predictions"][0]["timing"]


def stage_cells(timing: dict[str, float]) -> str:
    return " | ".join(f"{timing.get(stage, math.nan) * 1e3:.0f}" for stage in STAGES)


def box_in_chip_units(box: faces.FaceBox, height: int, reference: faces.FaceBox) -> tuple[float, float, float]:
    """`box` of the 1280×720 clip mapped back to 640×480 pixels, minus `reference`, in 64-px chip pixels
    (centre x, centre y, side)."""
    if height == 720:
        box = faces.FaceBox((box.center_x - 160 + 0.5) / BIG_SCALE - 0.5, (box.center_y + 0.5) / BIG_SCALE - 0.5,
                            box.side / BIG_SCALE, box.angle)
    unit = reference.side / 64
    return ((box.center_x - reference.center_x) / unit, (box.center_y - reference.center_y) / unit,
            (box.side - reference.side) / unit)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mic", help="a MIC model.pt trained on face crops (default: random weights)")
    parser.add_argument("--stills", default="data/sources/ckplus-pairs", help="the real-face set's stills (pairs layout)")
    parser.add_argument("--keys", default=",".join(DEFAULT_KEYS), help="CK+ clips timed (pairs keys)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--agreement", type=int, default=12, help="CK+ fold-0 test clips compared at both sizes")
    parser.add_argument("--split", default="data/real/ckplus-pairs", help="prepared set whose fold-0 test clips --agreement takes")
    parser.add_argument("--out", default="/tmp/cvfer-e2e", help="where the clips are written")
    parser.add_argument("--no-cold", action="store_true", help="skip the fresh-process runs")
    parser.add_argument(
        "--clock", choices=("cpu", "wall"), default="cpu",
        help="stages timed in this process's CPU seconds (what one dedicated core takes; robust on a shared "
        "machine) or elapsed seconds",
    )
    args = parser.parse_args()
    if args.clock == "cpu":  # the stage timers of cvfer.eval.predict read this clock
        time.perf_counter = time.process_time
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stills = Path(args.stills)

    clips = {"astronaut": write_pair(astronaut_frames(), 110, out / "astronaut")}
    labels = {"astronaut": "-"}
    for key in (k for k in args.keys.split(",") if k) if stills.is_dir() else ():
        frames, labels[key] = ckplus_frames(stills, key)
        clips[key] = write_pair(frames, 0, out / key.replace("/", "_"))

    models = {"mic": Path(args.mic) if args.mic else random_predictor("mic", 64, out),
              "cnn-lstm@224": random_predictor("cnn-lstm", 224, out)}
    predictors = {name: load_model(path) for name, path in models.items()}
    for predictor in predictors.values():
        predictor.face_crop = True

    print(f"stages in ms of {args.clock} time (fastest of {args.repeats} warm runs, one thread); fps = {NUM_FRAMES} "
          "frames / total")
    print(f"| model | clip | size | {' | '.join(STAGES)} | total | fps | label (p) | true |")
    print("|" + "---|" * (len(STAGES) + 7))
    fps: dict[tuple[str, str, int], float] = {}
    # The models take turns on each clip, so a burst of load from elsewhere on the machine hits both alike.
    runs: dict[tuple[str, str, tuple[int, int]], list] = {}
    for clip_name, paths in clips.items():
        for size, path in paths.items():
            for _ in range(args.repeats):
                for name, predictor in predictors.items():
                    runs.setdefault((name, clip_name, size), []).append(predictor.predict(path))
    for name, predictor in predictors.items():
        for clip_name, paths in clips.items():
            for (height, width) in paths:
                best = min(runs[name, clip_name, (height, width)], key=lambda prediction: prediction.timing["total_s"])
                total = best.timing["total_s"]
                fps[name, clip_name, height] = NUM_FRAMES / total
                label = f"{best.label} ({best.probabilities[best.label]:.2f})"
                print(f"| {name} | {clip_name} | {width}×{height} | {stage_cells(best.timing)} | {total * 1e3:.0f} | "
                      f"{NUM_FRAMES / total:.0f} | {label} | {labels[clip_name]} |")
        prepared_cache = out / f"cache-{name}"
        first = clips["astronaut"][SIZES[0]]
        predictor.predict(first, prepared_cache)
        prepared = next(prepared_cache.glob("*/clips/clip.mp4"))
        best = fastest(predictor, prepared, args.repeats)[0]
        print(f"| {name} | astronaut, prepared {predictor.image_size}×{predictor.image_size} MPEG-4 | read as is | "
              f"{stage_cells(best.timing)} | {best.timing['total_s'] * 1e3:.0f} | {NUM_FRAMES / best.timing['total_s']:.0f} | | |")

    print("\nMIC / CNN-LSTM@224 end-to-end fps (target >= 3):")
    for clip_name in clips:
        for height, width in SIZES:
            ratio = fps["mic", clip_name, height] / fps["cnn-lstm@224", clip_name, height]
            print(f"  {clip_name} {width}×{height}: {fps['mic', clip_name, height]:.0f} / "
                  f"{fps['cnn-lstm@224', clip_name, height]:.0f} = {ratio:.1f}×")
    trimmed_peer(predictors["cnn-lstm@224"], clips, fps, args.repeats)

    if not args.no_cold:
        cold_table(models, clips["astronaut"])
    if args.agreement and stills.is_dir():
        agreement(predictors["mic"], stills, Path(args.split), out, args.agreement, bool(args.mic))


def trimmed_peer(predictor: Predictor, clips: dict[str, dict[tuple[int, int], Path]], fps: dict, repeats: int) -> None:
    """The CNN-LSTM's least path, a lower bound a reviewer may ask for: decode and track as `predict` does, then
    crop only the frames it reads and feed them straight to the network (no 224×224 MPEG-4 round trip, which
    `predict` keeps so that test inputs are made as the training clips were), and MIC's ratio to it."""
    print(f"\nCNN-LSTM@224 trimmed to the {predictor.spec.num_frames} frames it reads (decode + detect + crop those "
          "frames + forward; no re-encode), ms, fastest run:")
    print("| clip | size | decode + detect | crop | forward | total | fps | MIC / trimmed CNN-LSTM |\n|---|---|---|---|---|---|---|---|")
    for clip_name, paths in clips.items():
        for (height, width), path in paths.items():
            runs = []
            for _ in range(repeats):
                start = time.perf_counter()
                frames = list(iter_frames(path))
                track = faces.track_face(iter(frames))
                tracked = time.perf_counter()
                picks = np.linspace(0, len(frames) - 1, predictor.spec.num_frames).round().astype(int)
                chips = np.stack([faces.crop(frames[index], track.clip_box, predictor.image_size) for index in picks])
                cropped = time.perf_counter()
                predictor.forward({"frames": stack_input("frames", [{"frames": chips}])})
                runs.append((tracked - start, cropped - tracked, time.perf_counter() - cropped))
            first, crop, forward = min(runs, key=sum)
            total = first + crop + forward
            ratio = fps["mic", clip_name, height] / (NUM_FRAMES / total)
            print(f"| {clip_name} | {width}×{height} | {first * 1e3:.0f} | {crop * 1e3:.0f} | {forward * 1e3:.0f} | "
                  f"{total * 1e3:.0f} | {NUM_FRAMES / total:.0f} | {ratio:.1f}× |")


def cold_table(models: dict[str, Path], clips: dict[tuple[int, int], Path]) -> None:
    """Each model on each clip in a fresh `cvfer predict` process."""
    print("\ncold: one `cvfer predict MODEL CLIP --json` process (its JSON timing is elapsed time; the process's")
    print("CPU seconds include importing torch and loading the model)")
    print("| model | size | process s (elapsed) | process CPU s | prepare_s + forward_s (elapsed) | fps of them |")
    print("|---|---|---|---|---|---|")
    for name, path in models.items():
        for (height, width), clip in clips.items():
            elapsed, cpu, timing = cold(path, clip)
            print(f"| {name} | {width}×{height} | {elapsed:.2f} | {cpu:.2f} | {timing['total_s']:.2f} | "
                  f"{NUM_FRAMES / timing['total_s']:.0f} |")


def agreement(predictor: Predictor, stills: Path, split_root: Path, out: Path, count: int, trained: bool) -> None:
    """Crop box and label of the first `count` fold-0 test clips of `split_root` at 640×480 and at 1280×720."""
    from cvfer.data.splits import read_splits

    prefix, suffix = "clips/", ".mp4"
    keys = [path[len(prefix) : -len(suffix)] for path in read_splits(split_root).folds[0].test][:count]
    rows, same, worst, changes = [], 0, 0.0, []
    for key in keys:
        frames, label = ckplus_frames(stills, key)
        paths = write_pair(frames, 0, out / ("agree_" + key.replace("/", "_")))
        boxes = {size: faces.track_face(iter_frames(path)).clip_box for size, path in paths.items()}
        offset = box_in_chip_units(boxes[SIZES[1]], 720, boxes[SIZES[0]])
        small, big = (predictor.predict(paths[size]) for size in SIZES)
        same += small.label == big.label
        worst = max(worst, max(map(abs, offset)))
        changes.append(max(abs(small.probabilities[name] - big.probabilities[name]) for name in small.probabilities))
        rows.append(f"| {key} | {label} | {offset[0]:+.2f} {offset[1]:+.2f} {offset[2]:+.2f} | "
                    f"{small.label} ({small.probabilities[small.label]:.2f}) | {big.label} ({big.probabilities[big.label]:.2f}) |")
    print(f"\n640×480 vs 1280×720 ({'trained MIC' if trained else 'random-weight MIC: labels mean nothing'})")
    print("| clip | true | box 1280 − box 640 (x y side, 64-px units) | label 640×480 | label 1280×720 |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    print(f"same label: {same}/{len(keys)}; largest box difference {worst:.2f} px of the 64-px crop; "
          f"largest class-probability change: median {statistics.median(changes):.2f}, max {max(changes):.2f}")


if __name__ == "__main__":
    main()
