"""MIC: shapes, the loss groups of Algorithm 1, β schedule, the test-time module, the global-batch shuffle."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from cvfer.errors import ConfigError
from cvfer.models import create_model
from cvfer.models.base import TrainState
from cvfer.models.mic import MIC_PRESETS, PAPER_LEARNING_RATES, MICForward, linear_beta
from cvfer.models.mine import MIEstimate

SIZE, FRAMES, IDENTITY_DIM, SUBJECTS = 32, 3, 16, 4


def _batch(batch_size: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "residuals": 0.05 * torch.randn(batch_size, FRAMES, 3, SIZE, SIZE, generator=generator),
        "motion_vectors": torch.randn(batch_size, FRAMES, 2, SIZE, SIZE, generator=generator),
        "identity": torch.randn(batch_size, IDENTITY_DIM, generator=generator),
        "apex": torch.rand(batch_size, 3, SIZE, SIZE, generator=generator),
        "label": torch.randint(0, 7, (batch_size,), generator=generator),
        "subject": torch.randint(0, SUBJECTS, (batch_size,), generator=generator),
    }


def _mic(name: str = "mic", **options: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(
        name, image_size=SIZE, num_frames=FRAMES, identity_dim=IDENTITY_DIM, num_subjects=SUBJECTS, **options
    )


def test_linear_beta_falls_from_start_to_zero_at_beta_epochs() -> None:
    assert linear_beta(0) == 1.0
    assert linear_beta(15) == pytest.approx(0.5)
    assert linear_beta(30) == 0.0 and linear_beta(99) == 0.0
    assert linear_beta(5, beta_start=0.5, beta_epochs=10) == pytest.approx(0.25)
    assert linear_beta(0, beta_epochs=0) == 0.0


def test_mic_groups_and_which_parameters_each_loss_reaches(step_losses) -> None:
    model = _mic()
    losses, logs = step_losses(model, _batch(), TrainState(epoch=0, num_epochs=100))
    assert set(losses) == {"fer", "mine", "decoder"}
    assert set(model.parameter_groups()) == set(losses)
    assert {"ce", "mi", "beta", "reconstruction", "accuracy"} <= set(logs) and logs["beta"] == 1.0
    groups = model.parameter_groups()
    # L_rec reaches f_E (β·L_rec is in the FER loss); the MI term reaches the encoder too, not the classifier.
    reached = torch.autograd.grad(losses["fer"], groups["fer"], retain_graph=True, allow_unused=True)
    assert all(grad is not None for grad in reached)
    encoder_params = list(model.expression.frame_encoder.parameters())
    mine_grad = torch.autograd.grad(losses["mine"], encoder_params, retain_graph=True, allow_unused=True)
    assert any(grad is not None and grad.abs().sum() > 0 for grad in mine_grad)
    classifier_params = list(model.expression.classifier.parameters())
    classifier_grad = torch.autograd.grad(losses["mine"], classifier_params, allow_unused=True)
    assert all(grad is None for grad in classifier_grad)


def test_fer_loss_is_ce_plus_alpha_mi_plus_beta_reconstruction(step_losses) -> None:
    model = _mic(alpha=0.3)
    losses, logs = step_losses(model, _batch(), TrainState(epoch=10, num_epochs=100))
    beta = linear_beta(10)
    expected = logs["ce"] + 0.3 * max(logs["mi"], 0.0) + beta * logs["reconstruction"]
    assert float(losses["fer"].detach()) == pytest.approx(expected, rel=1e-5)


def test_a_negative_mi_estimate_is_not_rewarded(step_losses) -> None:
    """MI >= 0: a wrong estimator reading below 0 must not pull the encoder further (clamped at 0)."""

    class NegativeEstimator(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.unused = torch.nn.Linear(1, 1)

        def forward(self, x: torch.Tensor, y: torch.Tensor, permutation: torch.Tensor) -> MIEstimate:
            value = -1.0 - (x**2).mean()
            return MIEstimate(mi=value, estimator_loss=-value)

    model = _mic(alpha=1.0)
    model.mi_estimator = NegativeEstimator()
    losses, logs = step_losses(model, _batch(), TrainState(epoch=40))
    assert logs["mi"] < -1.0
    assert float(losses["fer"].detach()) == pytest.approx(logs["ce"], rel=1e-6)


def test_decoder_is_skipped_once_beta_reaches_zero(step_losses) -> None:
    losses, logs = step_losses(_mic(), _batch(), TrainState(epoch=30, num_epochs=100))
    assert "decoder" not in losses and logs["beta"] == 0.0


def test_variants_have_their_groups_and_inputs(step_losses) -> None:
    assert _mic("mic-no-rec").train_inputs == ("residuals", "identity")
    assert set(_mic("mic-no-rec").parameter_groups()) == {"fer", "mine"}
    assert set(_mic("mic-mi-adv").parameter_groups()) == {"fer", "adversary", "decoder"}
    assert _mic("mic-mv").test_inputs == ("residuals", "motion_vectors")
    assert _mic("mic").test_inputs == ("residuals",)
    mic_mi = _mic("mic-mi")
    losses, logs = step_losses(mic_mi, _batch(), TrainState(epoch=40))
    assert float(losses["fer"].detach()) == pytest.approx(logs["ce"], rel=1e-6)  # α = 0, β = 0: CE only
    assert "mi" in logs  # T_θ still trained and logged
    club = _mic(mi_estimator="club")
    assert type(club.mi_estimator).__name__ == "CLUB"
    all_pairs = _mic(mine_marginal="all-pairs")
    assert all_pairs.mi_estimator.marginal == "all-pairs"
    _, logs = step_losses(all_pairs, _batch(), TrainState())
    assert torch.isfinite(torch.tensor(logs["mi"]))


def test_adversary_variant_trains_a_subject_classifier_and_checks_subjects(step_losses) -> None:
    model = _mic("mic-mi-adv")
    losses, logs = step_losses(model, _batch(), TrainState())
    assert "identity_accuracy" in logs and float(losses["adversary"].detach()) > 0
    bad = {**_batch(), "subject": torch.tensor([0, 1, 2, SUBJECTS])}
    with pytest.raises(ConfigError, match="num_subjects"):
        step_losses(model, bad, TrainState())
    with pytest.raises(ConfigError, match="num_subjects"):
        create_model("mic-mi-adv", image_size=SIZE, identity_dim=IDENTITY_DIM)


@pytest.mark.parametrize("name, critic", [("mic", "mine"), ("mic-mi-adv", "adversary"), ("mic-no-rec", "mine")])
def test_critic_losses_reach_only_the_critic_and_reshuffle(name: str, critic: str) -> None:
    model = _mic(name)
    state = TrainState(step=5)
    batch = _batch(batch_size=8)
    forward = model.training_forward(batch, state)
    assert model.critic_losses(MICForward(forward.output), state, 1) == {}  # nothing without the critics' inputs
    losses, _ = model.training_losses(batch, forward, state)
    extra = model.critic_losses(forward, state, 1)
    assert set(extra) == {critic}
    groups = model.parameter_groups()
    assert all(grad is not None for grad in torch.autograd.grad(extra[critic], groups[critic], retain_graph=True))
    fer_grads = torch.autograd.grad(extra[critic], groups["fer"], retain_graph=True, allow_unused=True)
    assert all(grad is None for grad in fer_grads)  # detached z_E: the encoder is not moved by critic steps
    if critic == "mine":  # a new draw of the marginal: a different value than the step's own bound
        assert not torch.equal(extra["mine"].detach(), losses["mine"].detach())
        assert torch.equal(model.critic_losses(forward, state, 1)["mine"].detach(), extra["mine"].detach())


@pytest.mark.parametrize("name, critic", [("mic", "mine"), ("mic-mi-adv", "adversary")])
def test_critics_updated_between_forward_and_losses_see_this_batch_and_are_read(name: str, critic: str) -> None:
    """critic_first: the trainer updates the critics between `training_forward` and `training_losses`, on this
    batch's detached z_E (what `critic_losses` reads); the losses come after, so what it changes is used."""
    model = _mic(name)
    batch = _batch(batch_size=8)
    state = TrainState(step=2)
    seen: list[torch.Tensor] = []
    critic_module = model.mi_estimator if critic == "mine" else model.identity_adversary
    forward = model.training_forward(batch, state)
    hook = critic_module.register_forward_hook(lambda module, args, output: seen.append(args[0].clone()))
    model.critic_losses(forward, state, 1)
    hook.remove()
    assert len(seen) == 1 and not seen[0].requires_grad
    torch.testing.assert_close(seen[0], model(batch).features)  # eval of the same weights, train-mode BN
    for param in critic_module.parameters():  # a visible change: the losses must be computed after it
        param.data.zero_()
    losses, _ = model.training_losses(batch, forward, state)
    if critic == "mine":  # a zeroed T_θ scores every pair 0: the bound is exactly 0
        assert float(losses["mine"].detach()) == 0.0
    else:  # a zeroed classifier is uniform over the subjects
        assert float(losses["adversary"].detach()) == pytest.approx(math.log(SUBJECTS))


