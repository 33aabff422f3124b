"""The `make demo` job: synthetic benchmark → MIC and MIC-MI cross-validation → comparison table with
uncertainty, report, and a prediction over time on a longer video; about 5 minutes on an idle 2-core CPU.

The models train side by side in worker processes (one thread each; what they print goes to
`OUT/<model>/demo-training.log`), then `cvfer.eval.compare.run_compare`
reuses their finished folds, times them and writes the table. One progress line follows the stages with an
overall estimate: each stage's expected cost from the constants below, corrected by the pace the machine
actually shows.
"""

from __future__ import annotations

import math
import multiprocessing
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, redirect_stderr
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from cvfer.errors import CvferError
from cvfer.runs import COMPARE_MD, ERROR_TXT, HISTORY_JSONL, MODEL_PT, fold_dir, model_run_dir

DEMO_MODELS = ("mic", "mic-mi")
# The prediction-over-time video: a face none of the models saw, one expression after another (neutral →
# apex → neutral in each segment), in a frame larger than the face so that the face finder has work to do.
TIMELINE_EXPRESSIONS = ("happiness", "surprise", "sadness", "anger", "disgust")
TIMELINE_SECONDS_EACH = 3.0
TIMELINE_FRAME_SIZE = (240, 320)

# Seconds of one CPU thread per unit of work, measured on the 2-core development machine (2026-12-02, `small`
# benchmark, demo training preset); only the progress line's first estimate depends on them.
SECONDS_PER_CLIP_RENDERED = 0.095
SECONDS_PER_FOLD = 40.0  # loading and encoding the clips, z_I, probes and the MI estimate of one fold
SECONDS_PER_TRAIN_CLIP_EPOCH = 0.09
SECONDS_PER_BENCH = 12.0  # decode timing plus one model's timing, for each model
SECONDS_PER_REPORT = 6.0
SECONDS_PER_PREDICT = 10.0
POLL_SECONDS = 1.0
DEMO_LOG = "demo.log"  # in the demo's folder: what the stages printed (their own progress bars, warnings)
WORKER_LOG = "demo-training.log"  # in each model's run folder: what its training worker printed


@dataclass
class DemoResult:
    """Where the demo wrote its outputs, and the numbers its closing notes quote."""

    data_dir: Path
    table_path: Path
    report_path: Path
    timeline_png: Path | None  # the expression over time of `timeline_video`; None without cvfer.eval.timeline
    timeline_video: Path | None
    timeline_agreement: str  # how the timeline matches the video's known segments, in words ("" without one)
    test_clips: int  # test clips of one fold
    war_interval_width: float  # widest WAR 95 % interval of the table, in points
    seconds: float


class StageProgress:
    """One progress line over the demo's stages: the bar counts estimated seconds of work, so tqdm's remaining
    time is the estimate still to do at the pace measured so far."""

    def __init__(self, estimates: dict[str, float]):
        self.estimates = estimates
        self.bar = tqdm(
            total=sum(estimates.values()),
            desc="demo",
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed} elapsed, about {remaining} left",
        )
        self._done_in_stage = 0.0

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Show `name` while the block runs; count the stage's whole estimate once it ends."""
        self.bar.set_description_str(f"demo [{name}]")
        self._done_in_stage = 0.0
        yield
        self._count(self.estimates[name] - self._done_in_stage)

    def advance_to(self, fraction: float, name: str) -> None:
        """Within stage `name`, count `fraction` (0..1) of its estimate as done."""
        target = min(max(fraction, 0.0), 1.0) * self.estimates[name]
        if target > self._done_in_stage:
            self._count(target - self._done_in_stage)
            self._done_in_stage = target

    def _count(self, seconds: float) -> None:
        """Advance the bar by `seconds` of estimated work, never past its end (float sums drift)."""
        self.bar.update(min(max(seconds, 0.0), self.bar.total - self.bar.n))

    def close(self) -> None:
        """Show the line as finished (estimates never add up exactly) and release the terminal."""
        if self.bar.n >= 0.999 * self.bar.total:
            self.bar.n = self.bar.total
            self.bar.set_description_str("demo [done]")
        self.bar.close()


def _cross_validate(job: tuple[str, str, dict[str, Any], str, int, int]) -> str | None:
    """Worker: cross-validate one model as `run_compare` would (same config, same run folder), printing into
    the run folder's `WORKER_LOG`; its error or None."""
    import torch

    from cvfer.eval.compare import compare_config
    from cvfer.eval.protocol import run_cv

    data_dir, name, options, run_dir, folds, seed = job
    torch.set_num_threads(int(options["threads"]))
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    with (Path(run_dir) / WORKER_LOG).open("a", encoding="utf-8") as log, redirect_stderr(log):
        try:
            config, _ = compare_config(name, options)
            run_cv(data_dir, config.for_data(data_dir), run_dir, num_folds=folds, seed=seed)
        except Exception as error:  # run_compare trains it again in the parent and records the error properly
            return f"{type(error).__name__}: {error}"
    return None


