"""MINE and CLUB: they recover known MI, MINE's bias-corrected gradient is what it claims, and an encoder
trained against MINE (Algorithm 1's alternating updates) really removes information, measured in closed form."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cvfer.errors import ConfigError
from cvfer.models.mine import CLUB, MINE, MINE_CRITICS, create_mi_estimator, marginal_permutation


def _correlated_gaussians(
    num: int, dim: int, rho: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(num, dim, generator=generator)
    y = rho * x + math.sqrt(1 - rho**2) * torch.randn(num, dim, generator=generator)
    return x, y


def _rho_for(mi: float, dim: int) -> float:
    """Per-dimension correlation giving MI = −dim/2·log(1 − ρ²) nats."""
    return math.sqrt(1 - math.exp(-2 * mi / dim))


def _fit(estimator: MINE | CLUB, dim: int, rho: float, steps: int, batch: int) -> float:
    """Train the estimator alone on fresh samples, then estimate on 20 000 held-out pairs."""
    generator = torch.Generator().manual_seed(100)
    optimizer = torch.optim.Adam(estimator.parameters(), lr=3e-3)
    for step in range(steps):
        x, y = _correlated_gaussians(batch, dim, rho, generator)
        loss = estimator(x, y, marginal_permutation(batch, 0, step)).estimator_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    estimator.eval()
    if isinstance(estimator, MINE):
        estimator.marginal = "shuffle"  # the trained T_θ's bound on 20 000 held-out pairs, not 20 000² pairs
    with torch.no_grad():
        x, y = _correlated_gaussians(20_000, dim, rho, generator)
        return float(estimator(x, y, marginal_permutation(20_000, 1, 0)).mi)


@pytest.mark.parametrize(("dim", "true_mi", "steps"), [(1, 0.5, 400), (3, 1.0, 400), (5, 2.0, 800)])
def test_mine_recovers_gaussian_mi_within_ten_percent(dim: int, true_mi: float, steps: int) -> None:
    torch.manual_seed(0)
    estimate = _fit(MINE(dim, dim, hidden=32), dim, _rho_for(true_mi, dim), steps=steps, batch=512)
    assert estimate == pytest.approx(true_mi, rel=0.10)


@pytest.mark.parametrize("critic", MINE_CRITICS)
def test_mine_all_pairs_marginal_recovers_gaussian_mi_from_small_batches(critic: str) -> None:
    """Every (x_i, y_j), i ≠ j, as the marginal sample: the same DV bound, here from batches of 64, with
    either form of T_θ (the separable g(x)·h(y) can express the Gaussian log-ratio's x·y, x² and y² terms)."""
    torch.manual_seed(0)
    dim, true_mi = 3, 1.0
    mine = MINE(dim, dim, hidden=32, marginal="all-pairs", critic=critic, embedding_dim=16)
    estimate = _fit(mine, dim, _rho_for(true_mi, dim), steps=400, batch=64)
    assert estimate == pytest.approx(true_mi, rel=0.10)


@pytest.mark.parametrize("critic", MINE_CRITICS)
def test_mine_pair_scores_are_the_statistics_network_on_every_pair(critic: str) -> None:
    mine = MINE(3, 2, hidden=8, marginal="all-pairs", critic=critic, embedding_dim=4)
    x, y = torch.randn(5, 3), torch.randn(5, 2)
    expected = torch.stack([mine.scores(x, y[j].expand(5, 2)) for j in range(5)], 1)
    torch.testing.assert_close(mine.pair_scores(x, y), expected)
    pairs = expected.detach()
    off_diagonal = pairs[~torch.eye(5, dtype=torch.bool)]
    bound = pairs.diagonal().mean() - (torch.logsumexp(off_diagonal, 0) - math.log(20))
    assert float(mine.lower_bound(x, y, marginal_permutation(5, 0, 0)).detach()) == pytest.approx(float(bound), abs=1e-5)


def test_club_upper_bounds_gaussian_mi_at_its_closed_form() -> None:
    """With q(y|x) = p(y|x), CLUB = Σ ρ²/(1 − ρ²) for this Gaussian pair, above the true MI."""
    torch.manual_seed(0)
    dim, true_mi = 2, 1.0
    rho = _rho_for(true_mi, dim)
    estimate = _fit(CLUB(dim, dim, hidden=32), dim, rho, steps=500, batch=256)
    assert estimate >= 0.9 * true_mi
    assert estimate == pytest.approx(dim * rho**2 / (1 - rho**2), rel=0.15)


def test_mine_is_near_zero_for_independent_variables() -> None:
    torch.manual_seed(0)
    assert abs(_fit(MINE(2, 2, hidden=32), 2, 0.0, steps=300, batch=256)) < 0.05


def _naive_dv(
    mine: MINE, x: torch.Tensor, y: torch.Tensor, permutation: torch.Tensor, log_normaliser: torch.Tensor | None
) -> torch.Tensor:
    """DV bound whose gradient of the log term is E[∇T e^T]/exp(log_normaliser) (exact when None)."""
    joint, marginal = mine.scores(x, y), mine.scores(x, y[permutation])
    if log_normaliser is None:
        return joint.mean() - (torch.logsumexp(marginal, 0) - math.log(len(marginal)))
    weights = torch.exp(marginal.detach() - log_normaliser) / len(marginal)
    return joint.mean() - (weights * marginal).sum()


def test_mine_value_is_exact_and_gradient_uses_the_moving_average() -> None:
    torch.manual_seed(0)
    mine = MINE(3, 2, hidden=16, ma_rate=0.01)
    x, y = torch.randn(64, 3), torch.randn(64, 2)
    permutation = marginal_permutation(64, 0, 0)
    params = list(mine.parameters())
    # First batch: the average starts at this batch's mean, so the gradient is the plain one.
    bound = mine.lower_bound(x, y, permutation)
    expected = _naive_dv(mine, x, y, permutation, None)
    assert float(bound.detach()) == pytest.approx(float(expected.detach()), abs=1e-5)
    for got, want in zip(torch.autograd.grad(bound, params), torch.autograd.grad(expected, params), strict=True):
        torch.testing.assert_close(got, want)
    first_average = mine.log_moving_average.clone()
    # Second batch with scaled inputs: value exact, gradient normalised by the updated moving average.
    x2, y2 = 3 * torch.randn(64, 3), 3 * torch.randn(64, 2)
    bound2 = mine.lower_bound(x2, y2, permutation)
    assert float(bound2.detach()) == pytest.approx(float(_naive_dv(mine, x2, y2, permutation, None).detach()), abs=1e-5)
    batch_log_mean = torch.logsumexp(mine.scores(x2, y2[permutation]), 0) - math.log(64)
    expected_average = torch.logaddexp(first_average + math.log(0.99), batch_log_mean + math.log(0.01))
    torch.testing.assert_close(mine.log_moving_average, expected_average.detach())
    corrected = _naive_dv(mine, x2, y2, permutation, mine.log_moving_average)
    plain = _naive_dv(mine, x2, y2, permutation, None)
    got = torch.autograd.grad(bound2, params)
    for got_grad, want in zip(got, torch.autograd.grad(corrected, params), strict=True):
        torch.testing.assert_close(got_grad, want)
    assert any(not torch.allclose(a, b) for a, b in zip(got, torch.autograd.grad(plain, params), strict=True))


def test_mine_moving_average_only_updates_in_training_mode() -> None:
    mine = MINE(2, 2, hidden=8)
    x, y = torch.randn(16, 2), torch.randn(16, 2)
    mine.eval()
    mine(x, y, marginal_permutation(16, 0, 0))
    assert int(mine.updates) == 0
    mine.train()
    mine(x, y, marginal_permutation(16, 0, 0))
    assert int(mine.updates) == 1


def test_marginal_permutation_is_reproducible_and_changes_per_step() -> None:
    first = marginal_permutation(50, seed=3, step=7)
    assert torch.equal(first, marginal_permutation(50, seed=3, step=7))
    assert torch.equal(first.sort().values, torch.arange(50))
    assert not torch.equal(first, marginal_permutation(50, seed=3, step=8))
    assert not torch.equal(first, marginal_permutation(50, seed=4, step=7))


def test_unknown_estimator_or_marginal_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="mi_estimator"):
        create_mi_estimator("infonce", 4, 4)
    with pytest.raises(ConfigError, match="marginal"):
        MINE(4, 4, marginal="half")
    with pytest.raises(ConfigError, match="critic"):
        MINE(4, 4, critic="bilinear")
    with pytest.raises(ConfigError, match="CLUB"):
        create_mi_estimator("club", 4, 4, critic="separable")


