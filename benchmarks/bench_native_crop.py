"""Native motion vectors and residuals vs re-encoding, for a face in a raw MPEG-4 / H.264 video (docs/results.md,
"End to end from a raw video" → "Native motion vectors or re-encoding").

Usage: taskset -c 1 .venv/bin/python benchmarks/bench_native_crop.py [--runs runs/real-compare/mic]
       [--split data/real/ckplus-pairs] [--stills data/sources/ckplus-pairs] [--work data/bench-native]
       [--folds N] [--limit N] [--h264 | --codecs mpeg4,libx264] [--qualities 1 | 18,23,28] [--tracked]
       [--paths A,B,B2,C] [--json rows.json]

For every test clip of every fold (each fold's `fold_XX/model.pt` on its own test subjects of `splits.json`,
327 clips in all), the clip's 16 morphed frames are re-made at the stills' native 128×128 (as `cvfer prepare`
made them: `pairs.scan` + `prepare.morphed_frames`), the face is upscaled to 256×256 and pasted at a fixed,
16-aligned place of 640×480 grey frames, and that is encoded as one GOP with no B frames (`write_video`) per
source codec and quality: H.264 (libx264) at constant QP q, MPEG-4 Part 2 (the MIC format) at the qscale with
the same quantiser step (`mpeg4_qscale`: H.264's step is 0.625·2^(QP/6), MPEG-4's 2·qscale; QP 1 → 1,
18 → 2 (a tie with 3), 23 → 4, 28 → 8). Sources are kept under `--work`, keyed by codec and quality, so a
second run skips them; their bit rate and the PSNR of the face region are printed. Each source is cropped with the known box
(the pasted face, isolating the codec from face detection) and, with `--tracked`, also with the box
`faces.track_face` finds on its decoded frames (what `cvfer predict` does through `write_cropped_clip`); the
tracked box's distance from the known one is printed. Then, one thread, per source and box:

- path A (what `cvfer predict` does): decode, `faces.crop` the box to 64×64, re-encode with `write_video`,
  `load_clip`;
- path B (native): `read_compressed` on the 640×480 clip itself, with the checkpoint's settings; the I frame,
  the vector field and the residuals are cut through the box with `faces.crop`'s geometry (`chip`: rotated,
  bilinear at about one sample per source pixel, area-reduced to 64×64), the vectors rotated into the box's
  axes and scaled to chip pixels, all rounded to the loader's dtypes; accumulated fields are relative to the
  I frame, so a crop of them is one too;
- path B2: as B, but the residuals derived again at 64×64 from the cut vectors (the frames rebuilt from the
  native I frame, vectors and residuals, cut like the I frame, minus the cut I frame warped by the cut
  vectors), so the cut inputs keep the reader's `warp + residual == frame` identity;
- path C: no vectors and no re-encode: the I frame and the sampled P frames decoded, cropped as in A, and
  residuals = frame − I frame (what A's 64×64 encoder nearly always gives: it keeps most vectors at zero).

Path 0, the prepared 64×64 clip of the set (as trained on), is the reference. All go through the same
`stack_input` and model. Printed per source and box: WAR and UAR of each path, McNemar's exact test against
A, the CPU ms per clip of each path (`time.process_time`, forward pass and box search excluded; the box search,
decode + `track_face`, is printed apart: every path would need it), the mean |residual| and the share of
pixels with a non-zero vector of each path's inputs, and the mean |difference| of its inputs from A's.
Before that, what `read_compressed` says on a clip written with the encoders' default settings.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import torch
from tqdm import tqdm

from cvfer.codec import count_frames, iter_frames, probe, read_compressed, read_frames, warp, write_video
from cvfer.codec.reader import sample_p_frames
from cvfer.data import faces
from cvfer.data.clip import COMPRESSED_KEYS, ClipSpec, load_clip, stack_input
from cvfer.data.cropping import DETECT_EVERY
from cvfer.data.datasets import pairs
from cvfer.data.datasets.prepare import morphed_frames
from cvfer.errors import CompressedVideoError
from cvfer.eval.predict import Predictor, load_model

FRAME_HEIGHT, FRAME_WIDTH = 480, 640
FACE_SIDE = 256  # the 128×128 still upscaled ×2
FACE_X, FACE_Y = 192, 112  # top-left of the face, multiples of 16 (macroblock-aligned)
GREY = 128
SOURCE_SUFFIX = {"mpeg4": "mp4", "libx264": "h264.mp4"}
SOURCE_NAME = {"mpeg4": "MPEG-4", "libx264": "H.264"}
SOURCE_CODECS = tuple(SOURCE_SUFFIX)
PATHS = ("A", "B", "B2", "C")


def mpeg4_qscale(qp: int) -> int:
    """The MPEG-4 Part 2 qscale whose quantiser step (2·qscale) is nearest H.264's at `qp` (0.625·2^(QP/6)),
    a tie going to the finer one."""
    return min(31, max(1, math.ceil(0.625 * 2 ** (qp / 6) / 2 - 0.5)))


def scene(face: np.ndarray) -> np.ndarray:
    """The 128×128 RGB `face` upscaled to `FACE_SIDE` and pasted on a 640×480 grey frame."""
    canvas = np.full((FRAME_HEIGHT, FRAME_WIDTH, 3), GREY, np.uint8)
    canvas[FACE_Y:FACE_Y + FACE_SIDE, FACE_X:FACE_X + FACE_SIDE] = cv2.resize(
        face, (FACE_SIDE, FACE_SIDE), interpolation=cv2.INTER_CUBIC
    )
    return canvas


def known_box(size: int) -> faces.FaceBox:
    """The box whose `size`×`size` chip (`faces.crop`) covers exactly the pasted face: `crop` puts the box's
    edges on the centres of the chip's outer pixels, so its side is `FACE_SIDE`·(size − 1)/size, centred on
    the face (pixel centres at whole coordinates)."""
    return faces.FaceBox(FACE_X + (FACE_SIDE - 1) / 2, FACE_Y + (FACE_SIDE - 1) / 2, FACE_SIDE * (size - 1) / size)


def source_stats(source: Path, frames: list[np.ndarray]) -> dict[str, float]:
    """The bit rate of `source` (kbit/s) and the PSNR (dB) of its pasted face's region decoded, against the
    `frames` encoded."""
    region = (slice(None), slice(FACE_Y, FACE_Y + FACE_SIDE), slice(FACE_X, FACE_X + FACE_SIDE))
    error = read_frames(source)[region].astype(np.float64) - np.stack(frames)[region]
    return {"kbit_s": source.stat().st_size * 8 / 1000 / (len(frames) / pairs.FPS),
            "face_psnr": float(10 * np.log10(255**2 / np.mean(error**2)))}


def make_sources(
    clips: dict[str, pairs.SourceClip], keys: list[str], work: Path, codec: str, quality: int
) -> tuple[dict[str, Path], dict[str, float]]:
    """({key: 640×480 clip} of the test clips for `codec` at `quality` (H.264 QP; MPEG-4 `mpeg4_qscale`), made
    once under `work`; their mean `source_stats`, kept in `work`/stats.json)."""
    stats_file = work / "stats.json"
    stats = json.loads(stats_file.read_text()) if stats_file.is_file() else {}
    encoder_quality = mpeg4_qscale(quality) if codec == "mpeg4" else quality
    made: dict[str, Path] = {}
    for key in tqdm(keys, desc=f"sources {codec} q{quality}", unit="clip"):
        path = work / f"{key}.q{quality}.{SOURCE_SUFFIX[codec]}"
        name = str(path.relative_to(work))
        if not path.is_file() or name not in stats:
            frames = [scene(frame) for frame in morphed_frames(clips[key])]
            if not path.is_file():
                path.parent.mkdir(parents=True, exist_ok=True)
                write_video(path, frames, fps=pairs.FPS, codec=codec, quality=encoder_quality)
            stats[name] = source_stats(path, frames)
        made[key] = path
    stats_file.write_text(json.dumps(stats, indent=0))
    names = [str(path.relative_to(work)) for path in made.values()]
    return made, {stat: float(np.mean([stats[name][stat] for name in names])) for stat in ("kbit_s", "face_psnr")}


def default_encoder_refusals(frames: list[np.ndarray], work: Path) -> None:
    """Write `frames` with each encoder's default settings (PyAV, no options) and print `read_compressed`'s answer."""
    for codec in SOURCE_CODECS:
        path = work / f"default-{codec}.mp4"
        with av.open(str(path), mode="w") as container:
            stream = container.add_stream(codec, rate=Fraction(pairs.FPS))
            stream.height, stream.width = frames[0].shape[:2]
            stream.pix_fmt = "yuv420p"
            for frame in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode(None))
        try:
            read_compressed(path, num_frames=8, residual="rgb", accumulate=True)
            answer = "read"
        except CompressedVideoError as error:
            answer = str(error)
        print(f"{codec} with default settings, frame types {probe(path).frame_types}: {answer}")


def reencoded(source: Path, box: faces.FaceBox, spec: ClipSpec, size: int, scratch: Path) -> dict[str, np.ndarray]:
    """Path A: decode `source`, crop `box` to `size`, re-encode in the MIC format, read as training does."""
    write_video(scratch, (faces.crop(frame, box, size) for frame in iter_frames(source)), fps=pairs.FPS)
    return load_clip(scratch, spec)


def _area_resized(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`cv2.resize` of an H×W×C float32 `array` to `size` (width, height) by area, 4 channels at a time (its limit)."""
    groups = [cv2.resize(array[..., first:first + 4], size, interpolation=cv2.INTER_AREA)
              for first in range(0, array.shape[2], 4)]
    return np.concatenate([group.reshape(size[1], size[0], -1) for group in groups], axis=2)