def test_feature_norm_keeps_the_lstm_input_on_unit_scale_when_f4_blows_up() -> None:
    seen = {}
    for feature_norm in (True, False):
        model = _mic(feature_norm=feature_norm)
        with torch.no_grad():
            model.expression.frame_encoder.fc[0].weight.mul_(1000)  # F4 after a run-away start
        model.expression.lstm.register_forward_hook(lambda _m, inputs, _o: seen.update(lstm_input=inputs[0]))
        with torch.no_grad():
            model(_batch())
        seen[feature_norm] = float(seen["lstm_input"].abs().max())
    assert seen[True] < 25 < seen[False]  # LayerNorm over 512 units bounds each value by √511 ≈ 22.6


def test_inference_module_holds_only_the_fer_branch_and_reloads(step_losses) -> None:
    model = _mic()
    step_losses(model, _batch(), TrainState())  # moves BN statistics, MINE's average
    model.eval()
    inference = model.inference_module()
    keys = list(inference.state_dict())
    assert all(key.split(".")[0] in {"frame_encoder", "feature_norm", "lstm", "classifier"} for key in keys)
    assert not any("statistics" in key or "decoder" in key or "upsample" in key for key in keys)
    fresh = _mic()
    fresh.inference_module().load_state_dict(inference.state_dict())
    fresh.eval()
    batch = _batch(seed=1)
    with torch.no_grad():
        torch.testing.assert_close(fresh.inference_module()(batch).logits, model(batch).logits)
        assert model(batch).logits.shape == (4, 7) and model(batch).features.shape == (4, 512)


