"""TrainConfig (JSON, --set, presets × models, f_I "auto", flags, resumable options), the lr schedules and the
`cvfer train` verb."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from cvfer.cli import main
from cvfer.errors import CheckpointError, ConfigError, DatasetError
from cvfer.models import create_model, list_models, register_model
from cvfer.models.registry import builder_accepts, model_presets
from cvfer.train import TrainConfig, preset_config, preset_names
from cvfer.train.config import (
    build_config,
    identity_encoder_for,
    parse_value,
    resumable_options,
    split_assignment,
)
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


def test_train_and_cv_read_training_options_alike(fake_data):
    options = ["--preset", "ckplus", "--epochs", "2", "--lr", "0.01", "--alpha", "0.3", "--set", "seed=5"]
    from_train = _config_from_cli("train", "--data", str(fake_data), *options)
    from_cv = _config_from_cli("cv", "--data", str(fake_data), *options)
    assert from_train == from_cv == _config_from_cli("cv", "--train-data", str(fake_data), *options)
    assert (from_cv.epochs, from_cv.lr, from_cv.seed, from_cv.model_cfg["alpha"]) == (2, 0.01, 5, 0.3)
    assert from_cv.identity_encoder == "dlib"  # "auto" resolved for the (prepared, non-synthetic) data


def _config_from_cli(verb: str, *options: str) -> TrainConfig:
    from cvfer.cli import build_parser
    from cvfer.cli.train import train_config_from_args

    return train_config_from_args(build_parser().parse_args([verb, "--out", "o", *options]))


# Every model cvfer registers (the test models of conftest aside) with every preset.
MODELS = [name for name in list_models() if not name.startswith("test-")]


@pytest.mark.parametrize("preset", preset_names())
@pytest.mark.parametrize("model", MODELS)
def test_every_preset_builds_every_model(preset: str, model: str) -> None:
    config = build_config(preset=preset, options={"model": model})
    assert config.model == model
    _create(config)  # no option the model does not take, or that its variant fixes


def test_explicit_model_options_are_kept_and_rejected_by_the_model(fake_data, tmp_path) -> None:
    assert "alpha" not in build_config(preset="ckplus", settings=["model=mic-mi"]).model_cfg
    assert build_config(preset="afew", options={"model": "mic"}).model_cfg["alpha"] == 0.2  # mic takes α
    for explicit in (
        build_config(preset="ckplus", options={"model": "mic-mi"}, model_options={"alpha": 0.3}),
        build_config(preset="ckplus", options={"model": "mic-mi"}, settings=["model.alpha=0.3"]),
        _config_from_cli("cv", "--data", str(fake_data), "--preset", "mmi", "--model", "mic-mi", "--alpha", "0.3"),
    ):
        with pytest.raises(ConfigError, match=r"options \['alpha'\] are fixed by this MIC variant"):
            _create(explicit)
    with pytest.raises(TypeError, match="alpha"):  # the trainer reports it as a ConfigError
        _create(build_config(preset="demo", options={"model": "cnn-lstm"}, settings=["model.alpha=0.3"]))
    # A run's config.json as the starting point follows the same rule.
    saved = tmp_path / "config.json"
    saved.write_text(preset_config("ckplus").to_json())
    assert build_config(config_path=saved, options={"model": "cnn-lstm"}).model_cfg == {}


def _create(config: TrainConfig) -> object:
    """`config`'s model at tiny sizes, with the arguments the trainer adds where the builder names them."""
    extras = {"identity_dim": 8, "num_subjects": 3}
    return create_model(
        config.model,
        num_classes=3,
        image_size=32,
        num_frames=3,
        **{key: value for key, value in extras.items() if builder_accepts(config.model, key)},
        **config.model_cfg,
    )


def _synthetic_copy(data: Path, root: Path) -> Path:
    """A copy of the prepared folder `data` whose dataset.json says `cvfer synth` wrote it."""
    copy = root / "synthetic"
    shutil.copytree(data, copy)
    meta = json.loads((copy / "dataset.json").read_text())
    (copy / "dataset.json").write_text(json.dumps({**meta, "source": "synthetic"}))
    return copy


def test_auto_identity_encoder_follows_the_data_and_explicit_values_win(fake_data, tmp_path) -> None:
    synthetic = _synthetic_copy(fake_data, tmp_path)
    assert identity_encoder_for(synthetic) == "synthetic" and identity_encoder_for(fake_data) == "dlib"
    assert TrainConfig().identity_encoder == "auto" and preset_config("ckplus").identity_encoder == "auto"
    assert TrainConfig(model="mic").for_data(synthetic).identity_encoder == "synthetic"
    assert TrainConfig(model="mic-no-rec").for_data(fake_data).identity_encoder == "dlib"
    for explicit in ("synthetic", "dlib", "weights/f_i.pt", None):
        assert TrainConfig(model="mic", identity_encoder=explicit).for_data(synthetic).identity_encoder == explicit
    assert TrainConfig(model="cnn-lstm").for_data(synthetic).identity_encoder == "auto"  # no z_I, nothing chosen
    with pytest.raises(DatasetError, match="missing"):
        TrainConfig(model="mic").for_data(tmp_path / "nowhere")


