"""Neural mutual-information estimators between z_E and z_I: MINE (Belghazi et al. 2018; MIC Eq. 2-4) and
CLUB (Cheng et al. 2020).

Both return an `MIEstimate`: `mi`, the value the encoder minimises (MIC Eq. 6), and `estimator_loss`, the
value the estimator's own parameters minimise (MINE: −DV bound, so T_θ maximises the bound; CLUB: −log q).
Both come out of one forward pass: the trainer differentiates each loss w.r.t. its own parameter group only.

The product of marginals is sampled by pairing z_E with a permutation of z_I; `marginal_permutation` draws it
from a seeded generator so every DDP rank (which holds the gathered global batch) draws the same one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from cvfer.errors import ConfigError

MI_ESTIMATORS = ("mine", "club")
MINE_MARGINALS = ("all-pairs", "shuffle")
MINE_CRITICS = ("concat", "separable")


@dataclass
class MIEstimate:
    """One batch's estimate: `mi` (encoder minimises it) and `estimator_loss` (estimator minimises it)."""

    mi: Tensor
    estimator_loss: Tensor


def marginal_permutation(
    num_samples: int, seed: int, step: int, device: torch.device | str = "cpu", draw: int = 0
) -> Tensor:
    """A permutation of `range(num_samples)` fixed by (`seed`, `step`, `draw`): z_I[perm] pairs z_E with the
    marginal. `draw` > 0 gives further independent permutations within one step (extra critic updates)."""
    generator = torch.Generator().manual_seed((seed * 1_000_003 + step + draw * 7_777_777_777) % (2**63))
    return torch.randperm(num_samples, generator=generator).to(device)


def _mlp(in_features: int, hidden: int, out_features: int, layers: int = 2) -> nn.Sequential:
    """`layers` hidden ELU layers of width `hidden`, then a linear output."""
    modules: list[nn.Module] = []
    width = in_features
    for _ in range(layers):
        modules += [nn.Linear(width, hidden), nn.ELU()]
        width = hidden
    modules.append(nn.Linear(width, out_features))
    return nn.Sequential(*modules)