def _epochs_done(run_dir: Path, folds: int) -> int:
    """Epochs finished over folds 0..folds-1 of a run (lines of each fold's history.jsonl)."""
    total = 0
    for fold in range(folds):
        history = fold_dir(run_dir, fold) / HISTORY_JSONL
        if history.is_file():
            total += sum(1 for line in history.read_text(encoding="utf-8").splitlines() if line.strip())
    return total


def _train_side_by_side(
    jobs: list[tuple[str, str, dict[str, Any], str, int, int]], workers: int, progress: StageProgress, epochs: int
) -> None:
    """Run `_cross_validate` over `jobs` in `workers` processes (one is still a separate process, so that the
    progress line follows its epochs too), advancing the progress line per finished epoch."""
    run_dirs = [Path(job[3]) for job in jobs]
    folds = jobs[0][4]
    expected_epochs = len(jobs) * folds * epochs
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        pending = pool.map_async(_cross_validate, jobs)
        while not pending.ready():
            pending.wait(POLL_SECONDS)
            done = sum(_epochs_done(run_dir, folds) for run_dir in run_dirs)
            progress.advance_to(done / expected_epochs, "training")
        pending.get()
        pool.close()
        pool.join()


def timeline_available() -> bool:
    """Whether this cvfer has the prediction-over-time pieces (`cvfer.eval.timeline`, the long synthetic video)."""
    import importlib.util

    return all(
        importlib.util.find_spec(name) is not None
        for name in ("cvfer.eval.timeline", "cvfer.data.synthetic.long_video")
    )