IDENTITY_MODEL = "test-tiny-two-group-identity"
if IDENTITY_MODEL not in list_models():

    @register_model(IDENTITY_MODEL)
    def tiny_with_identity(num_classes: int, image_size: int, num_frames: int, identity_dim: int) -> object:
        """conftest's tiny model under a builder naming identity_dim, so the trainer loads f_I for it."""
        return create_model("test-tiny-two-group", num_classes=num_classes, image_size=image_size, num_frames=num_frames)


def test_trainer_records_the_resolved_identity_encoder_and_resumes(fake_data, make_config, tmp_path, monkeypatch):
    from cvfer.train import train

    loaded: list[str] = []

    def fake_loader(spec: str) -> SimpleNamespace:
        loaded.append(spec)
        return SimpleNamespace(dim=4, encode=lambda iframes: np.ones((len(iframes), 4), dtype=np.float32))

    monkeypatch.setattr("cvfer.train.data._load_identity_encoder", fake_loader)
    synthetic = _synthetic_copy(fake_data, tmp_path)
    auto = make_config(model=IDENTITY_MODEL, identity_encoder="auto", epochs=1)

    def saved_encoder(run: Path) -> str:
        return json.loads((run / "config.json").read_text())["identity_encoder"]

    train(auto, fake_data, 0, tmp_path / "real")
    assert loaded == ["dlib"] and saved_encoder(tmp_path / "real") == "dlib"
    # A run started with an explicit "synthetic" resumes under "auto" where auto means the same f_I ...
    train(auto.replace(identity_encoder="synthetic"), synthetic, 0, tmp_path / "synthetic")
    train(auto.replace(epochs=2), synthetic, 0, tmp_path / "synthetic", resume=True)
    assert loaded[1:] == ["synthetic", "synthetic"] and saved_encoder(tmp_path / "synthetic") == "synthetic"
    # ... and is refused where it would change f_I.
    with pytest.raises(CheckpointError, match="identity_encoder"):
        train(auto.replace(epochs=2), fake_data, 0, tmp_path / "synthetic", resume=True)


def test_a_preset_gives_its_model_options_to_variants_of_its_own_system_only():
    tfen = build_config(preset="ckplus", options={"model": "tfen"})
    assert tfen.model == "tfen" and "alpha" not in tfen.model_cfg and tfen.epochs == 100
    no_rec = build_config(preset="ckplus", options={"model": "mic-no-rec"})
    assert no_rec.model_cfg["alpha"] == 0.1


def test_one_key_value_parser() -> None:
    assert split_assignment(" lr =0.1", "--set", "e.g. lr=0.1") == ("lr", "0.1")
    assert split_assignment('group_lr={"k": "a=b"}', "--set", "") == ("group_lr", '{"k": "a=b"}')
    values = ["0.1", "3", "true", "null", "[30, 60]", "dlib", "weights/f.pt", ""]
    assert [parse_value(text) for text in values] == [0.1, 3, True, None, [30, 60], "dlib", "weights/f.pt", ""]
    for bad in ("lr", "=1", " =1"):
        with pytest.raises(ConfigError, match=rf"^--set '{bad}' is not key=value \(e\.g\. lr=1\)$"):
            split_assignment(bad, "--set", "e.g. lr=1")


def test_flat_settings_take_training_fields_and_the_models_options_only() -> None:
    with pytest.raises(ConfigError, match=r"unknown options \['alpah'\] for model 'tfen' \(use TrainConfig .*'alpha'"):
        TrainConfig.from_flat({"model": "tfen", "lr": 0.01, "alpah": 1.0})
    with pytest.raises(ConfigError, match=r"unknown options \['hidden_size'\] for model 'mic'"):
        TrainConfig.from_flat({"hidden_size": 8})  # no model named: the default model's options
    with pytest.raises(ConfigError, match=r"unknown options \['alpha'\] for model 'mic-mi'"):
        TrainConfig.from_flat({"model": "mic-mi", "alpha": 0.1})  # fixed by the variant
    flat = TrainConfig(model="cnn-lstm", model_cfg={"dropout": 0.1}).with_flat({"hidden_size": 8, "epochs": 2})
    assert (flat.epochs, flat.model_cfg) == (2, {"dropout": 0.1, "hidden_size": 8})


