"""The `make demo` job: synthetic benchmark → MIC and MIC-MI cross-validation → comparison table + report."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cvfer.errors import CvferError
from cvfer.runs import COMPARE_MD, ERROR_TXT, model_run_dir

DEMO_MODELS = ("mic", "mic-mi")


@dataclass
class DemoResult:
    """Where the demo wrote its outputs."""

    data_dir: Path
    table_path: Path
    report_path: Path


def run_demo(
    out_dir: str | Path,
    *,
    preset: str = "small",
    seed: int = 0,
    models: tuple[str, ...] = DEMO_MODELS,
    folds: int = 1,
    epochs: int | None = None,
    threads: int = 2,
) -> DemoResult:
    """Generate (or reuse) the synthetic benchmark, cross-validate `models` with the `demo` training preset,
    time them on the same clips, and write `compare.md` plus the first model's `report.md`. Resumable."""
    from cvfer.data.synthetic.benchmark import generate_benchmark
    from cvfer.eval.compare import run_compare
    from cvfer.eval.report import write_report

    out_dir = Path(out_dir)
    data_dir = out_dir / "data"
    if not (data_dir / "manifest.csv").is_file():
        generate_benchmark(data_dir, preset=preset, seed=seed, workers=threads)
    options = {"threads": threads, "seed": seed}
    if epochs is not None:
        options["epochs"] = epochs
    comparison = run_compare(data_dir, models, out_dir, num_folds=folds, options=options, bench_threads=1)
    failed = [row for row in comparison.models if row.error]
    if failed:
        raise CvferError(
            "; ".join(f"{row.name} failed: {row.error}" for row in failed),
            out_dir,
            f"see <model>/{ERROR_TXT} there, fix the cause and run the demo again (it resumes)",
        )
    report_path = write_report(model_run_dir(out_dir, models[0]))
    return DemoResult(data_dir=data_dir, table_path=out_dir / COMPARE_MD, report_path=report_path)
