"""`cvfer.cluster.map_files` in one process, a process pool and a Dask cluster of 2 workers: same results in
input order, a failing file listed while the rest finish, a killed worker's task re-run; `cvfer prepare` and
`cvfer predict` give the same outputs with `--cluster`; `--cluster` without the extra is one line."""

from __future__ import annotations

import json
import logging
import sys
import textwrap

import numpy as np
import pytest
import torch

from cvfer import cluster
from cvfer.cli import main
from cvfer.codec import write_video
from cvfer.data.datasets import prepare_dataset
from cvfer.data.manifest import read_manifest
from cvfer.errors import ConfigError
from cvfer.eval.predict import load_model, predict_paths
from cvfer.models import create_model
from cvfer.runs import save_inference_model

NO_EXTRA = "the cluster extra (pip install 'cvfer[cluster]') is not installed: Dask paths untested"

# Worker processes import this by name: spawned pool workers and Dask's nanny-spawned workers get the
# parent's sys.path, and a test module itself is not importable by name under --import-mode=importlib.
KILLER_MODULE = '''
import os, signal
from pathlib import Path


def shout_or_die_once(marker, item):
    """item.upper(); the first call on "die" SIGKILLs its own process (as the OOM killer would)."""
    if item == "die" and not Path(marker).exists():
        Path(marker).touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return item.upper()


def process_id(item):
    return os.getpid()
'''


@pytest.fixture(scope="module")
def helpers(tmp_path_factory):
    """The importable helper module (on sys.path before any worker starts)."""
    folder = tmp_path_factory.mktemp("helpers")
    (folder / "cvfer_cluster_test_helpers.py").write_text(textwrap.dedent(KILLER_MODULE))
    sys.path.insert(0, str(folder))
    import cvfer_cluster_test_helpers

    yield cvfer_cluster_test_helpers
    sys.path.remove(str(folder))


@pytest.fixture(scope="module")
def address(helpers):
    """A Dask scheduler with 2 single-threaded worker processes, as `--cluster ADDRESS` reaches one."""
    distributed = pytest.importorskip("distributed", reason=NO_EXTRA)
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=logging.ERROR
    ) as local:
        yield local.scheduler_address


def test_every_path_keeps_order_and_lists_the_failing_item(address):
    items = ["1", "2", "x", "4", "5"]
    expected = [1, 2, cluster.TaskError("x", "ValueError: invalid literal for int() with base 10: 'x'"), 4, 5]
    assert cluster.map_files(int, items) == expected
    assert cluster.map_files(int, items, workers=2) == expected
    assert cluster.map_files(int, items, cluster=address) == expected
    assert cluster.map_files(int, items, workers=2, cluster="local") == expected
    assert cluster.map_files(int, items, workers="auto") == expected  # quick items: all in this process


def test_auto_workers_start_a_pool_only_when_the_rest_is_worth_it(helpers, monkeypatch):
    import os

    assert set(cluster.map_files(helpers.process_id, range(4), workers="auto")) == {os.getpid()}
    monkeypatch.setattr(cluster, "POOL_WORTH_S", 0.0)
    monkeypatch.setattr(cluster, "available_cpus", lambda: 2)
    first, *rest = cluster.map_files(helpers.process_id, range(4), workers="auto")
    assert first == os.getpid() and os.getpid() not in rest


@pytest.mark.parametrize("where", ["pool", "dask"])
def test_a_killed_worker_does_not_lose_the_job(where, helpers, tmp_path, request):
    import functools

    marker = tmp_path / "killed"
    function = functools.partial(helpers.shout_or_die_once, str(marker))
    options = {"workers": 2} if where == "pool" else {"cluster": request.getfixturevalue("address")}
    assert cluster.map_files(function, ["a", "die", "c", "d"], **options) == ["A", "DIE", "C", "D"]
    assert marker.exists()  # the worker really died once