def test_mine_bound_is_computed_on_the_gathered_global_batch(step_losses) -> None:
    model = _mic()
    seen: list[int] = []
    model.mi_estimator.statistics.register_forward_hook(lambda module, args, out: seen.append(args[0].shape[0]))
    gathered: list[tuple[int, ...]] = []

    def fake_all_gather(tensor: torch.Tensor) -> torch.Tensor:  # two "ranks": this one and its mirror
        gathered.append(tuple(tensor.shape))
        return torch.cat([tensor, tensor.flip(0)])

    step_losses(model, _batch(), TrainState(all_gather=fake_all_gather))
    assert gathered == [(4, 512), (4, IDENTITY_DIM)]
    assert seen == [8, 8]  # joint and marginal scores over the global batch


def test_bad_inputs_and_options_are_config_errors(step_losses) -> None:
    model = _mic()
    with pytest.raises(ConfigError, match="identity_dim"):
        step_losses(model, {**_batch(), "identity": torch.randn(4, IDENTITY_DIM + 1)}, TrainState())
    with pytest.raises(ConfigError, match="image_size"):
        model({"residuals": torch.randn(2, FRAMES, 3, SIZE + 4, SIZE + 4)})
    with pytest.raises(ConfigError, match="unknown MIC options"):
        _mic(alhpa=0.1)
    with pytest.raises(ConfigError, match="fixed by this MIC variant"):
        _mic("mic-mi", alpha=0.5)
    with pytest.raises(ConfigError, match="alpha"):
        _mic(alpha=-1.0)


def test_presets_are_consumed_by_the_training_config() -> None:
    from cvfer.train.config import TrainConfig, preset_config

    fields = {field.name for field in dataclasses.fields(TrainConfig)}
    for name, preset in MIC_PRESETS.items():
        config = preset_config(name)
        assert config.batch_size == 48 and config.epochs == 100 and config.weight_decay == 1e-5
        model_options = {key: value for key, value in preset.items() if key not in fields}
        assert config.model_cfg == model_options
        _mic(config.model, **model_options)  # every model option is one MIC accepts
    assert preset_config("afew").model == "mic-no-rec" and PAPER_LEARNING_RATES["ckplus"] == 1e-1
