"""Which engine runs cvfer's batch work: Dask distributed or Ray, measured on the same jobs (docs/scale.md).

Usage: python benchmarks/bench_cluster.py --model RUN/model.pt --clips data/real/ckplus-pairs
       [--sources data/sources/ckplus-pairs] [--noop 200] [--predict 24] [--prepare 8] [--workers 2] [--rounds 2]
       [--engines inline,pool,dask,ray] [--no-failure-checks]
Jobs: `predict` (`Predictor.predict` of `--predict` prepared clips) and `prepare` (`prepare_clip` of the first
`--prepare` pairs of `--sources`: landmarks, morph, re-encode, as `cvfer prepare --dataset pairs --no-crop`).
One missing file is added to each job. Engines, each with `--workers` processes on this machine:
  inline    this process, one item after another (the reference results)
  pool      `cvfer.cluster.map_files` with a spawned process pool
  dask      `cvfer.cluster.map_files(cluster="local")`: a Dask LocalCluster, the function shipped once per
            worker by a worker plugin
  ray       Ray core: one actor per worker holding the function (`ray.util.ActorPool`); Ray Data needs
            pandas and pyarrow, which the venv lacks, and adds nothing for a list of files
A no-op job (`abs` of integers) shows each engine's own start-up and dispatch cost. Per run: start-up (call
to the start of the first task: cluster, workers, shipping the function), items/s from the first task's start
to the last one's end (and per worker), tear-down (last end to the return: closing the engine),
the median CPU time of one task inside its worker, the CPU seconds of all processes (engine included) for
the whole job, and whether the results equal the inline ones. Then, per engine: what the caller gets for a task
that raises (the engine's own report, no cvfer wrapper), and a job in which one task SIGKILLs its worker
process the first time it runs (as the OOM killer would): does the job finish with every result?
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from cvfer.cluster import TaskError, _call, _single_threaded, map_files

ENGINES = ("inline", "pool", "dask", "ray")
MISSING = Path("/nonexistent/missing-clip.mp4")
Jobs = dict[str, tuple[Callable[[Any], Any], list[Any]]]  # job name -> (function, items)


def timed(function: Callable[[Any], Any], item: Any) -> tuple[float, float, float, Any]:
    """(start time, end time, CPU seconds, function(item)): the first start tells the start-up cost, the last
    end the tear-down."""
    start, cpu = time.time(), time.process_time()
    result = function(item)
    return start, time.time(), time.process_time() - cpu, result


def kill_once(marker_folder: str, victim: Any, function: Callable[[Any], Any], item: Any) -> Any:
    """`function(item)`, except that the first run on `victim` SIGKILLs its own process."""
    marker = Path(marker_folder, "killed")
    if item == victim and not marker.exists():
        marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return function(item)


def ray_map(function: Callable[[Any], Any], items: Sequence[Any], workers: int) -> list[Any]:
    """The same contract as `map_files` on Ray: one restartable actor per worker holding `function`."""
    import ray
    from ray.util import ActorPool

    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
             object_store_memory=256 * 2**20)
    try:

        @ray.remote(num_cpus=1, max_restarts=-1, max_task_retries=-1)
        class Runner:
            def __init__(self, shipped: Callable[[Any], Any]):
                self.function = shipped
                _single_threaded()

            def run(self, index: int, item: Any) -> tuple[int, Any]:
                return index, _call(self.function, item)

        shipped = ray.put(function)
        pool = ActorPool([Runner.remote(shipped) for _ in range(workers)])
        results = dict(pool.map_unordered(lambda actor, job: actor.run.remote(*job), list(enumerate(items))))
        return [results[index] for index in range(len(items))]
    finally:
        ray.shutdown()


def run_engine(engine: str, function: Callable[[Any], Any], items: Sequence[Any], workers: int) -> list[Any]:
    """`function` over `items` on `engine`, results (or `TaskError`s) in input order."""
    if engine == "inline":
        return map_files(function, items, workers=1, desc=engine)
    if engine == "pool":
        return map_files(function, items, workers=workers, desc=engine)
    if engine == "dask":
        return map_files(function, items, workers=workers, cluster="local", desc=engine)
    return ray_map(function, items, workers)


def cpu_seconds() -> float:
    """CPU seconds of this process and of every finished (reaped) process under it: a job's whole cost,
    engine processes included, however loaded the machine is."""
    import resource

    return sum(
        usage.ru_utime + usage.ru_stime
        for usage in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
    )


def failed(result: Any) -> bool:
    """A `TaskError`, or a clip `prepare_clip` skipped."""
    from cvfer.data.datasets.common import Skipped

    return isinstance(result, TaskError | Skipped)


def comparable(result: Any) -> Any:
    """What must match across engines: a prediction's label and probabilities, a prepared clip's record, a
    failure's reason (not timings)."""
    if isinstance(result, TaskError):
        return ("failed", str(result.item), result.reason)
    if hasattr(result, "probabilities"):
        return (str(result.path), result.label, result.probabilities)
    return result


