"""Dense motion fields from block records, and the block-copy prediction, against slow references."""

from __future__ import annotations

import numpy as np
import pytest

from cvfer.codec import warp
from cvfer.codec.motion import BlockFields, vectors_from_indices

RECORD = np.dtype(
    [("w", "u1"), ("h", "u1"), ("dst_x", "<i2"), ("dst_y", "<i2"), ("motion_x", "<i4"), ("motion_y", "<i4"), ("motion_scale", "<u2")]
)


def random_records(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Macroblocks of 16×16, some split in four 8×8 blocks (MPEG-4 4MV), some left out (intra)."""
    blocks = []
    for top in range(0, height, 16):
        for left in range(0, width, 16):
            kind = rng.integers(3)  # 0: one 16×16 block, 1: four 8×8 blocks, 2: intra (no vector)
            split = [(top + dy, left + dx, 8) for dy in (0, 8) for dx in (0, 8)]
            parts = [[(top, left, 16)], split, []][kind]
            for y, x, size in parts:
                scale = int(rng.choice([1, 2, 4]))
                motion = rng.integers(-12 * scale, 12 * scale + 1, size=2)
                blocks.append((size, size, x + size // 2, y + size // 2, motion[0], motion[1], scale))
    return np.array(blocks, dtype=RECORD)


def slow_dense(records: np.ndarray, height: int, width: int) -> np.ndarray:
    """The per-pixel field by looping over blocks and pixels, rounding with Python's Fractions rules."""
    field = np.zeros((2, height, width), dtype=np.int16)
    for record in records:
        for channel, motion in enumerate((record["motion_x"], record["motion_y"])):
            value = -int(motion) / int(record["motion_scale"])
            rounded = int(np.sign(value) * np.floor(abs(value) + 0.5))
            top, left = record["dst_y"] - record["h"] // 2, record["dst_x"] - record["w"] // 2
            field[channel, top : top + record["h"], left : left + record["w"]] = rounded
    return field


@pytest.mark.parametrize(("height", "width"), [(64, 96), (40, 56)])
def test_block_fields_match_slow_references(height, width):
    rng = np.random.default_rng(height)
    records = [random_records(height, width, rng) for _ in range(3)]
    fields = BlockFields.from_side_data(records, height, width)
    dense = fields.dense()
    references = rng.integers(0, 256, (3, height, width, 3), dtype=np.uint8)
    currents = rng.integers(0, 256, (3, height, width, 3), dtype=np.uint8)
    predictions = fields.predict(references)
    residuals = fields.residuals(currents, fields.pad(references), out=np.empty((3, height, width, 3), dtype=np.int16))
    for t in range(3):
        np.testing.assert_array_equal(dense[t], slow_dense(records[t], height, width))
        expected = warp(references[t], dense[t])
        np.testing.assert_array_equal(predictions[t], expected)
        np.testing.assert_array_equal(residuals[t], currents[t].astype(np.int16) - expected)


def test_rounding_is_half_away_from_zero():
    records = np.array([(16, 16, 8, 8, 1, -1, 2), (16, 16, 24, 8, -3, 6, 4)], dtype=RECORD)
    dense = BlockFields.from_side_data([records], 16, 32).dense()[0]
    assert dense[:, 0, 0].tolist() == [-1, 1]  # -(1/2) -> -1, -(-1/2) -> 1
    assert dense[:, 0, 16].tolist() == [1, -2]  # -(-3/4) -> 1, -(6/4) -> -2


def test_frames_without_vectors_give_zero_fields():
    fields = BlockFields.from_side_data([np.zeros(0, dtype=RECORD)] * 2, 24, 40)
    assert fields.dense().shape == (2, 2, 24, 40) and not fields.dense().any()


def test_warp_clamps_to_the_border():
    reference = np.arange(12, dtype=np.uint8).reshape(3, 4, 1)
    field = np.zeros((2, 3, 4), dtype=np.int16)
    field[0] = 10  # every pixel reads 10 columns to its left: the left border
    field[1, 2] = -5  # the last row reads 5 rows below: the bottom border
    predicted = warp(reference, field)[..., 0]
    np.testing.assert_array_equal(predicted, [[0, 0, 0, 0], [4, 4, 4, 4], [8, 8, 8, 8]])
    with pytest.raises(ValueError, match="do not match"):
        warp(reference, field[:, :2])


def test_vectors_from_indices_inverts_the_warp():
    rng = np.random.default_rng(0)
    indices = rng.integers(0, 6 * 7, (6, 7))
    reference = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(warp(reference, vectors_from_indices(indices)), reference.reshape(-1, 3)[indices])
