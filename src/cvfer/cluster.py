"""Batch work over many files: in this process, in a local process pool, or on a Dask cluster.

`map_files(function, items, workers=..., cluster=...)` calls `function(item)` for every item and returns
the results in input order; an item whose call raised is a `TaskError` with a one-line reason, and the
rest still run. `function` (e.g. a partial holding a model) is shipped once per worker process, not once
per item. Worker processes run their numeric libraries single-threaded: the parallelism is over files.

- `cluster=None`: `workers` processes of this machine (`workers=1`: this process, no pool; "auto": every
  CPU once the first item, run here, shows that the rest would take more than `POOL_WORTH_S` here). A
  worker process that dies (killed, out of memory) breaks the pool; the unfinished items then run again
  in a fresh pool, at most `POOL_ATTEMPTS` times.
- `cluster="local"`: a Dask `LocalCluster` of `workers` single-threaded processes on this machine.
- `cluster=ADDRESS` (`tcp://host:8786`): an existing Dask scheduler. Its workers need cvfer installed and
  the files at the same paths (a shared file system). Dask re-runs the tasks of a worker that died
  elsewhere; a task that killed `distributed.scheduler.allowed-failures` + 1 workers (default 4) fails
  with a `TaskError`.

The engine (Dask distributed, docs/scale.md says why Dask and not Ray) is the optional extra
`pip install 'cvfer[cluster]'`.
"""

from __future__ import annotations

import concurrent.futures
import logging
import multiprocessing
import os
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from tqdm import tqdm

from cvfer.errors import ConfigError, CvferError

Item = TypeVar("Item")
Result = TypeVar("Result")

LOCAL_CLUSTER = "local"
AUTO = "auto"  # workers: every CPU, once the first item shows the rest is worth a pool
POOL_WORTH_S = 5.0  # `workers="auto"`: seconds the items left would take here before a pool is started
POOL_ATTEMPTS = 3  # runs of an item whose worker process died, in the process-pool path
INSTALL_HINT = "pip install 'cvfer[cluster]'"
CONNECT_TIMEOUT_S = 10  # to reach a --cluster ADDRESS


@dataclass(frozen=True)
class TaskError(Generic[Item]):
    """An item whose call failed, with the reason in one line."""

    item: Item
    reason: str


def error_reason(error: BaseException) -> str:
    """One line for a failed call: a cvfer error's problem (and fix), else the exception's type and text."""
    if isinstance(error, CvferError):
        return error.problem + (f" ({error.fix})" if error.fix else "")
    return f"{type(error).__name__}: {error}"


def require_engine(flag: str = "--cluster") -> None:
    """Raise a one-line `ConfigError` if the cluster engine (the `cluster` extra) is not installed."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise ConfigError(f"{flag} needs Dask distributed, which is not installed", fix=INSTALL_HINT) from None


def available_cpus() -> int:
    """CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def map_files(
    function: Callable[[Item], Result],
    items: Sequence[Item],
    *,
    workers: int | str = 1,
    cluster: str | None = None,
    desc: str = "map",
    unit: str = "file",
) -> list[Result | TaskError[Item]]:
    """`function(item)` for each item, in input order; a call that raised gives a `TaskError`.

    `workers`: processes on this machine (also the size of `cluster="local"`), or "auto": the first item
    runs here, and the rest on a pool of every CPU if they would take more than `POOL_WORTH_S` here (a pool's
    start-up costs seconds). `cluster`: None, "local" or a Dask scheduler address. `function` must be
    picklable when it runs outside this process.
    """
    if workers != AUTO and (not isinstance(workers, int) or workers < 1):
        raise ConfigError(f"--workers must be a number >= 1 or {AUTO!r}, got {workers!r}")
    items = list(items)
    if not items:
        return []
    with tqdm(total=len(items), desc=desc, unit=unit, disable=len(items) < 2) as progress:
        if cluster is not None:
            return _dask_map(function, items, available_cpus() if workers == AUTO else workers, cluster, progress)
        results: list[Result | TaskError[Item]] = []
        if workers == AUTO:
            start = time.perf_counter()
            results.append(_call(function, items[0]))
            progress.update()
            worth_a_pool = (time.perf_counter() - start) * (len(items) - 1) > POOL_WORTH_S
            workers = available_cpus() if worth_a_pool else 1
        if workers == 1 or len(items) - len(results) < 2:
            for item in items[len(results) :]:
                results.append(_call(function, item))
                progress.update()
            return results
        return results + _pool_map(function, items[len(results) :], workers, progress)


def _call(function: Callable[[Item], Result], item: Item) -> Result | TaskError[Item]:
    try:
        return function(item)
    except Exception as error:  # noqa: BLE001 - any failure of one item is listed, the rest go on
        return TaskError(item, error_reason(error))


