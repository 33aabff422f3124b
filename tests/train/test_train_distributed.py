"""Two CPU processes under torchrun (gloo) train the same weights as one process on the whole batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from cvfer.train import train

WORKER = """
import importlib.util, json, sys
from pathlib import Path
spec = importlib.util.spec_from_file_location("train_test_kit", {conftest!r})
kit = importlib.util.module_from_spec(spec)
spec.loader.exec_module(kit)
kit.install_fake_codec()
from cvfer.train import TrainConfig, train
config = TrainConfig.from_json(Path(sys.argv[1]).read_text())
result = train(config, sys.argv[2], 0, sys.argv[3])
Path(sys.argv[3], f"rank_epochs_{{__import__('os').environ['RANK']}}.json").write_text(json.dumps(result.epochs))
"""


def test_two_processes_match_one(fake_data, make_config, tmp_path):
    # 9 training clips, global batch 4: two steps of 2 clips per process; the critic's MI uses the
    # gathered global batch, so the all_gather gradient path is exercised too. SGD, not Adam: Adam is
    # blind to a wrong gradient scale (e.g. summing instead of averaging over processes) and turns
    # rounding noise of near-zero gradients into full-size steps.
    config = make_config(epochs=2, optimizer="sgd", lr=0.2)
    single = train(config, fake_data, 0, tmp_path / "single")
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER.format(conftest=str(Path(__file__).with_name("conftest.py"))))
    config_path = tmp_path / "config.json"
    config_path.write_text(config.to_json())
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    completed = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(worker), str(config_path), str(fake_data), str(tmp_path / "ddp")],
        capture_output=True, text=True, timeout=120, env=environment,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    ddp_dir = tmp_path / "ddp"
    assert json.loads((ddp_dir / "rank_epochs_1.json").read_text()) == 2
    single_weights = torch.load(single.out_dir / "model.pt", weights_only=False)["state_dict"]
    ddp_weights = torch.load(ddp_dir / "model.pt", weights_only=False)["state_dict"]
    assert single_weights.keys() == ddp_weights.keys()
    for key in single_weights:
        torch.testing.assert_close(ddp_weights[key], single_weights[key], rtol=1e-5, atol=1e-6, msg=key)
    single_rows = single.history
    ddp_rows = [json.loads(line) for line in (ddp_dir / "history.jsonl").read_text().splitlines()]
    for single_row, ddp_row in zip(single_rows, ddp_rows, strict=True):
        for key in ("ce", "mi", "train_acc", "test_war"):
            assert abs(single_row[key] - ddp_row[key]) < 1e-5, key
