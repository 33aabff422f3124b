"""`cvfer compare`: several systems through one protocol, summed up in one table (compare.md, compare.json).

Every model is cross-validated by `cvfer.eval.protocol.run_cv` on the same folds into `OUT/<model>/`
(finished folds are reused, a partial one resumes), starting from the preset its system registers for
comparisons where there is one (`compare_config`). Afterwards every model's test-time network (fold 0's
`model.pt`) is timed by `cvfer.eval.bench` on the same fixed clips of the dataset, one model after the other
in this process.
A model that fails is recorded with its error (traceback in `OUT/<model>/error.txt`); the others still run.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from cvfer.errors import ConfigError, CvferError
from cvfer.eval.metrics import paired_difference
from cvfer.eval.protocol import checked_fold_count, run_cv
from cvfer.io import atomic_write_json, atomic_write_text, check_output_folder
from cvfer.runs import COMPARE_JSON, COMPARE_MD, ERROR_TXT, MODEL_PT, PREDICTIONS_CSV, fold_dir, model_run_dir
from cvfer.train.config import TrainConfig, build_config, split_assignment

_SET_FIX = "e.g. --set tfen:model.alpha=1"


@dataclass
class ModelComparison:
    """One row of the comparison: cross-validation summary and test-time cost of one model."""

    name: str
    preset: str  # where the model's training settings come from, in words
    train_config: dict[str, Any]
    run_dir: str
    summary: dict[str, dict[str, float]] | None = None  # `CVResult.summary()`
    fold_scores: dict[str, list[float]] | None = None  # `CVResult.fold_scores()`, for paired comparisons
    timing: dict[str, Any] | None = None  # `cvfer.eval.bench.ModelTiming` as a dict
    error: str | None = None
    fold_test_clips: list[int] | None = None  # test clips of each fold, for the confidence interval


@dataclass
class ComparisonResult:
    """A comparison run: data, protocol, benchmark settings and one `ModelComparison` per model."""

    data: str
    folds: int
    bench_clips: list[str]
    bench_frames_per_clip: float
    bench_threads: int
    bench_batch: int
    bench_repeats: int
    decode_fps: float | None
    models: list[ModelComparison] = field(default_factory=list)
    machine: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return dataclasses.asdict(self)


def split_setting(assignment: str) -> tuple[str | None, str]:
    """`"tfen:model.alpha=1"` → ("tfen", "model.alpha=1"); `"lr=0.01"` → (None, "lr=0.01")."""
    key, value = split_assignment(assignment, "--set", _SET_FIX)
    if ":" not in key:
        return None, assignment
    model, _, rest = key.partition(":")
    if not model or not rest:
        raise ConfigError(f"--set {assignment!r} is not [MODEL:]KEY=VALUE", fix=_SET_FIX)
    return model, f"{rest}={value}"


def compare_config(
    name: str, options: dict[str, Any] | None = None, settings: Sequence[str] = ()
) -> tuple[TrainConfig, str]:
    """(TrainConfig, preset description) of model `name`: the preset its system registers for comparisons
    (`cvfer.models.registry.compare_preset`; the `TrainConfig` defaults without one), then `options`
    (TrainConfig fields, None ignored) for every model, then each `[MODEL:]KEY=VALUE` setting that is global
    or names `name`; layered by `build_config`, so a variant keeps only the preset's options it takes."""
    from cvfer.models.registry import compare_preset, model_presets

    preset = compare_preset(name)
    config = build_config(
        preset=preset,
        options={**(options or {}), "model": name},
        settings=[setting for target, setting in map(split_setting, settings) if target in (None, name)],
    )
    if preset is None:
        return config, "TrainConfig defaults (no preset)"
    return config, f"{preset} preset ({model_presets(name)[preset].about})"


