"""CPU processes under torchrun (gloo) train the same weights as one process on the whole batch: two
processes on one node, and two nodes of one process each joined by a c10d rendezvous over loopback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cvfer.train import train

WORKER = """
import importlib.util, json, os, sys
from pathlib import Path
spec = importlib.util.spec_from_file_location("train_test_kit", {conftest!r})
kit = importlib.util.module_from_spec(spec)
spec.loader.exec_module(kit)
kit.install_fake_codec()
from cvfer.train import TrainConfig, train
config = TrainConfig.from_json(Path(sys.argv[1]).read_text())
result = train(config, sys.argv[2], 0, sys.argv[3])
where = {{key: os.environ[key] for key in ("RANK", "GROUP_RANK", "LOCAL_RANK", "WORLD_SIZE")}}
Path(sys.argv[3], f"rank_{{os.environ['RANK']}}.json").write_text(json.dumps({{"epochs": result.epochs, **where}}))
"""
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
ENVIRONMENT = {**os.environ, "OMP_NUM_THREADS": "1"}


def _worker_arguments(tmp_path: Path, config, data: Path, out: Path) -> list[str]:
    """The worker script and its arguments (config file, data, run folder)."""
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER.format(conftest=str(Path(__file__).with_name("conftest.py"))))
    config_path = tmp_path / "config.json"
    config_path.write_text(config.to_json())
    return [str(worker), str(config_path), str(data), str(out)]


def _assert_same_training(single, ddp_dir: Path) -> None:
    """Weights within float rounding and the same logged history as the single-process run."""
    single_weights = torch.load(single.out_dir / "model.pt", weights_only=False)["state_dict"]
    ddp_weights = torch.load(ddp_dir / "model.pt", weights_only=False)["state_dict"]
    assert single_weights.keys() == ddp_weights.keys()
    for key in single_weights:
        torch.testing.assert_close(ddp_weights[key], single_weights[key], rtol=1e-5, atol=1e-6, msg=key)
    ddp_rows = [json.loads(line) for line in (ddp_dir / "history.jsonl").read_text().splitlines()]
    for single_row, ddp_row in zip(single.history, ddp_rows, strict=True):
        for key in ("ce", "mi", "train_acc", "test_war"):
            assert abs(single_row[key] - ddp_row[key]) < 1e-5, key


def _config(make_config):
    # 9 training clips, global batch 4: two steps of 2 clips per process; the critic's MI uses the
    # gathered global batch, so the all_gather gradient path is exercised too. SGD, not Adam: Adam is
    # blind to a wrong gradient scale (e.g. summing instead of averaging over processes) and turns
    # rounding noise of near-zero gradients into full-size steps.
    return make_config(epochs=2, optimizer="sgd", lr=0.2)


def test_two_processes_match_one(fake_data, make_config, tmp_path):
    config = _config(make_config)
    single = train(config, fake_data, 0, tmp_path / "single")
    arguments = _worker_arguments(tmp_path, config, fake_data, tmp_path / "ddp")
    completed = subprocess.run(
        [*TORCHRUN, "--standalone", "--nproc_per_node=2", *arguments],
        capture_output=True, text=True, timeout=120, env={**ENVIRONMENT, "MASTER_ADDR": "127.0.0.1"},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert json.loads((tmp_path / "ddp" / "rank_1.json").read_text())["epochs"] == 2
    _assert_same_training(single, tmp_path / "ddp")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_over_loopback_match_one_process(fake_data, make_config, tmp_path):
    """`torchrun --nnodes 2 --rdzv-backend c10d` twice on this machine, as on two machines (docs/training.md,
    "Across machines"): one process per node, both writing to one --out as a shared file system would."""
    config = _config(make_config)
    single = train(config, fake_data, 0, tmp_path / "single")
    arguments = _worker_arguments(tmp_path, config, fake_data, tmp_path / "ddp")
    endpoint = f"127.0.0.1:{_free_port()}"
    nodes = [
        subprocess.Popen(
            [*TORCHRUN, "--nnodes=2", "--nproc-per-node=1", f"--node-rank={node}", "--rdzv-backend=c10d",
             f"--rdzv-endpoint={endpoint}", "--rdzv-id=cvfer-test", f"--rdzv-conf=is_host={int(node == 0)}",
             "--local-addr=127.0.0.1", *arguments],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENVIRONMENT,
        )
        for node in (0, 1)
    ]
    try:
        outputs = [node.communicate(timeout=120) for node in nodes]
    finally:
        for node in nodes:
            node.kill()
    for node, (_, stderr) in zip(nodes, outputs):
        assert node.returncode == 0, stderr[-3000:]
    ranks = [json.loads((tmp_path / "ddp" / f"rank_{rank}.json").read_text()) for rank in (0, 1)]
    assert [(where["WORLD_SIZE"], where["LOCAL_RANK"], where["epochs"]) for where in ranks] == [("2", "0", 2)] * 2
    assert sorted(where["GROUP_RANK"] for where in ranks) == ["0", "1"]  # one process on each node
    _assert_same_training(single, tmp_path / "ddp")


def test_world_size_without_rank_is_one_line(monkeypatch):
    from cvfer.errors import ConfigError
    from cvfer.train.distributed import setup_distributed

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(ConfigError, match="WORLD_SIZE is 2 but RANK is not set"):
        setup_distributed("cpu")