def run_demo(
    out_dir: str | Path,
    *,
    preset: str = "small",
    seed: int = 0,
    models: Sequence[str] = DEMO_MODELS,
    folds: int = 1,
    epochs: int | None = None,
    threads: int = 2,
) -> DemoResult:
    """Generate (or reuse) the synthetic benchmark, cross-validate `models` with their comparison preset
    (side by side, `threads` processes at most), time them on the same clips, write `compare.md`, the first
    model's `report.md` and, where `cvfer.eval.timeline` exists, its expression over time on a generated
    video. Resumable: finished work is reused."""
    from cvfer.data.splits import read_splits
    from cvfer.data.synthetic.benchmark import generate_benchmark, preset_config
    from cvfer.eval.compare import accuracy_interval, compare_config, run_compare
    from cvfer.eval.report import write_report
    from cvfer.io import check_output_folder
    from cvfer.models.identity import load_identity_encoder
    from cvfer.train.identity import resolve_identity_weights

    start = time.perf_counter()
    out_dir, models = Path(out_dir), tuple(models)
    data_dir = out_dir / "data"
    workers = max(1, min(threads, len(models)))
    options: dict[str, Any] = {"threads": max(1, threads // workers), "seed": seed}
    if epochs is not None:
        options["epochs"] = epochs
    configs = [compare_config(name, options)[0] for name in models]
    synth = preset_config(preset)
    clips = synth.num_subjects * synth.clips_per_class * len(synth.classes())
    train_clips = clips * (1 - 1 / min(synth.folds, synth.num_subjects))
    epochs_total = sum(config.epochs for config in configs) * folds
    estimates = {
        "data": SECONDS_PER_CLIP_RENDERED * clips / threads,
        "f_I": 1.0,
        "training": (SECONDS_PER_FOLD * folds * len(models) + SECONDS_PER_TRAIN_CLIP_EPOCH * train_clips * epochs_total)
        / workers,
        "bench": SECONDS_PER_BENCH * len(models),
        "report": SECONDS_PER_REPORT,
        "predict": SECONDS_PER_PREDICT if timeline_available() else 0.0,
    }
    check_output_folder(out_dir, "--out").mkdir(parents=True, exist_ok=True)
    # The progress line is made first, so it keeps the terminal while the stages' own output goes to the log.
    progress = StageProgress(estimates)
    try:
        with (out_dir / DEMO_LOG).open("a", encoding="utf-8") as log, redirect_stderr(log):
            with progress.stage("data"):
                if not (data_dir / "manifest.csv").is_file():
                    generate_benchmark(data_dir, preset=preset, seed=seed, workers=threads, progress=False)
            with progress.stage("f_I"):
                load_identity_encoder(resolve_identity_weights("synthetic"))  # the shipped file, checked once here
            with progress.stage("training"):
                jobs = [
                    (str(data_dir), name, options, str(model_run_dir(out_dir, name)), folds, seed) for name in models
                ]
                _train_side_by_side(jobs, workers, progress, max(config.epochs for config in configs))
            with progress.stage("bench"):  # trains here only what the workers could not (and records why)
                comparison = run_compare(data_dir, models, out_dir, num_folds=folds, options=options, bench_threads=1)
            failed = [row for row in comparison.models if row.error]
            if failed:
                raise CvferError(
                    "; ".join(f"{row.name} failed: {row.error}" for row in failed),
                    out_dir,
                    f"see <model>/{ERROR_TXT} there, fix the cause and run the demo again (it resumes)",
                )
            with progress.stage("report"):
                report_path = write_report(model_run_dir(out_dir, models[0]))
            timeline_png = timeline_video = None
            timeline_agreement = ""
            if timeline_available():
                with progress.stage("predict"):
                    timeline_video, timeline_png, timeline_agreement = _predict_over_time(out_dir, models[0], seed)
    finally:
        progress.close()
    widths = [
        accuracy_interval(row.fold_scores["war"], row.fold_test_clips or [])
        for row in comparison.models
        if row.fold_scores is not None
    ]
    return DemoResult(
        data_dir=data_dir,
        table_path=out_dir / COMPARE_MD,
        report_path=report_path,
        timeline_png=timeline_png,
        timeline_video=timeline_video,
        timeline_agreement=timeline_agreement,
        test_clips=len(read_splits(data_dir).folds[0].test),
        war_interval_width=max((100 * (high - low) for low, high in widths), default=float("nan")),
        seconds=time.perf_counter() - start,
    )


def _predict_over_time(out_dir: Path, model: str, seed: int) -> tuple[Path, Path, str]:
    """Write a longer synthetic video (a new face showing several expressions in a row, in a larger frame) and
    the model's expression over time on it, with the true segments under it; (video, PNG, agreement in words)."""
    from cvfer.data.synthetic.long_video import write_long_video
    from cvfer.eval.timeline import predict_timeline, timeline_agreement

    predict_dir = out_dir / "predict"
    predict_dir.mkdir(parents=True, exist_ok=True)
    video = predict_dir / "expressions.mp4"
    segments = write_long_video(
        video, TIMELINE_EXPRESSIONS, TIMELINE_SECONDS_EACH, 25.0, TIMELINE_FRAME_SIZE, seed, progress=False
    )
    truth = [tuple(segment) for segment in segments]
    result = predict_timeline(
        fold_dir(model_run_dir(out_dir, model), 0) / MODEL_PT, video, predict_dir, ground_truth=truth, progress=False
    )
    agreement = timeline_agreement(result.rows, truth, result.classes)
    words = (
        f"{agreement.correct} of {agreement.windows} one-second windows labelled with the segment's expression, "
        f"{agreement.segments_correct} of {agreement.segments} segments by majority"
    )
    return video, Path(result.png_path), words


def closing_notes(result: DemoResult) -> str:
    """What the demo's synthetic benchmark can and cannot show, and where to go for real faces."""
    width = "" if math.isnan(result.war_interval_width) else f" (up to {result.war_interval_width:.0f} points wide)"
    return "\n".join(
        [
            "What this run shows: the whole of cvfer on data it makes itself: expression read from the compressed",
            "bitstream (I frame -> identity z_I by a frozen face recogniser, P-frame residuals -> expression),",
            "subject-independent folds, each figure with its 95% interval, a report with figures, and a model's",
            "prediction over time on a video it never saw.",
            "What it cannot show: how well MIC or MIC-MI read real faces, or which of them is better. Synthetic",
            "expressions are deliberately weak (a CNN on the apex frame of `small`: about 56 %; of real CK+ faces:",
            f"91 %; docs/synthetic.md), one fold holds {result.test_clips} test clips, so each WAR has a wide interval{width},",
            "and a few epochs do not fit the training clips. A gap between rows inside those intervals is noise.",
            "Real faces (README, 'Real faces'): build the CK+ development set, then compare on 10 folds:",
            "  benchmarks/build_real_dev_set.sh",
            "  .venv/bin/cvfer compare --data data/real/ckplus-pairs --models mic,mic-mi --folds 10 --epochs 8 "
            "--threads 1 --out runs/real",
            "Measured results on it: docs/results.md.",
        ]
    )