def measure(engine: str, function: Callable[[Any], Any], items: Sequence[Any], workers: int) -> dict[str, Any]:
    """Start-up, steady throughput and the results of one job on one engine."""
    cpu_before = cpu_seconds()
    start = time.time()
    outcomes = run_engine(engine, functools.partial(timed, function), items, workers)
    wall = time.time() - start
    cpu = cpu_seconds() - cpu_before
    timings = [outcome[:3] for outcome in outcomes if not isinstance(outcome, TaskError)]
    first_start = min(began for began, _, _ in timings)
    last_end = max(ended for _, ended, _ in timings)
    engine_workers = 1 if engine == "inline" else workers
    rate = len(items) / max(last_end - first_start, 1e-9)
    results = [outcome if isinstance(outcome, TaskError) else outcome[3] for outcome in outcomes]
    return {
        "engine": engine,
        "workers": engine_workers,
        "startup_s": first_start - start,
        "teardown_s": start + wall - last_end,
        "wall_s": wall,
        "rate": rate,
        "per_worker": rate / engine_workers,
        "task_cpu_ms": 1000 * statistics.median(cpu for _, _, cpu in timings),
        "cpu_s": cpu,
        "results": results,
        "failures": sum(map(failed, results)),
    }


def raise_on(bad: Any, function: Callable[[Any], Any], item: Any) -> Any:
    """`function(item)`, raising the error of a missing file for `bad`."""
    from cvfer.errors import CompressedVideoError

    if item == bad:
        raise CompressedVideoError("file not found", item, "check the path")
    return function(item)


def call(function: Callable[[Any], Any], item: Any) -> Any:
    """`function(item)` (Ray's remote functions must be plain functions, not partials)."""
    return function(item)


def native_error(engine: str, workers: int) -> str:
    """What each engine hands the caller for a task that raises (no cvfer wrapper): type and first line."""
    items = [Path("a.mp4"), MISSING, Path("c.mp4")]
    function = functools.partial(raise_on, MISSING, str)
    try:
        if engine == "inline":
            [function(item) for item in items]
        elif engine == "pool":
            import concurrent.futures
            import multiprocessing

            context = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
                list(pool.map(function, items))
        elif engine == "dask":
            from distributed import Client, LocalCluster

            with LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=":0",
                              silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
                client.gather(client.map(function, items))
        else:
            import ray

            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                     object_store_memory=256 * 2**20)
            try:
                remote_call = ray.remote(call)
                ray.get([remote_call.remote(function, item) for item in items])
            finally:
                ray.shutdown()
    except Exception as error:  # noqa: BLE001 - reporting what came back is the point
        lines = str(error).strip().splitlines()
        return f"{type(error).__name__}, {len(lines)} lines: {lines[0][:60]}"
    return "no error"


def killed_worker(engine: str, function: Callable[[Any], Any], items: Sequence[Any], workers: int) -> str:
    """Run the job with one task killing its worker once; how many results came back, and how long it took."""
    with tempfile.TemporaryDirectory(prefix="cvfer-kill-") as marker_folder:
        start = time.time()
        try:
            killer = functools.partial(kill_once, marker_folder, items[1], function)
            results = run_engine(engine, killer, items, workers)
        except Exception as error:  # noqa: BLE001
            return f"job lost: {type(error).__name__}"
        wall = time.time() - start
    lost = [result for result, item in zip(results, items) if failed(result) and item != MISSING]
    expected = len(items) - (MISSING in items)
    lost_reason = f" (lost: {lost[0].reason[:50]})" if lost else ""
    return f"{expected - len(lost)}/{expected} files done in {wall:.1f} s{lost_reason}"


def table(rows: list[dict[str, Any]], reference: dict[str, list[Any]]) -> str:
    header = (
        "| job | engine | workers | start-up s | items/s, first start to last end | per worker | task CPU ms "
        "| tear-down s | wall s "
        "| CPU s, all processes | items per CPU s | failures listed | equal to inline |"
    )
    lines = [header, "|---" * (header.count("|") - 1) + "|"]
    for row in rows:
        equal = list(map(comparable, row["results"])) == list(map(comparable, reference[row["job"]]))
        lines.append(
            f"| {row['job']} | {row['engine']} | {row['workers']} | {row['startup_s']:.1f} | {row['rate']:.1f} | "
            f"{row['per_worker']:.1f} | {row['task_cpu_ms']:.1f} | {row['teardown_s']:.1f} | {row['wall_s']:.1f} | "
            f"{row['cpu_s']:.1f} | "
            f"{len(row['results']) / row['cpu_s']:.1f} | {row['failures']} | "
            f"{'yes' if equal else 'NO'} |"
        )
    return "\n".join(lines)


