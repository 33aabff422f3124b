"""Fixtures of the training tests: a tiny two-group model and a tiny fake dataset.

The fake dataset stores each clip's decoded arrays in an .npz file and `install_fake_codec` makes
`cvfer.codec.read_compressed`/`read_frames` read them, so the loop is tested in isolation from the
MPEG-4 reader (tested under tests/codec) and runs in well under a second per epoch.
The DDP test's worker processes load this file by path and call the same helpers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from cvfer import codec
from cvfer.data.manifest import ClipRecord, write_manifest
from cvfer.data.splits import Fold, Splits, write_splits
from cvfer.errors import CompressedVideoError
from cvfer.models import list_models, register_model
from cvfer.models.base import FERModel, FEROutput, TrainingForward, TrainState
from cvfer.models.registry import variant_builder

TINY_MODEL = "test-tiny-two-group"
CLASSES = ["anger", "happiness", "surprise"]
SIZE = 8
FRAMES = 4


@dataclass
class TinyForward(TrainingForward):
    """The tiny model's forward pass with the critic's inputs: z_E and the I frame's colour over the global batch."""

    features: torch.Tensor
    colours: torch.Tensor


class TinyTwoGroupModel(FERModel):
    """Encoder + classifier ("main") and a MINE-style critic ("critic") over the gathered global batch.

    The critic estimates MI(z_E; I-frame colour) by the Donsker-Varadhan bound with a shuffled
    marginal drawn from `state.all_gather(...)`; "main" minimises CE + 0.1·MI, "critic" maximises MI.
    `nan_loss_steps` / `nan_grad_steps` make the loss (or only its gradient) non-finite at those steps;
    `constant_critic` returns the critic's loss detached (a term switched off).
    """

    train_inputs = ("residuals", "iframe")
    test_inputs = ("residuals",)

    def __init__(
        self,
        num_classes: int,
        image_size: int,
        num_frames: int,
        hidden: int = 6,
        nan_loss_steps: tuple[int, ...] = (),
        nan_grad_steps: tuple[int, ...] = (),
        constant_critic: bool = False,
    ):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(3 * num_frames, hidden), nn.Tanh())
        self.classifier = nn.Linear(hidden, num_classes)
        # No output bias: the DV bound is invariant to it, so its gradient is pure rounding noise that
        # Adam would scale up to full steps (and the 1- vs 2-process comparison would measure noise).
        self.critic = nn.Sequential(nn.Linear(hidden + 3, 8), nn.ReLU(), nn.Linear(8, 1, bias=False))
        self.nan_loss_steps = set(nan_loss_steps)
        self.nan_grad_steps = set(nan_grad_steps)
        self.constant_critic = constant_critic

    def forward(self, batch: dict[str, torch.Tensor]) -> FEROutput:
        summary = batch["residuals"].mean(dim=(3, 4)).flatten(1)
        features = self.encoder(summary * 10)
        return FEROutput(logits=self.classifier(features), features=features)

    def training_forward(self, batch, state: TrainState) -> TinyForward:
        out = self(batch)
        colour = batch["iframe"].mean(dim=(2, 3))
        return TinyForward(out, state.all_gather(out.features), state.all_gather(colour))

    def training_losses(self, batch, forward: TinyForward, state: TrainState):
        out = forward.output
        mutual_information = self._bound(forward.features, forward.colours)
        cross_entropy = nn.functional.cross_entropy(out.logits, batch["label"])
        main = cross_entropy + 0.1 * mutual_information
        if state.step in self.nan_loss_steps:
            main = main * float("nan")
        if state.step in self.nan_grad_steps:  # finite loss, infinite gradient: d sqrt(x)/dx at 0
            main = main + 0 * (out.features.sum() * 0).abs().sqrt()
        logs = {"ce": float(cross_entropy.detach()), "mi": float(mutual_information.detach())}
        critic = -mutual_information.detach() if self.constant_critic else -mutual_information
        return {"main": main, "critic": critic}, logs

    def _bound(self, features: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
        shuffled = colours[torch.randperm(len(colours))]
        joint = self.critic(torch.cat([features, colours], 1)).mean()
        marginal = torch.logsumexp(self.critic(torch.cat([features, shuffled], 1)), 0).squeeze() - math.log(len(colours))
        return joint - marginal

    def critic_losses(self, forward: TinyForward, state: TrainState, repeat: int) -> dict[str, torch.Tensor]:
        return {"critic": -self._bound(forward.features.detach(), forward.colours.detach())}

    def parameter_groups(self):
        return {
            "main": [*self.encoder.parameters(), *self.classifier.parameters()],
            "critic": list(self.critic.parameters()),
        }


if TINY_MODEL not in list_models():
    register_model(TINY_MODEL)(variant_builder(TinyTwoGroupModel))


if f"{TINY_MODEL}-subjects" not in list_models():

    @register_model(f"{TINY_MODEL}-subjects")
    def tiny_two_group_with_subjects(num_classes: int, image_size: int, num_frames: int, num_subjects: int) -> TinyTwoGroupModel:
        """A builder naming num_subjects (as adversarial variants do), so the trainer passes it."""
        model = TinyTwoGroupModel(num_classes, image_size, num_frames)
        model.num_subjects = num_subjects
        return model


def fake_read_compressed(path, *, num_frames=None, residual="rgb", accumulate=False):
    """Reads the .npz written by `make_fake_dataset` as a CompressedVideo-like object."""
    try:
        with np.load(path) as arrays:
            residuals = arrays["residuals"]
            video = SimpleNamespace(
                iframe=arrays["iframe"], residuals=residuals, motion_vectors=arrays["motion_vectors"]
            )
    except (OSError, ValueError, KeyError) as error:
        raise CompressedVideoError(f"unreadable ({error})", path) from None
    if num_frames is not None:
        keep = np.linspace(0, len(residuals) - 1, num_frames).round().astype(int)
        video.residuals, video.motion_vectors = video.residuals[keep], video.motion_vectors[keep]
    return video


def fake_read_frames(path, *, indices=None):
    with np.load(path) as arrays:
        frames = arrays["frames"]
    return frames if indices is None else frames[np.asarray(indices)]


def install_fake_codec(patch=None) -> None:
    """Route cvfer.codec's readers to the fakes (through pytest's monkeypatch when given)."""
    for name, fake in (("read_compressed", fake_read_compressed), ("read_frames", fake_read_frames)):
        if patch is None:
            setattr(codec, name, fake)
        else:
            patch.setattr(codec, name, fake)


def make_fake_dataset(root: Path, clips_per_class: int = 4) -> Path:
    """A prepared folder of 3 classes × `clips_per_class` clips of 4 subjects; fold 0 tests subject s3.

    Residual means carry the class (learnable); the I frame's colour carries the subject.
    """
    rng = np.random.default_rng(0)
    (root / "clips").mkdir(parents=True, exist_ok=True)
    records = []
    for label_index, label in enumerate(CLASSES):
        for number in range(clips_per_class):
            subject = f"s{number % 4}"
            path = f"clips/{label}_{number}.npz"
            records.append(ClipRecord(path, subject, label, FRAMES, FRAMES + 1, "test"))
            colour = np.full((SIZE, SIZE, 3), 40 + 50 * (number % 4), dtype=np.uint8)
            residuals = rng.integers(-20, 21, size=(FRAMES, SIZE, SIZE, 3)).astype(np.int16)
            residuals[..., label_index] += 30
            frames = np.repeat(colour[None], FRAMES + 1, axis=0)
            motion_vectors = rng.integers(-16, 17, size=(FRAMES, 2, SIZE, SIZE)).astype(np.int16)
            np.savez(root / path, iframe=colour, residuals=residuals, motion_vectors=motion_vectors, frames=frames)
    write_manifest(root, records, CLASSES, {"size": [SIZE, SIZE], "source": "test"})
    test = [record.path for record in records if record.subject == "s3"]
    train = [record.path for record in records if record.subject != "s3"]
    write_splits(root, Splits(kind="test", folds=[Fold(train=train, test=test)]))
    return root


def tiny_config(**changes):
    """A 2-epoch CPU config of the tiny model (step schedule, so extending a run is well defined)."""
    from cvfer.train import TrainConfig

    settings = {
        "model": TINY_MODEL,
        "epochs": 2,
        "batch_size": 4,
        "lr": 0.05,
        "num_frames": FRAMES,
        "identity_encoder": None,
        "lr_schedule": "step",
        "lr_schedule_params": {"milestones": [1], "gamma": 0.5},
        "threads": 1,
        **changes,
    }
    return TrainConfig.from_dict(settings)


@pytest.fixture
def fake_data(tmp_path, monkeypatch) -> Path:
    install_fake_codec(monkeypatch)
    return make_fake_dataset(tmp_path / "data")


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """(data folder, result) of one uninterrupted 3-epoch run, shared by a test module; the fake codec
    stays installed for the module and is removed after it."""
    from cvfer.train import train

    with pytest.MonkeyPatch.context() as patch:
        install_fake_codec(patch)
        root = tmp_path_factory.mktemp("reference")
        data = make_fake_dataset(root / "data")
        yield data, train(tiny_config(epochs=3), data, 0, root / "run")


@pytest.fixture
def make_config():
    """Factory of tiny-model configs: `make_config(epochs=3, ...)`."""
    return tiny_config
