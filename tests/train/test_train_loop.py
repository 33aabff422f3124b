"""The training loop: outputs, determinism, exact resume, non-finite steps, checkpoint atomicity."""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cvfer.data.manifest import Manifest
from cvfer.data.splits import OFFICIAL, Fold, Splits, read_splits, write_splits
from cvfer.errors import CheckpointError, ConfigError, CvferError, DatasetError, OutputError
from cvfer.io import LOCK_FILE, run_lock
from cvfer.models import create_model
from cvfer.runs import read_features, read_predictions
from cvfer.train import outputs as train_outputs
from cvfer.train import train
from cvfer.train.data import epoch_order, global_batches, read_fold
from cvfer.train.optimizers import GroupOptimizers


def _weights(run_dir):
    return torch.load(run_dir / "model.pt", weights_only=False)["state_dict"]


def _assert_same_state(first, second):
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key


def _tiny_model_class():
    return type(create_model("test-tiny-two-group", num_classes=3, image_size=8, num_frames=4))


def _history(run_dir):
    return [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]


def test_run_writes_every_output(reference_run):
    _, result = reference_run
    run = result.out_dir
    assert result.epochs == 3 and 0 <= result.test_war <= 1 and 0 <= result.test_uar <= 1
    with (run / "history.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["epoch"] for row in rows] == ["1", "2", "3"]
    assert {"ce", "mi", "train_acc", "test_war", "test_uar", "lr_main", "lr_critic", "skipped_steps"} <= set(rows[0])
    assert [float(row["lr_main"]) for row in rows] == pytest.approx([0.05, 0.025, 0.025])
    assert [row["epoch"] for row in _history(run)] == [1, 2, 3]
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = torch.load(run / "model.pt", weights_only=False)
    assert saved["name"] == "test-tiny-two-group" and saved["classes"] == ["anger", "happiness", "surprise"]
    assert saved["data"] == {
        "image_size": 8, "num_frames": 4, "inputs": ["residuals"], "residual": "rgb", "accumulate": True, "face_crop": False
    }
    assert saved["cfg"] == {"num_classes": 3, "image_size": 8, "num_frames": 4}
    with (run / "predictions.csv").open() as handle:
        predictions = list(csv.DictReader(handle))
    assert len(predictions) == 3 and all(row["path"].startswith("clips/") for row in predictions)
    assert all(sum(float(row[f"p_{name}"]) for name in saved["classes"]) == pytest.approx(1, abs=1e-4) for row in predictions)
    with np.load(run / "features.npz") as features:
        assert features["train_features"].shape == (9, 6) and features["test_features"].shape == (3, 6)
        assert set(features["test_subjects"]) == {"s3"} and len(features["train_labels"]) == 9
        assert "train_identity" not in features.files  # the tiny model takes no z_I
    # What `cvfer cv` reads back (cvfer.eval.protocol) understands these files.
    fold_features = read_features(run / "features.npz")
    assert fold_features.expression.shape == (12, 6) and fold_features.is_test.sum() == 3
    labels, predicted = read_predictions(run / "predictions.csv", saved["classes"])
    assert len(labels) == 3 and set(predicted) <= {0, 1, 2}


def test_validation_hold_out_and_group_lr(reference_run, make_config, tmp_path):
    data, _ = reference_run
    result = train(make_config(epochs=1, val_fraction=0.34, group_lr={"critic": 0.01}), data, 0, tmp_path / "run")
    assert {"val_war", "val_uar"} <= set(result.history[0])
    assert (result.history[0]["lr_main"], result.history[0]["lr_critic"]) == (0.05, 0.01)
    with np.load(result.out_dir / "features.npz") as features:
        assert len(features["train_labels"]) == 6 and len(set(features["train_subjects"])) == 2


def test_critic_steps_update_only_the_critic_more_often(reference_run, make_config, tmp_path):
    data, _ = reference_run
    result = train(make_config(epochs=1, critic_steps=3), data, 0, tmp_path / "run")
    optimizers = torch.load(result.out_dir / "checkpoint.pt", weights_only=False)["optimizers"]
    main_steps = {float(state["step"]) for state in optimizers["main"]["state"].values()}
    critic_steps = {float(state["step"]) for state in optimizers["critic"]["state"].values()}
    assert len(main_steps) == 1 and critic_steps == {3 * main_steps.pop()}


def test_critic_first_updates_the_critic_before_the_encoder_step(reference_run, make_config, tmp_path, monkeypatch):
    """critic_first: in each step, after the forward pass (`training_forward`) and before its losses read the
    critic (`training_losses`), the critic gets its k − 1 extra updates on that batch; only then do the main and
    critic groups step."""
    data, _ = reference_run
    events: list[str] = []
    model_class = _tiny_model_class()
    for method in ("critic_losses", "training_forward", "training_losses", "_bound"):
        original = getattr(model_class, method)
        monkeypatch.setattr(
            model_class, method, lambda self, *args, _original=original, _name=method: events.append(_name) or _original(self, *args)
        )
    original_step = GroupOptimizers.step
    monkeypatch.setattr(
        GroupOptimizers, "step",
        lambda self, losses: events.append("step " + ",".join(sorted(losses))) or original_step(self, losses),
    )
    result = train(make_config(epochs=1, critic_steps=3, critic_first=True), data, 0, tmp_path / "run")
    steps = int(result.history[0]["step"])
    critic_update = ["critic_losses", "_bound", "step critic"]
    one_step = ["training_forward", *critic_update * 2, "training_losses", "_bound", "step critic,main"]
    assert events == one_step * steps
    optimizers = torch.load(result.out_dir / "checkpoint.pt", weights_only=False)["optimizers"]
    critic_steps = {float(state["step"]) for state in optimizers["critic"]["state"].values()}
    assert critic_steps == {3.0 * steps}


def test_tiny_model_learns_the_fake_task(fake_data, make_config, tmp_path):
    result = train(make_config(epochs=12, lr_schedule="constant"), fake_data, 0, tmp_path / "run")
    assert result.history[-1]["ce"] < result.history[0]["ce"]
    assert result.test_war == 1.0 and result.history[-1]["train_acc"] > 0.8


def test_unreadable_clip_is_skipped_and_listed(fake_data, make_config, tmp_path):
    (fake_data / "clips" / "anger_0.npz").write_bytes(b"not a video")
    with pytest.warns(UserWarning, match="anger_0.npz: skipped"):
        result = train(make_config(epochs=1), fake_data, 0, tmp_path / "run")
    assert [path for path, _ in result.skipped_clips] == ["clips/anger_0.npz"]
    assert json.loads((tmp_path / "run" / "result.json").read_text())["skipped_clips"][0][0] == "clips/anger_0.npz"
    with np.load(result.out_dir / "features.npz") as features:
        assert "clips/anger_0.npz" not in set(features["train_paths"]) and len(features["train_labels"]) == 8


def test_same_seed_same_weights_other_seed_differs(reference_run, make_config, tmp_path):
    data, reference = reference_run
    again = train(make_config(epochs=3), data, 0, tmp_path / "again")
    _assert_same_state(_weights(reference.out_dir), _weights(again.out_dir))
    other = train(make_config(epochs=3, seed=1), data, 0, tmp_path / "other")
    assert not torch.equal(_weights(reference.out_dir)["classifier.weight"], _weights(other.out_dir)["classifier.weight"])


def test_extended_run_equals_uninterrupted(reference_run, make_config, tmp_path):
    data, reference = reference_run
    run = tmp_path / "extended"
    train(make_config(epochs=1), data, 0, run)
    train(make_config(epochs=3), data, 0, run, resume=True)
    _assert_same_state(_weights(reference.out_dir), _weights(run))
    assert [row["ce"] for row in _history(run)] == [row["ce"] for row in reference.history]


def test_killed_run_resumes_exactly(reference_run, make_config, tmp_path, monkeypatch):
    data, reference = reference_run
    saves = []
    real_save = train_outputs.save_checkpoint

    def save_then_die(path, **state):
        real_save(path, **state)
        saves.append(state["epoch"])
        if state["epoch"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_outputs, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(make_config(epochs=3), data, 0, tmp_path / "killed")
    monkeypatch.setattr(train_outputs, "save_checkpoint", real_save)
    assert saves == [1, 2] and not (tmp_path / "killed" / "model.pt").exists()
    resumed = train(make_config(epochs=3), data, 0, tmp_path / "killed", resume=True)
    _assert_same_state(_weights(reference.out_dir), _weights(resumed.out_dir))
    assert [row["ce"] for row in resumed.history] == [row["ce"] for row in reference.history]


def test_existing_checkpoint_needs_resume_and_same_options(reference_run, make_config):
    data, reference = reference_run
    with pytest.raises(ConfigError, match="--resume"):
        train(make_config(epochs=3), data, 0, reference.out_dir)
    with pytest.raises(CheckpointError, match=r"different options \['lr'\]"):
        train(make_config(epochs=3, lr=0.1), data, 0, reference.out_dir, resume=True)


def test_corrupt_checkpoint_is_a_checkpoint_error(reference_run, make_config, tmp_path):
    data, _ = reference_run
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"\x00half a file")
    with pytest.raises(CheckpointError, match="checkpoint.pt: unreadable"):
        train(make_config(), data, 0, run, resume=True)


def test_checkpoint_write_is_atomic(reference_run, make_config, tmp_path, monkeypatch):
    data, _ = reference_run
    run = tmp_path / "run"
    train(make_config(epochs=1), data, 0, run)
    before = (run / "checkpoint.pt").read_bytes()
    real_fsync = os.fsync

    def disk_full_on_checkpoint(fd):
        if ".checkpoint.pt." in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", disk_full_on_checkpoint)
    with pytest.raises(OutputError, match=r"checkpoint\.pt: cannot be written: no space left on the device"):
        train(make_config(epochs=2), data, 0, run, resume=True)
    assert (run / "checkpoint.pt").read_bytes() == before
    assert not [path.name for path in run.iterdir() if path.name.endswith(".tmp") or path.name == LOCK_FILE]


def test_a_second_run_into_a_folder_in_use_is_refused(reference_run, make_config, tmp_path):
    data, _ = reference_run
    with run_lock(tmp_path / "run"), pytest.raises(ConfigError, match=rf"PID {os.getpid()} holds .*run/{LOCK_FILE}"):
        train(make_config(epochs=1), data, 0, tmp_path / "run")
    train(make_config(epochs=1), data, 0, tmp_path / "run")
    assert not (tmp_path / "run" / LOCK_FILE).exists()


def test_resume_rewrites_a_deleted_model_pt_as_the_corrupt_message_says(reference_run, make_config, tmp_path):
    data, reference = reference_run
    run = Path(shutil.copytree(reference.out_dir, tmp_path / "run"))
    (run / "model.pt").unlink()
    train(make_config(epochs=3), data, 0, run, resume=True)
    _assert_same_state(_weights(reference.out_dir), _weights(run))


def test_a_checkpoint_with_flipped_bytes_is_refused(reference_run, make_config, tmp_path):
    data, _ = reference_run
    run = tmp_path / "run"
    train(make_config(epochs=1), data, 0, run)
    damaged = bytearray((run / "checkpoint.pt").read_bytes())
    for where in np.random.default_rng(0).integers(0, len(damaged) - 200, 2000):
        damaged[where] ^= 0x10
    (run / "checkpoint.pt").write_bytes(bytes(damaged))
    with pytest.raises(CheckpointError, match=r"checkpoint\.pt: corrupt: checksum mismatch.*without --resume"):
        train(make_config(epochs=2), data, 0, run, resume=True)


def test_resume_removes_temp_files_a_killed_write_left(reference_run, make_config, tmp_path):
    data, _ = reference_run
    run = tmp_path / "run"
    train(make_config(epochs=1), data, 0, run)
    stale = [run / ".checkpoint.pt.k1ll_3d0.tmp", run / ".history.csv.abcdefgh.tmp"]
    kept = [run / ".notes.tmp", run / "mine.tmp", run / ".model.pt.short.tmp"]
    for path in (*stale, *kept):
        path.write_bytes(b"half")
    train(make_config(epochs=2), data, 0, run, resume=True)
    assert not any(path.exists() for path in stale)
    assert all(path.exists() for path in kept)


def test_non_finite_steps_are_skipped(reference_run, make_config, tmp_path):
    data, _ = reference_run
    config = make_config(epochs=1, model_cfg={"nan_loss_steps": [0], "nan_grad_steps": [1]})
    with pytest.warns(UserWarning) as caught:
        result = train(config, data, 0, tmp_path / "run")
    messages = [str(warning.message) for warning in caught]
    assert any("step 0: non-finite loss" in message for message in messages)
    assert any("step 1: non-finite gradient" in message for message in messages)
    assert result.history[0]["skipped_steps"] == 2
    assert all(torch.isfinite(tensor).all() for tensor in _weights(result.out_dir).values())


def test_num_subjects_reaches_builders_that_name_it(reference_run, make_config, tmp_path):
    data, _ = reference_run
    result = train(make_config(epochs=1, model="test-tiny-two-group-subjects"), data, 0, tmp_path / "run")
    assert torch.load(result.model_path, weights_only=False)["cfg"]["num_subjects"] == 4


def test_constant_group_loss_leaves_its_group_unchanged(reference_run, make_config, tmp_path):
    data, reference = reference_run
    result = train(make_config(epochs=1, model_cfg={"constant_critic": True}), data, 0, tmp_path / "run")
    torch.manual_seed(0)
    initial = create_model("test-tiny-two-group", num_classes=3, image_size=8, num_frames=4).state_dict()
    weights = _weights(result.out_dir)
    assert all(torch.equal(weights[key], initial[key]) for key in weights if key.startswith("critic"))
    assert not torch.equal(weights["classifier.weight"], initial["classifier.weight"])


def test_persistent_nan_stops_with_clear_error(reference_run, make_config, tmp_path):
    data, _ = reference_run
    config = make_config(epochs=3, max_bad_steps=3, model_cfg={"nan_loss_steps": list(range(2, 100))})
    with pytest.warns(UserWarning), pytest.raises(CvferError, match="3 steps in a row had non-finite"):
        train(config, data, 0, tmp_path / "run")


def test_bad_fold_device_model_option_and_group_are_config_errors(reference_run, make_config, tmp_path, monkeypatch):
    data, _ = reference_run
    with pytest.raises(ConfigError, match="fold 5 does not exist"):
        train(make_config(), data, 5, tmp_path / "run")
    with monkeypatch.context() as patch:
        patch.setattr(torch.cuda, "is_available", lambda: False)
        with pytest.raises(ConfigError, match="--device cuda but torch sees no CUDA device"):
            train(make_config(device="cuda"), data, 0, tmp_path / "run")
    with pytest.raises(ConfigError, match=r"rejects its options \(got an unexpected keyword argument 'alpha'\)"):
        train(make_config(model_cfg={"alpha": 0.1}), data, 0, tmp_path / "run")
    with pytest.raises(ConfigError, match=r"group_lr names groups \['mine'\]"):
        train(make_config(group_lr={"mine": 0.1}), data, 0, tmp_path / "run")


def test_out_that_is_a_file_is_refused_before_any_work(reference_run, make_config, tmp_path):
    data, _ = reference_run
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    with pytest.raises(ConfigError, match="taken: --out is an existing file, not a folder"):
        train(make_config(), data, 0, taken)


def test_split_with_a_subject_in_train_and_test_is_refused(fake_data, make_config, tmp_path):
    splits = read_splits(fake_data)
    fold = splits.folds[0]
    write_splits(fake_data, Splits("subject_kfold", [Fold(train=[*fold.train, fold.test[0]], test=fold.test)]))
    with pytest.raises(DatasetError, match=r"splits.json: fold 0 is not subject-independent: subject 's3'"):
        train(make_config(), fake_data, 0, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    write_splits(fake_data, Splits(OFFICIAL, [Fold(train=[*fold.train, fold.test[0]], test=fold.test)]))
    with pytest.warns(UserWarning, match="subject 's3' is in train and test.*official split is used as published"):
        _, used = read_fold(fake_data, 0)
    assert fold.test[0] in used.train


def test_options_the_builder_does_not_take_are_config_errors(reference_run, make_config, tmp_path, monkeypatch):
    """Options are bound to the builder's signature before the call: a mismatch names the option, and no
    constructor has run."""
    data, _ = reference_run
    built: list[str] = []
    model_class = _tiny_model_class()
    original_init = model_class.__init__

    def recorded_init(self, *args, **kwargs):
        built.append("init")
        original_init(self, *args, **kwargs)

    monkeypatch.setattr(model_class, "__init__", recorded_init)
    config = make_config(model="test-tiny-two-group-subjects", model_cfg={"hiden": 4})
    message = r"model '\S+-subjects' rejects its options \(got an unexpected keyword argument 'hiden'\)"
    with pytest.raises(ConfigError, match=message):
        train(config, data, 0, tmp_path / "run")
    assert built == []


def test_a_type_error_inside_the_constructor_is_reported_as_itself(reference_run, make_config, tmp_path, monkeypatch):
    """The options match the builder's signature, so a TypeError from the constructor is a bug, not "rejects"."""
    data, _ = reference_run
    model_class = _tiny_model_class()

    def broken_init(self, num_classes, image_size, num_frames, **options):
        raise TypeError("a bug inside the constructor")

    monkeypatch.setattr(model_class, "__init__", broken_init)
    with pytest.raises(TypeError, match="^a bug inside the constructor$"):
        train(make_config(), data, 0, tmp_path / "run")


def test_data_order_depends_on_seed_and_epoch_only():
    assert torch.equal(epoch_order(10, 0, 3), epoch_order(10, 0, 3))
    assert not torch.equal(epoch_order(10, 0, 3), epoch_order(10, 0, 4))
    assert sorted(epoch_order(10, 5, 1).tolist()) == list(range(10))
    assert [len(batch) for batch in global_batches(torch.arange(10), 4, 1)] == [4, 4, 2]
    assert [len(batch) for batch in global_batches(torch.arange(9), 4, 1)] == [4, 4]
    assert [len(batch) for batch in global_batches(torch.arange(10), 4, 2)] == [4, 4]
    assert [len(batch) for batch in global_batches(torch.arange(12), 4, 2)] == [4, 4, 4]


def test_face_crop_flag_follows_the_dataset_meta(tmp_path):
    def manifest(meta):
        return Manifest(root=tmp_path, clips=[], classes=["anger"], meta=meta)

    assert train_outputs._face_cropped(manifest({"crop": "face", "face_padding": 0.2}))
    assert not train_outputs._face_cropped(manifest({"crop": "centre square"}))
    assert not train_outputs._face_cropped(manifest({"source": "synthetic"}))
