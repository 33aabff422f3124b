"""Native motion vectors and residuals vs re-encoding, for a face in a raw MPEG-4 / H.264 video (docs/results.md,
"End to end from a raw video" → "Native motion vectors or re-encoding").

Usage: taskset -c 0 .venv/bin/python benchmarks/bench_native_crop.py [--runs runs/real-compare/mic]
       [--split data/real/ckplus-pairs] [--stills data/sources/ckplus-pairs] [--work data/bench-native]
       [--limit N] [--h264] [--json rows.json]

For every test clip of every fold (each fold's `fold_XX/model.pt` on its own test subjects of `splits.json`,
327 clips in all), the clip's 16 morphed frames are re-made at the stills' native 128×128 (as `cvfer prepare`
made them: `pairs.scan` + `prepare.morphed_frames`), the face is upscaled to 256×256 and pasted at a fixed,
16-aligned place of 640×480 grey frames, and that is encoded as one-GOP MPEG-4 Part 2 (`write_video`, the MIC
format; with `--h264` also as H.264) under `--work` (kept, so a second run skips it). The known box isolates
the codec from face detection. Then, one thread:

- path 0: the prepared 64×64 clip of the set, as trained on;
- path A (what `cvfer predict` does): decode, `faces.crop` the box to 64×64, re-encode with `write_video`,
  `load_clip`;
- path B (native): `read_compressed` on the 640×480 clip itself, with the checkpoint's settings; the box is
  cut out of the I frame, the vector field and the residuals and area-averaged 4×4 down to 64×64 (vectors
  also divided by 4), rounded to the loader's dtypes; accumulated fields are relative to the I frame, so
  a crop of them is one too;
- path B2: as B, but the residuals derived again at 64×64 from the reduced native vectors (the frames rebuilt
  from the native I frame, vectors and residuals, reduced, minus the reduced I frame warped by the reduced
  vectors), so the reduced inputs keep the reader's `warp + residual == frame` identity;
- path C: no vectors and no re-encode: the I frame and the sampled P frames decoded, cropped as in A, and
  residuals = frame − I frame (what A's 64×64 encoder nearly always gives: it keeps most vectors at zero);
- with `--h264`, B and B2 on the H.264 source (B264, B2-264).

All go through the same `stack_input` and model. Printed: WAR and UAR of each path, McNemar's exact test of
each path against A, the mean |difference| of the inputs of each path vs A (and A vs 0) in model units, the
CPU seconds per clip of each path (`time.process_time`, forward pass excluded), the mean |residual| and the share
of pixels with a non-zero vector of each path's inputs.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from cvfer.codec import count_frames, iter_frames, read_compressed, read_frames, warp, write_video
from cvfer.codec.reader import sample_p_frames
from cvfer.data import faces
from cvfer.data.clip import COMPRESSED_KEYS, ClipSpec, load_clip, stack_input
from cvfer.data.datasets import pairs
from cvfer.data.datasets.prepare import morphed_frames
from cvfer.eval.predict import Predictor, load_model

FRAME_HEIGHT, FRAME_WIDTH = 480, 640
FACE_SIDE = 256  # the 128×128 still upscaled ×2
FACE_X, FACE_Y = 192, 112  # top-left of the face, multiples of 16 (macroblock-aligned)
GREY = 128
SOURCE_CODECS = {"mpeg4": ".mp4", "libx264": ".h264.mp4"}


def scene(face: np.ndarray) -> np.ndarray:
    """The 128×128 RGB `face` upscaled to `FACE_SIDE` and pasted on a 640×480 grey frame."""
    canvas = np.full((FRAME_HEIGHT, FRAME_WIDTH, 3), GREY, np.uint8)
    canvas[FACE_Y:FACE_Y + FACE_SIDE, FACE_X:FACE_X + FACE_SIDE] = cv2.resize(
        face, (FACE_SIDE, FACE_SIDE), interpolation=cv2.INTER_CUBIC
    )
    return canvas


def face_box(size: int) -> faces.FaceBox:
    """The box whose `size`×`size` chip (`faces.crop`) covers exactly the pasted face: `crop` puts the box's
    edges on the centres of the chip's outer pixels, so its side is `FACE_SIDE`·(size − 1)/size, centred on
    the face (pixel centres at whole coordinates). Path B's 4×4 block means then sample the same pixels."""
    return faces.FaceBox(FACE_X + (FACE_SIDE - 1) / 2, FACE_Y + (FACE_SIDE - 1) / 2, FACE_SIDE * (size - 1) / size)


