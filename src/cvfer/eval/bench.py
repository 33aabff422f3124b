"""`cvfer bench`: test-time speed as the MIC paper measures it (§4.1), plus parameters and GMACs.

fps = video frames / (pre-processing + forward pass), averaged over a set of clips: pre-processing is
what `cvfer predict` does to a file (read it, extract the I frame / motion vectors / residuals or decode
the frames, crop the face when the checkpoint says so), forward is the test-time module. Every model is
timed on the same clips in the same process with the same number of threads, so ratios are meaningful.
The bare decode (every frame to RGB with PyAV, nothing else: `cvfer.codec.decode_all`) is timed too, as
the floor no decoded-domain model can beat.

A model given by name is timed at its system's own input size ("native", `registry.NATIVE_INPUT_SIZES`:
MIC on the prepared clip's residuals as stored, the decoded-frame peers on the clip's decoded frames resized
inside the model to the size of their paper, as `cvfer predict` runs a model trained with that `input_size`),
beside the "equal" row, every model at the clips' stored size.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from cvfer.codec import count_frames, decode_all, read_header
from cvfer.errors import CheckpointError, CompressedVideoError, ConfigError

DEFAULT_NUM_CLASSES = 7
DEFAULT_NUM_FRAMES = 8
# "wall": elapsed time, what a user waits; "cpu": this process's CPU time (all threads), which other jobs
# on a shared machine disturb much less (equal to wall time for one thread on an idle core).
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}
# Which input sizes a model given by name is timed at: its system's own, the clips' stored size, or both.
SIZE_CHOICES = ("native", "equal", "both")


@dataclass
class ModelTiming:
    """Speed and size of one test-time model on the benchmark clips."""

    name: str
    size: str  # "native", "equal", "native = equal", "given" (input_size in the spec) or "as trained" (model.pt)
    input_size: int  # pixels of the square images the network reads
    inputs: tuple[str, ...]
    parameters: int
    gmacs_per_clip: float
    preprocess_ms_per_clip: float
    forward_ms_per_clip: dict[int, float]  # batch size -> forward time per clip
    fps: dict[int, float]  # batch size -> video frames per second, pre-processing included


@dataclass
class BenchResult:
    """A benchmark run: the clips, the settings and one `ModelTiming` per model."""

    clips: list[str]
    clip_size: int  # pixels of the square clips as stored
    frames_per_clip: float
    threads: int
    clock: str
    batch_sizes: list[int]
    repeats: int
    decode_fps: float | None
    models: list[ModelTiming] = field(default_factory=list)
    machine: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return dataclasses.asdict(self)


def time_decode(clips: Sequence[Path], repeats: int, clock: Callable[[], float] = time.perf_counter) -> float:
    """Frames per second of bare decoding over `clips` (mean over `repeats` passes after one warm-up)."""
    for clip in clips:
        decode_all(clip)
    frames = 0
    start = clock()
    for _ in range(repeats):
        for clip in clips:
            frames += decode_all(clip)
    return frames / (clock() - start)


def gmacs_per_clip(module: torch.nn.Module, batch: dict[str, torch.Tensor]) -> float:
    """Multiply-accumulates of one forward pass on a batch of one clip, in GMACs (= FLOPs / 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        module(batch)
    return counter.get_total_flops() / 2 / 1e9


def _stack(items: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {key: torch.stack([item[key] for item in items]) for key in items[0]}


def _check_size_choice(size: str) -> None:
    if size not in SIZE_CHOICES:
        raise ConfigError(f"unknown size {size!r}", fix=f"use one of {', '.join(SIZE_CHOICES)}")


def input_pixels(predictor: Any) -> int:
    """The side of the square images `predictor`'s network reads: its `input_size` (frames resized inside the
    model) where it has one, else the stored clip size."""
    return getattr(predictor.module, "input_size", None) or predictor.image_size


def sized_models(model: str, clip_size: int, size: str = "both") -> list[tuple[str, str]]:
    """(spec to build, size label) of each row to time for `model` on clips of `clip_size` pixels.

    A model.pt path is timed as trained, a name with `input_size` given as given; any other name at its
    system's native size (`native_input_size`, None: as stored) and/or at `clip_size` as `size` asks, once
    (labelled "native = equal") when the two coincide.
    """
    from cvfer.models.registry import builder_accepts, native_input_size

    _check_size_choice(size)
    if Path(model).is_file():
        return [(model, "as trained")]
    name, *assignments = model.split(":")
    if name.endswith(".pt") or "/" in name:
        problem = "is a folder, not a model.pt" if Path(model).is_dir() else "no such file"
        raise CheckpointError(problem, model, "give an existing model.pt or a registered model name")
    if "input_size" in {assignment.partition("=")[0].strip() for assignment in assignments}:
        return [(model, "given")]
    native = native_input_size(name)
    if native is None or native == clip_size:
        return [(model, "native = equal")]
    if not builder_accepts(name, "input_size"):
        raise ConfigError(f"model {name!r} takes no input_size, so it cannot run at its native {native} px")
    rows = {"native": (f"{model}:input_size={native}", "native"), "equal": (model, "equal")}
    return list(rows.values()) if size == "both" else [rows[size]]


def time_model(
    predictor: Any,
    clips: Sequence[Path],
    frames: Sequence[int],
    batch_sizes: Sequence[int],
    repeats: int,
    clock: Callable[[], float] = time.perf_counter,
    *,
    size: str,
) -> ModelTiming:
    """Time pre-processing and forward of `predictor` (a `cvfer.eval.predict.Predictor`) over `clips`;
    `size` labels the input size it was built at (see `ModelTiming.size`)."""
    module = predictor.module
    prepared = [predictor.prepare(clip) for clip in clips]  # warm-up, and the inputs for FLOP counting
    with torch.inference_mode():
        module(_stack(prepared[:1]))
    preprocess_seconds = 0.0
    for _ in range(repeats):
        start = clock()
        for clip in clips:
            predictor.prepare(clip)
        preprocess_seconds += clock() - start
    preprocess_per_clip = preprocess_seconds / (repeats * len(clips))
    forward_per_clip: dict[int, float] = {}
    fps: dict[int, float] = {}
    total_frames = float(sum(frames))
    for batch_size in batch_sizes:
        batches = [_stack(prepared[i : i + batch_size]) for i in range(0, len(prepared), batch_size)]
        with torch.inference_mode():
            module(batches[0])
            start = clock()
            for _ in range(repeats):
                for batch in batches:
                    module(batch)
            forward_seconds = (clock() - start) / repeats
        forward_per_clip[batch_size] = 1000 * forward_seconds / len(clips)
        fps[batch_size] = total_frames / (preprocess_per_clip * len(clips) + forward_seconds)
    return ModelTiming(
        name=predictor.name,
        size=size,
        input_size=input_pixels(predictor),
        inputs=tuple(predictor.inputs),
        parameters=sum(parameter.numel() for parameter in module.parameters()),
        gmacs_per_clip=gmacs_per_clip(module, _stack(prepared[:1])),
        preprocess_ms_per_clip=1000 * preprocess_per_clip,
        forward_ms_per_clip=forward_per_clip,
        fps=fps,
    )


def machine_info() -> dict[str, str]:
    """CPU model and count, OS, torch and PyAV versions: what a timing depends on."""
    import os
    import platform

    processor = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
        processor = names[0] if names else processor
    return {
        "processor": processor,
        "cpus": str(os.cpu_count()),
        "system": platform.platform(),
        "torch": torch.__version__,
        "av": version("av"),
    }


def benchmark(
    videos: Sequence[str | Path],
    models: Sequence[str],
    *,
    threads: int = 1,
    batch_sizes: Sequence[int] = (1, 8),
    repeats: int = 3,
    decode_floor: bool = True,
    num_frames: int = DEFAULT_NUM_FRAMES,
    clock: str = "wall",
    size: str = "both",
) -> BenchResult:
    """Time every model on the same `videos`: a model.pt path, or a registered name (random weights,
    `num_frames` time steps, options as `NAME:key=value`, see `predictor_for_name`) at the input sizes
    `size` names ("native", "equal" or "both", see `sized_models`)."""
    if not videos:
        raise CompressedVideoError("no clips given", fix="pass at least one video file")
    if not batch_sizes or any(batch < 1 for batch in batch_sizes) or repeats < 1 or threads < 1:
        raise ConfigError("batch sizes, repeats and threads must be >= 1", fix="e.g. batch_sizes=(1, 8), repeats=3")
    if clock not in CLOCKS:
        raise ConfigError(f"unknown clock {clock!r}", fix=f"use one of {', '.join(CLOCKS)}")
    _check_size_choice(size)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _benchmark(videos, models, threads, batch_sizes, repeats, decode_floor, num_frames, clock, size)
    finally:
        torch.set_num_threads(previous_threads)


def clip_size_of(clips: Sequence[Path]) -> int:
    """The side of the square frames all `clips` share (a benchmark compares models on clips of one size)."""
    sizes = [read_header(clip).size for clip in clips]
    first = sizes[0]
    for clip, (height, width) in zip(clips, sizes):
        if height != width:
            raise CompressedVideoError(f"is {height}×{width}; bench clips must be square", clip, "re-encode it square")
        if (height, width) != first:
            raise CompressedVideoError(
                f"is {height}×{width} but {clips[0]} is {first[0]}×{first[1]}", clip, "bench clips of one size"
            )
    return first[0]


def _benchmark(
    videos: Sequence[str | Path],
    models: Sequence[str],
    threads: int,
    batch_sizes: Sequence[int],
    repeats: int,
    decode_floor: bool,
    num_frames: int,
    clock: str,
    size: str,
) -> BenchResult:
    from cvfer.eval.predict import load_model, predictor_for_name

    clips = [Path(video) for video in videos]
    clip_size = clip_size_of(clips)
    rows = [(model, *row) for model in models for row in sized_models(model, clip_size, size)]
    frames = [count_frames(clip) for clip in clips]
    result = BenchResult(
        clips=[str(clip) for clip in clips],
        clip_size=clip_size,
        frames_per_clip=float(np.mean(frames)),
        threads=threads,
        clock=clock,
        batch_sizes=list(batch_sizes),
        repeats=repeats,
        decode_fps=time_decode(clips, repeats, CLOCKS[clock]) if decode_floor else None,
        machine=machine_info(),
    )
    for model, spec, label in tqdm(rows, desc="models", unit="model"):
        if Path(model).is_file():
            predictor = load_model(model)
        else:
            predictor = predictor_for_name(spec, clips[0], num_classes=DEFAULT_NUM_CLASSES, num_frames=num_frames)
        timing = time_model(predictor, clips, frames, batch_sizes, repeats, CLOCKS[clock], size=label)
        timing.name = f"{timing.name} [{model}]" if Path(model).is_file() else model
        result.models.append(timing)
    return result


def bench_table(result: BenchResult) -> str:
    """Markdown table: size, fps per batch size, ms per clip, parameters, GMACs; decode floor last."""
    batch_columns = " | ".join(f"fps (batch {size})" for size in result.batch_sizes)
    first = result.batch_sizes[0]
    side = result.clip_size
    lines = [
        f"{len(result.clips)} clips of {side}×{side}, {result.frames_per_clip:.0f} frames each on average, "
        f"{result.threads} thread(s), {result.clock} clock, mean of {result.repeats} passes; "
        + ", ".join(f"{key} {value}" for key, value in result.machine.items()),
        "",
        f"| model | size | input px | inputs | {batch_columns} | pre-process ms/clip | forward ms/clip (batch {first}) "
        "| params (M) | GMACs/clip |",
        "|---|---|---|---|" + "---|" * len(result.batch_sizes) + "---|---|---|---|",
    ]
    for timing in result.models:
        fps_cells = " | ".join(f"{timing.fps[size]:.1f}" for size in result.batch_sizes)
        lines.append(
            f"| {timing.name} | {timing.size} | {timing.input_size} | {', '.join(timing.inputs)} | {fps_cells} | "
            f"{timing.preprocess_ms_per_clip:.1f} | {timing.forward_ms_per_clip[first]:.1f} | "
            f"{timing.parameters / 1e6:.2f} | {timing.gmacs_per_clip:.3f} |"
        )
    if result.decode_fps is not None:
        decode_cells = " | ".join(f"{result.decode_fps:.1f}" for _ in result.batch_sizes)
        decode_name = "bare decode (PyAV, every frame to RGB)"
        lines.append(f"| {decode_name} | – | {side} | – | {decode_cells} | – | – | – | – |")
    lines += [
        "",
        f"native: each system's own input size (registry.NATIVE_INPUT_SIZES; decoded frames resized inside the "
        f"model); equal: every model at the clips' {side}×{side}.",
    ]
    return "\n".join(lines)