def bench_clip_paths(data_dir: str | Path, count: int) -> list[Path]:
    """`count` clips of the dataset spread evenly over its manifest sorted by path (the same clips every run)."""
    from cvfer.data.manifest import read_manifest

    if count < 1:
        raise ConfigError(f"--bench-clips {count}: at least one clip is needed", fix="use --bench-clips 1 or more")
    manifest = read_manifest(data_dir)
    clips = sorted(manifest.clips, key=lambda clip: clip.path)
    if not clips:
        raise ConfigError("the manifest lists no clips", Path(data_dir) / "manifest.csv", "prepare the dataset again")
    picks = np.unique(np.linspace(0, len(clips) - 1, min(count, len(clips))).round().astype(int))
    return [manifest.video_path(clips[index]) for index in picks]


def _record_error(row: ModelComparison, run_dir: Path, error: Exception) -> None:
    """Put the error's one-line message in the row and its traceback in `run_dir/error.txt`."""
    row.error = str(error) if isinstance(error, CvferError) else f"{type(error).__name__}: {error}"
    if run_dir.is_dir():
        atomic_write_text(run_dir / ERROR_TXT, "".join(traceback.format_exception(error)))


def run_compare(
    data_dir: str | Path,
    models: Sequence[str],
    out_dir: str | Path,
    *,
    num_folds: int | None = None,
    options: dict[str, Any] | None = None,
    settings: Sequence[str] = (),
    bench_clips: int = 8,
    bench_threads: int = 1,
    bench_batch: int = 1,
    bench_repeats: int = 3,
    mine_steps: int = 300,
) -> ComparisonResult:
    """Cross-validate and time every model of `models` on `data_dir`; write compare.md and compare.json."""
    from cvfer.codec import count_frames
    from cvfer.eval.bench import benchmark, machine_info, time_decode
    from cvfer.models import list_models

    data_dir, out_dir = Path(data_dir), check_output_folder(out_dir, "--out")
    names = list(dict.fromkeys(name.strip() for name in models if name.strip()))
    if not names:
        raise ConfigError("no model to compare", fix="give --models NAME,NAME,...")
    unknown_targets = sorted({target for target, _ in map(split_setting, settings) if target and target not in names})
    if unknown_targets:
        raise ConfigError(f"--set names models {unknown_targets} that are not compared", fix=f"use one of {names}")
    if bench_batch < 1 or bench_repeats < 1 or bench_threads < 1:
        raise ConfigError("--bench-batch, --bench-repeats and --bench-threads must be >= 1")
    clips = bench_clip_paths(data_dir, bench_clips)
    folds = checked_fold_count(data_dir, num_folds)
    rows: list[ModelComparison] = []
    bar = tqdm(names, desc="compare: training", unit="model")
    for name in bar:
        bar.set_postfix_str(name)
        run_dir = model_run_dir(out_dir, name)
        row = ModelComparison(name=name, preset="", train_config={}, run_dir=str(run_dir))
        rows.append(row)
        try:
            if name not in list_models():
                raise ConfigError(f"unknown model {name!r}", fix=f"use one of {', '.join(list_models())}")
            config, row.preset = compare_config(name, options, settings)
            config = config.for_data(data_dir)  # f_I "auto" → the data's, recorded in the row and cv.json
            row.train_config = config.to_dict()
            cv_result = run_cv(data_dir, config, run_dir, num_folds=folds, seed=config.seed, mine_steps=mine_steps)
            row.summary, row.fold_scores = cv_result.summary(), cv_result.fold_scores()
            row.fold_test_clips = [fold.num_samples for fold in cv_result.folds]
        except Exception as error:  # a failing model is reported in its row; the others still run
            _record_error(row, run_dir, error)
    trained = [row for row in rows if row.error is None]
    result = ComparisonResult(
        data=str(data_dir),
        folds=folds,
        bench_clips=[str(clip) for clip in clips],
        bench_frames_per_clip=float(np.mean([count_frames(clip) for clip in clips])),
        bench_threads=bench_threads,
        bench_batch=bench_batch,
        bench_repeats=bench_repeats,
        decode_fps=time_decode(clips, bench_repeats),
        models=rows,
        machine=machine_info(),
    )
    bar = tqdm(trained, desc="compare: timing", unit="model")
    for row in bar:
        bar.set_postfix_str(row.name)
        try:
            timing = benchmark(
                clips,
                [str(fold_dir(row.run_dir, 0) / MODEL_PT)],
                threads=bench_threads,
                batch_sizes=(bench_batch,),
                repeats=bench_repeats,
                decode_floor=False,
            ).models[0]
            row.timing = dataclasses.asdict(timing)
            (Path(row.run_dir) / ERROR_TXT).unlink(missing_ok=True)
        except Exception as error:  # as above: the row shows the error, the table is still written
            _record_error(row, Path(row.run_dir), error)
    write_comparison(result, out_dir)
    return result


