"""`kill -9` of a real `cvfer train` process once it has written a checkpoint, then `--resume`: the final weights
are bit-identical to those of a run never interrupted, and the killed run leaves nothing behind that blocks it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from cvfer.cli import main
from cvfer.models import list_models

MODEL = "test-kill-resume-tiny"
# Registers a tiny model (sleeping CVFER_TEST_STEP_SLEEP seconds a step, so there is time to kill it mid-run)
# in whichever process runs it: this one for the reference run, `cvfer train` subprocesses for the others.
REGISTER_MODEL = f"""
import os, time
from torch import nn
from cvfer.models import list_models, register_model
from cvfer.models.base import FERModel, FEROutput
from cvfer.models.registry import variant_builder

class TinyModel(FERModel):
    train_inputs = ("residuals", "label")
    test_inputs = ("residuals",)

    def __init__(self, num_classes, image_size, num_frames):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(3 * num_frames, 16), nn.Tanh())
        self.classifier = nn.Linear(16, num_classes)

    def forward(self, batch):
        time.sleep(float(os.environ.get("CVFER_TEST_STEP_SLEEP", 0)))
        features = self.encoder(batch["residuals"].mean(dim=(3, 4)).flatten(1) * 10)
        return FEROutput(logits=self.classifier(features), features=features)

if {MODEL!r} not in list_models():
    register_model({MODEL!r})(variant_builder(TinyModel))
"""
EPOCHS = 4
TRAIN = ["--model", MODEL, "--epochs", str(EPOCHS), "--batch-size", "4", "--num-frames", "3", "--threads", "1",
         "--lr", "0.05"]


def _train_process(data, out, *extra: str) -> subprocess.Popen:
    script = REGISTER_MODEL + "import sys\nfrom cvfer.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    argv = [sys.executable, "-c", script, "train", "--data", str(data), "--out", str(out), *TRAIN, *extra]
    env = {**os.environ, "CVFER_TEST_STEP_SLEEP": "0.1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _weights(run) -> dict[str, torch.Tensor]:
    return torch.load(run / "model.pt", weights_only=False)["state_dict"]


@pytest.mark.slow
def test_kill_9_after_a_checkpoint_then_resume_gives_the_uninterrupted_weights(tmp_path):
    data = tmp_path / "data"
    synth = ["synth", str(data), "--num-subjects", "4", "--clips-per-class", "1", "--num-frames", "6", "--size", "16"]
    assert main([*synth, "--folds", "2", "--quiet"]) == 0
    killed = tmp_path / "killed"
    process = _train_process(data, killed)
    deadline = time.monotonic() + 120
    while not (killed / "checkpoint.pt").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    output, _ = process.communicate()
    assert process.returncode == -signal.SIGKILL, output  # killed mid-run, not finished
    assert (killed / "checkpoint.pt").exists() and not (killed / "model.pt").exists()

    resumed = _train_process(data, killed, "--resume")
    output, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, output
    assert not [path.name for path in killed.iterdir() if path.name.startswith(".")]  # no temp file, no lock

    if MODEL not in list_models():
        exec(REGISTER_MODEL, {})  # the same model, registered in this process for the reference run
    reference = tmp_path / "reference"
    assert main(["train", "--data", str(data), "--out", str(reference), *TRAIN]) == 0
    expected, got = _weights(reference), _weights(killed)
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[key], got[key]) for key in expected)
