"""Does MIC's T_θ learn identity, or memorise pairs? Fit MINE on half of each subject's training clips of a
finished run (its features.npz: z_E and z_I of the training clips) and read the DV bound on both halves.

A bound that rises on the fitted half but not on the held-out half means T_θ memorises its (z_E, z_I)
pairs: the gradient it gives the encoder carries no identity information that holds beyond those clips.
The linear identity probe on the same split is printed beside it (docs/mic.md, "Doubts").

    python benchmarks/bench_mine_heldout.py runs/small10-ln/mic-mi/fold_00/features.npz
    python benchmarks/bench_mine_heldout.py RUN/fold_00/features.npz --steps 800 --batch 16 48
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch

from cvfer.eval.probes import identity_probe, per_subject_split
from cvfer.models.mine import MINE, MINE_CRITICS, MINE_MARGINALS


def all_pairs_bound(mine: MINE, x: torch.Tensor, y: torch.Tensor) -> float:
    """DV bound on a whole set, every (x_i, y_j), i ≠ j, as the product of marginals."""
    with torch.no_grad():
        pairs = mine.pair_scores(x, y)
        off_diagonal = pairs[~torch.eye(len(x), dtype=torch.bool)]
        return float(pairs.diagonal().mean() - (torch.logsumexp(off_diagonal, 0) - math.log(len(off_diagonal))))


def fit_and_read(
    x: torch.Tensor,
    y: torch.Tensor,
    fit: np.ndarray,
    held: np.ndarray,
    *,
    marginal: str,
    critic: str,
    batch: int,
    steps: int,
    checkpoints: list[int],
    seed: int,
) -> list[tuple[int, float, float]]:
    """Train T_θ (MIC's default size) on `fit` clips; (step, bound on fit, bound on held) at `checkpoints`."""
    torch.manual_seed(seed)
    mine = MINE(x.shape[1], y.shape[1], marginal=marginal, critic=critic)
    optimizer = torch.optim.Adam(mine.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    fit_index, held_index = torch.as_tensor(fit), torch.as_tensor(held)
    readings = []
    for step in range(1, steps + 1):
        rows = fit_index[torch.randperm(len(fit_index), generator=generator)[:batch]]
        permutation = torch.randperm(len(rows), generator=generator)
        loss = mine(x[rows], y[rows], permutation).estimator_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step in checkpoints:
            readings.append(
                (step, all_pairs_bound(mine, x[fit_index], y[fit_index]), all_pairs_bound(mine, x[held_index], y[held_index]))
            )
    return readings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("features", help="a run's features.npz (cvfer train writes it)")
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--batch", type=int, nargs="+", default=[16, 48])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--critic", nargs="+", default=list(MINE_CRITICS), choices=MINE_CRITICS, help="T_θ forms to fit")
    args = parser.parse_args()
    torch.set_num_threads(1)

    arrays = np.load(args.features)
    subjects = arrays["train_subjects"]
    x = torch.as_tensor(arrays["train_features"], dtype=torch.float32)
    # As in training (cvfer.models.mic): z_I has unit rows, T_θ sees √D·z_I.
    y = torch.as_tensor(arrays["train_identity"], dtype=torch.float32) * math.sqrt(arrays["train_identity"].shape[1])
    fit, held = per_subject_split(subjects, 0.5, args.seed)
    probe = identity_probe(arrays["train_features"], subjects, seed=args.seed)
    print(
        f"{args.features}: {len(fit)} fitted / {len(held)} held-out clips of {len(np.unique(subjects))} subjects; "
        f"linear identity probe on this split {probe.accuracy:.3f} (chance {probe.chance:.3f})\n"
    )
    checkpoints = sorted({s for s in (50, 100, 200, 400, 800, 1600, args.steps) if s <= args.steps})
    print("| critic | marginal | batch | T_θ steps | DV bound, fitted clips (nats) | DV bound, held-out clips (nats) |")
    print("|---|---|---|---|---|---|")
    for critic in args.critic:
        for marginal in MINE_MARGINALS:
            for batch in args.batch:
                readings = fit_and_read(
                    x, y, fit, held, marginal=marginal, critic=critic, batch=batch, steps=args.steps,
                    checkpoints=checkpoints, seed=args.seed,
                )
                for step, fitted, held_out in readings:
                    print(f"| {critic} | {marginal} | {batch} | {step} | {fitted:.3f} | {held_out:.3f} |", flush=True)


if __name__ == "__main__":
    main()