def _footprint(components: list[np.ndarray], box: faces.FaceBox, extent: float, factor: int) -> tuple[np.ndarray, faces.FaceBox]:
    """(the region of the H×W(×Cᵢ) `components` under `box`'s chip footprint, stacked along channels as float32,
    zero outside the image, averaged over `factor`×`factor` blocks on the grid `faces.crop` uses; `box` in that
    region's pixels). The region is the footprint's bounding box plus a margin for bilinear sampling, snapped
    to `crop`'s block grid, so the samples are those of `crop` on a smaller area."""
    corners = faces.FaceBox(box.center_x, box.center_y, extent, box.angle).corners()
    (low_x, low_y), (high_x, high_y) = corners.min(axis=0) - factor - 1, corners.max(axis=0) + factor + 1
    grid_x, grid_y, _ = faces.block_grid(box, extent, factor)
    left = grid_x + math.floor((low_x - grid_x) / factor) * factor
    top = grid_y + math.floor((low_y - grid_y) / factor) * factor
    right = grid_x + math.ceil((high_x - grid_x) / factor) * factor
    bottom = grid_y + math.ceil((high_y - grid_y) / factor) * factor
    height, width = components[0].shape[:2]
    x0, y0, x1, y1 = max(left, 0), max(top, 0), min(right, width), min(bottom, height)
    padding = [(max(y0 - top, 0), max(bottom - y1, 0)), (max(x0 - left, 0), max(right - x1, 0))]
    reduced_size = ((right - left) // factor, (bottom - top) // factor)
    reduced = []
    for part in components:
        window = part[y0:y1, x0:x1].astype(np.float32)
        if window.shape[:2] != (bottom - top, right - left):
            window = np.pad(window, padding + [(0, 0)] * (part.ndim - 2))
        if factor > 1:
            window = cv2.resize(window, reduced_size, interpolation=cv2.INTER_AREA)
        reduced.append(window.reshape(reduced_size[1], reduced_size[0], -1))
    region = np.concatenate(reduced, axis=2)
    center_x, center_y = (box.center_x - left + 0.5) / factor - 0.5, (box.center_y - top + 0.5) / factor - 0.5
    return region, faces.FaceBox(center_x, center_y, box.side / factor, box.angle)


def chip(components: list[np.ndarray], box: faces.FaceBox, size: int) -> np.ndarray:
    """`faces.crop`'s resampling of `box` to `size`×`size` (block-averaged, bilinear, area-reduced) on the
    H×W(×Cᵢ) `components` of any dtype and channel count, stacked along channels as unrounded float32."""
    extent = box.side * size / (size - 1)
    factor = int(extent / (1.5 * size))
    region, box = _footprint(components, box, extent, max(factor, 1))
    if factor >= 2:
        extent /= factor
    samples = max(size, round(extent))
    sampled = cv2.warpAffine(
        region, faces.samples_to_image(box, extent, samples), (samples, samples),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT, borderValue=0,
    ).reshape(samples, samples, -1)
    return sampled if samples == size else _area_resized(sampled, (size, size))


def rebuilt_near(iframe: np.ndarray, field: np.ndarray, residual: np.ndarray, box: faces.FaceBox, size: int) -> np.ndarray:
    """The frame `warp(iframe, field) + residual` (int16) where `chip` reads it for `box` at `size` (the box's
    footprint with a margin); zero elsewhere, so only that part is traced."""
    height, width = iframe.shape[:2]
    margin = math.ceil(2 * box.side / size) + 4  # beyond `_footprint`'s margin and grid snap
    corners = faces.FaceBox(box.center_x, box.center_y, box.side * size / (size - 1), box.angle).corners()
    left, top = np.maximum(np.floor(corners.min(axis=0)).astype(int) - margin, 0)
    right, bottom = np.minimum(np.ceil(corners.max(axis=0)).astype(int) + margin, (width, height))
    rows, cols = np.mgrid[top:bottom, left:right]
    sources_y = np.clip(rows - field[1, top:bottom, left:right], 0, height - 1)
    sources_x = np.clip(cols - field[0, top:bottom, left:right], 0, width - 1)
    frame = np.zeros((height, width, 3), np.int16)
    frame[top:bottom, left:right] = iframe[sources_y, sources_x] + residual[top:bottom, left:right]
    return frame


def native(source: Path, box: faces.FaceBox, spec: ClipSpec, size: int, rederive: bool = False) -> dict[str, np.ndarray]:
    """Path B: the compressed inputs of `source` itself, cut through `box` to `size` (`chip`), the vectors
    rotated into the box's axes and scaled to chip pixels.

    `rederive` (path B2): the residuals are instead derived again at `size` from the cut vectors, so that
    `warp(iframe, vectors) + residuals` rebuilds the cut frames as the reader's identity says: each frame,
    rebuilt from the native I frame, vectors and residuals (exact, `rebuilt_near`), is cut like the I frame,
    and the cut I frame warped by the cut vectors is subtracted (accumulated mode only)."""
    if rederive and not spec.accumulate:
        raise ValueError("rederive needs accumulated vectors and residuals (relative to the I frame)")
    video = read_compressed(source, num_frames=spec.num_frames, residual="rgb", accumulate=spec.accumulate)
    count = len(video.residuals)
    if rederive:
        changes = [rebuilt_near(video.iframe, field, residual, box, size)
                   for field, residual in zip(video.motion_vectors, video.residuals)]
    else:
        changes = list(video.residuals)
    planes = video.motion_vectors.reshape(2 * count, *video.iframe.shape[:2])  # x and y of each field
    cut = chip([video.iframe, *changes, *planes], box, size)
    iframe = np.clip(np.rint(cut[..., :3]), 0, 255).astype(np.uint8)
    cut_changes = cut[..., 3 : 3 + 3 * count].reshape(size, size, count, 3).transpose(2, 0, 1, 3)
    cut_fields = cut[..., 3 + 3 * count :].reshape(size, size, count, 2).transpose(2, 3, 0, 1)  # T×2×h×w
    cos, sin = math.cos(box.angle), math.sin(box.angle)
    chip_pixel = box.side / (size - 1)  # image pixels per chip pixel
    along_x = (cos * cut_fields[:, 0] + sin * cut_fields[:, 1]) / chip_pixel
    along_y = (-sin * cut_fields[:, 0] + cos * cut_fields[:, 1]) / chip_pixel
    vectors = np.rint(np.stack([along_x, along_y], axis=1)).astype(np.int16)
    if rederive:
        frames = np.rint(cut_changes).astype(np.int16)
        residuals = np.stack([frame - warp(iframe, field) for frame, field in zip(frames, vectors)])
    else:
        residuals = np.rint(cut_changes)
    return {"iframe": iframe, "residuals": residuals.astype(np.int16), "motion_vectors": vectors}


def frame_differences(source: Path, box: faces.FaceBox, spec: ClipSpec, size: int) -> dict[str, np.ndarray]:
    """Path C (no codec at 64×64, no vectors): the I frame and the P frames `read_compressed` would return,
    decoded and cropped like path A; residuals = cropped frame − cropped I frame, vectors zero (what
    accumulated residuals are where the encoder keeps every vector at zero)."""
    if not spec.accumulate:
        raise ValueError("frame differences stand for accumulated residuals (relative to the I frame) only")
    indices = [0, *(1 + sample_p_frames(count_frames(source) - 1, spec.num_frames)).tolist()]
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


def box_offset(box: faces.FaceBox, reference: faces.FaceBox) -> dict[str, float]:
    """How far `box` is from `reference`: centre offset (pixels and share of the reference side), side ratio,
    angle (degrees)."""
    offset = math.hypot(box.center_x - reference.center_x, box.center_y - reference.center_y)
    return {"box_offset_px": offset, "box_offset_rel": offset / reference.side,
            "box_side_ratio": box.side / reference.side, "box_angle_deg": math.degrees(box.angle)}


def run_path(path: str, source: Path, box: faces.FaceBox, spec: ClipSpec, size: int, work: Path) -> dict[str, np.ndarray]:
    """The model inputs of `source` by `path` (A, B, B2 or C) with `box`."""
    if path == "A":
        return reencoded(source, box, spec, size, work / "reencoded.mp4")
    if path == "C":
        return frame_differences(source, box, spec, size)
    return native(source, box, spec, size, rederive=path == "B2")


def measure(row: dict, paths: list[str], source: Path, box: faces.FaceBox, spec: ClipSpec, predictor: Predictor,
            work: Path) -> None:
    """Add to `row` each path's prediction, CPU ms, mean |residual|, moving share and input gap from A."""
    inputs: dict[str, dict[str, np.ndarray]] = {}
    for path in paths:
        start = time.process_time()
        inputs[path] = run_path(path, source, box, spec, predictor.image_size, work)
        row[f"{path}_ms"] = 1000 * (time.process_time() - start)
        row[path] = int(predictor.forward({name: scaled(inputs[path], name)[None] for name in predictor.inputs})[0].argmax())
        row[f"{path}_residual"] = float(np.abs(inputs[path]["residuals"]).mean())
        row[f"{path}_moving"] = float(np.any(inputs[path]["motion_vectors"] != 0, axis=1).mean())
        for name in COMPRESSED_KEYS:
            row[f"{path}_gap_{name}"] = float((scaled(inputs[path], name) - scaled(inputs["A"], name)).abs().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=Path("runs/real-compare/mic"), help="folder of fold_XX/model.pt")
    parser.add_argument("--split", type=Path, default=Path("data/real/ckplus-pairs"), help="prepared real-face set")
    parser.add_argument("--stills", type=Path, default=Path("data/sources/ckplus-pairs"), help="its source stills")
    parser.add_argument("--work", type=Path, default=Path("data/bench-native"), help="where the 640×480 clips go")
    parser.add_argument("--folds", type=int, default=None, help="the first N folds only (default: all)")
    parser.add_argument("--limit", type=int, default=None, help="test clips per fold (default: all)")
    parser.add_argument("--codecs", default="mpeg4", help="source codecs, comma-separated: mpeg4, libx264")
    parser.add_argument("--h264", action="store_true", help="same as --codecs mpeg4,libx264")
    parser.add_argument("--qualities", default="1", help="H.264 QPs, comma-separated (MPEG-4: mpeg4_qscale of each)")
    parser.add_argument("--tracked", action="store_true", help="also crop with the box track_face finds")
    parser.add_argument("--paths", default="A,B,B2", help=f"paths to run, comma-separated, of {','.join(PATHS)}")
    parser.add_argument("--json", type=Path, default=None, help="write the per-clip results here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    codecs = list(SOURCE_CODECS) if args.h264 else args.codecs.split(",")
    qualities = [int(quality) for quality in args.qualities.split(",")]
    paths = ["A", *(path for path in args.paths.split(",") if path != "A")]
    if unknown := (set(codecs) - set(SOURCE_CODECS)) | (set(paths) - set(PATHS)):
        parser.error(f"unknown codec or path: {', '.join(sorted(unknown))}")
    boxes = ["known", "tracked"] if args.tracked else ["known"]

    folds = json.loads((args.split / "splits.json").read_text())["folds"][: args.folds]
    tests = [[path.removeprefix("clips/").removesuffix(".mp4") for path in fold["test"][: args.limit]] for fold in folds]
    keys = [key for test in tests for key in test]
    predictors = [load_model(args.runs / f"fold_{index:02d}" / "model.pt") for index in range(len(folds))]
    # every compressed input is read (and compared), whichever of them the model takes
    specs = [ClipSpec(COMPRESSED_KEYS, predictor.spec.num_frames, predictor.spec.accumulate) for predictor in predictors]
    clips = {clip.key: clip for clip in pairs.scan(args.stills).clips}
    args.work.mkdir(parents=True, exist_ok=True)
    default_encoder_refusals([scene(frame) for frame in morphed_frames(clips[keys[0]])], args.work)

    labels = {key: predictors[0].classes.index(key.split("/")[1]) for key in keys}
    prepared = {}
    for predictor, spec, test in zip(predictors, specs, tests):
        for key in test:
            clip = load_clip(args.split / "clips" / f"{key}.mp4", spec)
            prepared[key] = int(predictor.forward({name: scaled(clip, name)[None] for name in predictor.inputs})[0].argmax())
    correct = np.array([prepared[key] == labels[key] for key in keys])
    print(f"\n{len(keys)} clips; model inputs {list(predictors[0].inputs)}, {specs[0].num_frames} P frames, "
          f"accumulate={specs[0].accumulate}; path 0 (prepared clips): WAR {correct.mean():.3f}, "
          f"UAR {uar(correct, np.array([labels[key] for key in keys])):.3f}", flush=True)

    rows: list[dict] = []
    sources_table: list[str] = []
    for codec in codecs:
        for quality in qualities:
            sources, stats = make_sources(clips, keys, args.work, codec, quality)
            encoder = f"qscale {mpeg4_qscale(quality)}" if codec == "mpeg4" else f"QP {quality}"
            source_name = f"{SOURCE_NAME[codec]} {encoder}"
            source_line = f"| {source_name} | {stats['kbit_s']:.0f} | {stats['face_psnr']:.1f} |"
            for box_mode in boxes:
                source_rows = []
                for index, (predictor, spec, test) in enumerate(zip(predictors, specs, tests)):
                    for key in tqdm(test, desc=f"{source_name} {box_mode} fold {index}", unit="clip", leave=False):
                        row = {"key": key, "fold": index, "label": labels[key], "0": prepared[key], "codec": codec,
                               "quality": quality, "box": box_mode}
                        box = known_box(predictor.image_size)
                        if box_mode == "tracked":
                            start = time.process_time()
                            track = faces.track_face(iter_frames(sources[key]), detect_every=DETECT_EVERY)
                            row["box_ms"] = 1000 * (time.process_time() - start)
                            if track is None:
                                row["no_face"] = True
                                source_rows.append(row)
                                continue
                            row.update(box_offset(track.clip_box, box))
                            box = track.clip_box
                        measure(row, paths, sources[key], box, spec, predictor, args.work)
                        source_rows.append(row)
                report(source_rows, paths, f"{source_name}, {box_mode} box")
                rows.extend(source_rows)
                if box_mode == "tracked":
                    found = [row for row in source_rows if not row.get("no_face")]
                    offsets = [row["box_offset_px"] for row in found]
                    source_line += (
                        f" {len(source_rows) - len(found)} | {np.mean(offsets):.1f} ({np.max(offsets):.1f}) |"
                        f" {np.mean([row['box_side_ratio'] for row in found]):.3f} |"
                        f" {np.mean([abs(row['box_angle_deg']) for row in found]):.1f} |"
                        f" {np.mean([row['box_ms'] for row in source_rows]):.0f} |"
                    )
            sources_table.append(source_line)
            if args.json is not None:
                args.json.write_text(json.dumps(rows, indent=1))
    print("\n| source | kbit/s (640×480, 25 fps) | face PSNR (dB)"
          + (" | no face found | tracked box centre offset, px: mean (max) | side ratio tracked / known"
             " | mean abs angle (°) | box search ms / clip |\n|---|---|---|---|---|---|---|---|" if args.tracked
             else " |\n|---|---|---|"))
    print("\n".join(sources_table))


def report(rows: list[dict], paths: list[str], title: str) -> None:
    """Print one table row per path of one source and box: accuracy, McNemar vs A, CPU, input statistics."""
    rows = [row for row in rows if not row.get("no_face")]
    labels = np.array([row["label"] for row in rows])
    correct = {path: np.array([row[path] for row in rows]) == labels for path in paths}
    print(f"\n{title}: {len(rows)} clips\n")
    print("| path | WAR | UAR | right only here / only in A | McNemar p vs A | CPU ms / clip | mean abs residual"
          " | vector ≠ 0 | mean abs diff. from A: residuals, vectors, I frame |\n|---|---|---|---|---|---|---|---|---|")
    for path in paths:
        versus, gaps = "| |", ""
        if path != "A":
            only_here, only_a, p_value = mcnemar(correct[path], correct["A"])
            versus = f"{only_here} / {only_a} | {p_value:.3g} |"
            gaps = ", ".join(f"{np.mean([row[f'{path}_gap_{name}'] for row in rows]):.4f}" for name in COMPRESSED_KEYS)
        print(f"| {path} | {correct[path].mean():.3f} | {uar(correct[path], labels):.3f} | {versus}"
              f" {np.mean([row[f'{path}_ms'] for row in rows]):.0f} |"
              f" {np.mean([row[f'{path}_residual'] for row in rows]):.2f} |"
              f" {np.mean([row[f'{path}_moving'] for row in rows]):.3f} | {gaps} |", flush=True)


if __name__ == "__main__":
    main()
