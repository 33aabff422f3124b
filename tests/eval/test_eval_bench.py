"""`cvfer bench`: its table for two clips, each system at its native input size beside the equal-size row,
bad arguments refused in one line; GMACs of a known layer by hand. No wall-clock asserts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cvfer.cli import main
from cvfer.codec import decode_all, write_video
from cvfer.errors import CheckpointError, CompressedVideoError, ConfigError
from cvfer.eval.bench import benchmark, gmacs_per_clip, sized_models
from cvfer.models import list_models, registry


class _LinearOnFrames(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(12, 5)

    def forward(self, batch):
        return self.linear(batch["frames"])


def test_gmacs_of_a_linear_layer_by_hand():
    # (1, 3, 12) @ (12, 5): 3 · 12 · 5 = 180 multiply-accumulates.
    assert gmacs_per_clip(_LinearOnFrames(), {"frames": torch.zeros(1, 3, 12)}) * 1e9 == 180


def _clips(folder, count=2, size=32):
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        base = rng.integers(0, 255, size=(size, size, 3), dtype=np.uint8)
        frames = [np.roll(base, shift, axis=1) for shift in range(12)]
        paths.append(write_video(folder / f"clip_{size}_{index}.mp4", frames))
    return paths


def test_bench_prints_a_table_for_two_clips(tmp_path, capsys):
    clips = _clips(tmp_path)
    assert decode_all(clips[0]) == 12
    code = main(["bench", *map(str, clips), "--models", "cnn-lstm", "--batch", "1,2", "--repeats", "1",
                 "--size", "equal", "--num-frames", "2", "--json", str(tmp_path / "bench.json")])
    assert code == 0
    out = capsys.readouterr().out
    assert "| cnn-lstm | equal | 32 | frames |" in out and "bare decode" in out and "fps (batch 2)" in out
    assert "| cnn-lstm | native |" not in out
    assert (tmp_path / "bench.json").is_file()


def test_benchmark_result_fields(tmp_path):
    clips = _clips(tmp_path)
    result = benchmark(
        clips, ["cnn-lstm:hidden_size=64"], threads=1, batch_sizes=[1, 2], repeats=1, decode_floor=False,
        num_frames=4, size="equal",
    )
    timing = result.models[0]
    assert result.frames_per_clip == 12 and result.decode_fps is None and result.clip_size == 32
    assert timing.name == "cnn-lstm:hidden_size=64" and timing.inputs == ("frames",)
    assert (timing.size, timing.input_size) == ("equal", 32)
    assert set(timing.fps) == {1, 2} and all(value > 0 for value in timing.fps.values())
    # ResNet-18 (11.18 M) + LSTM 512 → 64 (4 · (512·64 + 64·64 + 2·64) = 148 k) + classifier (455).
    assert timing.parameters == 11_176_512 + 147_968 + 455
    assert timing.gmacs_per_clip > 0
    with pytest.raises(ConfigError, match="not key=value"):
        benchmark(clips, ["cnn-lstm:hidden_size"], repeats=1, decode_floor=False, size="equal")


def test_every_registered_model_has_a_native_size_and_the_peers_sizes_are_their_papers():
    # cvfer's own models: other test modules register tiny test models (named test-...) of no system
    sizes = {name: registry.native_input_size(name) for name in list_models() if not name.startswith("test-")}
    assert sizes["mic"] is None and sizes["mic-resnet6"] is None  # MIC reads the clip as stored
    assert sizes["cnn-lstm"] == sizes["tfen-no-3d"] == sizes["ceflnet-sal"] == 224
    for system in ("tfen", "ceflnet"):  # the registry agrees with each peer's paper preset
        assert registry.model_presets(system)["paper"].settings["input_size"] == sizes[system]


def test_sized_models_follow_the_registry(monkeypatch):
    assert sized_models("cnn-lstm:hidden_size=64", 64) == [
        ("cnn-lstm:hidden_size=64:input_size=224", "native"),
        ("cnn-lstm:hidden_size=64", "equal"),
    ]
    assert sized_models("tfen", 64, "native") == [("tfen:input_size=224", "native")]
    assert sized_models("ceflnet", 64, "equal") == [("ceflnet", "equal")]
    assert sized_models("ceflnet", 224) == [("ceflnet", "native = equal")]
    assert sized_models("mic-resnet6", 48) == [("mic-resnet6", "native = equal")]
    assert sized_models("cnn-lstm:input_size=112", 64) == [("cnn-lstm:input_size=112", "given")]
    monkeypatch.setitem(registry.NATIVE_INPUT_SIZES, "tfen", 112)
    assert sized_models("tfen-no-3d", 64, "native") == [("tfen-no-3d:input_size=112", "native")]


def test_native_row_is_timed_at_the_registry_size_beside_the_equal_row(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(registry.NATIVE_INPUT_SIZES, "cnn-lstm", 40)  # small, to keep the test fast
    clips = _clips(tmp_path, count=1)
    code = main(["bench", str(clips[0]), "--models", "mic,cnn-lstm:hidden_size=16", "--batch", "1",
                 "--repeats", "1", "--num-frames", "2", "--clock", "cpu"])
    assert code == 0
    out = capsys.readouterr().out
    assert "| mic | native = equal | 32 | residuals |" in out
    assert "| cnn-lstm:hidden_size=16 | native | 40 | frames |" in out
    assert "| cnn-lstm:hidden_size=16 | equal | 32 | frames |" in out


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--batch", "0", "argument --batch: 0 is not positive"),
        ("--batch", "1,x", "argument --batch: 'x' is not a whole number"),
        ("--batch", ",", "argument --batch: give at least one number"),
        ("--repeats", "0", "argument --repeats: 0 is not positive"),
        ("--repeats", "two", "argument --repeats: 'two' is not a whole number"),
        ("--threads", "-1", "argument --threads: -1 is not positive"),
        ("--size", "huge", "argument --size: invalid choice: 'huge'"),
    ],
)
def test_bench_rejects_bad_arguments_while_parsing(tmp_path, capsys, option, value, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", str(tmp_path / "clip.mp4"), "--models", "cnn-lstm", f"{option}={value}"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error


@pytest.mark.parametrize(
    ("models", "message"),
    [
        ("nope", "unknown model 'nope'"),
        ("runs/missing/model.pt", "runs/missing/model.pt: no such file (give an existing model.pt or a registered"),
    ],
)
def test_bench_refuses_unknown_models_in_one_line(tmp_path, capsys, models, message):
    clips = _clips(tmp_path, count=1)
    assert main(["bench", str(clips[0]), "--models", models]) == 2
    error = capsys.readouterr().err
    assert error.startswith("cvfer: error:") and message in error and len(error.strip().splitlines()) == 1


def test_bench_refuses_clips_of_two_sizes(tmp_path, capsys):
    clips = [*_clips(tmp_path, count=1, size=32), *_clips(tmp_path, count=1, size=48)]
    assert main(["bench", *map(str, clips), "--models", "mic"]) == 2
    error = capsys.readouterr().err
    assert "clip_48_0.mp4: is 48×48 but" in error and "(bench clips of one size)" in error
    assert len(error.strip().splitlines()) == 1


def test_benchmark_refuses_bad_settings(tmp_path, monkeypatch):
    clips = _clips(tmp_path, count=1)
    for settings, message in [
        ({"size": "huge"}, "unknown size 'huge'"),
        ({"clock": "sundial"}, "unknown clock 'sundial'"),
        ({"batch_sizes": [0]}, "must be >= 1"),
        ({"repeats": 0}, "must be >= 1"),
    ]:
        with pytest.raises(ConfigError, match=message):
            benchmark(clips, ["mic"], **settings)
    with pytest.raises(CompressedVideoError, match="no clips given"):
        benchmark([], ["mic"])
    with pytest.raises(CheckpointError, match="weights.pt: no such file"):
        sized_models("weights.pt", 32)
    with pytest.raises(CheckpointError, match="is a folder, not a model.pt"):
        sized_models(str(tmp_path), 32)
    monkeypatch.setitem(registry.NATIVE_INPUT_SIZES, "mic", 48)
    with pytest.raises(ConfigError, match="'mic-mv' takes no input_size, so it cannot run at its native 48 px"):
        sized_models("mic-mv", 32)
    monkeypatch.delitem(registry.NATIVE_INPUT_SIZES, "ceflnet")
    with pytest.raises(ConfigError, match="no native input size for model 'ceflnet-sal'"):
        sized_models("ceflnet-sal", 32)