def write_comparison(result: ComparisonResult, out_dir: str | Path) -> None:
    """Write `compare.md` (table and notes) and `compare.json` (everything) into `out_dir`."""
    out_dir = Path(out_dir)
    atomic_write_json(out_dir / COMPARE_JSON, result.as_dict())
    atomic_write_text(out_dir / COMPARE_MD, comparison_markdown(result) + "\n")


def _mean_cell(summary: dict[str, dict[str, float]] | None, key: str, scale: float = 100.0, digits: int = 1) -> str:
    if summary is None or key not in summary or math.isnan(summary[key]["mean"]):
        return "–"
    return f"{scale * summary[key]['mean']:.{digits}f}"


def _mean_std_cell(summary: dict[str, dict[str, float]] | None, key: str, scale: float = 100.0, digits: int = 1) -> str:
    """Mean ± std over folds; the mean alone from a single fold (a std of one value says nothing)."""
    mean = _mean_cell(summary, key, scale, digits)
    if mean == "–" or summary[key].get("folds", 2) < 2:  # type: ignore[index]
        return mean
    return f"{mean} ± {scale * summary[key]['std']:.{digits}f}"  # type: ignore[index]


CONFIDENCE = 0.95


def accuracy_interval(fold_accuracies: Sequence[float], fold_sizes: Sequence[int]) -> tuple[float, float]:
    """A 95 % confidence interval of an accuracy: from one fold, the Wilson score interval of its correct
    test clips (a binomial over `fold_sizes[0]` clips); from several, the Student-t interval of the mean of
    the fold accuracies (it sees how much folds differ). (nan, nan) without a finite accuracy."""
    from scipy import stats

    pairs = [(float(value), int(size)) for value, size in zip(fold_accuracies, fold_sizes) if not math.isnan(value)]
    if not pairs or any(size < 1 for _, size in pairs):
        return math.nan, math.nan
    if len(pairs) == 1:
        accuracy, size = pairs[0]
        interval = stats.binomtest(round(accuracy * size), size).proportion_ci(CONFIDENCE, method="wilson")
        return float(interval.low), float(interval.high)
    values = np.array([value for value, _ in pairs])
    half_width = stats.t.ppf(0.5 + CONFIDENCE / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return max(0.0, float(values.mean() - half_width)), min(1.0, float(values.mean() + half_width))


def _interval_cell(row: ModelComparison) -> str:
    """The WAR's 95 % interval in percent, "–" without scores."""
    if row.fold_scores is None or row.fold_test_clips is None:
        return "–"
    low, high = accuracy_interval(row.fold_scores["war"], row.fold_test_clips)
    return "–" if math.isnan(low) else f"[{100 * low:.1f}, {100 * high:.1f}]"


def _folds_cell(row: ModelComparison) -> str:
    """"folds × test clips per fold" (the range of clips where folds differ)."""
    if not row.fold_test_clips:
        return "–"
    fewest, most = min(row.fold_test_clips), max(row.fold_test_clips)
    return f"{len(row.fold_test_clips)} × {fewest if fewest == most else f'{fewest}–{most}'}"


def _identity_auc_cell(summary: dict[str, dict[str, float]] | None) -> str:
    """z_E's identity verification AUC, with z_I's (the ceiling) in brackets where the model has z_I."""
    auc = _mean_std_cell(summary, "identity_verification_auc", scale=1.0, digits=2)
    ceiling = _mean_std_cell(summary, "identity_verification_auc_zi", scale=1.0, digits=2)
    return auc if ceiling == "–" else f"{auc} (z_I {ceiling})"


def _mutual_information_cell(summary: dict[str, dict[str, float]] | None) -> str:
    """The post-hoc MI(z_E; z_I) estimate in nats, with its shuffled-pairs null in brackets."""
    estimate = _mean_std_cell(summary, "mutual_information", scale=1.0, digits=2)
    null = _mean_cell(summary, "mutual_information_null", scale=1.0, digits=2)
    return estimate if null == "–" else f"{estimate} (null {null})"



def comparison_table(result: ComparisonResult) -> str:
    """The markdown table: one row per model, "failed" in the rows of models that failed."""
    lines = [
        "| model | WAR (%) | WAR 95% CI | folds × test clips | UAR (%) | identity from z_E (%) | identity chance (%) "
        "| identity AUC (z_E) | MI(z_E; z_I) (nats) | params (M) | GMACs/clip | fps |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result.models:
        timing = row.timing
        cost = (
            [
                f"{timing['parameters'] / 1e6:.3g}",
                f"{timing['gmacs_per_clip']:.3g}",
                f"{timing['fps'][result.bench_batch]:.1f}",
            ]
            if timing is not None
            else ["–", "–", "–"]
        )
        name = row.name if row.error is None else f"{row.name} (failed, see notes)"
        accuracy = [
            _mean_std_cell(row.summary, "war"),
            _interval_cell(row),
            _folds_cell(row),
            _mean_std_cell(row.summary, "uar"),
            _mean_std_cell(row.summary, "identity_probe_accuracy"),
            _mean_cell(row.summary, "identity_probe_chance"),
            _identity_auc_cell(row.summary),
            _mutual_information_cell(row.summary),
        ]
        lines.append("| " + " | ".join([name.replace("|", "/"), *accuracy, *cost]) + " |")
    return "\n".join(lines)


# Training options the notes name only where a run changed them from the TrainConfig defaults.
NOTED_IF_CHANGED = ("critic_steps", "group_lr", "weight_decay")
PAIRED_SCORES = (
    ("war", "WAR"),
    ("identity_probe_accuracy", "identity from z_E"),
    ("identity_verification_auc", "identity AUC (z_E) ×100"),
)


def paired_section(result: ComparisonResult) -> list[str]:
    """compare.md lines comparing every model with the first one fold by fold (none for a single fold)."""
    scored = [row for row in result.models if row.error is None and row.fold_scores is not None]
    if result.folds < 2 or len(scored) < 2:
        return []
    reference = scored[0]
    header = " | ".join(f"Δ {label} (points) | more / fewer / tied folds | Wilcoxon p" for _, label in PAIRED_SCORES)
    lines = [
        "",
        f"Paired over folds, each model − `{reference.name}` (same folds, same test clips):",
        "",
        f"| model | {header} |",
        "|---|" + "---|---|---|" * len(PAIRED_SCORES),
    ]
    for row in scored[1:]:
        cells = []
        for key, _ in PAIRED_SCORES:
            paired = paired_difference(reference.fold_scores[key], row.fold_scores[key])  # type: ignore[index]
            if math.isnan(paired.mean):  # no fold has this score (e.g. no identity probe on CK+-style data)
                cells += ["–", "–", "–"]
                continue
            p_value = "–" if math.isnan(paired.p_value) else f"{paired.p_value:.2f}"
            cells += [f"{100 * paired.mean:+.2f}", f"{paired.wins} / {paired.losses} / {paired.ties}", p_value]
        lines.append(f"| {row.name} | " + " | ".join(cells) + " |")
    return lines


def _clip_correctness(run_dir: str | Path) -> dict[str, bool]:
    """Fold 0's test clips of a run → whether the model got each one right (from its predictions.csv)."""
    with (fold_dir(run_dir, 0) / PREDICTIONS_CSV).open(newline="", encoding="utf-8") as handle:
        return {row["path"]: row["label"] == row["pred"] for row in csv.DictReader(handle)}


def clip_paired_section(result: ComparisonResult) -> list[str]:
    """compare.md lines comparing every model with the first one clip by clip on a single fold's test clips
    (exact McNemar test); none with several folds (`paired_section` then) or fewer than two models."""
    from scipy import stats

    scored = [row for row in result.models if row.error is None and row.fold_scores is not None]
    if result.folds != 1 or len(scored) < 2:
        return []
    reference = _clip_correctness(scored[0].run_dir)
    lines = [
        "",
        f"Paired on fold 0's {len(reference)} test clips, each model − `{scored[0].name}` (exact McNemar test):",
        "",
        f"| model | Δ WAR (points) | clips only it gets right / only `{scored[0].name}` does | McNemar p |",
        "|---|---|---|---|",
    ]
    for row in scored[1:]:
        other = _clip_correctness(row.run_dir)
        shared = sorted(set(reference) & set(other))
        only_other = sum(other[clip] and not reference[clip] for clip in shared)
        only_reference = sum(reference[clip] and not other[clip] for clip in shared)
        discordant = only_other + only_reference
        p_value = stats.binomtest(only_other, discordant).pvalue if discordant else 1.0
        delta = 100 * (only_other - only_reference) / max(len(shared), 1)
        lines.append(f"| {row.name} | {delta:+.1f} | {only_other} / {only_reference} | {p_value:.2f} |")
    return lines


def comparison_markdown(result: ComparisonResult) -> str:
    """compare.md: a title, the table, then notes on the protocol, each model's settings and any errors."""
    from cvfer.models.registry import builder_accepts

    decode = "–" if result.decode_fps is None else f"{result.decode_fps:.1f}"
    lines = [
        f"# Comparison on {result.data}",
        "",
        comparison_table(result),
        "",
        "Notes:",
        f"- Subject-independent cross-validation, folds 0..{result.folds - 1} of splits.json; WAR, UAR and the "
        "identity probe are mean ± std over folds (the value alone from one fold) (docs/compare.md).",
        "- WAR 95% CI: "
        + (
            "Wilson score interval of the fold's correct test clips"
            if result.folds == 1
            else f"Student-t interval of the mean over the {result.folds} folds"
        )
        + ": how far WAR could move on another draw of test subjects and clips. A difference between two models "
        "well inside these widths is not shown by this run; the paired table below tests it "
        + ("clip by clip." if result.folds == 1 else "fold by fold."),
        "- Identity from z_E: linear-probe subject accuracy on each fold's expression features, held-out half of "
        "each subject's clips; chance = 1 / number of test subjects; – where too few clips per subject. Identity "
        "AUC (z_E): same- vs different-subject ROC-AUC of the cosine similarity of the test clips' z_E (unseen "
        "subjects, pairs of different expressions), 0.5 = no identity, 1 = fully recoverable; z_I's, the ceiling, "
        "in brackets. MI(z_E; z_I): a fresh MINE's held-out DV estimate after training, with the same estimator on "
        "shuffled pairs (the null) in brackets; a value near or below its null means no measurable MI.",
        f"- Params and GMACs/clip: the test-time module of fold 0's {MODEL_PT}. fps: video frames / (pre-processing "
        f"+ forward) at batch {result.bench_batch}, {result.bench_threads} thread(s), mean of {result.bench_repeats} "
        f"passes over the same {len(result.bench_clips)} clips ({result.bench_frames_per_clip:.0f} frames each on "
        f"average) in one process; bare PyAV decode of every frame: {decode} fps.",
    ]
    defaults = TrainConfig().to_dict()
    for row in result.models:
        config = row.train_config
        if config:
            model_cfg = ", ".join(f"{key}={value}" for key, value in sorted(config["model_cfg"].items()))
            lines.append(
                f"- `{row.name}`: {row.preset}; {config['epochs']} epochs, batch {config['batch_size']}, "
                f"{config['optimizer']} lr {config['lr']:g} ({config['lr_schedule']}), {config['num_frames']} frames"
                + (f", f_I {config['identity_encoder']}" if builder_accepts(row.name, "identity_dim") else "")
                + "".join(f", {key} {config[key]}" for key in NOTED_IF_CHANGED if config[key] != defaults[key])
                + (f"; model options: {model_cfg}" if model_cfg else "")
                + "."
            )
    lines += paired_section(result) + clip_paired_section(result)
    failed = [row for row in result.models if row.error is not None]
    if failed:
        lines += ["", "Errors:"]
        lines += [f"- `{row.name}`: {str(row.error).splitlines()[0]}" for row in failed]
    return "\n".join(lines)