def test_unreachable_scheduler_is_one_line(monkeypatch):
    pytest.importorskip("distributed", reason=NO_EXTRA)
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT_S", 0.5)
    with pytest.raises(ConfigError, match="cannot reach a Dask scheduler at --cluster tcp://127.0.0.1:9"):
        cluster.map_files(int, ["1", "2"], cluster="tcp://127.0.0.1:9")


def _folder_dataset(root):
    rng = np.random.default_rng(0)
    for subject in range(2):
        for label in ("happy", "sad"):
            frames = [rng.integers(0, 255, (24, 32, 3), dtype=np.uint8) for _ in range(4)]
            write_video(root / label / f"s{subject}_clip.mp4", frames)
    (root / "sad" / "s2_broken.mp4").write_bytes(b"not a video")
    return root


def test_prepare_on_a_cluster_equals_one_process(address, tmp_path):
    root = _folder_dataset(tmp_path / "source")
    options = {"size": 16, "crop_faces": False, "subject_pattern": r"^s(?P<subject>\d+)_", "folds": 2}
    alone = prepare_dataset(root, "folder", tmp_path / "alone", **options)
    spread = prepare_dataset(root, "folder", tmp_path / "spread", cluster=address, **options)
    assert [record.path for record in alone.clips] == [record.path for record in spread.clips]
    assert len(alone.clips) == 4 and alone.skipped == spread.skipped
    assert [item.source for item in spread.skipped] == ["sad/s2_broken.mp4"]
    assert read_manifest(tmp_path / "alone").clips == read_manifest(tmp_path / "spread").clips
    for record in alone.clips:
        assert (tmp_path / "alone" / record.path).read_bytes() == (tmp_path / "spread" / record.path).read_bytes()


def _model(path):
    """A MIC model.pt with random weights for 16×16 clips (the smallest registered network, 11 MB)."""
    torch.manual_seed(0)
    cfg = {"num_classes": 3, "image_size": 16, "num_frames": 4}
    model = create_model("mic", **cfg)
    data = {"image_size": 16, "num_frames": 4, "inputs": ["residuals"], "face_crop": False}
    save_inference_model(path, name="mic", cfg=cfg, classes=["a", "b", "c"], module=model.inference_module(), data=data)
    return path


def test_predict_on_a_cluster_equals_one_process(address, tmp_path, capsys):
    root = _folder_dataset(tmp_path / "videos")
    clips = sorted(root.glob("*/*.mp4"))
    model = _model(tmp_path / "model.pt")
    predictions, failures = predict_paths(load_model(model), clips, workers=1)
    assert [path.name for path, _ in failures] == ["s2_broken.mp4"] and len(predictions) == 4
    code = main(["predict", str(model), *map(str, clips), "--cluster", address, "--json"])
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    assert code == 1  # the broken file is listed; the other four are predicted
    assert [(item["path"], item["probabilities"]) for item in document["predictions"]] == [
        (str(prediction.path), prediction.probabilities) for prediction in predictions
    ]
    assert [(item["path"], item["error"]) for item in document["failures"]] == [(str(p), r) for p, r in failures]
    assert "predicted 4 clips (1 failed or skipped)" in captured.err and f"on --cluster {address}" in captured.err


@pytest.mark.parametrize("verb", ["predict", "prepare"])
def test_cluster_flag_without_the_extra_is_one_line(verb, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "distributed", None)  # `import distributed` now raises ImportError
    arguments = {
        "predict": ["predict", str(tmp_path / "model.pt"), str(tmp_path / "clip.mp4")],
        "prepare": ["prepare", str(tmp_path), "--dataset", "folder", "--out", str(tmp_path / "out")],
    }[verb]
    assert main([*arguments, "--cluster", "local"]) == 2
    error = capsys.readouterr().err.strip()
    expected = "--cluster needs Dask distributed, which is not installed (pip install 'cvfer[cluster]')"
    assert error == f"cvfer: error: {expected}"