def test_presets_are_registered_beside_their_models_and_work_for_every_model_that_has_them(fake_data) -> None:
    assert set(model_presets("mic-no-rec")) == {"ckplus", "mmi", "afew", "demo"}
    assert set(model_presets("tfen-no-3d")) == set(model_presets("ceflnet")) == {"paper", "cpu"}
    assert model_presets("cnn-lstm") == {} and preset_names("tfen") == ["afew", "ckplus", "cpu", "demo", "mmi", "paper"]
    tfen = build_config(preset="paper", options={"model": "tfen-no-3d"})
    assert (tfen.model, tfen.epochs, tfen.optimizer, tfen.num_frames) == ("tfen-no-3d", 300, "sgd", 7)
    assert tfen.model_cfg == {"input_size": 224, "alpha": 5.0, "adversary_every": 3}
    assert build_config(preset="paper", settings=["model=tfen", "epochs=2"]).optimizer == "sgd"  # --set chooses too
    ceflnet = _config_from_cli("train", "--data", str(fake_data), "--preset", "cpu", "--model", "ceflnet-sal")
    assert (ceflnet.model, ceflnet.num_frames, ceflnet.lr_schedule, ceflnet.model_cfg["input_size"]) == (
        "ceflnet-sal", 16, "cosine", None
    )
    # MIC's presets serve any model (test_every_preset_builds_every_model); others only their own system.
    with pytest.raises(ConfigError, match=r"unknown preset 'paper' for model 'mic' \(presets are mic's, for any "
                       r"model: afew, ckplus, demo, mmi\)"):
        build_config(preset="paper")
    with pytest.raises(ConfigError, match=r"for model 'tfen' \(presets are tfen's own: cpu, paper; mic's, for any"):
        build_config(preset="ferplus", options={"model": "tfen"})
    with pytest.raises(ConfigError, match=r"for model 'cnn-lstm' \(presets are cnn-lstm's own: none; mic's"):
        _config_from_cli("cv", "--data", str(fake_data), "--preset", "cpu", "--model", "cnn-lstm")


def test_resumable_options_are_marked_on_the_fields() -> None:
    assert set(resumable_options(from_checkpoint=True)) == {"epochs", "device", "threads", "cache_dir", "max_bad_steps"}
    assert set(resumable_options(from_checkpoint=False)) == {"device", "threads", "cache_dir"}


# The training flags as they were written by hand: flag → (type, choices); None = a switch (store_true).
HAND_WRITTEN_TRAIN_FLAGS: dict[str, tuple[type, tuple[str, ...] | None] | None] = {
    "--model": (str, None),
    "--epochs": (int, None),
    "--batch-size": (int, None),
    "--lr": (float, None),
    "--num-frames": (int, None),
    "--critic-steps": (int, None),
    "--critic-first": None,
    "--identity-encoder": (str, None),
    "--seed": (int, None),
    "--device": (str, ("cpu", "cuda")),
    "--threads": (int, None),
    "--cache-dir": (str, None),
}
HAND_WRITTEN_COMPARE_FLAGS = ("--epochs", "--batch-size", "--lr", "--num-frames", "--identity-encoder", "--threads",
                              "--device", "--seed", "--cache-dir")


def _verb_actions(verb: str) -> dict[str, argparse.Action]:
    from cvfer.cli import build_parser

    verbs = next(action for action in build_parser()._actions if isinstance(action, argparse._SubParsersAction))
    return {flag: action for action in verbs.choices[verb]._actions for flag in action.option_strings}


@pytest.mark.parametrize("verb", ["train", "cv", "compare"])
def test_generated_training_flags_match_the_hand_written_ones(verb: str) -> None:
    fields = {field.name for field in dataclasses.fields(TrainConfig)}
    actions = _verb_actions(verb)
    generated = {flag for flag, action in actions.items() if action.dest in fields}
    if verb == "compare":  # --models names the models; the critic flags are new there
        assert generated == {*HAND_WRITTEN_COMPARE_FLAGS, "--critic-steps", "--critic-first"}
    else:
        assert generated == set(HAND_WRITTEN_TRAIN_FLAGS)
    for flag in generated:
        action = actions[flag]
        assert action.dest == flag[2:].replace("-", "_") and action.default is None and action.help
        if HAND_WRITTEN_TRAIN_FLAGS[flag] is None:
            assert isinstance(action, argparse._StoreTrueAction)
        else:
            assert (action.type, action.choices) == HAND_WRITTEN_TRAIN_FLAGS[flag]
    explicit = {"--set"} if verb == "compare" else {"--set", "--preset", "--config", "--alpha", "--mi-estimator"}
    assert explicit <= set(actions)


def test_generated_flags_reach_the_config(fake_data) -> None:
    options = ["--preset", "demo", "--model", "mic-mv", "--batch-size", "4", "--lr", "0.5", "--num-frames", "3",
               "--critic-steps", "2", "--critic-first", "--identity-encoder", "dlib", "--seed", "7", "--device", "cpu",
               "--threads", "1", "--cache-dir", "cache", "--mi-estimator", "club"]
    config = _config_from_cli("train", "--data", str(fake_data), *options)
    assert (config.model, config.epochs, config.batch_size, config.lr, config.num_frames) == ("mic-mv", 6, 4, 0.5, 3)
    assert (config.critic_steps, config.critic_first, config.identity_encoder, config.seed) == (2, True, "dlib", 7)
    assert (config.threads, config.cache_dir) == (1, "cache")
    assert config.model_cfg == {"beta_epochs": 4, "mi_estimator": "club"}
    assert _config_from_cli("train", "--data", str(fake_data)).critic_first is False  # a switch not given: default
