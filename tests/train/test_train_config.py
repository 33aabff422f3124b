"""TrainConfig (JSON, --set, presets), the lr schedules and the `cvfer train` verb."""

from __future__ import annotations

import json

import pytest
import torch

from cvfer.cli import main
from cvfer.errors import ConfigError
from cvfer.train import TrainConfig, preset_config
from cvfer.train.config import build_config
from cvfer.train.schedules import make_scheduler, schedule_factor


def test_json_round_trip_and_unknown_keys():
    config = TrainConfig(model="mic-mi", model_cfg={"alpha": 0.2}, group_lr={"mine": 1e-4}, lr_schedule="cosine")
    assert TrainConfig.from_json(config.to_json()) == config
    with pytest.raises(ConfigError, match=r"unknown training options \['epoch'\]"):
        TrainConfig.from_dict({"epoch": 3})
    with pytest.raises(ConfigError, match="not valid JSON"):
        TrainConfig.from_json("{", source="run/config.json")


def test_changed_from_treats_options_added_later_as_their_default():
    config = TrainConfig(epochs=3, threads=2)
    saved = config.to_dict()
    del saved["critic_steps"]  # a run folder written before the option existed
    assert config.changed_from(saved) == []
    assert TrainConfig(epochs=3, threads=2, critic_steps=5).changed_from(saved) == ["critic_steps"]
    assert TrainConfig(epochs=4, threads=1).changed_from(saved, ignore=("threads",)) == ["epochs"]


def test_invalid_values_name_the_option():
    with pytest.raises(ConfigError, match="optimizer='rmsprop'"):
        TrainConfig(optimizer="rmsprop")
    with pytest.raises(ConfigError, match="epochs='ten' is invalid: epochs must be int"):
        TrainConfig().with_setting("epochs=ten")
    with pytest.raises(ConfigError, match="must be int"):
        TrainConfig(seed=True)
    assert TrainConfig().with_setting("lr=1").lr == 1  # JSON integers are fine where floats are meant
    with pytest.raises(ConfigError, match="batch_size=1"):
        TrainConfig(batch_size=1)
    with pytest.raises(ConfigError, match="one value per milestone"):
        TrainConfig(lr_schedule="step", lr_schedule_params={"milestones": [3, 6], "factors": [0.1]})


def test_set_assignments_reach_fields_and_model_options():
    config = TrainConfig().with_setting("lr=0.01").with_setting("model.alpha=0.3").with_setting("identity_encoder=dlib")
    assert config.lr == 0.01 and config.model_cfg == {"alpha": 0.3} and config.identity_encoder == "dlib"
    with pytest.raises(ConfigError, match="--set alpha: unknown training option"):
        TrainConfig().with_setting("alpha=0.3")
    with pytest.raises(ConfigError, match="not key=value"):
        TrainConfig().with_setting("lr")


def test_presets_follow_the_paper():
    ckplus, afew, demo = preset_config("ckplus"), preset_config("afew"), preset_config("demo")
    assert (ckplus.batch_size, ckplus.epochs, ckplus.optimizer, ckplus.weight_decay) == (48, 100, "adam", 1e-5)
    assert ckplus.model_cfg["alpha"] == 0.1 and afew.model_cfg["alpha"] == 0.2
    afew_lrs = [afew.lr * schedule_factor(afew.lr_schedule, afew.lr_schedule_params, 100, epoch) for epoch in (0, 29, 30, 60)]
    assert afew_lrs == pytest.approx([1e-4, 1e-4, 8e-6, 1e-7])
    assert demo.epochs <= 20 and demo.device == "cpu"
    flat = TrainConfig.from_flat({"model": "tfen", "lr": 0.01, "alpha": 1.0, "model_cfg": {"input_size": 64}})
    assert (flat.model, flat.lr, flat.model_cfg) == ("tfen", 0.01, {"input_size": 64, "alpha": 1.0})
    with pytest.raises(ConfigError, match="unknown preset"):
        preset_config("ferplus")
    layered = build_config(preset="ckplus", options={"epochs": 3, "lr": None}, model_options={"alpha": 0.5}, settings=["seed=4"])
    assert (layered.epochs, layered.lr, layered.seed, layered.model_cfg["alpha"]) == (3, ckplus.lr, 4, 0.5)


def test_schedules_per_epoch():
    assert [schedule_factor("step", {"milestones": [2, 4], "gamma": 0.5}, 6, e) for e in range(6)] == [1, 1, 0.5, 0.5, 0.25, 0.25]
    cosine = [schedule_factor("cosine", {"warmup_epochs": 1}, 5, e) for e in range(5)]
    assert cosine[0] == 0.5 and cosine[1] == 1 and cosine[1] > cosine[2] > cosine[3] > cosine[4] > 0
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.2)
    scheduler = make_scheduler(optimizer, "step", {"milestones": [1], "factors": [0.1]}, 3)
    lrs = []
    for _ in range(3):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([0.2, 0.02, 0.02])


def test_cli_trains_and_reports(fake_data, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--data", str(fake_data), "--out", str(run), "--model", "test-tiny-two-group", "--epochs", "1",
            "--batch-size", "4", "--num-frames", "4", "--threads", "1", "--set", "identity_encoder=null"]
    assert main(args) == 0
    assert "trained test-tiny-two-group for 1 epochs on fold 0: test WAR" in capsys.readouterr().out
    assert json.loads((run / "config.json").read_text())["model"] == "test-tiny-two-group"
    assert main(args) == 2  # a second run into the same folder needs --resume
    assert "pass --resume" in capsys.readouterr().err
    assert main([*args[:-2], "--epochs", "2", "--set", "identity_encoder=null", "--resume"]) == 0
    assert main([*args, "--set", "epoch=3"]) == 2
    assert "cvfer: error: --set epoch: unknown training option" in capsys.readouterr().err


def test_train_and_cv_read_training_options_alike():
    from cvfer.cli import build_parser
    from cvfer.cli.train import train_config_from_args

    options = ["--preset", "ckplus", "--epochs", "2", "--lr", "0.01", "--alpha", "0.3", "--set", "seed=5"]
    parser = build_parser()
    from_train = train_config_from_args(parser.parse_args(["train", "--data", "d", "--out", "o", *options]))
    from_cv = train_config_from_args(parser.parse_args(["cv", "--data", "d", "--out", "o", *options]))
    assert from_train == from_cv
    assert (from_cv.epochs, from_cv.lr, from_cv.seed, from_cv.model_cfg["alpha"]) == (2, 0.01, 5, 0.3)