# A toy identity / expression problem: x mixes an identity signal s and an expression signal e; z_I = s + noise;
# the label depends on e only. The encoder is linear, so the true MI(z_E; z_I) is a Gaussian log-det ratio.
_NOISE = 0.5


def _toy_batch(num: int, generator: torch.Generator, mixing: torch.Tensor) -> tuple[torch.Tensor, ...]:
    identity_signal = torch.randn(num, 2, generator=generator)
    expression_signal = torch.randn(num, 2, generator=generator)
    x = torch.cat([identity_signal, expression_signal], 1) @ mixing
    z_identity = identity_signal + _NOISE * torch.randn(num, 2, generator=generator)
    return x, z_identity, (expression_signal[:, 0] > 0).long()


def _true_mi(weight: torch.Tensor, mixing: torch.Tensor) -> float:
    """MI between z_E = W x and z_I for the jointly Gaussian toy: ½ log(|Σ_E||Σ_I| / |Σ|)."""
    loading = mixing @ weight.T  # rows 0-1: identity loadings, rows 2-3: expression loadings
    cov_expression = loading.T @ loading
    cov_identity = torch.eye(2) * (1 + _NOISE**2)
    cross = loading[:2].T
    joint = torch.cat([torch.cat([cov_expression, cross], 1), torch.cat([cross.T, cov_identity], 1)], 0)
    return 0.5 * float(torch.logdet(cov_expression) + torch.logdet(cov_identity) - torch.logdet(joint))


