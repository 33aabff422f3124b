"""`cvfer bench` on two clips prints its table; GMACs of a known layer by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cvfer.cli import main
from cvfer.codec import decode_all, write_video
from cvfer.errors import ConfigError
from cvfer.eval.bench import benchmark, gmacs_per_clip


class _LinearOnFrames(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(12, 5)

    def forward(self, batch):
        return self.linear(batch["frames"])


def test_gmacs_of_a_linear_layer_by_hand():
    # (1, 3, 12) @ (12, 5): 3 · 12 · 5 = 180 multiply-accumulates.
    assert gmacs_per_clip(_LinearOnFrames(), {"frames": torch.zeros(1, 3, 12)}) * 1e9 == 180


def _clips(folder, count=2):
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        base = rng.integers(0, 255, size=(32, 32, 3), dtype=np.uint8)
        frames = [np.roll(base, shift, axis=1) for shift in range(12)]
        paths.append(write_video(folder / f"clip_{index}.mp4", frames))
    return paths


def test_bench_prints_a_table_for_two_clips(tmp_path, capsys):
    clips = _clips(tmp_path)
    assert decode_all(clips[0]) == 12
    code = main(["bench", *map(str, clips), "--models", "cnn-lstm", "--batch", "1,2", "--repeats", "1",
                 "--json", str(tmp_path / "bench.json")])
    assert code == 0
    out = capsys.readouterr().out
    assert "| cnn-lstm | frames |" in out and "bare decode" in out and "fps (batch 2)" in out
    assert (tmp_path / "bench.json").is_file()


def test_benchmark_result_fields(tmp_path):
    clips = _clips(tmp_path)
    result = benchmark(
        clips, ["cnn-lstm:hidden_size=64"], threads=1, batch_sizes=[1, 2], repeats=1, decode_floor=False, num_frames=4
    )
    timing = result.models[0]
    assert result.frames_per_clip == 12 and result.decode_fps is None
    assert timing.name == "cnn-lstm:hidden_size=64" and timing.inputs == ("frames",)
    assert set(timing.fps) == {1, 2} and all(value > 0 for value in timing.fps.values())
    # ResNet-18 (11.18 M) + LSTM 512 → 64 (4 · (512·64 + 64·64 + 2·64) = 148 k) + classifier (455).
    assert timing.parameters == 11_176_512 + 147_968 + 455
    assert timing.gmacs_per_clip > 0
    with pytest.raises(ConfigError, match="not key=value"):
        benchmark(clips, ["cnn-lstm:hidden_size"], repeats=1, decode_floor=False)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--batch", "0", "argument --batch: 0 is not positive"),
        ("--batch", "1,x", "argument --batch: 'x' is not a whole number"),
        ("--batch", ",", "argument --batch: give at least one number"),
        ("--repeats", "0", "argument --repeats: 0 is not positive"),
        ("--repeats", "two", "argument --repeats: 'two' is not a whole number"),
        ("--threads", "-1", "argument --threads: -1 is not positive"),
    ],
)
def test_bench_rejects_bad_numbers_while_parsing(tmp_path, capsys, option, value, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", str(tmp_path / "clip.mp4"), "--models", "cnn-lstm", f"{option}={value}"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error