def jobs(args: argparse.Namespace, out: Path) -> Jobs:
    """The predict and prepare jobs (function, items), each with one missing file."""
    from cvfer.data.datasets import pairs
    from cvfer.data.datasets.common import SourceClip
    from cvfer.data.datasets.prepare import CropSettings, prepare_clip
    from cvfer.data.manifest import read_manifest
    from cvfer.eval.predict import load_model

    selected: Jobs = {}
    if args.noop:  # the engine's own cost: start-up and dispatch of tasks that do nothing
        selected["no-op"] = (abs, [*range(args.noop // 2), MISSING, *range(args.noop // 2, args.noop)])
    if args.predict:
        manifest = read_manifest(args.clips)
        clips = [manifest.video_path(clip) for clip in manifest.clips[:: max(len(manifest.clips) // args.predict, 1)]]
        predictor = load_model(args.model)
        items = clips[: args.predict // 2] + [MISSING] + clips[args.predict // 2 : args.predict]
        selected["predict"] = (functools.partial(predictor.predict, cache_dir=None), items)
    if args.prepare and args.sources:
        scan = pairs.scan(args.sources)
        clips = scan.clips[:: max(len(scan.clips) // args.prepare, 1)][: args.prepare]
        missing = SourceClip(key="missing", frames=(MISSING, MISSING), subject="x", label=clips[0].label,
                             apex="last", source=str(MISSING), morph_frames=clips[0].morph_frames)
        settings = CropSettings(size=64, crop_faces=False)
        function = functools.partial(prepare_clip, out=out, protocol="pairs", settings=settings)
        selected["prepare"] = (function, clips[:1] + [missing] + clips[1:])
    return selected


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a model.pt for the predict job")
    parser.add_argument("--clips", required=True, help="a prepared dataset whose clips the predict job reads")
    parser.add_argument("--sources", help="a pairs-layout folder of stills for the prepare job")
    parser.add_argument("--noop", type=int, default=200, help="tasks in the no-op job (0: skip it)")
    parser.add_argument("--predict", type=int, default=24, help="clips in the predict job (0: skip it)")
    parser.add_argument("--prepare", type=int, default=8, help="clips in the prepare job (0: skip it)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="runs of each job on each engine; the fastest is shown")
    parser.add_argument("--engines", default=",".join(ENGINES), help=f"comma-separated, of {', '.join(ENGINES)}")
    parser.add_argument(
        "--part", choices=("both", "throughput", "failures"), default="both",
        help="the jobs table, the error-report and killed-worker table, or both (default)",
    )
    args = parser.parse_args()
    engines = [engine.strip() for engine in args.engines.split(",")]
    torch.set_num_threads(1)  # inline runs single-threaded, as every worker does
    logging.getLogger("distributed").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="cvfer-bench-cluster-") as out:
        selected = jobs(args, Path(out))
        if args.part != "failures":
            throughput(selected, engines, args)
        if args.part == "throughput":
            return
        failures(selected, engines, args)


def throughput(selected: Jobs, engines: list[str], args: argparse.Namespace) -> None:
    """Print the jobs table: each job on each engine, the fastest of `args.rounds` interleaved rounds."""
    rows, reference = [], {}
    for job, (function, items) in selected.items():
        best: dict[str, dict[str, Any]] = {}
        for round_number in range(args.rounds):  # engines interleaved; the fastest round of each is kept
            for engine in engines:
                print(f"{job} on {engine}, round {round_number + 1} ...", file=sys.stderr, flush=True)
                row = {"job": job, **measure(engine, function, items, args.workers)}
                reference.setdefault(job, row["results"])  # the first engine (inline by default) is the reference
                if engine not in best or row["wall_s"] < best[engine]["wall_s"]:
                    best[engine] = row
        rows.extend(best[engine] for engine in engines)
    print(
        f"\nJobs on this machine ({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}), {args.workers} "
        f"workers, fastest of {args.rounds} rounds; items include one missing file.\n"
    )
    print(table(rows, reference))


def failures(selected: Jobs, engines: list[str], args: argparse.Namespace) -> None:
    """Print what each engine reports for a task that raises, and whether a job survives a killed worker."""
    job = "predict" if "predict" in selected else next(iter(selected))
    function, items = selected[job]
    print(f"\nFailures ({job} job for the killed worker: one task SIGKILLs its process on its first run)\n")
    print("| engine | a task that raises: what the caller gets | a worker killed mid-job |")
    print("|---|---|---|")
    for engine in engines:
        print(f"engine {engine} failure checks ...", file=sys.stderr, flush=True)
        if engine == "inline":
            killed = "n/a (kills the caller)"
        else:
            killed = killed_worker(engine, function, items, args.workers)
        print(f"| {engine} | {native_error(engine, args.workers)} | {killed} |")


if __name__ == "__main__":
    main()