def _single_threaded() -> None:
    """One thread for the numeric libraries already imported in this worker process."""
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    if "cv2" in sys.modules:
        sys.modules["cv2"].setNumThreads(1)


_installed_function: Callable[[Any], Any] | None = None  # a pool worker's function (set by its initializer)


def _install(function: Callable[[Any], Any]) -> None:
    global _installed_function
    _installed_function = function
    _single_threaded()


def _call_installed(item: Any) -> Any:
    assert _installed_function is not None, "pool worker started without _install"
    return _call(_installed_function, item)


def _pool_map(
    function: Callable[[Item], Result], items: list[Item], workers: int, progress: tqdm
) -> list[Result | TaskError[Item]]:
    """Process pool (spawned workers); items left when a worker died run again in a fresh pool."""
    results: dict[int, Result | TaskError[Item]] = {}
    context = multiprocessing.get_context("spawn")
    for _ in range(POOL_ATTEMPTS):
        pending = [index for index in range(len(items)) if index not in results]
        if not pending:
            break
        with concurrent.futures.ProcessPoolExecutor(
            min(workers, len(pending)), mp_context=context, initializer=_install, initargs=(function,)
        ) as pool:
            futures = {pool.submit(_call_installed, items[index]): index for index in pending}
            for future in concurrent.futures.as_completed(futures):
                try:
                    results[futures[future]] = future.result()
                except BrokenProcessPool:
                    continue  # this pool is gone: the next attempt runs what is left
                progress.update()
    reason = f"a worker process died while running it, {POOL_ATTEMPTS} times (crash or out of memory)"
    for index in range(len(items)):
        if index not in results:
            results[index] = TaskError(items[index], reason)
            progress.update()
    return [results[index] for index in range(len(items))]


def _shared_function_class() -> type:
    """A Dask `WorkerPlugin` that ships a function to every worker once, including workers that join or
    restart later. Built on first use (see `__getattr__`) so that importing this module does not import Dask."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class SharedFunction(WorkerPlugin):
        idempotent = True

        def __init__(self, function: Callable[[Any], Any]):
            self.function = function

        def setup(self, worker: Any) -> None:
            _single_threaded()

    SharedFunction.__qualname__ = SharedFunction.__name__ = "_SharedFunction"  # pickled by this module-level name
    return SharedFunction


def __getattr__(name: str) -> Any:
    """`_SharedFunction` (the Dask plugin class) is made when first asked for, also when a worker unpickles it."""
    if name == "_SharedFunction":
        globals()[name] = _shared_function_class()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _call_on_worker(plugin_name: str, item: Any) -> Any:
    from distributed import get_worker

    return _call(get_worker().plugins[plugin_name].function, item)


def _connect(cluster: str, workers: int) -> tuple[Any, Any]:
    """(client, local cluster or None) for `cluster` ("local" or a scheduler address)."""
    require_engine()
    from distributed import Client, LocalCluster

    if cluster == LOCAL_CLUSTER:
        local = LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=logging.ERROR
        )
        return Client(local), local
    try:
        return Client(cluster, timeout=CONNECT_TIMEOUT_S), None
    except (OSError, TimeoutError, ValueError) as error:
        raise ConfigError(
            f"cannot reach a Dask scheduler at --cluster {cluster} ({error})",
            fix="start one (`dask scheduler`, then `dask worker ADDRESS` on each machine) or use --cluster local",
        ) from None


def _dask_map(
    function: Callable[[Item], Result], items: list[Item], workers: int, cluster: str, progress: tqdm
) -> list[Result | TaskError[Item]]:
    from distributed import as_completed

    client, local = _connect(cluster, workers)
    plugin_name = f"cvfer-map-{uuid.uuid4().hex}"
    try:
        client.register_plugin(__getattr__("_SharedFunction")(function), name=plugin_name)
        futures = [
            client.submit(_call_on_worker, plugin_name, item, key=f"{plugin_name}-{index}", pure=False)
            for index, item in enumerate(items)
        ]
        index_of = {future.key: index for index, future in enumerate(futures)}
        results: dict[int, Result | TaskError[Item]] = {}
        for future, outcome in as_completed(futures, with_results=True, raise_errors=False):
            index = index_of[future.key]
            failed = future.status == "error"
            results[index] = TaskError(items[index], _engine_reason(outcome)) if failed else outcome
            progress.update()
        client.unregister_worker_plugin(plugin_name)
        return [results[index] for index in range(len(items))]
    finally:
        client.close()
        if local is not None:
            local.close()


def _engine_reason(error: BaseException) -> str:
    """The reason of a task the engine itself gave up on (calls that raise come back as `TaskError`)."""
    from distributed.scheduler import KilledWorker

    if isinstance(error, KilledWorker):
        return "every worker that ran it died (crash or out of memory); Dask gave up after its allowed failures"
    return error_reason(error)
