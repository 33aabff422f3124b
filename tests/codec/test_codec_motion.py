"""The compiled kernels (block records -> grid -> dense field, warp + residual, CoViAR's trace) against
slow pixel-by-pixel references and `warp`, the definition."""

from __future__ import annotations

import numpy as np
import pytest

from cvfer.codec import kernels, warp
from cvfer.codec.reader import _NO_BLOCK_VECTORS

RECORD = _NO_BLOCK_VECTORS.dtype  # FFmpeg's AVMotionVector as PyAV gives it


def records(rows: list[tuple[int, int, int, int, int, int, int]]) -> np.ndarray:
    """AVMotionVector records from (w, h, dst_x, dst_y, motion_x, motion_y, motion_scale) tuples."""
    array = np.zeros(len(rows), dtype=RECORD)
    names = ("w", "h", "dst_x", "dst_y", "motion_x", "motion_y", "motion_scale")
    for name, column in zip(names, zip(*rows, strict=True), strict=True):
        array[name] = column
    return array


def random_records(height: int, width: int, rng: np.random.Generator, reach: int) -> np.ndarray:
    """Macroblocks of 16×16, some split in four 8×8 blocks (MPEG-4 4MV), some left out (intra), with vectors
    up to `reach` pixels, and one broken record whose block lies outside the frame (ignored)."""
    blocks = [(16, 16, width + 8, 8, 4, 4, 1)]
    for top in range(0, height, 16):
        for left in range(0, width, 16):
            kind = rng.integers(3)  # 0: one 16×16 block, 1: four 8×8 blocks, 2: intra (no vector)
            split = [(top + dy, left + dx, 8) for dy in (0, 8) for dx in (0, 8)]
            for y, x, size in [[(top, left, 16)], split, []][kind]:
                scale = int(rng.choice([1, 2, 4]))
                motion = rng.integers(-reach * scale, reach * scale + 1, size=2)
                blocks.append((size, size, x + size // 2, y + size // 2, motion[0], motion[1], scale))
    return records(blocks)


def slow_dense(block_records: np.ndarray, height: int, width: int) -> np.ndarray:
    """The per-pixel field by looping over blocks, rounding half away from zero, limiting to the frame size."""
    field = np.zeros((2, height, width), dtype=np.int16)
    limit = max(height, width)
    for record in block_records:
        top, left = record["dst_y"] - record["h"] // 2, record["dst_x"] - record["w"] // 2
        if not (0 <= top < height and 0 <= left < width):
            continue
        for channel, motion in enumerate((record["motion_x"], record["motion_y"])):
            value = -int(motion) / int(record["motion_scale"])
            rounded = int(np.sign(value) * np.floor(abs(value) + 0.5))
            field[channel, top : top + record["h"], left : left + record["w"]] = np.clip(rounded, -limit, limit)
    return field


@pytest.mark.parametrize(("height", "width", "reach"), [(64, 96, 12), (40, 56, 12), (56, 90, 12), (48, 64, 200)])
def test_kernels_match_slow_references(height, width, reach):
    rng = np.random.default_rng(height + reach)
    reference = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    current = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    sources = np.indices((height, width), dtype=np.int32)
    expected_sources = np.stack(np.indices((height, width)), axis=-1)  # (row, col) of each pixel, traced
    for _ in range(3):
        block_records = random_records(height, width, rng, reach)
        field = np.empty((2, height, width), dtype=np.int16)
        kernels.motion_field(block_records, field)
        np.testing.assert_array_equal(field, slow_dense(block_records, height, width))
        fused_field, residual = np.empty_like(field), np.empty((height, width, 3), dtype=np.int16)
        kernels.motion_field_and_residual(block_records, current, reference, fused_field, residual)
        np.testing.assert_array_equal(fused_field, field)
        np.testing.assert_array_equal(residual, current.astype(np.int16) - warp(reference, field))
        traced = np.empty_like(sources)
        kernels.trace(block_records, sources, traced)
        sources, expected_sources = traced, warp(expected_sources, field)
        np.testing.assert_array_equal(sources, expected_sources.transpose(2, 0, 1))
        accumulated_field, accumulated_residual = np.empty_like(field), np.empty_like(residual)
        kernels.accumulated_outputs(sources, reference, current, accumulated_field, accumulated_residual)
        np.testing.assert_array_equal(warp(reference, accumulated_field), reference[sources[0], sources[1]])
        np.testing.assert_array_equal(accumulated_residual, current.astype(np.int16) - reference[sources[0], sources[1]])


def test_rounding_is_half_away_from_zero():
    grid, cell = kernels.block_grid(records([(16, 16, 8, 8, 1, -1, 2), (16, 16, 24, 8, -3, 6, 4)]), 16, 32)
    assert cell == 16
    assert grid[:, 0, 0].tolist() == [-1, 1]  # -(1/2) -> -1, -(-1/2) -> 1
    assert grid[:, 0, 1].tolist() == [1, -2]  # -(-3/4) -> 1, -(6/4) -> -2



def test_blocks_of_any_size_give_the_slow_field():
    """12×12 blocks (their common divisor, 12, is not a power of two: the grid is then 4×4 squares)."""
    rng = np.random.default_rng(12)
    corners = [(left, top) for top in range(0, 36, 12) for left in range(0, 48, 12)]
    blocks = [(12, 12, left + 6, top + 6, *rng.integers(-20, 21, size=2), 2) for left, top in corners]
    field = np.empty((2, 36, 48), dtype=np.int16)
    kernels.motion_field(records(blocks), field)
    np.testing.assert_array_equal(field, slow_dense(records(blocks), 36, 48))
    assert kernels.block_grid(records(blocks), 36, 48)[1] == 4

def test_frames_without_vectors_give_zero_fields():
    field = np.ones((2, 24, 40), dtype=np.int16)
    kernels.motion_field(_NO_BLOCK_VECTORS, field)
    assert not field.any()


def test_warp_clamps_to_the_border():
    reference = np.arange(12, dtype=np.uint8).reshape(3, 4, 1)
    field = np.zeros((2, 3, 4), dtype=np.int16)
    field[0] = 10  # every pixel reads 10 columns to its left: the left border
    field[1, 2] = -5  # the last row reads 5 rows below: the bottom border
    predicted = warp(reference, field)[..., 0]
    np.testing.assert_array_equal(predicted, [[0, 0, 0, 0], [4, 4, 4, 4], [8, 8, 8, 8]])
    with pytest.raises(ValueError, match="do not match"):
        warp(reference, field[:, :2])