class _BiasCorrectedLogMeanExp(torch.autograd.Function):
    """log mean exp(T) in the forward pass; in the backward pass MINE's bias-corrected gradient
    E[∇T e^T] / ma, with ma the moving average of E[e^T] (Belghazi et al. 2018, Sec. 3.2), given as log ma."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, scores: Tensor, log_moving_average: Tensor
    ) -> Tensor:
        ctx.save_for_backward(scores, log_moving_average)
        return torch.logsumexp(scores, dim=0) - math.log(scores.shape[0])

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad_output: Tensor
    ) -> tuple[Tensor, None]:
        scores, log_moving_average = ctx.saved_tensors  # type: ignore[attr-defined]
        weights = torch.exp(scores - log_moving_average) / scores.shape[0]
        return grad_output * weights, None


class MINE(nn.Module):
    """Statistics network T_θ(z_E, z_I) and the Donsker–Varadhan bound (Eq. 4).

    The bound's value is exact on the batch (logsumexp − log N, no overflow); its gradient uses the moving
    average of E[e^T] over batches (rate `ma_rate`, initialised with the first batch so it has no start-up
    bias), which removes the bias of the mini-batch gradient of log E[e^T]. The average is a buffer updated
    only in training mode.

    `critic` picks T_θ's form: `"concat"`, an MLP on concat(x, y) (the MINE paper's form), or
    `"separable"`, T(x, y) = g(x)·h(y)/√k with two MLPs g, h into R^k (k = `embedding_dim`); all N² pair
    scores are one product of the two embeddings. On MIC's features it memorises pairs as the concatenation
    MLP does (held-out bound ≤ 0.27 nats, docs/mic.md).

    `marginal` picks the product-of-marginals sample: `"shuffle"` pairs each x_i with one y_perm(i) (MINE's
    and the paper's N samples); `"all-pairs"` uses every (x_i, y_j), i ≠ j, of the batch: N(N−1) samples of
    the same distribution, so the same DV bound with a less noisy second term (docs/mic.md).
    """

    def __init__(
        self,
        x_dim: int,
        y_dim: int,
        hidden: int = 256,
        layers: int = 2,
        ma_rate: float = 0.01,
        marginal: str = "shuffle",
        critic: str = "concat",
        embedding_dim: int = 64,
    ):
        super().__init__()
        if not 0 < ma_rate <= 1:
            raise ConfigError(f"MINE ma_rate={ma_rate} is invalid", fix="use a rate in (0, 1], e.g. 0.01")
        if marginal not in MINE_MARGINALS:
            raise ConfigError(f"unknown MINE marginal {marginal!r}", fix=f"use one of {', '.join(MINE_MARGINALS)}")
        if critic not in MINE_CRITICS:
            raise ConfigError(f"unknown MINE critic {critic!r}", fix=f"use one of {', '.join(MINE_CRITICS)}")
        if embedding_dim < 1:
            raise ConfigError(f"MINE embedding_dim={embedding_dim} is invalid", fix="use a size >= 1, e.g. 64")
        self.critic = critic
        if critic == "concat":
            self.statistics = _mlp(x_dim + y_dim, hidden, 1, layers)
        else:
            self.x_embedding = _mlp(x_dim, hidden, embedding_dim, layers)
            self.y_embedding = _mlp(y_dim, hidden, embedding_dim, layers)
            self.score_scale = 1.0 / math.sqrt(embedding_dim)
        self.x_dim = x_dim
        self.marginal = marginal
        self.ma_rate = ma_rate
        self.register_buffer("log_moving_average", torch.zeros(()))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    def scores(self, x: Tensor, y: Tensor) -> Tensor:
        """T_θ(x, y) for each row: (N,)."""
        if self.critic == "separable":
            return (self.x_embedding(x) * self.y_embedding(y)).sum(1) * self.score_scale
        return self.statistics(torch.cat([x, y], dim=1)).squeeze(1)

    def pair_scores(self, x: Tensor, y: Tensor) -> Tensor:
        """T_θ(x_i, y_j) for every pair: (N, N). Separable: one product of the two embeddings. Concat: the
        first layer is linear in the concatenation, so it is applied to x and y once each and broadcast, not
        to N² concatenated rows."""
        if self.critic == "separable":
            return self.x_embedding(x) @ self.y_embedding(y).T * self.score_scale
        first, rest = self.statistics[0], self.statistics[1:]
        weight_x, weight_y = first.weight[:, : self.x_dim], first.weight[:, self.x_dim :]
        hidden = (x @ weight_x.T)[:, None, :] + (y @ weight_y.T + first.bias)[None, :, :]
        return rest(hidden).squeeze(-1)

    def _update_moving_average(self, marginal_scores: Tensor) -> Tensor:
        batch_log_mean = (torch.logsumexp(marginal_scores.detach(), 0) - math.log(marginal_scores.shape[0])).float()
        if self.training:
            if int(self.updates) == 0:
                self.log_moving_average.copy_(batch_log_mean)
            else:
                self.log_moving_average.copy_(
                    torch.logaddexp(
                        self.log_moving_average + math.log(1 - self.ma_rate), batch_log_mean + math.log(self.ma_rate)
                    )
                    if self.ma_rate < 1
                    else batch_log_mean
                )
            self.updates += 1
            return self.log_moving_average.to(marginal_scores.dtype)
        return batch_log_mean.to(marginal_scores.dtype)

    def lower_bound(self, x: Tensor, y: Tensor, permutation: Tensor) -> Tensor:
        """DV bound mean T(x, y) − log mean exp T(x, y') with the bias-corrected gradient, y' = y[permutation]
        (`"shuffle"`) or every other row of the batch (`"all-pairs"`, `permutation` unused)."""
        if self.marginal == "all-pairs":
            pairs = self.pair_scores(x, y)
            joint = pairs.diagonal()
            marginal = pairs[~torch.eye(len(x), dtype=torch.bool, device=pairs.device)]
        else:
            joint = self.scores(x, y)
            marginal = self.scores(x, y[permutation])
        log_moving_average = self._update_moving_average(marginal)
        return joint.mean() - _BiasCorrectedLogMeanExp.apply(marginal, log_moving_average)

    def forward(self, x: Tensor, y: Tensor, permutation: Tensor) -> MIEstimate:
        bound = self.lower_bound(x, y, permutation)
        return MIEstimate(mi=bound, estimator_loss=-bound)


class CLUB(nn.Module):
    """Contrastive log-ratio upper bound: a Gaussian q(y|x) = N(μ(x), diag σ²(x)) fitted by likelihood on
    joint pairs; MI ≤ E_joint[log q(y|x)] − E_x E_y[log q(y|x)] (all N² pairs of the batch for the second term).

    `permutation` is accepted for a common interface and unused: the marginal term averages over every pair.
    """

    def __init__(self, x_dim: int, y_dim: int, hidden: int = 256, layers: int = 2):
        super().__init__()
        self.mean = _mlp(x_dim, hidden, y_dim, layers)
        self.log_variance = nn.Sequential(_mlp(x_dim, hidden, y_dim, layers), nn.Tanh())

    def _log_variance(self, x: Tensor) -> Tensor:
        # tanh keeps log σ² in [-10, 10]: variance neither vanishes nor explodes early in training.
        return 10.0 * self.log_variance(x)

    def log_likelihood(self, x: Tensor, y: Tensor) -> Tensor:
        """Mean log q(y_i | x_i) over the batch (Gaussian, constants included)."""
        mean, log_variance = self.mean(x), self._log_variance(x)
        per_dim = -0.5 * ((y - mean) ** 2 / log_variance.exp() + log_variance + math.log(2 * math.pi))
        return per_dim.sum(1).mean()

    def upper_bound(self, x: Tensor, y: Tensor) -> Tensor:
        """CLUB estimate on the batch: positive (joint) minus mean over all (x_i, y_j) pairs of log q."""
        mean, log_variance = self.mean(x), self._log_variance(x)
        inverse_variance = (-log_variance).exp()
        positive = -0.5 * ((y - mean) ** 2 * inverse_variance).sum(1)
        # E_j (y_j - μ_i)² = (ȳ² − 2 ȳ μ_i + μ_i²) per dim, so all pairs cost O(N·D), not O(N²·D).
        y_mean, y_square_mean = y.mean(0, keepdim=True), (y**2).mean(0, keepdim=True)
        pair_square = y_square_mean - 2 * y_mean * mean + mean**2
        negative = -0.5 * (pair_square * inverse_variance).sum(1)
        return (positive - negative).mean()

    def forward(self, x: Tensor, y: Tensor, permutation: Tensor) -> MIEstimate:
        del permutation
        return MIEstimate(mi=self.upper_bound(x, y), estimator_loss=-self.log_likelihood(x.detach(), y))


def create_mi_estimator(
    kind: str, x_dim: int, y_dim: int, hidden: int = 256, marginal: str = "shuffle", critic: str = "concat"
) -> MINE | CLUB:
    """`"mine"` (DV lower bound, MIC's choice; `marginal` and `critic` as in `MINE`) or `"club"` (variational
    upper bound)."""
    if kind == "mine":
        return MINE(x_dim, y_dim, hidden, marginal=marginal, critic=critic)
    if kind == "club":
        if critic != "concat":
            raise ConfigError(f"critic {critic!r} is a MINE option; CLUB has its own q(z_I|z_E)", fix="drop mine_critic")
        return CLUB(x_dim, y_dim, hidden)
    raise ConfigError(f"unknown mi_estimator {kind!r}", fix=f"use one of {', '.join(MI_ESTIMATORS)}")