def _train_toy_encoder(alpha: float, steps: int = 300, seed: int = 1, critic: str = "concat") -> tuple[float, float]:
    """Algorithm 1 on the toy: T_θ maximises the bound, encoder + classifier minimise CE + α·MI.
    Returns (true MI of the trained encoder, its test accuracy)."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed + 1)
    mixing = torch.linalg.qr(torch.randn(4, 4, generator=generator))[0]
    encoder, classifier, mine = nn.Linear(4, 2, bias=False), nn.Linear(2, 2), MINE(2, 2, hidden=32, critic=critic)
    fer_params = [*encoder.parameters(), *classifier.parameters()]
    fer_optimizer = torch.optim.Adam(fer_params, lr=3e-3)
    mine_optimizer = torch.optim.Adam(mine.parameters(), lr=3e-3)
    for step in range(steps):
        x, z_identity, label = _toy_batch(128, generator, mixing)
        z_expression = encoder(x)
        estimate = mine(z_expression, z_identity, marginal_permutation(128, seed, step))
        fer_loss = nn.functional.cross_entropy(classifier(z_expression), label) + alpha * estimate.mi
        fer_grads = torch.autograd.grad(fer_loss, fer_params, retain_graph=True)
        mine_grads = torch.autograd.grad(estimate.estimator_loss, list(mine.parameters()))
        for param, grad in [*zip(fer_params, fer_grads), *zip(mine.parameters(), mine_grads)]:
            param.grad = grad
        fer_optimizer.step()
        mine_optimizer.step()
    x, _, label = _toy_batch(4000, generator, mixing)
    with torch.no_grad():
        accuracy = float((classifier(encoder(x)).argmax(1) == label).float().mean())
    return _true_mi(encoder.weight.detach(), mixing), accuracy


@pytest.mark.parametrize("critic", MINE_CRITICS)
def test_encoder_trained_against_mine_removes_true_identity_information(critic: str) -> None:
    baseline_mi, baseline_accuracy = _train_toy_encoder(alpha=0.0, critic=critic)
    regularised_mi, regularised_accuracy = _train_toy_encoder(alpha=1.0, critic=critic)
    assert baseline_mi > 0.3  # the unregularised encoder keeps identity: the test can fail
    assert regularised_mi < 0.2 * baseline_mi
    assert baseline_accuracy > 0.95 and regularised_accuracy > 0.9