def make_sources(keys: list[str], stills: Path, work: Path, codecs: list[str]) -> dict[str, dict[str, Path]]:
    """{key: {codec: 640×480 clip}} for the test clips, made once under `work`."""
    clips = {clip.key: clip for clip in pairs.scan(stills).clips}
    made: dict[str, dict[str, Path]] = {}
    for key in tqdm(keys, desc="sources", unit="clip"):
        paths = {codec: work / f"{key}{SOURCE_CODECS[codec]}" for codec in codecs}
        missing = [codec for codec, path in paths.items() if not path.is_file()]
        if missing:
            frames = [scene(frame) for frame in morphed_frames(clips[key])]
            for codec in missing:
                paths[codec].parent.mkdir(parents=True, exist_ok=True)
                write_video(paths[codec], frames, fps=pairs.FPS, codec=codec)
        made[key] = paths
    return made


def reencoded(source: Path, spec: ClipSpec, size: int, scratch: Path) -> dict[str, np.ndarray]:
    """Path A: decode `source`, crop the box to `size`, re-encode in the MIC format, read as training does."""
    box = face_box(size)
    write_video(scratch, (faces.crop(frame, box, size) for frame in iter_frames(source)), fps=pairs.FPS)
    return load_clip(scratch, spec)


def _pooled(array: np.ndarray, factor: int, axes: tuple[int, int]) -> np.ndarray:
    """Mean over `factor`×`factor` blocks of the two `axes` (height, width) of `array`."""
    shape = list(array.shape)
    rows, cols = axes
    shape[cols:cols + 1] = [shape[cols] // factor, factor]
    shape[rows:rows + 1] = [shape[rows] // factor, factor]
    return array.reshape(shape).mean(axis=(rows + 1, cols + 2), dtype=np.float64)


def native(source: Path, spec: ClipSpec, size: int, rederive: bool = False) -> dict[str, np.ndarray]:
    """Path B: the compressed inputs of `source` itself, the box cut out and area-averaged down to `size`.

    `rederive` (path B2): the residuals are instead derived again at `size` from the native vectors, so that
    `warp(iframe, vectors) + residuals` rebuilds the reduced frames as the reader's identity says: each frame,
    rebuilt at full size from the native I frame, vectors and residuals (exact), is cut and reduced like the
    I frame, and the reduced I frame warped by the reduced vectors is subtracted (accumulated mode only)."""
    if rederive and not spec.accumulate:
        raise ValueError("rederive needs accumulated vectors and residuals (relative to the I frame)")
    factor = FACE_SIDE // size
    video = read_compressed(source, num_frames=spec.num_frames, residual="rgb", accumulate=spec.accumulate)
    rows, cols = slice(FACE_Y, FACE_Y + FACE_SIDE), slice(FACE_X, FACE_X + FACE_SIDE)
    iframe = np.rint(_pooled(video.iframe[rows, cols], factor, (0, 1))).astype(np.uint8)
    vectors = np.rint(_pooled(video.motion_vectors[:, :, rows, cols], factor, (2, 3)) / factor).astype(np.int16)
    if rederive:
        rebuilt = [(warp(video.iframe, field).astype(np.int16) + residual)[rows, cols]
                   for field, residual in zip(video.motion_vectors, video.residuals)]
        frames = np.rint(_pooled(np.stack(rebuilt), factor, (1, 2))).astype(np.int16)
        residuals = np.stack([frame - warp(iframe, field) for frame, field in zip(frames, vectors)])
    else:
        residuals = np.rint(_pooled(video.residuals[:, rows, cols], factor, (1, 2))).astype(np.int16)
    return {"iframe": iframe, "residuals": residuals.astype(np.int16), "motion_vectors": vectors}


def frame_differences(source: Path, spec: ClipSpec, size: int) -> dict[str, np.ndarray]:
    """Path C (no codec at 64×64, no vectors): the I frame and the P frames `read_compressed` would return,
    decoded and cropped like path A; residuals = cropped frame − cropped I frame, vectors zero (what
    accumulated residuals are where the encoder keeps every vector at zero)."""
    if not spec.accumulate:
        raise ValueError("frame differences stand for accumulated residuals (relative to the I frame) only")
    indices = [0, *(1 + sample_p_frames(count_frames(source) - 1, spec.num_frames)).tolist()]
    box = face_box(size)
    iframe, *frames = (faces.crop(frame, box, size) for frame in read_frames(source, indices=indices))
    residuals = np.stack(frames).astype(np.int16) - iframe.astype(np.int16)
    vectors = np.zeros((spec.num_frames, 2, size, size), np.int16)
    return {"iframe": iframe, "residuals": residuals, "motion_vectors": vectors}


def mcnemar(first: np.ndarray, second: np.ndarray) -> tuple[int, int, float]:
    """(only `first` right, only `second` right, exact two-sided McNemar p) of two paired correctness vectors."""
    only_first = int(np.sum(first & ~second))
    only_second = int(np.sum(~first & second))
    discordant = only_first + only_second
    tail = sum(math.comb(discordant, k) for k in range(min(only_first, only_second) + 1)) / 2**discordant
    return only_first, only_second, min(1.0, 2 * tail)


def uar(correct: np.ndarray, labels: np.ndarray) -> float:
    """Mean recall over the classes present."""
    return float(np.mean([correct[labels == label].mean() for label in np.unique(labels)]))


def scaled(arrays: dict[str, np.ndarray], key: str) -> torch.Tensor:
    """`arrays[key]` as the model sees it (one clip, `stack_input` units)."""
    return stack_input(key, [arrays])[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=Path("runs/real-compare/mic"), help="folder of fold_XX/model.pt")
    parser.add_argument("--split", type=Path, default=Path("data/real/ckplus-pairs"), help="prepared real-face set")
    parser.add_argument("--stills", type=Path, default=Path("data/sources/ckplus-pairs"), help="its source stills")
    parser.add_argument("--work", type=Path, default=Path("data/bench-native"), help="where the 640×480 clips go")
    parser.add_argument("--limit", type=int, default=None, help="test clips per fold (default: all)")
    parser.add_argument("--h264", action="store_true", help="also paths B and B2 on an H.264 source")
    parser.add_argument("--json", type=Path, default=None, help="write the per-clip results here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)

    folds = json.loads((args.split / "splits.json").read_text())["folds"]
    tests = [fold["test"][: args.limit] for fold in folds]
    keys = [path.removeprefix("clips/").removesuffix(".mp4") for test in tests for path in test]
    codecs = ["mpeg4", "libx264"] if args.h264 else ["mpeg4"]
    sources = make_sources(keys, args.stills, args.work, codecs)
    paths = ["0", "A", "B", "B2", "C"] + (["B264", "B2-264"] if args.h264 else [])
    runners = {
        "A": lambda key, spec, size: reencoded(sources[key]["mpeg4"], spec, size, args.work / "reencoded.mp4"),
        "B": lambda key, spec, size: native(sources[key]["mpeg4"], spec, size),
        "B2": lambda key, spec, size: native(sources[key]["mpeg4"], spec, size, rederive=True),
        "C": lambda key, spec, size: frame_differences(sources[key]["mpeg4"], spec, size),
        "B264": lambda key, spec, size: native(sources[key]["libx264"], spec, size),
        "B2-264": lambda key, spec, size: native(sources[key]["libx264"], spec, size, rederive=True),
    }
    compared = [(path, "A") for path in paths[2:]] + [("A", "0")]
    cpu = dict.fromkeys(paths[1:], 0.0)
    differences: dict[tuple[str, str], dict[str, list[float]]] = {pair: {} for pair in compared}
    rows: list[dict] = []
    progress = tqdm(total=len(keys), desc="clips", unit="clip")
    for index, test in enumerate(tests):
        predictor: Predictor = load_model(args.runs / f"fold_{index:02d}" / "model.pt")
        # every compressed input is read (and compared), whichever of them the model takes
        spec = ClipSpec(COMPRESSED_KEYS, predictor.spec.num_frames, predictor.spec.accumulate)
        size = predictor.image_size
        for clip in test:
            key = clip.removeprefix("clips/").removesuffix(".mp4")
            inputs = {"0": load_clip(args.split / clip, spec)}
            for path in paths[1:]:
                start = time.process_time()
                inputs[path] = runners[path](key, spec, size)
                cpu[path] += time.process_time() - start
            row = {"key": key, "fold": index, "label": predictor.classes.index(key.split("/")[1])}
            for path in paths:
                batch = {name: scaled(inputs[path], name)[None] for name in predictor.inputs}
                row[path] = int(predictor.forward(batch)[0].argmax())
            for pair in compared:
                for name in COMPRESSED_KEYS:
                    gap = (scaled(inputs[pair[0]], name) - scaled(inputs[pair[1]], name)).abs().mean()
                    differences[pair].setdefault(name, []).append(float(gap))
            for path in paths:
                row[f"{path}_residual"] = float(np.abs(inputs[path]["residuals"]).mean())
                row[f"{path}_moving"] = float(np.any(inputs[path]["motion_vectors"] != 0, axis=1).mean())
            rows.append(row)
            progress.update()
    progress.close()
    report(rows, paths, cpu, differences, predictor)
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1))


def report(rows: list[dict], paths: list[str], cpu: dict[str, float], differences: dict, predictor: Predictor) -> None:
    """Print the accuracy, McNemar, input-difference and CPU-time tables."""
    labels = np.array([row["label"] for row in rows])
    correct = {path: np.array([row[path] for row in rows]) == labels for path in paths}
    print(f"\n{len(rows)} clips; model inputs {list(predictor.inputs)}, {predictor.spec.num_frames} P frames, "
          f"accumulate={predictor.spec.accumulate}\n")
    print("| path | WAR | UAR | CPU s / clip (prepare only) |\n|---|---|---|---|")
    for path in paths:
        seconds = f"{cpu[path] / len(rows):.3f}" if path in cpu else "—"
        print(f"| {path} | {correct[path].mean():.3f} | {uar(correct[path], labels):.3f} | {seconds} |")
    print("\n| path | mean abs residual (RGB levels) | pixels with a non-zero vector |\n|---|---|---|")
    for path in paths:
        residual = np.mean([row[f"{path}_residual"] for row in rows])
        moving = np.mean([row[f"{path}_moving"] for row in rows])
        print(f"| {path} | {residual:.2f} | {moving:.3f} |")
    print("\n| pair | only first right | only second right | McNemar exact p | same label |\n|---|---|---|---|---|")
    for first, second in [(path, "A") for path in paths if path != "A"]:
        only_first, only_second, p_value = mcnemar(correct[first], correct[second])
        same = np.mean([row[first] == row[second] for row in rows])
        print(f"| {first} vs {second} | {only_first} | {only_second} | {p_value:.3f} | {same:.3f} |")
    print("\nmean |difference| of the inputs in model units (I frame and residuals /255, vectors px/16 at 64×64)\n")
    print("| pair | " + " | ".join(COMPRESSED_KEYS) + " |\n|---|---|---|---|")
    for (first, second), gaps in differences.items():
        print(f"| {first} − {second} | " + " | ".join(f"{np.mean(gaps[name]):.4f}" for name in gaps) + " |")
    if "A" in cpu and "B" in cpu:
        print(f"\nCPU time B / A: {cpu['B'] / cpu['A']:.2f}")


if __name__ == "__main__":
    main()
