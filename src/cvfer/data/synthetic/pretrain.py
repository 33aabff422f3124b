"""Face images of identities that appear in no benchmark, for pretraining the synthetic face recogniser f_I."""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

from cvfer.data.manifest import EXPRESSIONS
from cvfer.data.synthetic.benchmark import PRETRAIN_SPACE
from cvfer.data.synthetic.expressions import emotion_action_units
from cvfer.data.synthetic.render import IdentityParams, Lighting, Pose, render_face, sample_identity
from cvfer.errors import ConfigError


def pretrain_identity(seed: int, identity_index: int) -> IdentityParams:
    """Identity `identity_index` of the pretraining set; its seed stream is disjoint from the benchmark's."""
    return sample_identity(np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(PRETRAIN_SPACE, identity_index))))


def identity_images(
    num_identities: int,
    per_identity: int,
    size: int = 64,
    seed: int = 0,
    *,
    first_identity: int = 0,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Render `per_identity` images of each of `num_identities` new identities, numbered from `first_identity`
    (each identity's images depend only on the seed and its number, so identities 200..239 render the same
    alone as within a set of 240).

    Each image has a random expression (any emotion or neutral, random intensity and side), pose,
    lighting and sensor noise, so a recogniser trained on them learns identity, not expression.
    Returns (images N×size×size×3 uint8, identity_ids N int64), identities in blocks.
    """
    if num_identities < 1 or per_identity < 1:
        raise ConfigError(
            f"identity_images needs at least one identity and one image each, got {num_identities}×{per_identity}"
        )
    if seed < 0 or first_identity < 0:
        raise ConfigError(f"seed {seed} or first_identity {first_identity} is negative", fix="use values >= 0")
    images = np.empty((num_identities * per_identity, size, size, 3), dtype=np.uint8)
    identity_ids = np.repeat(np.arange(first_identity, first_identity + num_identities, dtype=np.int64), per_identity)
    emotions = ("neutral", *EXPRESSIONS)
    for position in tqdm(range(num_identities), desc="identity images", unit="id", disable=not progress):
        identity_index = first_identity + position
        identity = pretrain_identity(seed, identity_index)
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(PRETRAIN_SPACE, identity_index, 1)))
        for k in range(per_identity):
            emotion = emotions[rng.integers(len(emotions))]
            action_units = emotion_action_units(emotion, rng.uniform(0.3, 1.0), side=int(rng.integers(2)))
            action_units *= rng.uniform(0.7, 1.15, action_units.shape)
            pose = Pose(
                dx=rng.normal(0, 0.05),
                dy=rng.normal(0, 0.05),
                roll=rng.normal(0, 6.0),
                scale=1 + rng.normal(0, 0.05),
                yaw=rng.normal(0, 0.08),
            )
            lighting = Lighting(
                gain=rng.uniform(0.8, 1.1),
                ambient=rng.uniform(0.45, 0.75),
                side=rng.uniform(0, 0.7),
                azimuth=rng.uniform(0, 2 * np.pi),
                tint=tuple(float(v) for v in np.clip(1 + rng.normal(0, 0.04, 3), 0.8, 1.2)),
            )
            images[position * per_identity + k] = render_face(
                identity, action_units, pose, lighting, size, noise_std=rng.uniform(0, 3), rng=rng
            )
    return images, identity_ids
