"""Does MIC's T_θ learn identity, or memorise pairs? Fit MINE on half of each subject's training clips of a
finished run (its features.npz: z_E and z_I of the training clips) and read the DV bound on both halves.

A bound that rises on the fitted half but not on the held-out half means T_θ memorises its (z_E, z_I)
pairs: the gradient it gives the encoder carries no identity information that holds beyond those clips.
The linear identity probe on the same split is printed beside it (docs/mic.md, "Doubts"), or the identity
verification AUC where subjects have too few clips for a probe.

    python benchmarks/bench_mine_heldout.py runs/small10-ln/mic-mi/fold_00/features.npz
    python benchmarks/bench_mine_heldout.py RUN/fold_00/features.npz --steps 800 --batch 16 48
    python benchmarks/bench_mine_heldout.py RUN/fold_00/features.npz --critic separable --layers 0 --weight-decay 1
    python benchmarks/bench_mine_heldout.py RUN/fold_00/features.npz --critic concat --subjects-per-batch 4

`--layers 0` with the separable critic is a bilinear T = (A z_E)·(B z_I); `--weight-decay` uses AdamW;
`--subjects-per-batch K` draws each batch from K subjects (batch / K clips each), so same-subject pairs are
among the marginal samples.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch

from cvfer.eval.probes import identity_probe, identity_verification, per_subject_split
from cvfer.models.mine import MINE, MINE_CRITICS, MINE_MARGINALS


def all_pairs_bound(mine: MINE, x: torch.Tensor, y: torch.Tensor) -> float:
    """DV bound on a whole set, every (x_i, y_j), i ≠ j, as the product of marginals."""
    with torch.no_grad():
        pairs = mine.pair_scores(x, y)
        off_diagonal = pairs[~torch.eye(len(x), dtype=torch.bool)]
        return float(pairs.diagonal().mean() - (torch.logsumexp(off_diagonal, 0) - math.log(len(off_diagonal))))


def subject_grouped_rows(
    clips_by_subject: list[torch.Tensor], num_subjects: int, batch: int, generator: torch.Generator
) -> torch.Tensor:
    """Row indices of one batch: `num_subjects` random subjects, batch // num_subjects random clips of each
    (`clips_by_subject[s]`: the rows of subject s)."""
    chosen = torch.randperm(len(clips_by_subject), generator=generator)[:num_subjects]
    rows = []
    for subject in chosen.tolist():
        clips = clips_by_subject[subject]
        rows.append(clips[torch.randperm(len(clips), generator=generator)[: batch // num_subjects]])
    return torch.cat(rows)


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
    layers: int = 2,
    weight_decay: float = 0.0,
    subjects: np.ndarray | None = None,
    subjects_per_batch: int = 0,
) -> list[tuple[int, float, float]]:
    """Train T_θ (MIC's size unless `layers` says otherwise) on `fit` clips; (step, bound on fit, bound on
    held) at `checkpoints`. With `subjects_per_batch` > 0 each batch holds that many subjects of `subjects`."""
    torch.manual_seed(seed)
    mine = MINE(x.shape[1], y.shape[1], layers=layers, marginal=marginal, critic=critic)
    optimizer = torch.optim.AdamW(mine.parameters(), lr=1e-3, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    fit_index, held_index = torch.as_tensor(fit), torch.as_tensor(held)
    clips_by_subject: list[torch.Tensor] = []
    if subjects_per_batch > 0 and subjects is not None:
        fit_subjects = subjects[fit]
        clips_by_subject = [torch.as_tensor(np.flatnonzero(fit_subjects == name)) for name in np.unique(fit_subjects)]
    readings = []
    for step in range(1, steps + 1):
        if clips_by_subject:
            rows = fit_index[subject_grouped_rows(clips_by_subject, subjects_per_batch, batch, generator)]
        else:
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
    parser.add_argument("--layers", type=int, default=2, help="hidden layers of T_θ's MLPs (0: linear)")
    parser.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay of T_θ")
    parser.add_argument("--subjects-per-batch", type=int, default=0, help="draw each batch from this many subjects")
    args = parser.parse_args()
    torch.set_num_threads(1)

    arrays = np.load(args.features)
    subjects = arrays["train_subjects"]
    x = torch.as_tensor(arrays["train_features"], dtype=torch.float32)
    # As in training (cvfer.models.mic): z_I has unit rows, T_θ sees √D·z_I.
    y = torch.as_tensor(arrays["train_identity"], dtype=torch.float32) * math.sqrt(arrays["train_identity"].shape[1])
    fit, held = per_subject_split(subjects, 0.5, args.seed)
    try:
        probe = identity_probe(arrays["train_features"], subjects, seed=args.seed)
        leakage = f"linear identity probe on this split {probe.accuracy:.3f} (chance {probe.chance:.3f})"
    except ValueError:  # too few clips per subject for a probe (CK+-style data)
        verification = identity_verification(
            arrays["train_features"], subjects, labels=arrays["train_labels"], seed=args.seed
        )
        leakage = f"identity verification AUC of z_E {verification.auc:.3f} (0.5: none)"
    print(
        f"{args.features}: {len(fit)} fitted / {len(held)} held-out clips of {len(np.unique(subjects))} subjects; "
        f"{leakage}\n"
    )
    checkpoints = sorted({s for s in (50, 100, 200, 400, 800, 1600, args.steps) if s <= args.steps})
    print("| critic | marginal | batch | T_θ steps | DV bound, fitted clips (nats) | DV bound, held-out clips (nats) |")
    print("|---|---|---|---|---|---|")
    for critic in args.critic:
        for marginal in MINE_MARGINALS:
            for batch in args.batch:
                readings = fit_and_read(
                    x, y, fit, held, marginal=marginal, critic=critic, batch=batch, steps=args.steps,
                    checkpoints=checkpoints, seed=args.seed, layers=args.layers, weight_decay=args.weight_decay,
                    subjects=subjects, subjects_per_batch=args.subjects_per_batch,
                )
                for step, fitted, held_out in readings:
                    print(f"| {critic} | {marginal} | {batch} | {step} | {fitted:.3f} | {held_out:.3f} |", flush=True)


if __name__ == "__main__":
    main()
